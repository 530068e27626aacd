//! The typed outcomes read what qsteer wrote before they were typed, and write it back
//! unchanged: same keys, nesting and values (#18 item 1).

use super::outcome::JobOutcome;
use super::JobKind;
use serde_json::Value;

const OLD_JOURNAL: &str = include_str!("../../tests/fixtures/journals/before_typed_outcomes.jsonl");

/// The (kind, summary) of every finished line of the journal written before typing.
fn old_finished() -> Vec<(JobKind, Value)> {
    OLD_JOURNAL
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            let kind: JobKind = serde_json::from_value(entry["kind"].clone()).unwrap();
            (kind, entry["summary"].clone())
        })
        .collect()
}

/// `new` holds every key of `old` with the same value (numbers within 1e-12 relative: an f32
/// field read back from a journal line may move one f64 ULP, far below f32 precision). Keys
/// a later qsteer added (`scaling` of CLE, `left_out` of compress) may come on top: a renamed
/// or dropped key still fails.
fn keeps_json(new: &Value, old: &Value) -> bool {
    let (a, b) = (new, old);
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| keeps_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => y
            .iter()
            .all(|(k, w)| x.get(k).is_some_and(|v| keeps_json(v, w))),
        _ => a == b,
    }
}

#[test]
fn old_journal_summaries_load_typed_and_write_back_unchanged() {
    let old = old_finished();
    let mut kinds: Vec<String> = vec![];
    for (kind, summary) in &old {
        let outcome = JobOutcome::from_summary(kind, summary.clone()).unwrap();
        assert!(
            !matches!(outcome, JobOutcome::Untyped(_)),
            "{} read untyped",
            kind.label()
        );
        assert!(
            keeps_json(&outcome.to_json(), summary),
            "{}: {} != {summary}",
            kind.label(),
            outcome.to_json()
        );
        // The kind's tag in the journal line (`fine_tune`, `bias_correct`, …).
        let tag = serde_json::to_value(kind).unwrap()["type"].clone();
        kinds.push(tag.as_str().unwrap().to_string());
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "adaround",
            "analyze",
            "bias_correct",
            "cle",
            "compress",
            "evaluate",
            "external_fine_tune",
            "fine_tune",
            "fix_chain",
            "fold_bn",
            "qat",
            "quantsim",
            "sweep"
        ]
    );
}

#[test]
fn typed_fields_hold_what_the_old_summary_said() {
    let old = old_finished();
    let (kind, summary) = (old.iter())
        .find(|(k, _)| matches!(k, JobKind::Quantsim { .. }))
        .unwrap();
    let sim: super::QuantsimOutcome = JobOutcome::from_summary(kind, summary.clone())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(Some(sim.variant as u64), summary["variant"].as_u64());
    assert_eq!(sim.result, summary["result"].as_str().unwrap());
    assert_eq!(sim.score.metric.as_deref(), Some("accuracy"));
    // With a reference, the per-output scores come back too.
    let (kind, summary) = (old.iter())
        .find(|(_, s)| s.get("outputs").is_some())
        .unwrap();
    let eval: super::EvaluateOutcome = JobOutcome::from_summary(kind, summary.clone())
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        eval.score.outputs.len(),
        summary["outputs"].as_array().unwrap().len()
    );
    assert!(eval.score.agreement.is_some());
}

#[test]
fn a_summary_from_an_older_qsteer_without_the_newer_keys_loads_with_defaults() {
    let (kind, mut summary) = old_finished()
        .into_iter()
        .find(|(k, _)| matches!(k, JobKind::Quantsim { .. }))
        .unwrap();
    for key in [
        "kept_fp32",
        "notes",
        "calibration_requested",
        "metric",
        "cosine",
    ] {
        summary.as_object_mut().unwrap().remove(key);
    }
    let sim: super::QuantsimOutcome = JobOutcome::from_summary(&kind, summary)
        .unwrap()
        .try_into()
        .unwrap();
    assert!(sim.kept_fp32.is_empty() && sim.notes.is_empty());
    assert_eq!(sim.score.metric, None);
}

#[test]
fn a_summary_of_the_wrong_shape_is_an_error_naming_the_job() {
    let (kind, _) = old_finished()
        .into_iter()
        .find(|(k, _)| matches!(k, JobKind::FoldBn { .. }))
        .unwrap();
    let e = JobOutcome::from_summary(&kind, serde_json::json!({"folded": 3})).unwrap_err();
    assert!(e.to_string().contains("fold-bn v0"), "{e}");
    // An outcome asked for as another kind names what it was.
    let fold = JobOutcome::from_summary(&kind, serde_json::json!({"variant": 1})).unwrap();
    let e = super::QuantsimOutcome::try_from(fold).unwrap_err();
    assert!(e.to_string().contains("quantsim"), "{e}");
}

#[test]
fn a_slurm_record_on_a_node_summary_is_kept() {
    let (kind, mut summary) = old_finished()
        .into_iter()
        .find(|(k, _)| matches!(k, JobKind::Quantsim { .. }))
        .unwrap();
    summary["slurm"] = serde_json::json!({
        "job_id": "42", "state": "COMPLETED", "node": "n1", "exit_code": "0:0",
        "queued_seconds": 1.5, "script": "/w/slurm/job-3.sh", "output": "/w/slurm/job-3.out",
    });
    let outcome = JobOutcome::from_summary(&kind, summary.clone()).unwrap();
    assert_eq!(outcome.to_json(), summary);
    let sim: super::QuantsimOutcome = outcome.try_into().unwrap();
    assert_eq!(sim.slurm.unwrap().node, "n1");
}
