//! Jobs on the sample model and its digits data, in a temporary workspace. Each test
//! asserts order and outcome, never timing. Where a test must catch a job in a given
//! state it holds the workspace lock: a job announces `Started` and then waits for that
//! lock before any work, so the test decides when it may go on.

use super::*;
use crate::experiment::{load_predictions, Workspace};
use crate::model::Model;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-models")
        .join(rel)
}

fn open_workspace(dir: &Path) -> Arc<Mutex<Workspace>> {
    let model = Model::load(&sample("mbv2_digits.onnx")).unwrap();
    let ws = Workspace::open_or_create(dir, &model, "mbv2_digits").unwrap();
    Arc::new(Mutex::new(ws))
}

/// Evaluate on the 400 evaluation samples, one thread (the machine is shared).
fn eval(variant: u32, reference: Option<u32>) -> JobKind {
    JobKind::Evaluate {
        variant,
        data: sample("digits"),
        subset: crate::experiment::evaluate::Subset::Evaluation,
        batch_size: 1,
        threads: 1,
        calibration_size: 200,
        seed: 0,
        reference,
        reference_model: None,
        save_outputs: None,
        metric: None,
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    rx: UnboundedReceiver<JobEvent>,
    runner: JobRunner,
    ws: Arc<Mutex<Workspace>>,
}

impl Harness {
    fn new(dir: &Path) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let (tx, rx) = unbounded_channel();
        let ws = open_workspace(dir);
        let runner = JobRunner::new(rt.handle().clone(), ws.clone(), 1, tx).unwrap();
        Harness { rt, rx, runner, ws }
    }

    /// The next event; a generous bound only so a broken runner fails instead of hanging.
    fn next(&mut self) -> JobEvent {
        let rx = &mut self.rx;
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(600), rx.recv()).await })
            .expect("no job event for 10 minutes")
            .expect("event channel closed")
    }

    /// Events until every job in `ids` has ended.
    fn until_ended(&mut self, ids: &[JobId]) -> Vec<JobEvent> {
        let mut events = Vec::new();
        let mut open: Vec<JobId> = ids.to_vec();
        while !open.is_empty() {
            let ev = self.next();
            if ev.is_terminal() {
                open.retain(|id| *id != ev.id());
            }
            events.push(ev);
        }
        events
    }
}

fn position(events: &[JobEvent], pred: impl Fn(&JobEvent) -> bool) -> usize {
    events.iter().position(pred).expect("event not found")
}

fn journal_states(dir: &Path, id: JobId) -> Vec<String> {
    std::fs::read_to_string(jobs_journal_path(dir))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["id"] == id.0)
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn evaluate_job_records_its_result_and_reports_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let id = h.runner.submit(eval(0, None));
    assert_eq!(id, JobId(1));
    let events = h.until_ended(&[id]);

    // Queued, Started, Progress…, Finished (logs may come in between).
    let states: Vec<&JobEvent> = events
        .iter()
        .filter(|e| !matches!(e, JobEvent::Log { .. }))
        .collect();
    assert!(
        matches!(states[0], JobEvent::Queued { id: i, kind } if *i == id && *kind == eval(0, None))
    );
    assert_eq!(*states[1], JobEvent::Started { id });
    let progress: Vec<(usize, usize)> = states[2..states.len() - 1]
        .iter()
        .map(|e| match e {
            JobEvent::Progress { done, total, .. } => (*done, *total),
            other => panic!("expected progress, got {other:?}"),
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert_eq!(*progress.last().unwrap(), (400, 400));
    let JobEvent::Finished { summary, .. } = states.last().unwrap() else {
        panic!("expected Finished, got {:?}", states.last());
    };
    assert_eq!(summary["variant"], 0);
    assert_eq!(summary["samples"], 400);
    let accuracy = summary["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5 && accuracy <= 1.0, "{summary}");
    assert!(summary["samples_per_second"].as_f64().unwrap() > 0.0);
    assert!(summary["agreement"].is_null());

    // Recorded on the variant, in memory and on disk, with the costs.
    let fingerprint = {
        let ws = h.ws.lock().unwrap();
        let v = ws.variant(0).unwrap();
        assert_eq!(v.results.len(), 1);
        assert!(v.macs.is_some() && v.params.is_some());
        assert_eq!(v.results[0].score.accuracy, Some(accuracy));
        v.results[0].dataset_fingerprint.clone()
    };
    let reopened = Workspace::open(dir.path()).unwrap();
    assert_eq!(reopened.variant(0).unwrap().results.len(), 1);
    let cached = load_predictions(dir.path(), 0, &fingerprint).unwrap();
    assert_eq!(cached.predictions.len(), 400);
    assert_eq!(cached.labels.map(|l| l.len()), Some(400));

    // Journal and log file.
    assert_eq!(
        journal_states(dir.path(), id),
        ["queued", "started", "finished"]
    );
    let log = read_job_log(dir.path(), id).unwrap();
    let live: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Log { line, .. } => Some(line),
            _ => None,
        })
        .collect();
    assert!(!live.is_empty());
    assert_eq!(log.first().unwrap(), "queued: evaluate v0");
    assert_eq!(log[1], "started");
    assert!(log.last().unwrap().starts_with("finished: {"), "{log:?}");
    assert_eq!(log[2..log.len() - 1].iter().collect::<Vec<_>>(), live);

    let history = job_history(dir.path()).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].state, JobState::Finished);
    // Floats pass through JSON text, so compare what is exact.
    let recorded = history[0].summary.as_ref().unwrap();
    assert_eq!(recorded["accuracy"], summary["accuracy"]);
    assert_eq!(recorded["samples"], 400);
    assert!(history[0].seconds.is_some());
}

#[test]
fn with_one_heavy_slot_the_second_job_starts_after_the_first_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let (a, b) = {
        let _hold = h.ws.lock().unwrap();
        let a = h.runner.submit(eval(0, None));
        // Fidelity of a variant to itself: agreement 1.
        let b = h.runner.submit(eval(0, Some(0)));
        assert_eq!(h.runner.running(), vec![(a, eval(0, None))]);
        assert_eq!(h.runner.queued(), vec![(b, eval(0, Some(0)))]);
        (a, b)
    };
    let events = h.until_ended(&[a, b]);
    let finished_a = position(
        &events,
        |e| matches!(e, JobEvent::Finished { id, .. } if *id == a),
    );
    let started_b = position(&events, |e| *e == JobEvent::Started { id: b });
    assert!(started_b > finished_a);
    let JobEvent::Finished { summary, .. } = events.last().unwrap() else {
        panic!("expected b to finish: {:?}", events.last());
    };
    assert_eq!(summary["agreement"].as_f64(), Some(1.0));
    assert_eq!(h.ws.lock().unwrap().variant(0).unwrap().results.len(), 2);
    assert!(h.runner.is_idle());
}

#[test]
fn cancelling_a_queued_job_drops_it_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let (a, b) = {
        let _hold = h.ws.lock().unwrap();
        let a = h.runner.submit(eval(0, None));
        let b = h.runner.submit(eval(0, None));
        assert!(h.runner.cancel(b));
        assert!(h.runner.queued().is_empty());
        assert!(!h.runner.cancel(JobId(999)));
        // Let `a` go too: only the queue is under test here.
        assert!(h.runner.cancel(a));
        (a, b)
    };
    let events = h.until_ended(&[a, b]);
    let of_b: Vec<&JobEvent> = events.iter().filter(|e| e.id() == b).collect();
    assert!(matches!(of_b[0], JobEvent::Queued { .. }));
    assert_eq!(*of_b[1], JobEvent::Cancelled { id: b });
    assert_eq!(of_b.len(), 2);
    assert_eq!(journal_states(dir.path(), b), ["queued", "cancelled"]);
    let history = job_history(dir.path()).unwrap();
    let rec = history.iter().find(|r| r.id == b).unwrap();
    assert_eq!(rec.state, JobState::Cancelled);
    assert_eq!(rec.started_at, None);
}

#[test]
fn cancelling_a_running_job_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let ws = h.ws.clone();
    let hold = ws.lock().unwrap();
    let id = h.runner.submit(eval(0, None));
    while h.next() != (JobEvent::Started { id }) {}
    assert!(h.runner.cancel(id));
    drop(hold);
    let events = h.until_ended(&[id]);
    assert_eq!(*events.last().unwrap(), JobEvent::Cancelled { id });
    assert!(!events
        .iter()
        .any(|e| matches!(e, JobEvent::Finished { .. })));
    assert!(h.ws.lock().unwrap().variant(0).unwrap().results.is_empty());
    let reopened = Workspace::open(dir.path()).unwrap();
    assert!(reopened.variant(0).unwrap().results.is_empty());
    assert_eq!(
        journal_states(dir.path(), id),
        ["queued", "started", "cancelled"]
    );
    assert_eq!(
        job_history(dir.path()).unwrap()[0].state,
        JobState::Cancelled
    );
    assert!(h.runner.is_idle());
}

#[test]
fn a_failing_job_reports_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let id = h.runner.submit(eval(7, None));
    let events = h.until_ended(&[id]);
    let JobEvent::Failed { error, .. } = events.last().unwrap() else {
        panic!("expected Failed: {events:?}");
    };
    assert!(error.contains("no variant 7"), "{error}");
    let rec = &job_history(dir.path()).unwrap()[0];
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.error.as_deref(), Some(error.as_str()));
    assert!(read_job_log(dir.path(), id)
        .unwrap()
        .last()
        .unwrap()
        .starts_with("failed: "));
}

/// The journal a killed app leaves: job 1 finished, job 2 started and never ended, an
/// older line of another format, and a last line cut off mid-write.
fn write_crashed_journal(dir: &Path) {
    let kind = serde_json::to_value(eval(0, None)).unwrap();
    let line = |id: u64, state: &str, time: f64| {
        serde_json::json!({"id": id, "state": state, "time": time, "kind": kind}).to_string()
    };
    let mut text = [
        line(1, "queued", 100.0),
        line(1, "started", 101.0),
        serde_json::json!({"id": 1, "state": "finished", "time": 105.5, "kind": kind,
            "summary": {"accuracy": 0.9}})
        .to_string(),
        r#"{"kind":"evaluate","variant":0,"when":1,"status":"finished"}"#.to_string(),
        line(2, "queued", 200.0),
        line(2, "started", 201.0),
    ]
    .join("\n");
    text.push_str("\n{\"id\":3,\"state\":\"que");
    std::fs::write(jobs_journal_path(dir), text).unwrap();
}

#[test]
fn history_after_a_crash_names_the_interrupted_job() {
    let dir = tempfile::tempdir().unwrap();
    open_workspace(dir.path());
    write_crashed_journal(dir.path());

    let history = load_history(dir.path()).unwrap();
    assert_eq!(history.skipped_lines, 2);
    assert_eq!(history.next_id, JobId(3));
    let states: Vec<(JobId, JobState)> = history.jobs.iter().map(|r| (r.id, r.state)).collect();
    assert_eq!(
        states,
        [
            (JobId(1), JobState::Finished),
            (JobId(2), JobState::Interrupted)
        ]
    );
    assert_eq!(history.jobs[0].seconds, Some(4.5));
    let interrupted: Vec<&JobRecord> = history.interrupted().collect();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(
        interrupted[0].describe(),
        "job 2 (evaluate v0) was interrupted while running"
    );

    // A runner opening the workspace reports job 2 once and marks it.
    let mut h = Harness::new(dir.path());
    assert_eq!(h.runner.interrupted().len(), 1);
    assert_eq!(h.runner.interrupted()[0].id, JobId(2));
    let after = load_history(dir.path()).unwrap();
    assert_eq!(after.interrupted().count(), 0);
    assert_eq!(after.jobs[1].state, JobState::Interrupted);
    assert!(read_job_log(dir.path(), JobId(2)).unwrap()[0].starts_with("interrupted"));

    // New lines land after the cut-off one, which stays a single skipped line.
    let id = {
        let _hold = h.ws.lock().unwrap();
        let id = h.runner.submit(eval(0, None));
        h.runner.cancel(id);
        id
    };
    assert_eq!(id, JobId(3));
    h.until_ended(&[id]);
    let again = load_history(dir.path()).unwrap();
    assert_eq!(again.skipped_lines, 2);
    assert_eq!(again.jobs.len(), 3);
    assert_eq!(again.jobs[2].state, JobState::Cancelled);
    drop(h);
    let h2 = Harness::new(dir.path());
    assert!(h2.runner.interrupted().is_empty());
}

#[test]
fn ids_continue_across_restarts_and_the_headless_path_writes_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = Harness::new(dir.path());
        let id = {
            let _hold = h.ws.lock().unwrap();
            let id = h.runner.submit(eval(0, None));
            h.runner.cancel(id);
            id
        };
        assert_eq!(id, JobId(1));
        h.until_ended(&[id]);
    }

    // Headless, on a freshly opened workspace: id 2, same events and records.
    let ws = open_workspace(dir.path());
    let mut events = Vec::new();
    let outcome = run_job_blocking(ws.clone(), eval(0, None), |e| events.push(e)).unwrap();
    let states: Vec<&JobEvent> = events
        .iter()
        .filter(|e| !matches!(e, JobEvent::Log { .. } | JobEvent::Progress { .. }))
        .collect();
    assert!(matches!(states[0], JobEvent::Queued { id: JobId(2), .. }));
    assert_eq!(*states[1], JobEvent::Started { id: JobId(2) });
    assert_eq!(
        *states[2],
        JobEvent::Finished {
            id: JobId(2),
            summary: outcome.to_json()
        }
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, JobEvent::Progress { .. })));
    let outcome: crate::jobs::EvaluateOutcome = outcome.try_into().unwrap();
    assert_eq!(outcome.samples, 400);
    assert_eq!(ws.lock().unwrap().variant(0).unwrap().results.len(), 1);
    assert_eq!(
        journal_states(dir.path(), JobId(2)),
        ["queued", "started", "finished"]
    );

    // A failed headless job is its error, for the CLI's exit code.
    let err = run_job_blocking(ws, eval(9, None), |_| {}).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");

    let h = Harness::new(dir.path());
    assert_eq!(
        h.runner.submit(JobKind::evaluate(0, sample("digits"))),
        JobId(4)
    );
    h.runner.cancel_all();
}

#[test]
fn kinds_and_events_serialize_with_stable_tags() {
    let kind = eval(3, Some(0));
    let v = serde_json::to_value(&kind).unwrap();
    assert_eq!(v["type"], "evaluate");
    assert_eq!(v["subset"], "evaluation");
    assert_eq!(kind.label(), "evaluate v3 vs v0");
    assert!(kind.is_heavy());
    let ev = JobEvent::Queued { id: JobId(5), kind };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(v["event"], "queued");
    assert_eq!(v["id"], 5);
    assert_eq!(serde_json::from_value::<JobEvent>(v).unwrap(), ev);
    assert_eq!(JobId(5).to_string(), "5");
}

/// Quantsim with 200 calibration samples, scored on the 400 evaluation samples, one thread.
fn quantsim(variant: u32, settings: crate::quant::simulate::QuantsimSettings) -> JobKind {
    JobKind::Quantsim {
        variant,
        data: sample("digits"),
        settings,
        calibration_size: 200,
        seed: 0,
        threads: 1,
        encodings: None,
        metric: None,
    }
}

fn progress_of(events: &[JobEvent], id: JobId) -> Vec<(String, usize, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress {
                id: i,
                done,
                total,
                what,
            } if *i == id => Some((what.clone(), *done, *total)),
            _ => None,
        })
        .collect()
}

/// The event that ended job `id`.
fn ending(events: &[JobEvent], id: JobId) -> &JobEvent {
    events
        .iter()
        .find(|e| e.id() == id && e.is_terminal())
        .unwrap_or_else(|| panic!("job {id} did not end: {events:?}"))
}

#[test]
fn quantsim_job_keeps_the_simulated_model_as_a_child_variant() {
    use crate::quant::qdq::QuantMode;
    use crate::quant::simulate::QuantsimSettings;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    // A second variant with the base's model, so a parent other than 0 is exercised.
    let copy = {
        let model = Model::load(&sample("mbv2_digits.onnx")).unwrap();
        h.ws.lock().unwrap().add_variant(0, "copy", &model).unwrap()
    };
    let fp32 = h.runner.submit(eval(0, None));
    let wa = h.runner.submit(quantsim(0, QuantsimSettings::default()));
    let weights_only = QuantsimSettings {
        w_bits: 4,
        per_channel: true,
        mode: QuantMode::WeightsOnly,
        ..Default::default()
    };
    let w = h.runner.submit(quantsim(copy, weights_only.clone()));
    let events = h.until_ended(&[fp32, wa, w]);

    // Progress per stage: calibration to its end, then evaluation to its end.
    let stages = progress_of(&events, wa);
    let calibration_end = stages
        .iter()
        .position(|p| p.0 == "calibration" && p.1 == p.2)
        .expect("calibration reported its end");
    assert!(stages[..calibration_end]
        .iter()
        .all(|p| p.0 == "calibration"));
    assert!(stages[calibration_end + 1..]
        .iter()
        .all(|p| p.0 == "evaluation"));
    assert_eq!(
        stages.last().unwrap(),
        &("evaluation".to_string(), 400, 400)
    );

    let summary = |id: JobId| match ending(&events, id) {
        JobEvent::Finished { summary, .. } => summary.clone(),
        other => panic!("job {id} did not finish: {other:?}"),
    };
    let s = summary(wa);
    let child = s["variant"].as_u64().unwrap() as u32;
    assert_eq!(s["parent"], 0);
    let result = s["result"].as_str().unwrap();
    assert!(
        result.starts_with("W8A8 per-tensor tf_enhanced: ") && result.contains("(FP32 "),
        "{result}"
    );
    assert!(s["accuracy"].as_f64().unwrap() > 0.9, "{s}");
    assert!(s["activation_points"].as_u64().unwrap() > 0);
    // The shipped model's BNs stay unfolded in quantsim, as in AIMET: the job says so.
    assert_eq!(
        s["notes"],
        serde_json::json!([
            "16 BatchNormalization(s) follow layers and are not folded (as in AIMET); \
             folding them first (`qsteer fold-bn`) may quantize better or worse: compare both"
        ])
    );

    let ws = Workspace::open(dir.path()).unwrap();
    let v = ws.variant(child).unwrap();
    assert_eq!(v.parent, Some(0));
    assert_eq!(v.step, QuantsimSettings::default().step());
    assert!(v.macs.is_some() && v.params.is_some());
    assert_eq!(v.results.len(), 1);
    assert_eq!(v.results[0].score.accuracy, s["accuracy"].as_f64());
    let enc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(v.encodings_file.as_ref().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(enc["version"], "1.0.0");
    assert!(!enc["activation_encodings"].as_array().unwrap().is_empty());
    assert!(!enc["param_encodings"].as_array().unwrap().is_empty());
    Model::load(&ws.model_path(v)).expect("the simulated model loads");
    // Cached for the A/B comparison, like an evaluation's.
    let cached = load_predictions(dir.path(), child, &v.results[0].dataset_fingerprint).unwrap();
    assert_eq!(cached.predictions.len(), 400);

    // Weights only, from the copy: a child of the copy; its parent was never evaluated.
    let s = summary(w);
    let grandchild = ws.variant(s["variant"].as_u64().unwrap() as u32).unwrap();
    assert_eq!(grandchild.parent, Some(copy));
    assert_eq!(grandchild.step, weights_only.step());
    let result = s["result"].as_str().unwrap();
    assert!(
        result.starts_with("W4 per-channel tf_enhanced: ") && result.contains("not evaluated"),
        "{result}"
    );
    let enc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(grandchild.encodings_file.as_ref().unwrap())).unwrap(),
    )
    .unwrap();
    assert!(enc["activation_encodings"].as_array().unwrap().is_empty());
    assert_eq!(
        journal_states(dir.path(), w),
        ["queued", "started", "finished"]
    );
    let log = read_job_log(dir.path(), w).unwrap();
    assert_eq!(
        log[0],
        format!("queued: quantsim v{copy} W4 per-channel tf_enhanced")
    );
}

#[test]
fn cancelling_a_running_quantsim_adds_no_variant() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let ws = h.ws.clone();
    let hold = ws.lock().unwrap();
    let id = h.runner.submit(quantsim(0, Default::default()));
    while h.next() != (JobEvent::Started { id }) {}
    assert!(h.runner.cancel(id));
    drop(hold);
    let events = h.until_ended(&[id]);
    assert_eq!(*events.last().unwrap(), JobEvent::Cancelled { id });
    assert_eq!(h.ws.lock().unwrap().variants().len(), 1);
    assert_eq!(Workspace::open(dir.path()).unwrap().variants().len(), 1);
    assert!(!dir.path().join("variants/1.onnx").exists());
    assert_eq!(
        journal_states(dir.path(), id),
        ["queued", "started", "cancelled"]
    );
}

#[test]
fn quantsim_with_bad_settings_or_a_quantized_parent_fails_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let settings = crate::quant::simulate::QuantsimSettings {
        w_bits: 1,
        ..Default::default()
    };
    // A variant with encodings stands for a simulated model.
    let quantized = {
        let model = Model::load(&sample("mbv2_digits.onnx")).unwrap();
        let mut ws = h.ws.lock().unwrap();
        let id = ws.add_variant(0, "quantized", &model).unwrap();
        ws.set_encodings(id, &serde_json::json!({})).unwrap();
        id
    };
    let bad_bits = h.runner.submit(quantsim(0, settings));
    let no_parent = h.runner.submit(quantsim(5, Default::default()));
    let twice = h.runner.submit(quantsim(quantized, Default::default()));
    let events = h.until_ended(&[bad_bits, no_parent, twice]);
    let error = |id: JobId| match ending(&events, id) {
        JobEvent::Failed { error, .. } => error.clone(),
        other => panic!("job {id} did not fail: {other:?}"),
    };
    assert!(
        error(bad_bits).contains("weight bits"),
        "{}",
        error(bad_bits)
    );
    assert!(
        error(no_parent).contains("no variant 5"),
        "{}",
        error(no_parent)
    );
    assert!(
        error(twice).contains("already quantized"),
        "{}",
        error(twice)
    );
    assert_eq!(h.ws.lock().unwrap().variants().len(), 2);
}

#[test]
fn a_quantsim_kind_survives_the_journal_round_trip() {
    let settings = crate::quant::simulate::QuantsimSettings {
        scheme: crate::quant::Scheme::Percentile(99.99),
        ..Default::default()
    };
    let kind = quantsim(2, settings);
    let v = serde_json::to_value(&kind).unwrap();
    assert_eq!(v["type"], "quantsim");
    assert_eq!(v["settings"]["scheme"]["percentile"], 99.99);
    assert_eq!(serde_json::from_value::<JobKind>(v).unwrap(), kind);
    assert_eq!(kind.label(), "quantsim v2 W8A8 per-tensor percentile:99.99");
    assert!(kind.is_heavy());
}

#[test]
fn analyze_job_stores_the_diagnosis_on_the_variant_and_refuses_a_quantized_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let quantized = {
        let model = Model::load(&sample("mbv2_digits.onnx")).unwrap();
        let mut ws = h.ws.lock().unwrap();
        let id = ws.add_variant(0, "quantized", &model).unwrap();
        ws.set_encodings(id, &serde_json::json!({})).unwrap();
        id
    };
    // A quantsim variant: analysed on its parent's FP32 model, stored on itself.
    let simulated = {
        let model = Model::load(&sample("mbv2_digits.onnx")).unwrap();
        let mut ws = h.ws.lock().unwrap();
        let id = ws.add_variant(0, "quantsim", &model).unwrap();
        ws.set_encodings(id, &serde_json::json!({})).unwrap();
        ws.set_quantsim_settings(id, &Default::default()).unwrap();
        id
    };
    let kind = |variant| JobKind::Analyze {
        variant,
        data: sample("digits"),
        settings: crate::quant::simulate::QuantsimSettings {
            w_bits: 4,
            ..Default::default()
        },
        calibration_size: 200,
        seed: 0,
        threads: 1,
        sweep: false,
        metric: None,
    };
    let ok = h.runner.submit(kind(0));
    let refused = h.runner.submit(kind(quantized));
    let of_sim = h.runner.submit(kind(simulated));
    let events = h.until_ended(&[ok, refused, of_sim]);
    assert!(matches!(ending(&events, of_sim), JobEvent::Finished { .. }));
    let JobEvent::Finished { summary, .. } = ending(&events, ok) else {
        panic!("{events:?}")
    };
    assert!(
        summary["result"]
            .as_str()
            .unwrap()
            .contains("noisiest alone"),
        "{summary}"
    );
    let stages: Vec<String> = progress_of(&events, ok).into_iter().map(|p| p.0).collect();
    assert!(
        stages.contains(&"calibration".to_string()) && stages.contains(&"analysis".to_string()),
        "{stages:?}"
    );
    let ws = h.ws.lock().unwrap();
    let analysis = ws.analysis(0).unwrap().expect("stored");
    assert_eq!(analysis.layers.len(), 17);
    assert_eq!(analysis.settings.w_bits, 4);
    assert!(ws.analysis(quantized).unwrap().is_none());
    assert_eq!(ws.analysis(simulated).unwrap().unwrap().layers.len(), 17);
    match ending(&events, refused) {
        JobEvent::Failed { error, .. } => assert!(error.contains("already quantized"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn export_job_writes_the_qdq_model_and_encodings_of_a_quantsim_variant() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path());
    let sim: crate::jobs::QuantsimOutcome =
        run_job_blocking(ws.clone(), quantsim(0, Default::default()), |_| {})
            .unwrap()
            .try_into()
            .unwrap();
    let id = sim.variant;
    let export = JobKind::Export {
        variant: id,
        out: None,
        version: crate::quant::encodings_file::EncodingsVersion::Legacy,
    };
    let summary = run_job_blocking(ws.clone(), export, |_| {})
        .unwrap()
        .to_json();
    let output = std::path::PathBuf::from(summary["output"].as_str().unwrap());
    assert!(output.starts_with(dir.path().join("exports")), "{output:?}");
    let qdq = Model::load_any(&output).unwrap();
    assert!(qdq
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "DequantizeLinear"));
    let enc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(summary["encodings"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(enc["version"], "0.6.1");
    // The base variant has nothing to export.
    let err = run_job_blocking(
        ws,
        JobKind::Export {
            variant: 0,
            out: None,
            version: Default::default(),
        },
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no parent") || err.to_string().contains("no encodings"),
        "{err}"
    );
}

#[test]
fn fold_bn_then_cle_jobs_make_children_that_carry_the_bn_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(dir.path());
    let fold = h.runner.submit(JobKind::FoldBn { variant: 0 });
    let events = h.until_ended(&[fold]);
    let JobEvent::Finished { summary, .. } = ending(&events, fold) else {
        panic!("{events:?}")
    };
    assert_eq!(summary["step"], "fold_bn");
    assert_eq!(summary["folded"].as_array().unwrap().len(), 16);
    let folded = summary["variant"].as_u64().unwrap() as u32;
    let cle = JobKind::Cle {
        variant: folded,
        relu6_to_relu: true,
        hba: true,
        hba_padded: false,
        scaling: crate::fixes::CleScaling::default(),
        data: None,
    };
    assert_eq!(cle.label(), format!("cle v{folded} relu6→relu +hba"));
    assert!(!cle.is_heavy());
    let id = h.runner.submit(cle);
    let events = h.until_ended(&[id]);
    let JobEvent::Finished { summary, .. } = ending(&events, id) else {
        panic!("{events:?}")
    };
    assert_eq!(summary["step"], "cle{relu6_to_relu:true,hba:true}");
    assert_eq!(summary["parent"], folded);
    // Already folded: the statistics came from the parent, no second fold.
    assert!(summary["folded"].is_null(), "{summary}");
    assert_eq!(summary["converted"].as_array().unwrap().len(), 9);
    assert_eq!(summary["sets"].as_array().unwrap().len(), 5);
    let layer = &summary["layers"][0];
    assert!(layer["ratio_before"].as_f64().unwrap() >= layer["ratio_after"].as_f64().unwrap());
    assert_eq!(summary["hba"]["absorbed"].as_array().unwrap().len(), 0);
    let notes = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Log { line, .. } if line.contains("became Relu")))
        .count();
    assert_eq!(notes, 9);
    let child = summary["variant"].as_u64().unwrap() as u32;
    let ws = h.ws.lock().unwrap();
    for v in [folded, child] {
        let stats = ws.bn_stats(v).unwrap().expect("stats stored");
        assert_eq!(stats.layers.len(), 16);
        assert!(dir
            .path()
            .join(format!("variants/{v}.bn_stats.json"))
            .is_file());
    }
    // CLE scaled the statistics with the channels.
    let before = ws.bn_stats(folded).unwrap().unwrap();
    let after = ws.bn_stats(child).unwrap().unwrap();
    assert_ne!(
        before.get("block2.expand.conv"),
        after.get("block2.expand.conv")
    );
    assert_eq!(before.get("stem.conv"), after.get("stem.conv"));
    let v = ws.variant(child).unwrap();
    assert_eq!(v.parent, Some(folded));
    assert!(v.params.is_some());
    assert!(Model::load(&ws.model_path(v)).is_ok());
    assert!(ws.bn_stats(0).unwrap().is_none());
}

#[test]
fn a_cancelled_cle_job_adds_no_variant_and_a_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ws = open_workspace(dir.path());
    let cancel = crate::cancel::CancelToken::new();
    cancel.cancel();
    let kind = JobKind::Cle {
        variant: 0,
        relu6_to_relu: false,
        hba: true,
        hba_padded: false,
        scaling: crate::fixes::CleScaling::Settle,
        data: None,
    };
    let result = run_job_blocking_with(ws.clone(), kind.clone(), &cancel, |_| {});
    assert!(matches!(result, Err(crate::Error::Cancelled)), "{result:?}");
    assert_eq!(ws.lock().unwrap().variants().len(), 1);
    // Older journals without the HBA fields read with HBA on, padded off, and without the
    // scaling field as what CLE did then: iterate until the scales settle.
    let v: serde_json::Value =
        serde_json::json!({"type": "cle", "variant": 0, "relu6_to_relu": false});
    assert_eq!(serde_json::from_value::<JobKind>(v).unwrap(), kind);
    let fold = serde_json::to_value(JobKind::FoldBn { variant: 2 }).unwrap();
    assert_eq!(fold, serde_json::json!({"type": "fold_bn", "variant": 2}));
}

#[path = "chain_tests.rs"]
mod chain_tests;
