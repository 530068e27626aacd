//! The workspace directory: `workspace.json` (variants, lineage, settings),
//! `variants/<id>.onnx`, `cache/`, `logs/jobs.jsonl`. Every write is atomic.
//!
//! Several processes may write one workspace at once (the app and Slurm jobs on other
//! nodes): every change takes the exclusive lock on `workspace.lock`, re-reads the index
//! under it and applies the change to what is on disk, so no writer drops another's
//! variants or results and variant ids stay unique.

use super::variant::{EvalRecord, Variant};
use crate::compress::record::CompressionRecord;
use crate::fixes::BnStats;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::jobs::SlurmSettings;
use crate::model::Model;
use crate::quant::analysis::Analysis;
use crate::quant::simulate::QuantsimSettings;
use crate::runtime::Latency;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when the file's meaning changes; older files are migrated on load.
pub const FORMAT_VERSION: u32 = 1;
const INDEX: &str = "workspace.json";
const LOCK: &str = "workspace.lock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Samples set aside for calibration when a dataset is split.
    pub calibration_size: usize,
    /// Seed of the calibration / evaluation split.
    pub split_seed: u64,
    /// The default external trainer command template the app offers (see
    /// `train::external::Template`); none until the user saves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<String>,
    /// Defaults of the Slurm executor (partition, time limit, …) for this workspace.
    #[serde(default, skip_serializing_if = "is_default")]
    pub slurm: SlurmSettings,
    /// The metric jobs score with when they are not given one (`--save-metric`, the app's
    /// evaluation dialog); none: `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<crate::metrics::MetricSpec>,
}

fn is_default(s: &SlurmSettings) -> bool {
    *s == SlurmSettings::default()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            calibration_size: 200,
            split_seed: 0,
            trainer: None,
            slurm: SlurmSettings::default(),
            metric: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkspaceFile {
    pub format_version: u32,
    /// The model file's stem, for display.
    pub model_name: String,
    /// sha256 of the base model's bytes: a workspace belongs to one model.
    pub model_hash: String,
    pub created: u64,
    #[serde(default)]
    pub settings: Settings,
    pub variants: Vec<Variant>,
    /// Jobs sent to Slurm from this workspace, so a restarted app can find them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slurm_jobs: Vec<SlurmJobEntry>,
}

/// A job the Slurm executor submitted: which qsteer job, its Slurm id, and its files
/// under `slurm/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlurmJobEntry {
    /// The qsteer job id in this workspace's journal.
    pub job: u64,
    pub slurm_id: String,
    /// File stem under `slurm/`: `<stem>.sh`, `<stem>.out`, `<stem>.json`.
    pub stem: String,
    pub submitted: u64,
    /// The last Slurm state seen (e.g. `PENDING`, `COMPLETED`, `CANCELLED`).
    #[serde(default)]
    pub state: String,
    /// The job it runs, so a rerun (a sweep whose submitter stopped) finds it again
    /// instead of submitting the same work twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::jobs::JobKind>,
}

/// The exclusive lock on `workspace.lock`, held while alive (closing the file releases it).
struct IndexLock(#[allow(dead_code)] fs::File);

fn lock_index(dir: &Path) -> Result<IndexLock> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::input(format!(
            "{}: not a directory (a file is in the way); pick another --workspace",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.lock().map_err(|e| Error::io(&path, e))?;
    Ok(IndexLock(f))
}

/// Read and check `workspace.json`; a corrupt or newer index is a clear error.
fn read_index(dir: &Path) -> Result<WorkspaceFile> {
    let index = dir.join(INDEX);
    // bytes, not a string: binary junk is corruption like any other, not an I/O error
    let bytes = fs::read(&index).map_err(|e| Error::io(&index, e))?;
    let probe: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::input(format!(
            "{}: corrupt workspace index ({e}); it was left as is — restore it or move it aside",
            index.display()
        ))
    })?;
    let version = probe
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version > FORMAT_VERSION as u64 {
        return Err(Error::input(format!(
            "{}: written by a newer qsteer (format {version}, this one reads up to {FORMAT_VERSION})",
            index.display()
        )));
    }
    serde_json::from_value(probe).map_err(|e| {
        Error::input(format!(
            "{}: unexpected content in workspace index: {e}",
            index.display()
        ))
    })
}

#[derive(Debug, Clone)]
pub struct Workspace {
    dir: PathBuf,
    file: WorkspaceFile,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// qsteer's data directory: `$QSTEER_DATA_DIR`, else the platform's (e.g.
/// `~/.local/share/qsteer`).
pub fn qsteer_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("QSTEER_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "qsteer")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| Error::input("no home directory found; pass --workspace DIR"))
}

/// `<data dir>/workspaces/<model name>-<first 12 hex of its hash>`.
pub fn default_workspace_dir(model_name: &str, model_hash: &str) -> Result<PathBuf> {
    let short = &model_hash[..model_hash.len().min(12)];
    Ok(qsteer_data_dir()?
        .join("workspaces")
        .join(format!("{model_name}-{short}")))
}

impl Workspace {
    /// Reopen the workspace in `dir`, or create it with `model` as the base variant.
    pub fn open_or_create(dir: &Path, model: &Model, model_name: &str) -> Result<Workspace> {
        let index = dir.join(INDEX);
        // Two processes creating the same workspace: the second one opens the first's.
        let _lock = lock_index(dir)?;
        if index.exists() {
            let ws = Workspace::open(dir)?;
            let hash = model.content_hash();
            if ws.file.model_hash != hash {
                return Err(Error::input(format!(
                    "{}: this workspace belongs to another model ('{}'); pick another --workspace",
                    dir.display(),
                    ws.file.model_name
                )));
            }
            return Ok(ws);
        }
        Workspace::create(dir, model, model_name)
    }

    fn create(dir: &Path, model: &Model, model_name: &str) -> Result<Workspace> {
        fs::create_dir_all(dir.join("variants")).map_err(|e| Error::io(dir, e))?;
        fs::create_dir_all(dir.join("cache")).map_err(|e| Error::io(dir, e))?;
        fs::create_dir_all(dir.join("logs")).map_err(|e| Error::io(dir, e))?;
        let bytes = model.to_bytes();
        let model_file = "variants/0.onnx".to_string();
        write_atomic(&dir.join(&model_file), &bytes)?;
        let mut base = Variant::new(0, None, "base", model_file, bytes.len() as u64);
        base.notes = format!("imported from {}", model.source());
        let file = WorkspaceFile {
            format_version: FORMAT_VERSION,
            model_name: model_name.to_string(),
            model_hash: model.content_hash(),
            created: now(),
            settings: Settings::default(),
            variants: vec![base],
            slurm_jobs: Vec::new(),
        };
        let ws = Workspace {
            dir: dir.to_path_buf(),
            file,
        };
        ws.write_index()?;
        Ok(ws)
    }

    /// Open an existing workspace; a corrupt or newer index is a clear error and is left
    /// untouched on disk.
    pub fn open(dir: &Path) -> Result<Workspace> {
        Ok(Workspace {
            dir: dir.to_path_buf(),
            file: read_index(dir)?,
        })
    }

    /// Read the index again: what other processes (e.g. Slurm jobs) added shows. The
    /// index is replaced by rename, so a read never sees half a file and needs no lock.
    pub fn reload(&mut self) -> Result<()> {
        self.file = read_index(&self.dir)?;
        Ok(())
    }

    /// One read-modify-write of the index under the workspace lock: the index is re-read,
    /// `change` applied to it, and the result written before the lock is released. A
    /// failed change writes nothing.
    fn update<R>(&mut self, change: impl FnOnce(&mut Workspace) -> Result<R>) -> Result<R> {
        let _lock = lock_index(&self.dir)?;
        self.reload()?;
        let out = change(self)?;
        self.write_index()?;
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> &WorkspaceFile {
        &self.file
    }

    pub fn settings(&self) -> &Settings {
        &self.file.settings
    }

    /// Store the default trainer command template (checked by the caller) and save.
    /// Store the Slurm executor's defaults (the app's Slurm settings dialog) and save.
    pub fn set_slurm(&mut self, settings: SlurmSettings) -> Result<()> {
        self.update(|ws| {
            ws.file.settings.slurm = settings;
            Ok(())
        })
    }

    /// Store the default metric (checked by the caller; `None`: `auto`) and save.
    pub fn set_metric(&mut self, metric: Option<crate::metrics::MetricSpec>) -> Result<()> {
        self.update(|ws| {
            ws.file.settings.metric = metric;
            Ok(())
        })
    }

    /// The metric a job given `asked` scores with: `asked`, else the saved default, else
    /// `auto`.
    pub fn metric_for(
        &self,
        asked: Option<&crate::metrics::MetricSpec>,
    ) -> crate::metrics::MetricSpec {
        asked
            .or(self.file.settings.metric.as_ref())
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_trainer(&mut self, template: Option<String>) -> Result<()> {
        self.update(|ws| {
            ws.file.settings.trainer = template;
            Ok(())
        })
    }

    pub fn variants(&self) -> &[Variant] {
        &self.file.variants
    }

    pub fn variant(&self, id: u32) -> Option<&Variant> {
        self.file.variants.iter().find(|v| v.id == id)
    }

    fn variant_mut(&mut self, id: u32) -> Result<&mut Variant> {
        let dir = self.dir.display().to_string();
        self.file
            .variants
            .iter_mut()
            .find(|v| v.id == id)
            .ok_or_else(|| Error::input(format!("{dir}: no variant {id}")))
    }

    /// Absolute path of a variant's model file.
    pub fn model_path(&self, v: &Variant) -> PathBuf {
        self.dir.join(&v.model_file)
    }

    /// Write `workspace.json` atomically; callers hold the lock (see [`Self::update`]).
    fn write_index(&self) -> Result<()> {
        write_json_atomic(&self.dir.join(INDEX), &self.file)
    }

    /// Record the cost figures of a variant (MACs and params per sample).
    pub fn set_costs(&mut self, id: u32, macs: Option<u64>, params: Option<u64>) -> Result<()> {
        self.update(|ws| {
            let v = ws.variant_mut(id)?;
            v.macs = macs;
            v.params = params;
            Ok(())
        })
    }

    /// Record a variant's measured latency (replacing an older one).
    pub fn set_latency(&mut self, id: u32, latency: Latency) -> Result<()> {
        self.update(|ws| {
            ws.variant_mut(id)?.latency = Some(latency);
            Ok(())
        })
    }

    /// Give a variant a user tag (e.g. `picked`) unless it has it already.
    pub fn add_tag(&mut self, id: u32, tag: &str) -> Result<()> {
        self.update(|ws| {
            let v = ws.variant_mut(id)?;
            if !v.tags.iter().any(|t| t == tag) {
                v.tags.push(tag.to_string());
            }
            Ok(())
        })
    }

    /// Take a user tag off a variant (if it has it), and save.
    pub fn remove_tag(&mut self, id: u32, tag: &str) -> Result<()> {
        self.update(|ws| {
            ws.variant_mut(id)?.tags.retain(|t| t != tag);
            Ok(())
        })
    }

    /// Append an evaluation result to a variant and save.
    pub fn record_result(&mut self, id: u32, record: EvalRecord) -> Result<()> {
        self.update(|ws| {
            ws.variant_mut(id)?.results.push(record);
            Ok(())
        })
    }

    /// Add a child variant made by `step` from `parent`, saving its model file.
    pub fn add_variant(&mut self, parent: u32, step: &str, model: &Model) -> Result<u32> {
        let bytes = model.to_bytes();
        self.update(|ws| {
            if ws.variant(parent).is_none() {
                return Err(Error::input(format!(
                    "{}: no parent variant {parent}",
                    ws.dir.display()
                )));
            }
            // Under the lock: the id is the next one of the index as it is on disk now.
            let id = ws.file.variants.iter().map(|v| v.id).max().unwrap_or(0) + 1;
            let model_file = format!("variants/{id}.onnx");
            write_atomic(&ws.dir.join(&model_file), &bytes)?;
            ws.file.variants.push(Variant::new(
                id,
                Some(parent),
                step,
                model_file,
                bytes.len() as u64,
            ));
            Ok(id)
        })
    }

    /// Store a variant's quantization encodings (AIMET JSON) as `variants/<id>.encodings.json`.
    pub fn set_encodings(&mut self, id: u32, encodings: &serde_json::Value) -> Result<()> {
        let rel = format!("variants/{id}.encodings.json");
        write_json_atomic(&self.dir.join(&rel), encodings)?;
        self.update(|ws| {
            ws.variant_mut(id)?.encodings_file = Some(rel);
            Ok(())
        })
    }

    /// Record the quantsim settings a variant was made with.
    pub fn set_quantsim_settings(&mut self, id: u32, settings: &QuantsimSettings) -> Result<()> {
        self.update(|ws| {
            ws.variant_mut(id)?.quantsim = Some(settings.clone());
            Ok(())
        })
    }

    /// Write `value` as `variants/<id>.<kind>.json`; returns the relative path to record.
    fn write_variant_file<T: Serialize>(
        &mut self,
        id: u32,
        kind: &str,
        value: &T,
    ) -> Result<String> {
        // The variant is checked under the lock, by the update that records the file.
        let rel = format!("variants/{id}.{kind}.json");
        write_json_atomic(&self.dir.join(&rel), value)?;
        Ok(rel)
    }

    /// Read a variant's side file; a damaged one is an error naming it and `what` it holds.
    fn read_variant_file<T: serde::de::DeserializeOwned>(
        &self,
        rel: Option<String>,
        what: &str,
    ) -> Result<Option<T>> {
        let Some(rel) = rel else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::input(format!("{}: not {what}: {e}", path.display())))
    }

    /// Store a variant's latest quantization analysis as `variants/<id>.analysis.json`.
    pub fn set_analysis(&mut self, id: u32, analysis: &Analysis) -> Result<()> {
        let rel = self.write_variant_file(id, "analysis", analysis)?;
        self.update(|ws| {
            ws.variant_mut(id)?.analysis_file = Some(rel);
            Ok(())
        })
    }

    /// A variant's stored analysis; a damaged file is an error naming it.
    pub fn analysis(&self, id: u32) -> Result<Option<Analysis>> {
        let rel = self.variant(id).and_then(|v| v.analysis_file.clone());
        self.read_variant_file(rel, "a qsteer analysis")
    }

    /// Store the BN statistics of a variant's folded layers as `variants/<id>.bn_stats.json`.
    pub fn set_bn_stats(&mut self, id: u32, stats: &BnStats) -> Result<()> {
        let rel = self.write_variant_file(id, "bn_stats", stats)?;
        self.update(|ws| {
            ws.variant_mut(id)?.bn_stats_file = Some(rel);
            Ok(())
        })
    }

    /// A variant's BN statistics, if it has any; a damaged file is an error naming it.
    pub fn bn_stats(&self, id: u32) -> Result<Option<BnStats>> {
        let rel = self.variant(id).and_then(|v| v.bn_stats_file.clone());
        self.read_variant_file(rel, "qsteer BN statistics")
    }

    /// Store how compression made a variant as `variants/<id>.compress.json`.
    pub fn set_compression(&mut self, id: u32, record: &CompressionRecord) -> Result<()> {
        let rel = self.write_variant_file(id, "compress", record)?;
        self.update(|ws| {
            ws.variant_mut(id)?.compression_file = Some(rel);
            Ok(())
        })
    }

    /// A variant's compression record, if it has one; a damaged file is an error naming it.
    pub fn compression(&self, id: u32) -> Result<Option<CompressionRecord>> {
        let rel = self.variant(id).and_then(|v| v.compression_file.clone());
        self.read_variant_file(rel, "a qsteer compression record")
    }

    /// Record a job sent to Slurm (or its new state, if it is known already).
    pub fn record_slurm_job(&mut self, entry: SlurmJobEntry) -> Result<()> {
        self.update(|ws| {
            let jobs = &mut ws.file.slurm_jobs;
            match jobs.iter_mut().find(|j| j.slurm_id == entry.slurm_id) {
                Some(j) => *j = entry,
                None => jobs.push(entry),
            }
            Ok(())
        })
    }

    /// Append one JSON line to `logs/jobs.jsonl` (the job history).
    pub fn log_job(&self, entry: &serde_json::Value) -> Result<()> {
        let path = self.dir.join("logs").join("jobs.jsonl");
        fs::create_dir_all(self.dir.join("logs")).map_err(|e| Error::io(&path, e))?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // One write call per line keeps concurrent appenders from interleaving.
        let mut line = entry.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())
            .map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings written before the trainer template existed still load, and a saved
    /// template comes back.
    #[test]
    fn settings_without_a_trainer_load_and_a_trainer_round_trips() {
        let old: Settings =
            serde_json::from_str(r#"{"calibration_size": 100, "split_seed": 7}"#).unwrap();
        assert_eq!(old.trainer, None);
        assert_eq!(old.calibration_size, 100);
        let with = Settings {
            trainer: Some("train {input} {output}".into()),
            ..old
        };
        let back: Settings = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    use crate::metrics::Score;

    fn result(n: usize) -> EvalRecord {
        EvalRecord {
            dataset: format!("data-{n}"),
            dataset_fingerprint: String::new(),
            subset: "evaluation".into(),
            split: None,
            score: Score {
                accuracy: Some(0.5),
                top5_accuracy: None,
                agreement: None,
                sqnr_db: None,
                samples: n,
                ..Default::default()
            },
            seconds: 0.0,
            samples_per_second: 0.0,
            batch_size: 1,
            threads: 1,
            reference: None,
            when: 0,
        }
    }

    /// Writers with their own `Workspace` each (as separate processes have): every
    /// variant, result and tag lands, and no two variants share an id.
    #[test]
    fn concurrent_writers_lose_nothing_and_ids_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        let (writers, each) = (6, 4);
        std::thread::scope(|s| {
            for w in 0..writers {
                let (dir, model) = (dir.path(), &model);
                s.spawn(move || {
                    let mut ws = Workspace::open(dir).unwrap();
                    for k in 0..each {
                        let id = ws.add_variant(0, &format!("w{w}-{k}"), model).unwrap();
                        ws.record_result(id, result(w * 100 + k)).unwrap();
                        ws.add_tag(0, &format!("writer-{w}")).unwrap();
                    }
                });
            }
        });
        let ws = Workspace::open(dir.path()).unwrap();
        assert_eq!(ws.variants().len(), 1 + writers * each);
        let mut ids: Vec<u32> = ws.variants().iter().map(|v| v.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1 + writers * each, "variant ids repeat");
        for w in 0..writers {
            for k in 0..each {
                let v = ws
                    .variants()
                    .iter()
                    .find(|v| v.step == format!("w{w}-{k}"))
                    .unwrap_or_else(|| panic!("variant w{w}-{k} lost"));
                assert_eq!(v.results.len(), 1, "result of w{w}-{k}");
                assert_eq!(v.results[0].score.samples, w * 100 + k);
                assert!(ws.dir().join(&v.model_file).is_file());
            }
        }
        assert_eq!(ws.variant(0).unwrap().tags.len(), writers);
    }

    #[test]
    fn reload_shows_what_another_writer_added() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut mine = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        let mut other = Workspace::open(dir.path()).unwrap();
        let theirs = other.add_variant(0, "other", &model).unwrap();
        assert!(mine.variant(theirs).is_none());
        // A change of mine keeps theirs, and takes the next id.
        let id = mine.add_variant(0, "mine", &model).unwrap();
        assert_ne!(id, theirs);
        assert!(mine.variant(theirs).is_some());
        other.reload().unwrap();
        assert_eq!(other.variant(id).unwrap().step, "mine");
    }
}
