//! What a runner opening a workspace does with the detached jobs an earlier process left
//! started: a process that is gone (or a pid now used by another process) is an interrupted
//! job; a live one is followed again under its own id, and its outcome journalled.

use super::*;
use crate::cancel::CancelToken;
use crate::experiment::Workspace;
use crate::jobs::journal::Journal;
use crate::jobs::{load_history, JobEvent, JobRunner, JobState};
use crate::model::Model;
use std::fs;
use std::sync::Arc;

fn workspace(dir: &Path) -> Arc<Mutex<Workspace>> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
    let model = Model::load(&sample).unwrap();
    Arc::new(Mutex::new(
        Workspace::open_or_create(dir, &model, "mbv2_digits").unwrap(),
    ))
}

/// Job `id` journalled as started by a process that is gone, with a detached record of
/// the process `pid` started at `start_time`.
fn left_started(ws: &Mutex<Workspace>, id: u64, pid: u32, start_time: u64) {
    let dir = lock(ws).dir().to_path_buf();
    let kind = JobKind::FoldBn { variant: 0 };
    let journal = Journal::new(&dir);
    let cancel = CancelToken::new();
    let ctx = JobCtx::new(JobId(id), &kind, &cancel, &journal, &|_| {});
    ctx.transition(Logged::Queued, None, None);
    ctx.transition(Logged::Started, None, None);
    let me = process::identity(std::process::id()).unwrap();
    lock(ws)
        .record_detached_job(DetachedJobEntry {
            job: id,
            label: kind.label(),
            stem: format!("job-{id}"),
            pid,
            start_time,
            boot_id: me.boot_id,
            submitted: 0,
            state: "running".into(),
        })
        .unwrap();
    fs::create_dir_all(dir.join("detached")).unwrap();
}

fn runner(
    ws: &Arc<Mutex<Workspace>>,
) -> (
    tokio::runtime::Runtime,
    JobRunner,
    tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = JobRunner::new(rt.handle().clone(), ws.clone(), 1, tx).unwrap();
    (rt, runner, rx)
}

fn recorded_state(ws: &Mutex<Workspace>, id: u64) -> String {
    let mut ws = lock(ws);
    ws.reload().unwrap();
    let e = ws.file().detached_jobs.iter().find(|e| e.job == id);
    e.unwrap().state.clone()
}

#[test]
fn a_dead_process_or_a_reused_pid_is_interrupted_a_live_one_is_followed_again() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path());
    // Job 1: its process ended (exited and reaped) without an outcome.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    left_started(&ws, 1, gone_pid, 1);
    // Job 2: its pid runs, but another process (another start time) holds it now.
    let out = dir.path().join("sleep.out");
    let mut other = process::spawn_session(Path::new("sleep"), &["30".to_string()], &out).unwrap();
    let other_id = process::identity(other.id()).unwrap();
    left_started(&ws, 2, other_id.pid, other_id.start_time + 7);
    // Job 3: its process runs.
    let mut live = process::spawn_session(Path::new("sleep"), &["30".to_string()], &out).unwrap();
    let live_id = process::identity(live.id()).unwrap();
    left_started(&ws, 3, live_id.pid, live_id.start_time);

    let (rt, runner, mut rx) = runner(&ws);
    let interrupted: Vec<u64> = runner.interrupted().iter().map(|r| r.id.0).collect();
    assert_eq!(
        interrupted,
        [1, 2],
        "gone and reused-pid jobs are interrupted"
    );
    assert_eq!(recorded_state(&ws, 1), "interrupted");
    assert_eq!(recorded_state(&ws, 2), "interrupted");
    assert_eq!(recorded_state(&ws, 3), "running");
    let reattached: Vec<u64> = runner.reattach_detached().iter().map(|r| r.id.0).collect();
    assert_eq!(reattached, [3]);
    assert!(runner.reattach_detached().is_empty(), "followed once");
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<JobEvent>| {
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await
        })
        .expect("an event")
        .expect("the channel is open")
    };
    assert_eq!(next(&mut rx), JobEvent::Started { id: JobId(3) });
    assert_eq!(
        runner
            .running()
            .iter()
            .map(|(id, _)| id.0)
            .collect::<Vec<_>>(),
        [3]
    );
    // The job's process writes its outcome and ends: the follower journals it.
    // A whole fold-bn summary: it is read back by the job's kind, as the journal keeps it.
    let summary = serde_json::to_value(crate::jobs::FoldBnOutcome {
        step: "fold_bn".into(),
        output: "done elsewhere".into(),
        ..Default::default()
    })
    .unwrap();
    DetachedOutcome::Finished {
        summary: summary.clone(),
    }
    .save(&Files::of(dir.path(), "job-3").path("outcome.json"))
    .unwrap();
    process::signal_group(live_id.pid, libc::SIGTERM);
    let ended = loop {
        let ev = next(&mut rx);
        if ev.is_terminal() {
            break ev;
        }
    };
    assert_eq!(
        ended,
        JobEvent::Finished {
            id: JobId(3),
            summary
        }
    );
    let history = load_history(dir.path()).unwrap();
    let state = |id: u64| history.jobs.iter().find(|r| r.id.0 == id).unwrap().state;
    assert_eq!(state(3), JobState::Finished);
    assert_eq!(state(1), JobState::Interrupted);
    assert_eq!(history.interrupted().count(), 0, "nothing left open");
    assert_eq!(recorded_state(&ws, 3), "finished");
    process::signal_group(other_id.pid, libc::SIGKILL);
    let _ = other.wait();
    let _ = live.wait();
}

/// A cancel while following: SIGTERM reaches the job's whole process group; a process that
/// then ends without writing an outcome still counts as cancelled, not lost.
#[test]
fn a_cancel_signals_the_group_and_the_job_ends_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path());
    let out = dir.path().join("job.out");
    // A shell with a child of its own: the signal must reach both (the group).
    let child = process::spawn_session(
        Path::new("sh"),
        &["-c".to_string(), "sleep 30 & wait".to_string()],
        &out,
    )
    .unwrap();
    let me = process::identity(child.id()).unwrap();
    let entry = DetachedJobEntry {
        job: 1,
        label: "test".into(),
        stem: "job-1".into(),
        pid: me.pid,
        start_time: me.start_time,
        boot_id: me.boot_id.clone(),
        submitted: 0,
        state: "running".into(),
    };
    lock(&ws).record_detached_job(entry.clone()).unwrap();
    let kind = JobKind::FoldBn { variant: 0 };
    let journal = Journal::disabled(dir.path());
    let cancel = CancelToken::new();
    cancel.cancel();
    let ctx = JobCtx::new(JobId(1), &kind, &cancel, &journal, &|_| {});
    let result = watch_and_record(&ctx, &ws, dir.path(), entry, Some(child));
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(!process::is_alive(&me));
    assert_eq!(recorded_state(&ws, 1), "cancelled");
    // The shell's own child went with the group: nothing of that session still runs
    // (zombies waiting for a reaper do not count).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-s", &me.pid.to_string()])
            .output()
            .unwrap();
        let live: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| process::identity(p).is_some())
            .collect();
        if live.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running in the job's session: {live:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
