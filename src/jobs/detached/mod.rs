//! The detached executor: a local job runs as its own process, `qsteer run-job` on the
//! serialized request, in a session of its own — so it outlives the app or command that
//! started it (`q`, a dropped SSH connection). Like a Slurm job it writes everything into
//! the workspace: JSON-lines events into `detached/<stem>.out`, its variant under the
//! workspace lock, and its end into `detached/<stem>.outcome.json`. The starter records the
//! process (pid, start time, boot) in `workspace.json` before it says the job started, and
//! follows it like a Slurm job; whoever opens the workspace later follows it again.

mod outcome;
pub(crate) mod process;

pub use outcome::DetachedOutcome;

use super::exec::JobCtx;
use super::journal::Logged;
use super::kind::{JobId, JobKind};
use super::lock;
use super::slurm::output::Follower;
use crate::experiment::{now, DetachedJobEntry, Workspace};
use crate::fsutil::claim_unique_stem;
use crate::jobs::JobRequest;
use crate::{Error, Result};
use process::Identity;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the output and the process are looked at.
const POLL: Duration = Duration::from_millis(200);
/// How long a cancelled job gets after SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(30);

/// The files of one detached job: `<workspace>/detached/<stem>.*`.
pub(crate) struct Files {
    dir: PathBuf,
    stem: String,
}

impl Files {
    pub(crate) fn of(ws_dir: &Path, stem: &str) -> Files {
        Files {
            dir: ws_dir.join("detached"),
            stem: stem.to_string(),
        }
    }

    pub(crate) fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.stem))
    }
}

/// What a started detached job is: its record and where its output goes.
#[derive(Debug, Clone)]
pub struct DetachedStart {
    pub entry: DetachedJobEntry,
    pub output: PathBuf,
}

/// Run the job as a detached process and follow it to its end: its summary, or its
/// failure or cancellation.
pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<Value> {
    let (started, child) = start(ctx, workspace)?;
    let ws_dir = lock(workspace).dir().to_path_buf();
    watch_and_record(ctx, workspace, &ws_dir, started.entry, Some(child))
}

/// Start the job's process, record it in the workspace, then say it started (journal and
/// event): whoever sees it started can count on finding the process in the workspace.
pub(crate) fn start(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<(DetachedStart, Child)> {
    if matches!(ctx.kind, JobKind::SlurmFollow { .. }) {
        return Err(Error::input(
            "following a Slurm job runs in the process that follows it, not detached",
        ));
    }
    let ws_dir = lock(workspace).dir().to_path_buf();
    let ws_dir = std::path::absolute(&ws_dir).map_err(|e| Error::io(&ws_dir, e))?;
    let files = claim_files(&ws_dir, ctx.id)?;
    JobRequest::new(ws_dir.clone(), ctx.kind.clone()).save(&files.path("request.json"))?;
    let binary = std::env::current_exe()
        .map_err(|e| Error::runtime(format!("cannot find qsteer's own binary: {e}")))?;
    let args = run_job_args(ctx.id, &files);
    let output = files.path("out");
    let mut child = process::spawn_session(&binary, &args, &output)?;
    let Some(me) = process::identity(child.id()) else {
        // It ended before it could be looked at: its outcome (or output) says why.
        let _ = child.wait();
        return Err(Error::runtime(format!(
            "the detached job ended at once; see {}",
            output.display()
        )));
    };
    let entry = DetachedJobEntry {
        job: ctx.id.0,
        label: ctx.kind.label(),
        stem: files.stem.clone(),
        pid: me.pid,
        start_time: me.start_time,
        boot_id: me.boot_id,
        submitted: now(),
        state: "running".into(),
    };
    if let Err(e) = lock(workspace).record_detached_job(entry.clone()) {
        // Unrecorded, nobody could follow it after this process: do not leave it running.
        process::signal_group(entry.pid, libc::SIGKILL);
        let _ = child.wait();
        return Err(e);
    }
    ctx.transition(Logged::Started, None, None);
    ctx.log(format!(
        "detached: pid {} runs the job in its own session; output {}",
        entry.pid,
        output.display()
    ));
    Ok((DetachedStart { entry, output }, child))
}

/// `qsteer run-job` for the request: the raw summary, JSON-lines events on stderr, no
/// journal of its own (its starter journals it, under the starter's job id), and its end
/// written to the outcome file.
fn run_job_args(id: JobId, files: &Files) -> Vec<String> {
    [
        "run-job".to_string(),
        files.path("request.json").display().to_string(),
        "--summary".into(),
        "--progress".into(),
        "jsonl".into(),
        "--no-journal".into(),
        "--job-id".into(),
        id.0.to_string(),
        "--outcome".into(),
        files.path("outcome.json").display().to_string(),
    ]
    .to_vec()
}

/// Follow a detached job started by an earlier process (its journal entry `ctx.id`) to its
/// end, as its starter would have.
pub(crate) fn follow(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    entry: DetachedJobEntry,
) -> Result<Value> {
    let ws_dir = lock(workspace).dir().to_path_buf();
    ctx.log(format!(
        "detached: following pid {} again (output {})",
        entry.pid,
        Files::of(&ws_dir, &entry.stem).path("out").display()
    ));
    watch_and_record(ctx, workspace, &ws_dir, entry, None)
}

/// Watch the job to its end, record its end state, and reload the workspace so the
/// variants the job's process added show.
fn watch_and_record(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    ws_dir: &Path,
    mut entry: DetachedJobEntry,
    child: Option<Child>,
) -> Result<Value> {
    let files = Files::of(ws_dir, &entry.stem);
    let (result, state) = match watch(ctx, &files, &entry, child) {
        Ended::Outcome(o) => (o.clone().into_result(), o.state()),
        Ended::KilledAfterCancel => (Err(Error::Cancelled), "cancelled"),
        Ended::Lost(e) => (Err(e), "interrupted"),
        Ended::Unreadable(e) => (Err(e), "failed"),
    };
    entry.state = state.into();
    if let Err(e) = lock(workspace).record_detached_job(entry) {
        ctx.log(format!(
            "warning: could not record the detached job's end: {e}"
        ));
    }
    if let Err(e) = lock(workspace).reload() {
        ctx.log(format!("warning: could not reload the workspace: {e}"));
    }
    result
}

/// How the watch saw the job end.
enum Ended {
    Outcome(DetachedOutcome),
    /// Gone without an outcome after SIGTERM and SIGKILL: cancelled all the same.
    KilledAfterCancel,
    /// Gone without an outcome, nobody asked it to stop.
    Lost(Error),
    /// The outcome file is there but cannot be read.
    Unreadable(Error),
}

/// Look at the output and the process until the outcome file is there; SIGTERM the group
/// once the token is cancelled (the job then writes `cancelled`), SIGKILL after a grace.
fn watch(ctx: &JobCtx, files: &Files, entry: &DetachedJobEntry, mut child: Option<Child>) -> Ended {
    let me = identity_of(entry);
    let mut follower = Follower::new(files.path("out"));
    let mut term_at: Option<Instant> = None;
    let outcome_file = files.path("outcome.json");
    loop {
        follower.poll(ctx);
        let ended = match DetachedOutcome::load(&outcome_file) {
            Ok(None) => None,
            Ok(Some(o)) => Some(Ended::Outcome(o)),
            Err(e) => Some(Ended::Unreadable(e)),
        };
        if let Some(ended) = ended {
            follower.finish(ctx);
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
            return ended;
        }
        if ctx.cancel.is_cancelled() && term_at.is_none() {
            ctx.log(format!("detached: SIGTERM to process group {}", me.pid));
            process::signal_group(me.pid, libc::SIGTERM);
            term_at = Some(Instant::now());
        }
        if term_at.is_some_and(|t| t.elapsed() > TERM_GRACE) {
            process::signal_group(me.pid, libc::SIGKILL);
        }
        let alive = match child.as_mut() {
            // Our own child: reap it, or it lingers as a zombie.
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => process::is_alive(&me),
        };
        if !alive {
            // The outcome is written before the process exits: one more look.
            follower.finish(ctx);
            return match DetachedOutcome::load(&outcome_file) {
                Ok(Some(o)) => Ended::Outcome(o),
                Err(e) => Ended::Unreadable(e),
                Ok(None) if term_at.is_some() => Ended::KilledAfterCancel,
                Ok(None) => Ended::Lost(lost(entry, files, &follower.tail())),
            };
        }
        let until = Instant::now() + POLL;
        while Instant::now() < until && (term_at.is_some() || !ctx.cancel.is_cancelled()) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lost(entry: &DetachedJobEntry, files: &Files, tail: &[String]) -> Error {
    let mut text = format!(
        "the detached job's process (pid {}) ended without writing its outcome (killed?)",
        entry.pid
    );
    if !tail.is_empty() {
        text.push_str(&format!(
            "; last lines of {}:\n  {}",
            files.path("out").display(),
            tail.join("\n  ")
        ));
    }
    Error::Runtime(text)
}

fn identity_of(entry: &DetachedJobEntry) -> Identity {
    Identity {
        pid: entry.pid,
        start_time: entry.start_time,
        boot_id: entry.boot_id.clone(),
    }
}

/// Where a recorded detached job is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs.
    Running,
    /// It wrote its outcome (whether or not anyone recorded it yet).
    Ended,
    /// Its process is gone without an outcome: killed, or the machine restarted.
    Gone,
}

/// Look at the job's process and outcome file now.
pub fn liveness(ws_dir: &Path, entry: &DetachedJobEntry) -> Liveness {
    let files = Files::of(ws_dir, &entry.stem);
    if files.path("outcome.json").is_file() {
        Liveness::Ended
    } else if process::is_alive(&identity_of(entry)) {
        Liveness::Running
    } else {
        Liveness::Gone
    }
}

/// Ask a running detached job to stop (SIGTERM to its process group): it ends at its next
/// checkpoint and writes `cancelled` as its outcome. False if its process is not running.
pub fn cancel(ws_dir: &Path, entry: &DetachedJobEntry) -> bool {
    if liveness(ws_dir, entry) != Liveness::Running {
        return false;
    }
    process::signal_group(entry.pid, libc::SIGTERM);
    true
}

/// The job's state for a listing: its recorded end, else `running`, the state its outcome
/// file names (not yet recorded by a follower), or `interrupted`.
pub fn current_state(ws_dir: &Path, entry: &DetachedJobEntry) -> String {
    if entry.state != "running" {
        return entry.state.clone();
    }
    match liveness(ws_dir, entry) {
        Liveness::Running => "running".into(),
        Liveness::Ended => {
            DetachedOutcome::load(&Files::of(ws_dir, &entry.stem).path("outcome.json"))
                .ok()
                .flatten()
                .map_or("ended", |o| o.state())
                .into()
        }
        Liveness::Gone => "interrupted".into(),
    }
}

/// The detached jobs of the workspace not seen to end whose journal entry (an id in
/// `unended`) is still open, split into those to follow again (running, or ended with an
/// outcome nobody recorded) and those whose process is gone without one (interrupted).
pub(crate) fn to_reattach(
    ws: &Workspace,
    unended: &[JobId],
) -> (Vec<DetachedJobEntry>, Vec<DetachedJobEntry>) {
    let mut follow = vec![];
    let mut gone = vec![];
    for entry in ws.file().detached_jobs.iter() {
        if !unended.contains(&JobId(entry.job)) {
            continue;
        }
        match liveness(ws.dir(), entry) {
            Liveness::Running | Liveness::Ended => follow.push(entry.clone()),
            Liveness::Gone => gone.push(entry.clone()),
        }
    }
    (follow, gone)
}

/// `<workspace>/detached/job-<id>[-n].*`, claimed by creating the request file exclusively
/// so two processes that gave their jobs the same id never share files.
fn claim_files(ws_dir: &Path, id: JobId) -> Result<Files> {
    let dir = ws_dir.join("detached");
    let stem = claim_unique_stem(&dir, &format!("job-{id}"), ".request.json")?;
    Ok(Files { dir, stem })
}

#[cfg(test)]
mod tests;
