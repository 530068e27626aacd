//! The Slurm executor against a real Slurm (the one-node Slurm `.ci/run` starts with
//! `.ci/slurm-local.sh`; `SLURM_CONF` points at it), and concurrent writers of one
//! workspace. The Slurm tests skip with a message when no Slurm answers. Every wait has a
//! deadline: a stuck job fails the test instead of hanging it.

use crate::common::*;
use qsteer::experiment::Workspace;
use qsteer::jobs::{Executor, JobEvent, JobKind, JobRunner, SlurmSettings};
use qsteer::model::Model;
use qsteer::train::FineTuneSettings;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when a Slurm answers; else prints why the calling test skips.
fn slurm_up(test: &str) -> bool {
    if std::env::var_os("SLURM_CONF").is_none() {
        eprintln!("{test}: skipped: SLURM_CONF is not set (no local Slurm; .ci/run starts one)");
        return false;
    }
    let ok = Command::new("sinfo")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{test}: skipped: sinfo fails (Slurm is not running)");
    }
    ok
}

/// Wait for a child at most `secs`; kill it on the deadline and fail.
fn wait_for(mut child: Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run qsteer with stdout and stderr to files; (exit status, stdout, stderr).
fn qsteer_timed(
    dir: &Path,
    args: &[&str],
    secs: u64,
) -> (std::process::ExitStatus, String, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out, err) = (
        dir.join(format!("stdout-{n}")),
        dir.join(format!("stderr-{n}")),
    );
    let child = qsteer(dir)
        .args(args)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = wait_for(child, secs, &format!("qsteer {args:?}"));
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

fn json_of(status: std::process::ExitStatus, out: &str, err: &str) -> Value {
    assert!(status.success(), "{status}: {err}");
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The command `args` on the 40 + 40 digits and the sample ResNet, once here and once with
/// `--executor slurm` and `slurm_args`, each on its own workspace: (local JSON, Slurm JSON,
/// Slurm stderr, Slurm workspace).
fn local_and_slurm(
    dir: &Path,
    command: &str,
    args: &[&str],
    slurm_args: &[&str],
) -> (Value, Value, String, String) {
    let data = small_digits(dir, 40).display().to_string();
    let model = sample_model("resnet_digits").display().to_string();
    let run = |ws: &str, extra: &[&str]| {
        let mut a = vec![command, &model, "--data", &data, "--workspace", ws];
        a.extend_from_slice(&["--threads", "1", "--json"]);
        a.extend_from_slice(args);
        a.extend_from_slice(extra);
        let (status, out, err) = qsteer_timed(dir, &a, 1200);
        (json_of(status, &out, &err), err)
    };
    let local_ws = dir.join("local").display().to_string();
    let slurm_ws = dir.join("slurm").display().to_string();
    let (local, _) = run(&local_ws, &[]);
    let slurm = ["--executor", "slurm", "--cpus", "1", "--time", "15"];
    let (remote, err) = run(&slurm_ws, &[&slurm[..], slurm_args].concat());
    (local, remote, err, slurm_ws)
}

#[test]
fn compress_through_slurm_records_the_same_variant_as_a_local_run() {
    if !slurm_up("compress_through_slurm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (local, remote, err, slurm_ws) = local_and_slurm(
        dir.path(),
        "compress",
        &["--method", "ssvd", "--target", "0.6"],
        &[],
    );
    let local_ws = dir.path().join("local").display().to_string();
    assert_eq!(remote["variant"], 1, "{remote}");
    assert_eq!(remote["mac_ratio"], local["mac_ratio"]);
    assert_eq!(remote["ratios"], local["ratios"]);
    assert_eq!(remote["accuracy"], local["accuracy"]);
    let slurm = &remote["slurm"];
    assert_eq!(slurm["state"], "COMPLETED", "{slurm}");
    assert_eq!(slurm["exit_code"], "0:0");
    assert!(slurm["queued_seconds"].as_f64().is_some(), "{slurm}");
    assert!(err.contains("slurm: submitted job"), "{err}");
    // The submitting process sees the node's variant, and the workspace keeps the id.
    let ws = Workspace::open(Path::new(&slurm_ws)).unwrap();
    let v = ws
        .variant(1)
        .expect("the node's variant is in the workspace");
    assert_eq!(v.step, ws_step(&local_ws, 1));
    let jobs = &ws.file().slurm_jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].slurm_id, slurm["job_id"].as_str().unwrap());
    assert_eq!(jobs[0].state, "COMPLETED");
    // The node's events streamed into the job's log; only the submitter journalled it.
    let log = fs::read_to_string(Path::new(&slurm_ws).join("logs/job-1.log")).unwrap();
    assert!(log.contains("COMPLETED"), "{log}");
    let journal = fs::read_to_string(Path::new(&slurm_ws).join("logs/jobs.jsonl")).unwrap();
    assert_eq!(
        journal.lines().count(),
        3,
        "queued, started, finished: {journal}"
    );
}

/// The decision rows of a sweep's JSON document, keyed by what they are (variant ids
/// depend on the order the candidates finished in), without the measured latency.
fn decision_rows(doc: &Value, stage: &str) -> Vec<Value> {
    let rows = doc[stage]
        .as_array()
        .unwrap_or_else(|| panic!("{stage}: {doc}"));
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            let o = r.as_object_mut().unwrap();
            for k in ["variant", "parent", "latency"] {
                o.remove(k);
            }
            r
        })
        .collect()
}

/// The (method, requested) of the picked row.
fn picked(doc: &Value) -> (Value, Value) {
    let id = &doc["pick"]["variant"];
    let row = ["ssvd", "cp"]
        .iter()
        .flat_map(|s| doc[*s].as_array().unwrap().iter())
        .find(|r| &r["variant"] == id)
        .unwrap_or_else(|| panic!("pick {id} is no row: {doc}"));
    (row["method"].clone(), row["requested"].clone())
}

#[test]
fn a_sweep_through_slurm_makes_the_decision_tables_of_a_local_sweep() {
    if !slurm_up("a_sweep_through_slurm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (local, remote, err, slurm_ws) = local_and_slurm(
        dir.path(),
        "sweep",
        &[
            "--target",
            "0.5",
            "--cssvd",
            "0.6,0.75",
            "--candidates",
            "5",
            "--max-drop",
            "50",
        ],
        &[],
    );
    for stage in ["ssvd", "cp"] {
        let (l, r) = (decision_rows(&local, stage), decision_rows(&remote, stage));
        assert!(!l.is_empty(), "no {stage} rows: {local}");
        assert_eq!(r, l, "{stage} rows differ");
    }
    assert_eq!(picked(&remote), picked(&local));
    // Every candidate was a Slurm job of this workspace, recorded there.
    let candidates =
        remote["ssvd"].as_array().unwrap().len() + remote["cp"].as_array().unwrap().len();
    let ws = Workspace::open(Path::new(&slurm_ws)).unwrap();
    assert_eq!(ws.file().slurm_jobs.len(), candidates, "{err}");
    assert!(ws.file().slurm_jobs.iter().all(|j| j.state == "COMPLETED"));
    assert_eq!(
        err.matches("slurm: submitted job").count(),
        candidates,
        "{err}"
    );
}

fn ws_step(dir: &str, id: u32) -> String {
    Workspace::open(Path::new(dir))
        .unwrap()
        .variant(id)
        .unwrap()
        .step
        .clone()
}

/// A runner on a fresh workspace of the small MobileNet, its events on a channel.
struct Runner {
    rt: tokio::runtime::Runtime,
    runner: JobRunner,
    events: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    ws: Arc<Mutex<Workspace>>,
}

impl Runner {
    fn new(dir: &Path) -> Runner {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let model = Model::load(&sample_model("mbv2_digits")).unwrap();
        let ws = Workspace::open_or_create(&dir.join("ws"), &model, "mbv2_digits").unwrap();
        let ws = Arc::new(Mutex::new(ws));
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let runner = JobRunner::new(rt.handle().clone(), ws.clone(), 1, tx).unwrap();
        Runner {
            rt,
            runner,
            events,
            ws,
        }
    }

    /// The next event, or a failed test after `secs`.
    fn next(&mut self, secs: u64) -> JobEvent {
        let events = &mut self.events;
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(secs), events.recv()).await
            })
            .unwrap_or_else(|_| panic!("no job event in {secs} s"))
            .expect("the runner is alive")
    }

    /// Events until `stop` says so; all of them, in order.
    fn until(&mut self, secs: u64, stop: impl Fn(&JobEvent) -> bool) -> Vec<JobEvent> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
            let ev = self.next(left);
            let done = stop(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
            assert!(Instant::now() < deadline, "events so far: {seen:?}");
        }
    }
}

fn slurm_settings() -> Executor {
    Executor::Slurm(SlurmSettings {
        binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_qsteer"))),
        cpus: Some(1),
        time: Some("15".into()),
        poll_seconds: Some(0.5),
        ..Default::default()
    })
}

fn finetune(data: PathBuf, epochs: usize) -> JobKind {
    JobKind::FineTune {
        variant: 0,
        data,
        settings: FineTuneSettings {
            epochs,
            calibration_size: 40,
            ..Default::default()
        },
        threads: 1,
    }
}

#[test]
fn cancelling_a_running_slurm_job_scancels_it_and_records_nothing() {
    if !slurm_up("cancelling_a_running_slurm_job") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut r = Runner::new(dir.path());
    let id = r
        .runner
        .submit_on(finetune(digits(), 500), slurm_settings());
    // Running on the node: the state line, then the node's first events.
    r.until(
        300,
        |ev| matches!(ev, JobEvent::Log { line, .. } if line.contains(" RUNNING")),
    );
    r.until(300, |ev| matches!(ev, JobEvent::Progress { .. }));
    assert!(r.runner.cancel(id));
    let seen = r.until(300, JobEvent::is_terminal);
    assert_eq!(seen.last(), Some(&JobEvent::Cancelled { id }), "{seen:?}");
    let ws = r.ws.lock().unwrap();
    assert_eq!(ws.variants().len(), 1, "a cancelled job adds no variant");
    assert_eq!(ws.file().slurm_jobs[0].state, "CANCELLED");
}

#[test]
fn a_failing_slurm_job_reports_state_exit_code_and_output_tail() {
    if !slurm_up("a_failing_slurm_job") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut r = Runner::new(dir.path());
    let missing = dir.path().join("no-such-data");
    let id = r
        .runner
        .submit_on(finetune(missing.clone(), 1), slurm_settings());
    let seen = r.until(300, JobEvent::is_terminal);
    let Some(JobEvent::Failed { id: failed, error }) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(*failed, id);
    assert!(
        error.contains("FAILED (exit code 2:0) on localhost"),
        "{error}"
    );
    assert!(error.contains("last lines of"), "{error}");
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert_eq!(r.ws.lock().unwrap().variants().len(), 1);
}

/// Every `qsteer fold-bn` run's variant is in the workspace, under its own id.
fn check_writers(ws_dir: &Path, docs: &[Value]) {
    let mut ids: Vec<u64> = docs
        .iter()
        .map(|d| d["variant"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), docs.len(), "variant ids repeat: {docs:?}");
    let ws = Workspace::open(ws_dir).unwrap();
    assert_eq!(ws.variants().len(), 1 + docs.len());
    for id in ids {
        let v = ws
            .variant(id as u32)
            .unwrap_or_else(|| panic!("variant {id} lost"));
        assert!(ws.model_path(v).is_file());
    }
}

#[test]
fn concurrent_processes_adding_variants_lose_none() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let model = sample_model("mbv2_digits").display().to_string();
    let ws_arg = ws.display().to_string();
    let children: Vec<(Child, PathBuf)> = (0..6)
        .map(|i| {
            let out = dir.path().join(format!("out-{i}.json"));
            let child = qsteer(dir.path())
                .args(["fold-bn", &model, "--workspace", &ws_arg, "--json"])
                .stdout(fs::File::create(&out).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let docs: Vec<Value> = children
        .into_iter()
        .map(|(child, out)| {
            assert!(wait_for(child, 300, "qsteer fold-bn").success());
            serde_json::from_str(&fs::read_to_string(out).unwrap()).unwrap()
        })
        .collect();
    check_writers(&ws, &docs);
}

#[test]
fn concurrent_slurm_jobs_adding_variants_lose_none() {
    if !slurm_up("concurrent_slurm_jobs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let model = sample_model("mbv2_digits");
    Workspace::open_or_create(&ws, &Model::load(&model).unwrap(), "mbv2_digits").unwrap();
    let n = 4;
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let wrap = format!(
                "'{}' fold-bn '{}' --workspace '{}' --json > '{}'",
                env!("CARGO_BIN_EXE_qsteer"),
                model.display(),
                ws.display(),
                dir.path().join(format!("out-{i}.json")).display()
            );
            let out = Command::new("sbatch")
                .args(["--parsable", "--cpus-per-task=1", "--time=10", "-o"])
                .arg(dir.path().join(format!("slurm-{i}.out")))
                .args(["--wrap", &wrap])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("squeue")
            .args([
                "-h",
                "-o",
                "%i",
                "--states=PD,CF,R,CG",
                "-j",
                &ids.join(","),
            ])
            .output()
            .unwrap();
        let live = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slurm jobs {ids:?} still queued or running"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let text = fs::read_to_string(dir.path().join(format!("out-{i}.json"))).unwrap();
            let log =
                fs::read_to_string(dir.path().join(format!("slurm-{i}.out"))).unwrap_or_default();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("job {i}: {e}: {text} {log}"))
        })
        .collect();
    check_writers(&ws, &docs);
}

/// Where the tests send jobs: the local Slurm, one CPU, 15 minutes.
const SLURM: [&str; 6] = ["--executor", "slurm", "--cpus", "1", "--time", "15"];

/// The digits (40 + 40 samples), the sample ResNet and a workspace in a temporary
/// directory.
struct Case {
    dir: tempfile::TempDir,
    data: String,
    model: String,
    ws: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let data = small_digits(dir.path(), 40).display().to_string();
        let model = sample_model("resnet_digits").display().to_string();
        let ws = dir.path().join("ws");
        Case {
            dir,
            data,
            model,
            ws,
        }
    }

    /// `COMMAND MODEL`, then `args`, on this data and workspace, one thread, JSON, Slurm.
    fn args<'a>(&'a self, command: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![command, self.model.as_str(), "--data", self.data.as_str()];
        a.extend_from_slice(&["--workspace", self.ws.to_str().unwrap(), "--threads", "1"]);
        a.extend_from_slice(args);
        a.push("--json");
        a.extend_from_slice(&SLURM);
        a
    }
}

/// Run qsteer `args` and kill it once it has submitted `jobs` Slurm jobs: nobody follows
/// them any more.
fn kill_after_submitting(dir: &Path, args: &[&str], jobs: usize) {
    let err_file = dir.join("killed.err");
    let mut child = qsteer(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let submitted = || {
        fs::read_to_string(&err_file)
            .unwrap_or_default()
            .matches("slurm: submitted job")
            .count()
    };
    while submitted() < jobs {
        assert!(Instant::now() < deadline, "{args:?}: not submitted in time");
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_slurm_job_whose_submitter_was_killed_is_followed_to_its_result() {
    if !slurm_up("a_slurm_job_whose_submitter_was_killed") {
        return;
    }
    let case = Case::new();
    let (dir, ws) = (&case.dir, &case.ws);
    let ws_arg = ws.display().to_string();
    let compress = case.args("compress", &["--method", "ssvd", "--target", "0.6"]);
    kill_after_submitting(dir.path(), &compress, 1);
    let before = Workspace::open(ws).unwrap();
    assert_eq!(before.file().slurm_jobs.len(), 1);
    assert!(
        ["PENDING", "RUNNING", "CONFIGURING"].contains(&before.file().slurm_jobs[0].state.as_str())
    );

    let follow = |extra: &[&str]| {
        let mut a = vec!["slurm-jobs", "--workspace", &ws_arg, "--json"];
        a.extend_from_slice(extra);
        let (status, out, err) = qsteer_timed(dir.path(), &a, 600);
        json_of(status, &out, &err)
    };
    let doc = follow(&["--follow"]);
    let followed = doc["followed"].as_array().unwrap();
    assert_eq!(followed.len(), 1, "{doc}");
    let result = &followed[0]["result"];
    assert_eq!(result["variant"], 1, "{doc}");
    assert_eq!(result["slurm"]["state"], "COMPLETED");
    assert_eq!(doc["slurm_jobs"][0]["state"], "COMPLETED");
    let after = Workspace::open(ws).unwrap();
    assert!(after.variant(1).is_some(), "the node's variant is there");
    // Nothing left to follow.
    let again = follow(&["--follow"]);
    assert_eq!(again["followed"].as_array().unwrap().len(), 0, "{again}");
}

#[test]
fn an_array_job_fills_the_dictionary_and_the_compress_job_computes_nothing_more() {
    if !slurm_up("an_array_job_fills_the_dictionary") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = ["--method", "ssvd", "--target", "0.6"];
    let array = ["--array-tasks", "3", "--array-throttle", "2"];
    let (local, remote, err, slurm_ws) = local_and_slurm(dir.path(), "compress", &args, &array);
    assert!(err.contains("slurm: submitted array job"), "{err}");
    for k in ["mac_ratio", "ratios", "accuracy"] {
        assert_eq!(remote[k], local[k], "{k}");
    }
    // Every entry came from the array's shares.
    assert!(local["evaluations"].as_u64().unwrap() > 0);
    assert_eq!(remote["evaluations"], 0, "{remote}");
    let ws = Workspace::open(Path::new(&slurm_ws)).unwrap();
    let jobs = &ws.file().slurm_jobs;
    assert_eq!(jobs.len(), 2, "the array and the compress job: {jobs:?}");
    assert!(jobs[0].stem.ends_with("-array"));
    assert!(jobs.iter().all(|j| j.state == "COMPLETED"), "{jobs:?}");
    for task in 0..3 {
        let part = Path::new(&slurm_ws).join(format!("slurm/{}-{task}.json", jobs[0].stem));
        let doc: Value = serde_json::from_slice(&fs::read(&part).unwrap()).unwrap();
        assert_eq!(doc["shard"], format!("{task}/3"));
    }
}

#[test]
fn a_sweep_run_again_takes_over_the_candidates_its_killed_run_sent() {
    if !slurm_up("a_sweep_run_again_takes_over") {
        return;
    }
    let case = Case::new();
    let (dir, ws) = (&case.dir, &case.ws);
    let steps = ["--target", "0.5", "--cssvd", "0.6,0.75", "--stage", "ssvd"];
    let sweep = case.args("sweep", &[&["--candidates", "5"][..], &steps].concat());
    kill_after_submitting(dir.path(), &sweep, 2);

    let (status, out, err) = qsteer_timed(dir.path(), &sweep, 900);
    let doc = json_of(status, &out, &err);
    assert_eq!(err.matches("slurm: submitted job").count(), 0, "{err}");
    let taken = err.matches("again (submitted by job").count() + err.matches("reusing it").count();
    assert_eq!(taken, 2, "{err}");
    assert_eq!(doc["ssvd"].as_array().unwrap().len(), 2, "{doc}");
    let ws = Workspace::open(ws).unwrap();
    assert_eq!(
        ws.variants().len(),
        3,
        "the base and the two candidates, once each"
    );
    assert_eq!(ws.file().slurm_jobs.len(), 2);
}

/// Every job kind with a command, once here and once with `--executor slurm` (the node
/// runs the shipped request with `qsteer run-job`): the same document (timings and the
/// `slurm` record aside), the same variants, the same journal. Four kinds at a time.
#[test]
fn every_job_kind_runs_through_slurm_and_records_what_a_local_run_records() {
    use crate::run_job::{command_line, commands, differences, journal, normalized, variants};
    if !slurm_up("every_job_kind_through_slurm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20).display().to_string();
    let model = sample_model(crate::run_job::MODEL).display().to_string();
    let slurm = ["--executor", "slurm", "--cpus", "1", "--time", "15"].map(String::from);
    let run_kind = |kind: &str, command: &[String]| {
        let local = dir
            .path()
            .join(format!("{kind}-local"))
            .display()
            .to_string();
        let remote = dir
            .path()
            .join(format!("{kind}-slurm"))
            .display()
            .to_string();
        let run = |ws: &str, extra: &[String]| {
            let mut a = command_line(command, &model, &data, ws);
            a.extend_from_slice(extra);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let (status, out, err) = qsteer_timed(dir.path(), &a, 600);
            (json_of(status, &out, &err), err)
        };
        let (expected, _) = run(&local, &[]);
        let (got, err) = run(&remote, &slurm);
        assert!(err.contains("slurm: submitted job"), "{kind}: {err}");
        let dirs = [local.as_str(), remote.as_str()];
        let diff = differences(&normalized(&expected, &dirs), &normalized(&got, &dirs), "");
        assert!(
            diff.is_empty(),
            "{kind}: the Slurm run's document differs:\n{diff:#?}"
        );
        assert_eq!(
            variants(&local, &dirs),
            variants(&remote, &dirs),
            "{kind}: variants"
        );
        let diff = differences(
            &json!(journal(&local, &dirs)),
            &json!(journal(&remote, &dirs)),
            "journal",
        );
        assert!(diff.is_empty(), "{kind}: the journals differ:\n{diff:#?}");
        let ws = Workspace::open(Path::new(&remote)).unwrap();
        assert!(
            !ws.file().slurm_jobs.is_empty(),
            "{kind}: no Slurm job recorded"
        );
        assert!(
            ws.file().slurm_jobs.iter().all(|j| j.state == "COMPLETED"),
            "{kind}: {:?}",
            ws.file().slurm_jobs
        );
    };
    for group in commands().chunks(4) {
        std::thread::scope(|s| {
            for (kind, command) in group {
                let run_kind = &run_kind;
                s.spawn(move || run_kind(kind, command));
            }
        });
    }
}

/// Export has no command that runs it as a job; through the engine it runs on Slurm as
/// well and writes the same files as here.
#[test]
fn an_export_job_runs_through_slurm_and_writes_what_a_local_one_writes() {
    use qsteer::jobs::{run_job_blocking, HeadlessJob};
    if !slurm_up("export_job_through_slurm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = small_digits(dir.path(), 20);
    let model = Model::load(&sample_model("resnet_digits")).unwrap();
    let ws_dir = dir.path().join("ws");
    let ws = Workspace::open_or_create(&ws_dir, &model, "resnet_digits").unwrap();
    let ws = Arc::new(Mutex::new(ws));
    let quantsim = JobKind::quantsim(0, data, Default::default()).with_threads_at_most(Some(1));
    let sim: qsteer::jobs::QuantsimOutcome = run_job_blocking(ws.clone(), quantsim, |_| {})
        .unwrap()
        .try_into()
        .unwrap();
    let export = |out: &Path, executor: Executor| {
        let kind = JobKind::Export {
            variant: sim.variant,
            out: Some(out.to_path_buf()),
            version: Default::default(),
        };
        run_job_blocking(ws.clone(), HeadlessJob::on(kind, executor), |_| {})
            .unwrap()
            .to_json()
    };
    let (here, there) = (dir.path().join("here"), dir.path().join("there"));
    let local = export(&here, Executor::Local);
    let remote = export(&there, slurm_settings());
    assert_eq!(remote["slurm"]["state"], "COMPLETED", "{remote}");
    let dirs = [here.to_str().unwrap(), there.to_str().unwrap()];
    let norm = |v: &Value| crate::run_job::normalized(v, &dirs);
    assert_eq!(norm(&local), norm(&remote));
    let mut files: Vec<_> = fs::read_dir(&here)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        assert_eq!(
            fs::read(here.join(&f)).unwrap(),
            fs::read(there.join(&f)).unwrap(),
            "{f:?}"
        );
    }
}
