//! The Slurm executor: a job runs as a batch job that runs the serialized job on a node
//! against this workspace (`qsteer run-job slurm/<stem>.request.json`), so every job kind
//! can run there and the node runs exactly the job the front end asked for. Submit with
//! `sbatch --parsable`, follow the state with `scontrol`/`sacct -c`, stream the output
//! file into the job's log and progress, `scancel` on cancel, and at the end read the
//! node's JSON document and reload the workspace so the node's new variant shows.

mod ctl;

pub use ctl::{client_installed, partitions};
pub(crate) mod output;
mod script;

use super::exec::JobCtx;
use super::lock;
use crate::experiment::{now, SlurmJobEntry, Workspace};
use crate::fsutil::{claim_unique_stem, write_atomic};
use crate::jobs::event::{Partial, SlurmState};
use crate::jobs::{summary_variant, JobKind, JobRequest, SlurmSettings};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Looks at the job's state that may fail in a row (slurmctld restarting) before the job
/// counts as lost.
const LOST_AFTER: u32 = 30;
/// How long a cancelled job may take to end after `scancel` (Slurm's KillWait is 30 s
/// by default).
const CANCEL_GRACE: Duration = Duration::from_secs(180);

struct Files {
    dir: PathBuf,
    stem: String,
}

impl Files {
    fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.stem))
    }
}

/// Run the job through Slurm and wait for it; the node's summary with a `slurm` object
/// (job id, state, node, queue seconds) added.
pub(crate) fn run(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    settings: &SlurmSettings,
) -> Result<Value> {
    let ws_dir = lock(workspace).dir().to_path_buf();
    let ws_dir = std::path::absolute(&ws_dir).map_err(|e| Error::io(&ws_dir, e))?;
    let files = claim_files(&ws_dir, ctx)?;
    if let Some(note) = local_filesystem_note(&ws_dir) {
        ctx.log(note);
    }
    let args = ship_request(ctx.kind, &ws_dir, &files, settings.cpus)?;
    let binary = match &settings.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| Error::runtime(format!("cannot find qsteer's own binary: {e}")))?,
    };
    if let Some(array) = dictionary_array(ctx.kind, settings) {
        fill_on_array(ctx, workspace, &files, &binary, &args, array, settings)?;
    }
    let text = script::batch_script(
        &binary,
        &args,
        &ws_dir,
        &files.stem,
        &ctx.kind.label(),
        settings,
        None,
    )?;
    let script = files.path("sh");
    write_atomic(&script, text.as_bytes())?;
    let slurm_id = ctl::sbatch(&script, &settings.extra_args)?;
    let submitted = Instant::now();
    // Recorded before it is announced: whoever sees the line (a user, a test that kills
    // this process) can count on a rerun finding the job in the workspace.
    let mut entry = pending_entry(ctx, &slurm_id, &files.stem, Some(ctx.kind.clone()));
    record(ctx, workspace, &entry);
    ctx.partial(Partial::Slurm {
        slurm: SlurmState {
            job_id: slurm_id.clone(),
            state: "PENDING".into(),
            ..Default::default()
        },
    });
    ctx.log(format!(
        "slurm: submitted job {slurm_id} ({}); output {}",
        script.display(),
        files.path("out").display()
    ));
    let watched = watch(ctx, &slurm_id, &files, settings, Some(submitted));
    if let Ok(w) = &watched {
        entry.state = w.info.state.clone();
        record(ctx, workspace, &entry);
    }
    // The node may have added variants even if the job failed later on.
    if let Err(e) = lock(workspace).reload() {
        ctx.log(format!("warning: could not reload the workspace: {e}"));
    }
    let w = watched?;
    finish(&files, &slurm_id, w)
}

/// Write the job as a request file beside its script and return the node command's
/// arguments: the request run headless, its summary as one JSON document on stdout,
/// JSON-lines events on stderr, and no journal entry of its own (this process journals
/// the job). `cpus` caps the job's threads at the allocation's.
fn ship_request(
    kind: &JobKind,
    ws_dir: &Path,
    files: &Files,
    cpus: Option<u32>,
) -> Result<Vec<String>> {
    if matches!(kind, JobKind::SlurmFollow { .. }) {
        return Err(Error::input(
            "following a Slurm job runs where its submitter runs, not on Slurm",
        ));
    }
    let job = kind.clone().with_threads_at_most(cpus);
    let request = files.path("request.json");
    JobRequest::new(ws_dir.to_path_buf(), job).save(&request)?;
    Ok([
        "run-job",
        &request.display().to_string(),
        "--summary",
        "--json",
        "--progress",
        "jsonl",
        "--no-journal",
    ]
    .map(str::to_string)
    .to_vec())
}

/// The array job a greedy compress job's dictionary is filled by first, if the settings
/// ask for one (two tasks or more).
fn dictionary_array(kind: &JobKind, settings: &SlurmSettings) -> Option<script::ArraySpec> {
    let greedy = matches!(
        kind,
        JobKind::Compress {
            target: Some(_),
            ..
        }
    );
    let tasks = settings.array_tasks.filter(|&n| n >= 2 && greedy)?;
    Some(script::ArraySpec {
        tasks,
        throttle: settings.array_throttle,
    })
}

/// Fill the eval-score dictionary with an array job (task I computes share I of N into its
/// own cache part file) and wait until every task has ended. A task that failed leaves its
/// share to the compress job, which computes whatever the cache lacks.
fn fill_on_array(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    files: &Files,
    binary: &Path,
    args: &[String],
    array: script::ArraySpec,
    settings: &SlurmSettings,
) -> Result<()> {
    let ws_dir = files.dir.parent().unwrap_or(&files.dir).to_path_buf();
    let stem = format!("{}-array", files.stem);
    let label = format!("{} (dictionary shares)", ctx.kind.label());
    let text = script::batch_script(binary, args, &ws_dir, &stem, &label, settings, Some(array))?;
    let script = files.dir.join(format!("{stem}.sh"));
    write_atomic(&script, text.as_bytes())?;
    let id = ctl::sbatch(&script, &settings.extra_args)?;
    ctx.log(format!(
        "slurm: submitted array job {id} ({} tasks{}) for the eval-score dictionary; outputs {}",
        array.tasks,
        array
            .throttle
            .map(|t| format!(", at most {t} at once"))
            .unwrap_or_default(),
        files.dir.join(format!("{stem}-<task>.out")).display()
    ));
    // The shares are not a job to take over: a rerun's compress job computes what is missing.
    let mut entry = pending_entry(ctx, &id, &stem, None);
    record(ctx, workspace, &entry);
    let mut poll = Poller::new(ctx, &id, settings);
    let mut shown = String::new();
    loop {
        poll.scancel_if_cancelled()?;
        let left = ctl::array_tasks_left(&id)?;
        let state = if left.is_empty() {
            "ENDED"
        } else if left.iter().any(|s| s == "RUNNING") {
            "RUNNING"
        } else {
            "PENDING"
        };
        if state != shown {
            ctx.partial(Partial::Slurm {
                slurm: SlurmState {
                    job_id: id.to_string(),
                    state: state.to_string(),
                    ..Default::default()
                },
            });
            shown = state.to_string();
        }
        let done = (array.tasks as usize).saturating_sub(left.len());
        ctx.progress(done, array.tasks as usize, "dictionary array tasks ended");
        if left.is_empty() {
            break;
        }
        poll.check_grace("still has tasks")?;
        poll.nap();
    }
    let cancelled = poll.scancel_sent();
    entry.state = if cancelled { "CANCELLED" } else { "COMPLETED" }.into();
    record(ctx, workspace, &entry);
    if cancelled {
        return Err(Error::Cancelled);
    }
    let filled = (0..array.tasks)
        .filter(|i| files.dir.join(format!("{stem}-{i}.json")).is_file())
        .count();
    ctx.log(format!(
        "slurm: array job {id} ended: {filled} of {} tasks filled their share; the compress \
         job computes whatever is missing",
        array.tasks
    ));
    Ok(())
}

/// Follow a Slurm job submitted by an earlier run (`JobKind::SlurmFollow`) to its end, as
/// [`run`] would have: its output into the log, its state recorded, the workspace
/// reloaded, the node's summary (or the failure) as the result.
pub(crate) fn follow(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<Value> {
    let JobKind::SlurmFollow {
        slurm_id,
        stem,
        job,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the Slurm follower was handed another kind of job",
        ));
    };
    let (ws_dir, settings, entry) = {
        let ws = lock(workspace);
        let entry = (ws.file().slurm_jobs.iter())
            .find(|j| &j.slurm_id == slurm_id)
            .cloned();
        (ws.dir().to_path_buf(), ws.settings().slurm.clone(), entry)
    };
    let files = Files {
        dir: ws_dir.join("slurm"),
        stem: stem.clone(),
    };
    ctx.log(format!(
        "slurm: following job {slurm_id} again (submitted by job #{job}; output {})",
        files.path("out").display()
    ));
    let watched = watch(ctx, slurm_id, &files, &settings, None);
    if let (Ok(w), Some(mut entry)) = (&watched, entry) {
        entry.state = w.info.state.clone();
        record(ctx, workspace, &entry);
    }
    if let Err(e) = lock(workspace).reload() {
        ctx.log(format!("warning: could not reload the workspace: {e}"));
    }
    finish(&files, slurm_id, watched?)
}

/// The variant an earlier Slurm job of exactly this `kind` made or is making (its
/// submitter stopped before it ended): read from its JSON document, or followed to its end
/// now. None when there is no such job, or it ended without a result: submit anew.
pub(crate) fn adopt(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    kind: &JobKind,
) -> Option<Result<u32>> {
    let (entry, ws_dir) = {
        let ws = lock(workspace);
        let entry = (ws.file().slurm_jobs.iter())
            .rev()
            .find(|j| j.kind.as_ref() == Some(kind))
            .cloned()?;
        (entry, ws.dir().to_path_buf())
    };
    let variant_of = |summary: &Value| {
        summary_variant(summary, "variant").filter(|&v| lock(workspace).variant(v).is_some())
    };
    let doc = ws_dir.join("slurm").join(format!("{}.json", entry.stem));
    if let Some(id) = fs::read(&doc)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .as_ref()
        .and_then(variant_of)
    {
        ctx.log(format!(
            "slurm: job {} made variant {id} for this before; reusing it",
            entry.slurm_id
        ));
        return Some(Ok(id));
    }
    if ctl::state_is_final(&entry.state) {
        return None;
    }
    let follower = JobKind::SlurmFollow {
        slurm_id: entry.slurm_id.clone(),
        stem: entry.stem.clone(),
        job: entry.job,
    };
    let label = format!("slurm job {} (submitted before)", entry.slurm_id);
    Some(
        follow(&ctx.step(&follower, &label), workspace).and_then(|summary| {
            variant_of(&summary).ok_or_else(|| {
                Error::runtime(format!(
                    "slurm job {}: its result names no variant of this workspace",
                    entry.slurm_id
                ))
            })
        }),
    )
}

/// The Slurm jobs of the workspace not seen to end: what a restarted app or
/// `qsteer slurm-jobs --follow` follows again.
pub fn unfinished(ws: &Workspace) -> Vec<JobKind> {
    (ws.file().slurm_jobs.iter())
        // A dictionary array's tasks are followed by the compress job after it (which
        // computes any share they did not write), not one by one.
        .filter(|j| !ctl::state_is_final(&j.state) && !j.stem.ends_with("-array"))
        .map(|j| JobKind::SlurmFollow {
            slurm_id: j.slurm_id.clone(),
            stem: j.stem.clone(),
            job: j.job,
        })
        .collect()
}

/// Filesystem types that are one machine's own (`stat -f -c %T`); a workspace on one of
/// them is seen by a node only if the node is this machine.
const LOCAL_FILESYSTEMS: [&str; 8] = [
    "tmpfs",
    "ext2/ext3",
    "ext4",
    "xfs",
    "btrfs",
    "overlayfs",
    "zfs",
    "ramfs",
];

/// A warning at submit time when the workspace lies on a filesystem of this machine only:
/// the node checks (its `.started` marker) and fails clearly, but only once it runs.
fn local_filesystem_note(ws_dir: &Path) -> Option<String> {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(ws_dir)
        .output()
        .ok()?;
    let fs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    LOCAL_FILESYSTEMS.contains(&fs.as_str()).then(|| {
        format!(
            "warning: the workspace {} is on a {fs} filesystem, usually local to this machine; \
             nodes other than this one will not see it (put it on the cluster's shared \
             filesystem)",
            ws_dir.display()
        )
    })
}

/// The job's end as the watch loop saw it.
struct Watched {
    info: ctl::JobInfo,
    cancelled_by_us: bool,
    queued_seconds: Option<f64>,
    tail: Vec<String>,
    node_error: Option<String>,
}

/// Look at the job until it ends, streaming its output; `scancel` it once the token is
/// cancelled.
fn watch(
    ctx: &JobCtx,
    id: &str,
    files: &Files,
    settings: &SlurmSettings,
    submitted: Option<Instant>,
) -> Result<Watched> {
    let mut poll = Poller::new(ctx, id, settings);
    let mut follower = output::Follower::new(files.path("out"));
    let mut last = ctl::JobInfo::default();
    let mut queued_seconds = None;
    let mut misses = 0;
    loop {
        poll.scancel_if_cancelled()?;
        follower.poll(ctx);
        let info = match ctl::query(id)? {
            Some(info) => {
                misses = 0;
                info
            }
            None => {
                misses += 1;
                if misses >= LOST_AFTER {
                    return Err(Error::runtime(format!(
                        "slurm job {id}: neither scontrol nor sacct -c knows it any more; \
                         see {}",
                        files.path("out").display()
                    )));
                }
                last.clone()
            }
        };
        if info.state != last.state {
            let node = if info.node.is_empty() {
                String::new()
            } else {
                format!(" on {}", info.node)
            };
            let reason = if info.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", info.reason)
            };
            ctx.log(format!("slurm: job {id} {}{node}{reason}", info.state));
            if let Some(s) = submitted.filter(|_| info.has_run() && queued_seconds.is_none()) {
                queued_seconds = Some(s.elapsed().as_secs_f64());
            }
            // For the app's jobs pane: the Slurm id, state, node and queue time.
            ctx.partial(Partial::Slurm {
                slurm: SlurmState {
                    job_id: id.to_string(),
                    state: info.state.clone(),
                    node: info.node.clone(),
                    reason: info.reason.clone(),
                    queued_seconds,
                },
            });
        }
        last = info;
        if last.is_ended() {
            follower.finish(ctx);
            return Ok(Watched {
                info: last,
                cancelled_by_us: poll.scancel_sent(),
                queued_seconds,
                tail: follower.tail(),
                node_error: follower.node_error.take(),
            });
        }
        poll.check_grace(&format!("is still {}", last.state))?;
        poll.nap();
    }
}

/// What the watch loops share: the poll interval, `scancel` once when the job is
/// cancelled, the grace the job gets after it, and naps that wake at once for a cancel.
struct Poller<'a, 'c> {
    ctx: &'a JobCtx<'c>,
    id: &'a str,
    interval: Duration,
    scancel_at: Option<Instant>,
}

impl<'a, 'c> Poller<'a, 'c> {
    fn new(ctx: &'a JobCtx<'c>, id: &'a str, settings: &SlurmSettings) -> Self {
        let seconds = settings.poll_seconds.unwrap_or(2.0).clamp(0.1, 600.0);
        Poller {
            ctx,
            id,
            interval: Duration::from_secs_f64(seconds),
            scancel_at: None,
        }
    }

    fn scancel_sent(&self) -> bool {
        self.scancel_at.is_some()
    }

    /// `scancel` the job the first time its token is cancelled.
    fn scancel_if_cancelled(&mut self) -> Result<()> {
        if self.ctx.cancel.is_cancelled() && !self.scancel_sent() {
            self.ctx.log(format!("slurm: scancel {}", self.id));
            ctl::scancel(self.id)?;
            self.scancel_at = Some(Instant::now());
        }
        Ok(())
    }

    /// An error once the job outlives the grace after `scancel` (`what`: its state).
    fn check_grace(&self, what: &str) -> Result<()> {
        match self.scancel_at {
            Some(t) if t.elapsed() > CANCEL_GRACE => Err(Error::runtime(format!(
                "slurm job {} {what} {} s after scancel",
                self.id,
                CANCEL_GRACE.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    /// Wait one interval, in short steps so a cancel is acted on at once.
    fn nap(&self) {
        let until = Instant::now() + self.interval;
        // A cancel not yet acted on ends the nap.
        let waiting = || !self.ctx.cancel.is_cancelled() || self.scancel_sent();
        while Instant::now() < until && waiting() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The job's result: the node's JSON document for a completed job, else an error that
/// says the Slurm state, exit code and the tail of the output.
fn finish(files: &Files, id: &str, w: Watched) -> Result<Value> {
    let info = &w.info;
    if info.state == "CANCELLED" && w.cancelled_by_us {
        return Err(Error::Cancelled);
    }
    let out = files.path("out");
    let started = files.path("started").exists();
    if info.state == "COMPLETED" {
        let doc = files.path("json");
        let bytes = fs::read(&doc).map_err(|e| Error::io(&doc, e))?;
        let mut summary: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::runtime(format!(
                "{}: not the node job's JSON document: {e}",
                doc.display()
            ))
        })?;
        summary["slurm"] = json!({
            "job_id": id,
            "state": info.state,
            "node": info.node,
            "exit_code": info.exit_code,
            "queued_seconds": w.queued_seconds,
            "script": files.path("sh").display().to_string(),
            "output": out.display().to_string(),
        });
        return Ok(summary);
    }
    let node = if info.node.is_empty() {
        "no node".to_string()
    } else {
        info.node.clone()
    };
    let mut text = format!(
        "slurm job {id} {} (exit code {}) on {node}",
        info.state, info.exit_code
    );
    if info.has_run() && !started {
        text.push_str(&format!(
            "; it never wrote {}: the workspace {} is not visible on {node} — put it on a \
             filesystem the nodes share",
            files.path("started").display(),
            files.dir.parent().unwrap_or(&files.dir).display()
        ));
    }
    if let Some(e) = &w.node_error {
        text.push_str(&format!(": {e}"));
    }
    if !w.tail.is_empty() {
        text.push_str(&format!(
            "\nlast lines of {}:\n  {}",
            out.display(),
            w.tail.join("\n  ")
        ));
    }
    Err(Error::runtime(text))
}

/// `<workspace>/slurm/job-<id>[-n].sh`, created empty and exclusively so two processes
/// that gave their jobs the same id never share files.
fn claim_files(ws_dir: &Path, ctx: &JobCtx) -> Result<Files> {
    let dir = ws_dir.join("slurm");
    let stem = claim_unique_stem(&dir, &format!("job-{}", ctx.id), ".sh")?;
    Ok(Files { dir, stem })
}

/// The workspace's record of a job this job just submitted.
fn pending_entry(ctx: &JobCtx, slurm_id: &str, stem: &str, kind: Option<JobKind>) -> SlurmJobEntry {
    SlurmJobEntry {
        job: ctx.id.0,
        slurm_id: slurm_id.to_string(),
        stem: stem.to_string(),
        submitted: now(),
        state: "PENDING".into(),
        kind,
    }
}

/// Keep the Slurm id in the workspace; a failure to is a warning, not a failed job.
fn record(ctx: &JobCtx, workspace: &Mutex<Workspace>, entry: &SlurmJobEntry) {
    if let Err(e) = lock(workspace).record_slurm_job(entry.clone()) {
        ctx.log(format!(
            "warning: could not store the Slurm job id in the workspace: {e}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    /// A restarted app follows again exactly the jobs it did not see end.
    #[test]
    fn jobs_not_seen_to_end_are_followed_again() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        for (n, state) in ["PENDING", "COMPLETED", "RUNNING", "TIMEOUT", ""]
            .iter()
            .enumerate()
        {
            ws.record_slurm_job(SlurmJobEntry {
                job: n as u64,
                slurm_id: format!("{}", 100 + n),
                stem: format!("job-{n}"),
                submitted: 0,
                state: state.to_string(),
                kind: None,
            })
            .unwrap();
        }
        let ids: Vec<String> = unfinished(&ws)
            .into_iter()
            .map(|k| match k {
                JobKind::SlurmFollow { slurm_id, .. } => slurm_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["100", "102", "104"]);
        assert!(!JobKind::SlurmFollow {
            slurm_id: "1".into(),
            stem: "s".into(),
            job: 0
        }
        .is_heavy());
    }
}
