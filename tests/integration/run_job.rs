//! `qsteer run-job FILE.json`: a job taken from a command's journal and run again from a
//! request file on a fresh workspace records what the command recorded — the same
//! variants, journal entries and `--json` document — for every job kind with a command;
//! a bad request is refused naming the field. The command list is shared with the Slurm
//! tests, which run every kind through `--executor slurm`.

use crate::common::*;
use qsteer::experiment::Workspace;
use qsteer::jobs::{job_history, JobRequest, JobState};
use qsteer::model::Model;
use serde_json::{json, Value};
use std::path::Path;

pub(crate) const MODEL: &str = "resnet_digits";

/// One command per job kind (`qsteer <args> MODEL --data D --workspace W --json`), each on
/// the tiny digits subset with settings that keep it to seconds. The sweep has its own
/// Slurm test; export has no command that runs it as a job (see `export_job_*`).
pub(crate) fn commands() -> Vec<(&'static str, Vec<String>)> {
    let trainer = root().join("examples/trainers/copy-trainer.sh");
    let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        ("evaluate", s(&["eval", "--threads", "1"])),
        ("quantsim", s(&["quantsim", "--threads", "1"])),
        ("analyze", s(&["analyze", "--threads", "1"])),
        ("bias_correct", s(&["bias-correct", "--threads", "1"])),
        (
            "adaround",
            s(&["adaround", "--iterations", "20", "--threads", "1"]),
        ),
        (
            "compress",
            s(&[
                "compress",
                "--method",
                "ssvd",
                "--target",
                "0.6",
                "--candidates",
                "4",
                "--threads",
                "1",
            ]),
        ),
        (
            "fine_tune",
            s(&["finetune", "--epochs", "1", "--threads", "1"]),
        ),
        (
            "qat",
            s(&["finetune", "--qat", "--epochs", "1", "--threads", "1"]),
        ),
        (
            "external_fine_tune",
            vec![
                "finetune".into(),
                "--trainer".into(),
                format!("sh {} {{input}} {{output}} {{epochs}} 3", trainer.display()),
                "--epochs".into(),
                "1".into(),
            ],
        ),
        ("fold_bn", s(&["fold-bn"])),
        ("cle", s(&["cle"])),
        (
            "fix_chain",
            s(&["fix", "--chain", "fold-bn,cle,quantsim", "--threads", "1"]),
        ),
    ]
}

/// The full argument list of `command` on `model`, `data` and the workspace `ws`.
pub(crate) fn command_line(command: &[String], model: &str, data: &str, ws: &str) -> Vec<String> {
    let mut a = vec![command[0].clone(), model.to_string()];
    a.extend_from_slice(&command[1..]);
    // fold-bn and cle take no dataset: with one they would also score the result.
    if !matches!(command[0].as_str(), "fold-bn" | "cle") {
        a.extend(["--data".into(), data.to_string()]);
    }
    a.extend(["--workspace".into(), ws.to_string(), "--json".into()]);
    a
}

/// Keys whose values are timings (or the Slurm job's own record): they differ run to run.
fn timing(key: &str) -> bool {
    key.contains("seconds")
        || key.contains("per_second")
        || key.contains("latency")
        || key.ends_with("_ms")
        || key.ends_with("_at")
        || key == "slurm"
}

/// `v` with timings dropped and each workspace directory in `dirs` written as `WS`, so two
/// runs of one job on two workspaces compare equal when they recorded the same.
pub(crate) fn normalized(v: &Value, dirs: &[&str]) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !timing(k))
                .map(|(k, v)| (k.clone(), normalized(v, dirs)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| normalized(v, dirs)).collect()),
        Value::String(s) => Value::String(dirs.iter().fold(s.clone(), |s, d| s.replace(d, "WS"))),
        other => other.clone(),
    }
}

/// Where two documents differ, as `path: left != right` lines (empty when equal).
pub(crate) fn differences(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let n = Value::Null;
                    differences(
                        x.get(k).unwrap_or(&n),
                        y.get(k).unwrap_or(&n),
                        &format!("{path}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => (x.iter().zip(y))
            .enumerate()
            .flat_map(|(i, (x, y))| differences(x, y, &format!("{path}[{i}]")))
            .collect(),
        _ if a == b => vec![],
        _ => vec![format!("{path}: {a} != {b}")],
    }
}

/// The journal as (kind, state, summary), normalized.
pub(crate) fn journal(ws: &str, dirs: &[&str]) -> Vec<Value> {
    job_history(Path::new(ws))
        .unwrap()
        .iter()
        .map(|j| {
            json!({
                "kind": normalized(&serde_json::to_value(&j.kind).unwrap(), dirs),
                "state": j.state.name(),
                "summary": normalized(j.summary.as_ref().unwrap_or(&Value::Null), dirs),
            })
        })
        .collect()
}

/// The variants as (id, parent, step), normalized.
pub(crate) fn variants(ws: &str, dirs: &[&str]) -> Value {
    let list = Workspace::open(Path::new(ws)).unwrap();
    let list: Vec<Value> = (list.variants().iter())
        .map(|v| json!([v.id, v.parent, v.step]))
        .collect();
    normalized(&json!(list), dirs)
}

#[test]
fn run_job_replays_every_command_s_jobs_and_records_what_the_command_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20).display().to_string();
    let model = sample_model(MODEL).display().to_string();
    let loaded = Model::load(Path::new(&model)).unwrap();
    for (kind, command) in commands() {
        let by_command = dir.path().join(format!("{kind}-command"));
        let by_request = dir.path().join(format!("{kind}-request"));
        let (a, b) = (
            by_command.display().to_string(),
            by_request.display().to_string(),
        );
        let line = command_line(&command, &model, &data, &a);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        let expected = json_ok(dir.path(), &line);
        // The same jobs, from the command's journal, as request files on a new workspace.
        Workspace::open_or_create(&by_request, &loaded, MODEL).unwrap();
        let jobs = job_history(&by_command).unwrap();
        assert!(!jobs.is_empty(), "{kind}: the command journalled nothing");
        let mut last = Value::Null;
        for (n, job) in jobs.iter().enumerate() {
            assert_eq!(job.state, JobState::Finished, "{kind}: {job:?}");
            let mut request = JobRequest::new(by_request.clone(), job.kind.clone());
            request.model = Some(model.clone().into());
            let file = dir.path().join(format!("{kind}-{n}.json"));
            request.save(&file).unwrap();
            last = json_ok(dir.path(), &["run-job", &file.display().to_string()]);
        }
        let dirs = [a.as_str(), b.as_str()];
        let diff = differences(&normalized(&expected, &dirs), &normalized(&last, &dirs), "");
        assert!(
            diff.is_empty(),
            "{kind}: run-job's document differs:\n{diff:#?}"
        );
        assert_eq!(variants(&a, &dirs), variants(&b, &dirs), "{kind}: variants");
        let (ja, jb) = (journal(&a, &dirs), journal(&b, &dirs));
        let diff = differences(&json!(ja), &json!(jb), "journal");
        assert!(diff.is_empty(), "{kind}: the journals differ:\n{diff:#?}");
    }
}

#[test]
fn a_bad_job_request_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let loaded = Model::load(&sample_model(MODEL)).unwrap();
    Workspace::open_or_create(&ws, &loaded, MODEL).unwrap();
    let good = json!({
        "version": 1,
        "workspace": ws.display().to_string(),
        "job": {"type": "fold_bn", "variant": 0},
    });
    let try_request = |doc: &Value, what: &str| {
        let file = dir.path().join("request.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        let line = assert_bad_input(
            &run(dir.path(), &["run-job", &file.display().to_string()]),
            what,
        );
        assert!(line.contains(&file.display().to_string()), "{line}");
        line
    };
    let mut v = good.clone();
    v["version"] = json!(7);
    assert!(try_request(&v, "version").contains("field 'version'"));
    let mut v = good.clone();
    v["job"]["variant"] = json!("zero");
    assert!(try_request(&v, "job.variant").contains("field 'job.variant'"));
    let mut v = good.clone();
    v["job"]["variant"] = json!(9);
    assert!(try_request(&v, "no variant").contains("no variant 9"));
    let mut v = good.clone();
    v["workspace"] = json!(dir.path().join("nowhere").display().to_string());
    assert!(try_request(&v, "workspace").contains("field 'workspace'"));
    // Nothing was run or journalled by the refused requests.
    assert!(job_history(&ws).unwrap().is_empty());
    let file = dir.path().join("good.json");
    std::fs::write(&file, good.to_string()).unwrap();
    let doc = json_ok(dir.path(), &["run-job", &file.display().to_string()]);
    assert_eq!(doc["variant"], 1, "{doc}");
}

/// One headless path: every command reports its job the same way — with `--progress jsonl`
/// each job event is a JSON line on stderr, and `--no-journal` leaves the journal alone
/// (eval and the fixes had paths of their own that did neither).
#[test]
fn every_command_runs_its_job_through_the_one_headless_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 10).display().to_string();
    let model = sample_model(MODEL).display().to_string();
    for command in [&["eval", "--threads", "1"][..], &["fold-bn"], &["cle"]] {
        let ws = dir.path().join(command[0]).display().to_string();
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let mut line = command_line(&command, &model, &data, &ws);
        line.extend(["--progress".into(), "jsonl".into()]);
        let line: Vec<&str> = line.iter().map(String::as_str).collect();
        let out = run(dir.path(), &line);
        assert!(out.status.success(), "{line:?}: {}", stderr(&out));
        let events: Vec<String> = stderr(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["event"].as_str().map(str::to_string))
            .collect();
        let ends = ["queued", "started", "finished"];
        assert!(
            ends.iter().all(|e| events.iter().any(|x| x == e)),
            "{}: {events:?}\n{}",
            command[0],
            stderr(&out)
        );
        let journalled = job_history(Path::new(&ws)).unwrap().len();
        let mut again = line.clone();
        again.push("--no-journal");
        assert!(run(dir.path(), &again).status.success());
        assert_eq!(
            job_history(Path::new(&ws)).unwrap().len(),
            journalled,
            "{}",
            command[0]
        );
    }
}
