//! A job request file: one job, serialized, for `qsteer run-job FILE.json` — what the
//! Slurm executor ships to a node, and what a script can write by hand. The job itself is
//! the journal's own [`JobKind`] (kind and settings, dataset and variant references), so a
//! request runs exactly the job a front end would have queued.
//!
//! ```json
//! {"version": 1, "workspace": "/shared/ws", "model": "/models/resnet.onnx",
//!  "job": {"type": "quantsim", "variant": 0, "data": "/shared/digits", …}}
//! ```

use super::kind::JobKind;
use crate::fsutil::write_json_atomic;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The request format this build reads and writes.
pub const REQUEST_VERSION: u32 = 1;

const FIELDS: [&str; 4] = ["version", "workspace", "model", "job"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// [`REQUEST_VERSION`]; a file of another version is refused, not guessed at.
    pub version: u32,
    /// The workspace the job runs on (it must exist).
    pub workspace: PathBuf,
    /// The model file the command's `model` key names (default: the variant's own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The job: `type` and its settings, as in `logs/jobs.jsonl`.
    pub job: JobKind,
}

impl JobRequest {
    pub fn new(workspace: PathBuf, job: JobKind) -> JobRequest {
        JobRequest {
            version: REQUEST_VERSION,
            workspace,
            model: None,
            job,
        }
    }

    /// Read a request file; a bad one is an input error naming the file and the field.
    pub fn load(path: &Path) -> Result<JobRequest> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |what: String| Error::input(format!("{}: {what}", path.display()));
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JSON document: {e}")))?;
        Self::from_value(value).map_err(bad)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    /// The checks in the order a reader fixes them: the envelope, then the job's fields.
    fn from_value(value: Value) -> std::result::Result<JobRequest, String> {
        let Value::Object(top) = value else {
            return Err("a job request is a JSON object with version, workspace and job".into());
        };
        if let Some(k) = top.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field '{k}' (a request has {})",
                FIELDS.join(", ")
            ));
        }
        match top.get("version").map(Value::as_u64) {
            None => {
                return Err(format!(
                    "field 'version' is missing (this qsteer writes {REQUEST_VERSION})"
                ))
            }
            Some(Some(v)) if v == u64::from(REQUEST_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "field 'version': {} is not a version this qsteer reads ({REQUEST_VERSION})",
                    v.map_or_else(|| top["version"].to_string(), |v| v.to_string())
                ))
            }
        }
        let path_field = |name: &str, required: bool| match top.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(format!("field '{name}' is missing (a directory path)")),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
            Some(other) => Err(format!("field '{name}': expected a path, got {other}")),
        };
        let workspace = path_field("workspace", true)?.unwrap_or_default();
        let model = path_field("model", false)?;
        let job = match top.get("job") {
            Some(Value::Object(job)) => parse_job(job)?,
            Some(other) => return Err(format!("field 'job': expected an object, got {other}")),
            None => return Err("field 'job' is missing (an object with a 'type')".into()),
        };
        Ok(JobRequest {
            version: REQUEST_VERSION,
            workspace,
            model,
            job,
        })
    }
}

/// The job object as a [`JobKind`]. serde names a missing field or an unknown type but not
/// the field whose value is wrong, so that one is found by leaving fields out in turn.
fn parse_job(job: &Map<String, Value>) -> std::result::Result<JobKind, String> {
    if !matches!(job.get("type"), Some(Value::String(_))) {
        return Err("field 'job.type' is missing: the job kind, e.g. \"quantsim\"".into());
    }
    let parse = |obj: Map<String, Value>| serde_json::from_value::<JobKind>(Value::Object(obj));
    let e = match parse(job.clone()) {
        Ok(kind) => return Ok(kind),
        Err(e) => e,
    };
    let text = e.to_string();
    if text.contains("missing field") || text.contains("unknown variant") {
        return Err(format!("field 'job': {text}"));
    }
    for key in job.keys().filter(|k| *k != "type") {
        let mut without = job.clone();
        without.remove(key);
        let culprit = match parse(without) {
            Ok(_) => true,
            Err(e) => e.to_string().contains(&format!("missing field `{key}`")),
        };
        if culprit {
            return Err(format!("field 'job.{key}': {text}"));
        }
    }
    Err(format!("field 'job': {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_of(value: Value) -> String {
        JobRequest::from_value(value).unwrap_err()
    }

    #[test]
    fn a_request_round_trips_and_bad_ones_name_their_field() {
        let req = JobRequest::new(
            "/ws".into(),
            JobKind::evaluate(2, PathBuf::from("/data/digits")),
        );
        let value = serde_json::to_value(&req).unwrap();
        assert_eq!(JobRequest::from_value(value.clone()).unwrap(), req);

        let mut v = value.clone();
        v["version"] = json!(2);
        assert!(error_of(v).starts_with("field 'version': 2"));
        let mut v = value.clone();
        v.as_object_mut().unwrap().remove("workspace");
        assert!(error_of(v).starts_with("field 'workspace' is missing"));
        let mut v = value.clone();
        v["wokspace"] = json!("/x");
        assert!(error_of(v).contains("unknown field 'wokspace'"));
        let mut v = value.clone();
        v["job"]["batch_size"] = json!("eight");
        let e = error_of(v);
        assert!(e.starts_with("field 'job.batch_size': invalid type"), "{e}");
        let mut v = value.clone();
        v["job"].as_object_mut().unwrap().remove("seed");
        assert!(error_of(v).contains("missing field `seed`"));
        let mut v = value;
        v["job"]["type"] = json!("evalute");
        assert!(error_of(v).contains("unknown variant `evalute`"));
    }
}
