//! The workspace directory: `workspace.json` (variants, lineage, settings),
//! `variants/<id>.onnx`, `cache/`, `logs/jobs.jsonl`. Every write is atomic.
//!
//! Several processes may write one workspace at once (the app and Slurm jobs on other
//! nodes): every change takes the exclusive lock on `workspace.lock`, re-reads the index
//! under it and applies the change to what is on disk, so no writer drops another's
//! variants or results and variant ids stay unique.
//!
//! A new variant is recorded in one step ([`Workspace::transaction`]): its model and side
//! files are written first, then the index once, so a kill leaves either no trace in the
//! index or the complete variant. A new id is free in the index *and* on disk, so files
//! an index does not list (an index restored from a backup, or rebuilt) are never
//! overwritten; [`repair`] adopts them. docs/workspace.md lists the guarantees.

use super::variant::{EvalRecord, Variant};
use crate::compress::record::CompressionRecord;
use crate::fixes::BnStats;
use crate::fsutil::{json_bytes, lock_exclusive, write_atomic, write_json_atomic};
use crate::jobs::SlurmSettings;
use crate::model::Model;
use crate::quant::analysis::Analysis;
use crate::quant::simulate::QuantsimSettings;
use crate::runtime::Latency;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The per-sample input shapes of the data last used with this model: commands without
    /// data (export, encodings import) analyse the model at them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<usize>>>,
    /// The fixed input values the base model was specialised on (`sr=16000`, see
    /// `model::fixed_inputs`): commands given this workspace reuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_values: Option<String>,
    /// The metric jobs score with when they are not given one (`--save-metric`, the app's
    /// evaluation dialog); none: `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<crate::metrics::MetricSpec>,
    /// The training set last used to fine-tune (`--train-data`, the app's dialog); the
    /// app offers it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_data: Option<PathBuf>,
    /// The values each app dialog last launched with (`quantsim`, `sweep`, …), which it
    /// opens with next time. Opaque here: the app reads the fields it knows and ignores the
    /// rest, so values written by another version never stop a dialog opening.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dialogs: BTreeMap<String, serde_json::Value>,
    /// The app's current variant and A/B marks, which it opens with next time.
    #[serde(default, skip_serializing_if = "ViewMarks::is_empty")]
    pub view: ViewMarks,
}

/// Which variant the app shows and which two it compares (`settings.view`). Ids that no
/// longer name a variant are ignored when read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ViewMarks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<u32>,
}

impl ViewMarks {
    fn is_empty(&self) -> bool {
        *self == ViewMarks::default()
    }
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
            input_shapes: None,
            input_values: None,
            metric: None,
            train_data: None,
            dialogs: BTreeMap::new(),
            view: ViewMarks::default(),
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
    /// The file the user opened the model from (last opened), so messages about the base
    /// variant name it rather than the workspace's copy `variants/0.onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_source: Option<String>,
    #[serde(default)]
    pub settings: Settings,
    pub variants: Vec<Variant>,
    /// Jobs sent to Slurm from this workspace, so a restarted app can find them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slurm_jobs: Vec<SlurmJobEntry>,
    /// Local jobs run as detached processes (`qsteer run-job` in its own session), so a
    /// restarted app or `qsteer jobs --follow` can follow them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detached_jobs: Vec<DetachedJobEntry>,
}

/// A job run as a detached local process: which qsteer job, the process that runs it, and
/// its files under `detached/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetachedJobEntry {
    /// The qsteer job id in this workspace's journal.
    pub job: u64,
    /// What it does, for listings (the job's label).
    #[serde(default)]
    pub label: String,
    /// File stem under `detached/`: `<stem>.request.json`, `<stem>.out`, `<stem>.outcome.json`.
    pub stem: String,
    /// The process (and process group: it leads its own session).
    pub pid: u32,
    /// Its start time in clock ticks after boot (`/proc/<pid>/stat` field 22) and the boot it
    /// belongs to: together with the pid they tell the job's process from a later one that
    /// reuses the pid.
    pub start_time: u64,
    #[serde(default)]
    pub boot_id: String,
    pub submitted: u64,
    /// `running`, then `finished`, `failed`, `cancelled` or `interrupted` once seen to end.
    pub state: String,
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
    Ok(IndexLock(lock_exclusive(&dir.join(LOCK))?))
}

/// Read and check `workspace.json`; a corrupt or newer index is a clear error.
fn read_index(dir: &Path) -> Result<WorkspaceFile> {
    let index = dir.join(INDEX);
    // bytes, not a string: binary junk is corruption like any other, not an I/O error
    let bytes = fs::read(&index).map_err(|e| Error::io(&index, e))?;
    parse_index(&bytes).map_err(|bad| {
        let repair = format!(
            "it was left as is — restore it, or rebuild it from the variant files with \
             `qsteer workspace repair --workspace {}`",
            dir.display()
        );
        Error::input(match bad {
            BadIndex::Corrupt(e) => {
                format!(
                    "{}: corrupt workspace index ({e}); {repair}",
                    index.display()
                )
            }
            BadIndex::Unexpected(e) => format!(
                "{}: unexpected content in workspace index: {e}; {repair}",
                index.display()
            ),
            BadIndex::Newer(version) => format!(
                "{}: written by a newer qsteer (format {version}, this one reads up to \
                 {FORMAT_VERSION})",
                index.display()
            ),
        })
    })
}

/// Why an index could not be read: damaged (repair may rebuild it) or newer (never touched).
enum BadIndex {
    Corrupt(serde_json::Error),
    Unexpected(serde_json::Error),
    Newer(u64),
}

fn parse_index(bytes: &[u8]) -> std::result::Result<WorkspaceFile, BadIndex> {
    let probe: serde_json::Value = serde_json::from_slice(bytes).map_err(BadIndex::Corrupt)?;
    let version = probe
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version > FORMAT_VERSION as u64 {
        return Err(BadIndex::Newer(version));
    }
    serde_json::from_value(probe).map_err(BadIndex::Unexpected)
}

/// The variant id a file in `variants/` belongs to: `<id>.onnx`, `<id>.<kind>.json`, …
/// (temp files of an interrupted write start with a dot and belong to none).
pub(super) fn file_variant_id(name: &str) -> Option<u32> {
    let (id, rest) = name.split_once('.')?;
    if rest.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// The names of the files in `dir/variants` (none if it is missing).
pub(super) fn variant_file_names(dir: &Path) -> Result<Vec<String>> {
    let variants = dir.join("variants");
    let entries = match fs::read_dir(&variants) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&variants, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&variants, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[derive(Debug, Clone)]
pub struct Workspace {
    dir: PathBuf,
    file: WorkspaceFile,
    /// Inside [`Workspace::transaction`]: the files written so far (removed if it fails);
    /// changes are applied in memory and the index is written once at its end.
    txn: Option<Vec<PathBuf>>,
}

/// Read and decode the model file at `path`, naming it `label` in messages (a read error
/// names `path`). Used outside the workspace lock with a label taken under it.
pub fn load_model_as(path: &Path, label: &str) -> Result<Model> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    Model::from_bytes(&bytes, label)
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
            let mut ws = Workspace::open(dir)?;
            let hash = model.content_hash();
            if ws.file.model_hash != hash {
                return Err(Error::input(format!(
                    "{}: this workspace belongs to another model ('{}'); pick another --workspace",
                    dir.display(),
                    ws.file.model_name
                )));
            }
            // Opened from another file (moved, copied): name that one from now on.
            if ws.file.model_source.as_deref() != Some(model.source()) {
                ws.file.model_source = Some(model.source().to_string());
                ws.write_index()?;
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
        // A base left by an index that is gone (moved aside, deleted) is kept, never replaced.
        match fs::read(dir.join(&model_file)) {
            Ok(old) if old == bytes => {}
            Ok(_) => {
                return Err(Error::input(format!(
                    "{}: has no index but its {model_file} is another model; pick another \
                     --workspace, or rebuild its index with `qsteer workspace repair \
                     --workspace {}`",
                    dir.display(),
                    dir.display()
                )))
            }
            Err(_) => write_atomic(&dir.join(&model_file), &bytes)?,
        }
        let mut base = Variant::new(0, None, "base", model_file, bytes.len() as u64);
        base.notes = format!("imported from {}", model.source());
        let file = WorkspaceFile {
            format_version: FORMAT_VERSION,
            model_name: model_name.to_string(),
            model_hash: model.content_hash(),
            created: now(),
            model_source: Some(model.source().to_string()),
            settings: Settings::default(),
            variants: vec![base],
            slurm_jobs: Vec::new(),
            detached_jobs: Vec::new(),
        };
        let ws = Workspace {
            dir: dir.to_path_buf(),
            file,
            txn: None,
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
            txn: None,
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
    pub(super) fn update<R>(
        &mut self,
        change: impl FnOnce(&mut Workspace) -> Result<R>,
    ) -> Result<R> {
        if self.txn.is_some() {
            // Inside a transaction: it holds the lock and writes the index at its end.
            return change(self);
        }
        let _lock = lock_index(&self.dir)?;
        self.reload()?;
        let out = change(self)?;
        self.write_index()?;
        Ok(out)
    }

    /// Several changes as one: under the workspace lock, every change `changes` makes
    /// (variants, their files, results, costs) is applied to the index as it is on disk and
    /// the index written once, at the end. The files are written before the index, so a
    /// kill at any point leaves either none of it in the index or all of it (files it wrote
    /// before a kill stay unlisted, for [`repair`]). A failed transaction writes no index
    /// and removes the files it wrote. Nested transactions are part of the outer one.
    pub fn transaction<R>(
        &mut self,
        changes: impl FnOnce(&mut Workspace) -> Result<R>,
    ) -> Result<R> {
        if self.txn.is_some() {
            return changes(self);
        }
        let _lock = lock_index(&self.dir)?;
        self.reload()?;
        let before = self.file.clone();
        self.txn = Some(Vec::new());
        let out = changes(self);
        let written = self.txn.take().unwrap_or_default();
        let out = out.and_then(|r| self.write_index().map(|()| r));
        if out.is_err() {
            self.file = before;
            for f in written {
                let _ = fs::remove_file(f);
            }
        }
        out
    }

    /// Write a variant file atomically, noting it for the transaction if one is open.
    fn write_file(&mut self, path: PathBuf, bytes: &[u8]) -> Result<()> {
        write_atomic(&path, bytes)?;
        if let Some(written) = &mut self.txn {
            written.push(path);
        }
        Ok(())
    }

    /// The next variant id: above every id of the index and every id a file in
    /// `variants/` carries, so no file on disk is ever written over.
    fn next_id(&self) -> Result<u32> {
        let listed = self.file.variants.iter().map(|v| v.id).max().unwrap_or(0);
        let on_disk = variant_file_names(&self.dir)?
            .iter()
            .filter_map(|n| file_variant_id(n))
            .max()
            .unwrap_or(0);
        Ok(listed.max(on_disk) + 1)
    }

    /// Variants whose model file is in `variants/` but not in the index (an index restored
    /// from an older copy, or a new one): `qsteer workspace repair` adopts them.
    pub fn unlisted(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = variant_file_names(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter(|n| n.ends_with(".onnx"))
            .filter_map(|n| n.strip_suffix(".onnx").and_then(|id| id.parse().ok()))
            .filter(|id| self.variant(*id).is_none())
            .collect();
        ids.sort();
        ids
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

    /// Remember the data's per-sample input shapes (see `Settings::input_shapes`); writes
    /// only when they changed.
    pub fn set_input_shapes(&mut self, shapes: &[Vec<usize>]) -> Result<()> {
        if self.file.settings.input_shapes.as_deref() == Some(shapes) {
            return Ok(());
        }
        self.update(|ws| {
            ws.file.settings.input_shapes = Some(shapes.to_vec());
            Ok(())
        })
    }

    /// Remember the input values the base model was specialised on; writes only when they
    /// changed.
    pub fn set_input_values(&mut self, values: Option<String>) -> Result<()> {
        if self.file.settings.input_values == values {
            return Ok(());
        }
        self.update(|ws| {
            ws.file.settings.input_values = values;
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

    /// Remember the training set (see `Settings::train_data`); writes only when it changed.
    pub fn set_train_data(&mut self, dir: Option<PathBuf>) -> Result<()> {
        if self.file.settings.train_data == dir {
            return Ok(());
        }
        self.update(|ws| {
            ws.file.settings.train_data = dir;
            Ok(())
        })
    }

    /// Remember the values a dialog launched with (see `Settings::dialogs`); writes only
    /// when they changed.
    pub fn set_dialog(&mut self, dialog: &str, values: serde_json::Value) -> Result<()> {
        if self.file.settings.dialogs.get(dialog) == Some(&values) {
            return Ok(());
        }
        self.update(|ws| {
            ws.file.settings.dialogs.insert(dialog.to_string(), values);
            Ok(())
        })
    }

    /// Take variant `id` out of the index and the view marks (the caller checked it may go).
    pub(super) fn remove_from_index(&mut self, id: u32) {
        self.file.variants.retain(|v| v.id != id);
        let view = &mut self.file.settings.view;
        for slot in [&mut view.current, &mut view.a, &mut view.b] {
            if *slot == Some(id) {
                *slot = None;
            }
        }
    }

    /// Remember the app's current variant; writes only when it changed.
    pub fn set_current(&mut self, id: u32) -> Result<()> {
        if self.file.settings.view.current == Some(id) {
            return Ok(());
        }
        self.update(|ws| {
            ws.variant_mut(id)?;
            ws.file.settings.view.current = Some(id);
            Ok(())
        })
    }

    /// Remember the app's A and B marks; writes only when they changed.
    pub fn set_marks(&mut self, a: Option<u32>, b: Option<u32>) -> Result<()> {
        let view = &self.file.settings.view;
        if (view.a, view.b) == (a, b) {
            return Ok(());
        }
        self.update(|ws| {
            ws.file.settings.view.a = a;
            ws.file.settings.view.b = b;
            Ok(())
        })
    }

    /// The stored view marks, each kept only while it names a variant.
    pub fn view_marks(&self) -> ViewMarks {
        let known = |id: Option<u32>| id.filter(|&i| self.variant(i).is_some());
        let v = &self.file.settings.view;
        ViewMarks {
            current: known(v.current),
            a: known(v.a),
            b: known(v.b),
        }
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

    pub(super) fn variant_mut(&mut self, id: u32) -> Result<&mut Variant> {
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

    /// How messages name the model file at `path`: the base variant's copy
    /// (`variants/0.onnx`) by the file the user opened the model from, any other by its path.
    pub fn model_label(&self, path: &Path) -> String {
        let base = self
            .file
            .variants
            .iter()
            .find(|v| v.parent.is_none())
            .map(|v| self.model_path(v));
        match &self.file.model_source {
            Some(source) if base.as_deref() == Some(path) => source.clone(),
            _ => path.display().to_string(),
        }
    }

    /// Load the model file at `path` (a variant's), named as [`Self::model_label`] says in
    /// every message about it; a read error still names `path`.
    pub fn load_model(&self, path: &Path) -> Result<Model> {
        load_model_as(path, &self.model_label(path))
    }

    /// Load variant `id`'s model (see [`Self::load_model`]).
    pub fn load_variant_model(&self, id: u32) -> Result<Model> {
        let v = self
            .variant(id)
            .ok_or_else(|| Error::input(format!("{}: no variant {id}", self.dir.display())))?;
        self.load_model(&self.model_path(v))
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

    /// Record a variant's size in bytes (a quantized one's as its runtime stores it).
    pub fn set_size(&mut self, id: u32, bytes: u64) -> Result<()> {
        self.update(|ws| {
            ws.variant_mut(id)?.size_bytes = bytes;
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
            // Under the lock: the id is the next one of the index as it is on disk now
            // and free among the files.
            let id = ws.next_id()?;
            let model_file = format!("variants/{id}.onnx");
            ws.write_file(ws.dir.join(&model_file), &bytes)?;
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
        let rel = self.write_variant_file(id, "encodings", encodings)?;
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
    pub(crate) fn write_variant_file<T: Serialize>(
        &mut self,
        id: u32,
        kind: &str,
        value: &T,
    ) -> Result<String> {
        // The variant is checked under the lock, by the update that records the file.
        let rel = format!("variants/{id}.{kind}.json");
        let path = self.dir.join(&rel);
        let bytes = json_bytes(&path, value)?;
        self.write_file(path, &bytes)?;
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

    /// Record a detached job (or its new state, if it is known already).
    pub fn record_detached_job(&mut self, entry: DetachedJobEntry) -> Result<()> {
        self.update(|ws| {
            let jobs = &mut ws.file.detached_jobs;
            match jobs.iter_mut().find(|j| j.stem == entry.stem) {
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

/// What [`repair`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    pub workspace: PathBuf,
    /// The index could not be read (or was missing) and was rebuilt from the files.
    pub rebuilt: bool,
    /// Where the damaged index was moved (never deleted).
    pub damaged_index_moved_to: Option<PathBuf>,
    /// Variants the index did not list, added from their files.
    pub adopted: Vec<Adopted>,
    /// Side files of listed variants that their entry did not name, now named.
    pub attached: Vec<String>,
    /// Listed variants whose model file is gone (left listed: their results stay).
    pub missing_model_files: Vec<u32>,
    /// Files in `variants/` that belong to no variant (side files without a model file,
    /// files of other names); left as they are.
    pub unknown_files: Vec<String>,
}

impl RepairReport {
    /// Whether anything was changed.
    pub fn changed(&self) -> bool {
        self.rebuilt || !self.adopted.is_empty() || !self.attached.is_empty()
    }
}

/// A variant re-adopted from its files.
#[derive(Debug, Clone, Serialize)]
pub struct Adopted {
    pub id: u32,
    pub model_file: String,
    /// The side files found with it (encodings, compression record, BN statistics, …).
    pub files: Vec<String>,
    /// What its files cannot tell (e.g. `parent`, `step`, `scores`).
    pub unknown: Vec<&'static str>,
}

/// The side files a variant's entry names, by the `<kind>` of `variants/<id>.<kind>.json`.
const SIDE_FILES: [&str; 4] = ["encodings", "analysis", "bn_stats", "compress"];

fn side_file_slot<'a>(v: &'a mut Variant, kind: &str) -> Option<&'a mut Option<String>> {
    match kind {
        "encodings" => Some(&mut v.encodings_file),
        "analysis" => Some(&mut v.analysis_file),
        "bn_stats" => Some(&mut v.bn_stats_file),
        "compress" => Some(&mut v.compression_file),
        _ => None,
    }
}

/// Rebuild or extend the index of the workspace in `dir` from the files in `variants/`:
/// a damaged index is moved aside (`workspace.json.damaged-<time>`) and a new one made
/// (its model: `model`, else `variants/0.onnx`); every `variants/<id>.onnx` the index does
/// not list is adopted with the side files found next to it (parent, step, settings and
/// scores unknown, tagged `recovered`); side files of listed variants that their entry
/// does not name are attached. Nothing is deleted. An index written by a newer qsteer is
/// refused, untouched.
pub fn repair(dir: &Path, model: Option<(&Model, &str)>) -> Result<RepairReport> {
    if !dir.join(INDEX).exists() && !dir.join("variants").is_dir() {
        return Err(Error::input(format!(
            "{}: no workspace here (neither {INDEX} nor variants/)",
            dir.display()
        )));
    }
    let _lock = lock_index(dir)?;
    let mut report = RepairReport {
        workspace: dir.to_path_buf(),
        ..RepairReport::default()
    };
    let index = dir.join(INDEX);
    let existing = match fs::read(&index) {
        Ok(bytes) => match parse_index(&bytes) {
            Ok(file) => Some(file),
            Err(BadIndex::Newer(_)) => return Err(read_index(dir).unwrap_err()),
            Err(_) => {
                let aside = free_name(dir, &format!("{INDEX}.damaged-{}", now()));
                fs::rename(&index, &aside).map_err(|e| Error::io(&index, e))?;
                report.damaged_index_moved_to = Some(aside);
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&index, e)),
    };
    let mut file = match existing {
        Some(file) => file,
        None => {
            report.rebuilt = true;
            fresh_index(dir, model)?
        }
    };
    for d in ["variants", "cache", "logs"] {
        fs::create_dir_all(dir.join(d)).map_err(|e| Error::io(dir.join(d), e))?;
    }
    let names = variant_file_names(dir)?;
    let mut ids: Vec<u32> = names.iter().filter_map(|n| file_variant_id(n)).collect();
    ids.sort();
    ids.dedup();
    for name in &names {
        if !name.starts_with('.') && file_variant_id(name).is_none() {
            report.unknown_files.push(format!("variants/{name}"));
        }
    }
    for id in ids {
        let own: Vec<&String> = names
            .iter()
            .filter(|n| file_variant_id(n) == Some(id))
            .collect();
        let model_file = format!("variants/{id}.onnx");
        let has_model = own.iter().any(|n| **n == format!("{id}.onnx"));
        let listed = file.variants.iter().any(|v| v.id == id);
        if !listed && !has_model {
            report
                .unknown_files
                .extend(own.iter().map(|n| format!("variants/{n}")));
            continue;
        }
        if !listed {
            let path = dir.join(&model_file);
            let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mut v = Variant::new(id, None, "recovered", model_file.clone(), meta.len());
            v.created = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(now, |d| d.as_secs());
            v.tags.push("recovered".into());
            file.variants.push(v);
        }
        let v = file
            .variants
            .iter_mut()
            .find(|v| v.id == id)
            .expect("listed or just adopted");
        let mut found = Vec::new();
        for kind in SIDE_FILES {
            let rel = format!("variants/{id}.{kind}.json");
            let readable = fs::read(dir.join(&rel))
                .ok()
                .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
            let slot = side_file_slot(v, kind).expect("a known kind");
            if readable && slot.is_none() {
                *slot = Some(rel.clone());
                found.push(rel);
            }
        }
        if listed {
            report.attached.extend(found);
            continue;
        }
        // Others (e.g. AdaRound's frozen encodings) are kept next to it, unlisted.
        let files: Vec<String> = own
            .iter()
            .filter(|n| n.as_str() != format!("{id}.onnx"))
            .map(|n| format!("variants/{n}"))
            .collect();
        let mut unknown = vec!["parent", "step", "scores"];
        if v.encodings_file.is_some() {
            unknown.push("quantsim settings");
        }
        v.notes = format!(
            "recovered by `qsteer workspace repair` from its files; unknown: {}",
            unknown.join(", ")
        );
        report.adopted.push(Adopted {
            id,
            model_file,
            files,
            unknown,
        });
    }
    for v in &file.variants {
        if !dir.join(&v.model_file).is_file() {
            report.missing_model_files.push(v.id);
        }
    }
    file.variants.sort_by_key(|v| v.id);
    if report.changed() {
        write_json_atomic(&index, &file)?;
    }
    Ok(report)
}

/// A new index for `dir`: its model is `model`, else the one in `variants/0.onnx`.
fn fresh_index(dir: &Path, model: Option<(&Model, &str)>) -> Result<WorkspaceFile> {
    let base_rel = "variants/0.onnx".to_string();
    let base_path = dir.join(&base_rel);
    let (hash, name, size, source) = match model {
        Some((model, name)) => {
            let bytes = model.to_bytes();
            match fs::read(&base_path) {
                Ok(old) if old != bytes => {
                    return Err(Error::input(format!(
                        "{}: is not the model in {} — this workspace belongs to another model",
                        model.source(),
                        base_path.display()
                    )))
                }
                Ok(_) => {}
                Err(_) => write_atomic(&base_path, &bytes)?,
            }
            (
                model.content_hash(),
                name.to_string(),
                bytes.len() as u64,
                model.source().to_string(),
            )
        }
        None => {
            if !base_path.is_file() {
                return Err(Error::input(format!(
                    "{}: no index and no base model ({base_rel}); name the model: `qsteer \\
                     workspace repair MODEL --workspace {}`",
                    dir.display(),
                    dir.display()
                )));
            }
            let base = Model::load(&base_path)?;
            // `<model name>-<12 hex>`, the default workspace's name, gives the model's name.
            let dir_name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = match dir_name.rsplit_once('-') {
                Some((stem, hex)) if hex.len() == 12 && !stem.is_empty() => stem.to_string(),
                _ => "model".to_string(),
            };
            let size = fs::metadata(&base_path).map_or(0, |m| m.len());
            (
                base.content_hash(),
                name,
                size,
                base_path.display().to_string(),
            )
        }
    };
    let mut base = Variant::new(0, None, "base", base_rel, size);
    base.notes = format!("imported from {source}; index rebuilt by `qsteer workspace repair`");
    Ok(WorkspaceFile {
        format_version: FORMAT_VERSION,
        model_name: name,
        model_hash: hash,
        created: now(),
        model_source: None,
        settings: Settings::default(),
        variants: vec![base],
        slurm_jobs: Vec::new(),
        detached_jobs: Vec::new(),
    })
}

/// `dir/name`, or `dir/name.<n>` for the first n that is free.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{name}.{n}")))
        .find(|p| !p.exists())
        .expect("a free name")
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
        // …nor the dialogs' remembered values.
        assert!(old.dialogs.is_empty());
        let with = Settings {
            trainer: Some("train {input} {output}".into()),
            ..old
        };
        let back: Settings = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    /// The app's current variant and A/B marks survive a reopen; settings written before
    /// they existed load without them; a mark naming a variant that is gone reads as none.
    #[test]
    fn view_marks_persist_and_older_settings_load() {
        let old: Settings =
            serde_json::from_str(r#"{"calibration_size": 100, "split_seed": 7}"#).unwrap();
        assert_eq!(old.view, ViewMarks::default());
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        let child = ws.add_variant(0, "copy", &model).unwrap();
        ws.set_current(child).unwrap();
        ws.set_marks(Some(child), Some(0)).unwrap();
        assert!(ws.set_current(99).is_err(), "no variant 99");
        let again = Workspace::open(dir.path()).unwrap();
        let want = ViewMarks {
            current: Some(child),
            a: Some(child),
            b: Some(0),
        };
        assert_eq!(again.view_marks(), want);
        let text = fs::read_to_string(dir.path().join(INDEX)).unwrap();
        assert!(text.contains("\"view\""), "{text}");
        // A stored id that names no variant (an index edited by hand) is dropped on read.
        let mut edited: WorkspaceFile = serde_json::from_str(&text).unwrap();
        edited.settings.view.a = Some(42);
        write_json_atomic(&dir.path().join(INDEX), &edited).unwrap();
        let read = Workspace::open(dir.path()).unwrap().view_marks();
        assert_eq!((read.current, read.a, read.b), (Some(child), None, Some(0)));
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

    /// Messages about the base variant name the file the user opened, not `variants/0.onnx`;
    /// a copy opened from elsewhere is named from then on; other variants keep their path.
    #[test]
    fn the_base_variant_is_named_after_the_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let user = files.path().join("model.onnx");
        fs::copy(&sample, &user).unwrap();
        let model = Model::load(&user).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "model").unwrap();
        let base = ws.load_variant_model(0).unwrap();
        assert_eq!(base.source(), user.display().to_string());
        // An analysis error of the base names the user's file.
        let e = crate::runtime::CompiledModel::compile(&base, &[vec![3, 5, 5]], 1, &[])
            .err()
            .expect("wrong input shape");
        assert!(e.to_string().contains("model.onnx"), "{e}");
        assert!(!e.to_string().contains("variants/0.onnx"), "{e}");
        let child = ws.add_variant(0, "copy", &model).unwrap();
        assert!(ws
            .load_variant_model(child)
            .unwrap()
            .source()
            .ends_with(&format!("variants/{child}.onnx")));
        // Reopened (another process) and from a moved copy.
        let again = Workspace::open(dir.path()).unwrap();
        assert_eq!(
            again.model_label(&again.model_path(again.variant(0).unwrap())),
            user.display().to_string()
        );
        let moved = files.path().join("moved.onnx");
        fs::rename(&user, &moved).unwrap();
        let model = Model::load(&moved).unwrap();
        let ws = Workspace::open_or_create(dir.path(), &model, "model").unwrap();
        assert_eq!(
            ws.load_variant_model(0).unwrap().source(),
            moved.display().to_string()
        );
        assert_eq!(
            Workspace::open(dir.path())
                .unwrap()
                .file()
                .model_source
                .as_deref(),
            Some(moved.to_str().unwrap())
        );
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

    /// A transaction's changes land in one index write, or (when it fails) not at all and
    /// without its files; a reader never sees the variant half recorded.
    #[test]
    fn a_transaction_records_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        let encodings = serde_json::json!({"version": "1.0.0"});
        let failed = ws.transaction(|ws| {
            let id = ws.add_variant(0, "quantsim", &model)?;
            ws.set_encodings(id, &encodings)?;
            // Mid-transaction, the index on disk does not list it yet.
            assert_eq!(Workspace::open(dir.path()).unwrap().variants().len(), 1);
            Err::<(), _>(Error::runtime("killed"))
        });
        assert!(failed.is_err());
        assert_eq!(ws.variants().len(), 1);
        assert_eq!(Workspace::open(dir.path()).unwrap().variants().len(), 1);
        let left: Vec<_> = fs::read_dir(dir.path().join("variants")).unwrap().collect();
        assert_eq!(left.len(), 1, "the failed transaction's files are removed");

        let id = ws
            .transaction(|ws| {
                let id = ws.add_variant(0, "quantsim", &model)?;
                ws.set_encodings(id, &encodings)?;
                ws.record_result(id, result(7))?;
                Ok(id)
            })
            .unwrap();
        let on_disk = Workspace::open(dir.path()).unwrap();
        let v = on_disk.variant(id).unwrap();
        assert!(v.encodings_file.is_some() && v.results.len() == 1);
    }

    /// New ids skip every id a file in `variants/` carries, listed or not.
    #[test]
    fn new_ids_never_take_a_file_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        fs::write(dir.path().join("variants/4.compress.json"), b"{}").unwrap();
        fs::write(dir.path().join("variants/.7.onnx.tmp-1-0"), b"").unwrap();
        fs::write(dir.path().join("variants/notes.txt"), b"").unwrap();
        assert_eq!(ws.add_variant(0, "x", &model).unwrap(), 5);
        assert_eq!(ws.unlisted(), Vec::<u32>::new());
        fs::write(dir.path().join("variants/9.onnx"), b"").unwrap();
        assert_eq!(ws.unlisted(), vec![9]);
        assert_eq!(ws.add_variant(0, "y", &model).unwrap(), 10);
        assert_eq!(file_variant_id("12.bn_stats.json"), Some(12));
        assert_eq!(file_variant_id("12"), None);
        assert_eq!(file_variant_id("a1.onnx"), None);
    }

    /// Repair adopts unlisted variants with their side files, attaches side files an entry
    /// does not name, and leaves an index of a newer qsteer alone.
    #[test]
    fn repair_adopts_and_attaches_and_refuses_a_newer_index() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        let one = ws.add_variant(0, "one", &model).unwrap();
        // Killed between the model and the rest, before transactions: files unlisted.
        let v = dir.path().join("variants");
        fs::copy(v.join("1.onnx"), v.join("2.onnx")).unwrap();
        fs::write(v.join("2.encodings.json"), b"{\"version\": \"1.0.0\"}").unwrap();
        fs::write(v.join("2.adaround.encodings.json"), b"{}").unwrap();
        fs::write(v.join(format!("{one}.encodings.json")), b"{}").unwrap();
        fs::write(v.join("3.compress.json"), b"{}").unwrap();
        let r = repair(dir.path(), None).unwrap();
        assert!(!r.rebuilt && r.changed());
        assert_eq!(r.adopted.len(), 1);
        assert_eq!(r.adopted[0].id, 2);
        assert!(r.adopted[0].unknown.contains(&"quantsim settings"));
        assert_eq!(r.attached, vec!["variants/1.encodings.json".to_string()]);
        assert_eq!(
            r.unknown_files,
            vec!["variants/3.compress.json".to_string()]
        );
        let ws = Workspace::open(dir.path()).unwrap();
        let two = ws.variant(2).unwrap();
        assert_eq!(
            two.encodings_file.as_deref(),
            Some("variants/2.encodings.json")
        );
        assert_eq!((two.parent, two.step.as_str()), (None, "recovered"));
        assert!(ws.variant(1).unwrap().encodings_file.is_some());
        assert!(!repair(dir.path(), None).unwrap().changed());

        let newer = b"{\"format_version\": 999, \"variants\": []}";
        fs::write(dir.path().join(INDEX), newer).unwrap();
        assert!(repair(dir.path(), None).is_err());
        assert_eq!(fs::read(dir.path().join(INDEX)).unwrap(), newer);
    }
}
