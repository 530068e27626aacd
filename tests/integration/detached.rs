//! Detached local jobs (`--executor detached`, `--detach`): the job runs as a `qsteer
//! run-job` process of its own, so killing the process that started it does not stop it;
//! `qsteer jobs --follow` records its end and `qsteer jobs --cancel` stops it, recorded as
//! cancelled. Runs the real binary on a tiny digits subset.

use crate::common::*;
use qsteer::jobs::{job_history, JobState};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An AdaRound job slow enough (seconds) to be caught running.
fn adaround_args(data: &Path, ws: &Path) -> Vec<String> {
    [
        "adaround",
        &sample_model("mbv2_digits").display().to_string(),
        "--data",
        &data.display().to_string(),
        "--workspace",
        &ws.display().to_string(),
        "--iterations",
        "100",
        "--threads",
        "1",
        "--json",
    ]
    .map(str::to_string)
    .to_vec()
}

fn index(ws: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap()
}

/// The first detached job the workspace records, once it is there.
fn recorded_job(ws: &Path) -> Value {
    let start = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(ws.join("workspace.json")) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(j) = v["detached_jobs"].get(0) {
                return j.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no detached job recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn outcome_file(ws: &Path, job: &Value) -> PathBuf {
    ws.join("detached")
        .join(format!("{}.outcome.json", job["stem"].as_str().unwrap()))
}

#[test]
fn a_detached_job_outlives_its_killed_starter_and_a_follower_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 16);
    let ws = dir.path().join("ws");
    let mut starter = qsteer(dir.path())
        .args(adaround_args(&data, &ws))
        .args(["--executor", "detached"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = recorded_job(&ws);
    let pid = job["pid"].as_u64().unwrap();
    assert_ne!(
        u64::from(starter.id()),
        pid,
        "the job is a process of its own"
    );
    assert!(
        !outcome_file(&ws, &job).exists(),
        "the job must still run when its starter is killed"
    );
    starter.kill().unwrap();
    let _ = starter.wait();
    // The starter is gone; the job is not (its outcome is not there yet either).
    assert!(
        Path::new(&format!("/proc/{pid}")).exists() || outcome_file(&ws, &job).exists(),
        "the job died with its starter"
    );
    let doc = json_ok(
        dir.path(),
        &[
            "jobs",
            "--workspace",
            ws.to_str().unwrap(),
            "--follow",
            "--json",
        ],
    );
    let followed = &doc["followed"][0];
    assert_eq!(followed["job"], 1, "{doc}");
    let variant = followed["result"]["rounded_variant"]
        .as_u64()
        .unwrap_or_else(|| panic!("{doc}"));
    let idx = index(&ws);
    let v = &idx["variants"][variant as usize];
    assert_eq!(v["id"], variant, "{idx}");
    assert!(v["step"].as_str().unwrap().starts_with("adaround"), "{v}");
    assert_eq!(idx["detached_jobs"][0]["state"], "finished", "{idx}");
    let history = job_history(&ws).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].state, JobState::Finished, "{history:?}");
    assert_eq!(doc["jobs"][0]["state"], "finished", "{doc}");
    assert_eq!(doc["jobs"][0]["executor"], "detached", "{doc}");
}

#[test]
fn detach_returns_at_once_and_cancel_stops_the_job_recorded_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 16);
    let ws = dir.path().join("ws");
    let mut args = adaround_args(&data, &ws);
    args.push("--detach".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = json_ok(dir.path(), &args);
    assert_eq!(started["job"], 1, "{started}");
    assert_eq!(started["detached"], true, "{started}");
    let listed = json_ok(
        dir.path(),
        &["jobs", "--workspace", ws.to_str().unwrap(), "--json"],
    );
    let row = &listed["jobs"][0];
    assert_eq!(row["pid"], started["pid"], "{listed}");
    let job = recorded_job(&ws);
    assert!(
        matches!(row["state"].as_str(), Some("running")) && !outcome_file(&ws, &job).exists(),
        "{listed}"
    );
    let doc = json_ok(
        dir.path(),
        &[
            "jobs",
            "--workspace",
            ws.to_str().unwrap(),
            "--cancel",
            "1",
            "--json",
        ],
    );
    assert_eq!(doc["followed"][0]["error"], "cancelled", "{doc}");
    let outcome: Value =
        serde_json::from_slice(&std::fs::read(outcome_file(&ws, &job)).unwrap()).unwrap();
    assert_eq!(outcome["state"], "cancelled", "the job recorded itself");
    let history = job_history(&ws).unwrap();
    assert_eq!(history[0].state, JobState::Cancelled, "{history:?}");
    assert_eq!(index(&ws)["variants"].as_array().unwrap().len(), 1);
    // Not running any more: a second cancel is refused, naming the state.
    let out = run(
        dir.path(),
        &["jobs", "--workspace", ws.to_str().unwrap(), "--cancel", "1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not running (its state: cancelled)"));
    // --detach on a command that runs no job is bad input.
    let out = run(dir.path(), &["inspect", "--detach"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
