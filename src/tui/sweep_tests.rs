//! The sweep in the app: the dialog's keys (Cssvd following the target until typed), step 1
//! queued; a finished step 1 opens decision 1 with the rule's pre-selection, Enter queues
//! step 2 with the picked candidates and settings; a finished step 2 opens decision 2 whose
//! Enter tags the pick and puts it beside the base in A/B; snapshots at 80×24.

use super::action::Action;
use super::quantsim_tests::submitted;
use super::state::{App, Pane, Popup};
use super::sweep_decision::{Step, SweepDecision};
use super::sweep_form::SweepForm;
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::jobs::{JobEvent, JobId, JobKind, SweepStage};
use serde_json::{json, Value};

fn form(app: &App) -> &SweepForm {
    match app.popups.last() {
        Some(Popup::Sweep(f)) => f,
        other => panic!("no sweep dialog on top: {other:?}"),
    }
}

fn decision(app: &App) -> &SweepDecision {
    match app.popups.last() {
        Some(Popup::SweepDecision(d)) => d,
        other => panic!("no sweep decision on top: {other:?}"),
    }
}

pub(super) fn stage_job(stage: SweepStage) -> JobKind {
    JobKind::Sweep {
        variant: 0,
        data: "sample-models/digits".into(),
        target: 0.5,
        cssvd: vec![0.5, 0.65, 0.75],
        max_drop: 2.0,
        neighbour: 0.05,
        reconstruct: true,
        candidates: 10,
        stage,
        calibration_size: 200,
        seed: 0,
        threads: 2,
        metric: None,
    }
}

fn score(acc: f64) -> Value {
    json!({"accuracy": acc, "top5_accuracy": null, "agreement": null, "sqnr_db": null, "samples": 400})
}

fn row(variant: u32, parent: u32, method: &str, requested: f64, overall: f64, acc: f64) -> Value {
    json!({
        "variant": variant, "parent": parent, "method": method, "requested": requested,
        "mac_ratio": overall, "overall_mac_ratio": overall,
        "score_before": score(acc - 0.05), "score_after": score(acc),
        "drop_points": 100.0 * (0.99 - acc),
        "latency": {"median_ms": 1.5, "p90_ms": 1.7, "runs": 30, "batch": 1, "threads": 1},
        "size_bytes": 120_000, "preselected": 0.99 - acc <= 0.01,
    })
}

pub(super) fn report(cp: bool) -> Value {
    let ssvd = vec![
        row(1, 0, "spatial_svd", 0.5, 0.5, 0.95),
        row(2, 0, "spatial_svd", 0.65, 0.65, 0.985),
        row(3, 0, "spatial_svd", 0.75, 0.75, 0.99),
    ];
    let (cp_rows, pick) = if cp {
        (
            vec![
                row(4, 2, "channel_pruning", 0.72, 0.47, 0.97),
                row(5, 2, "channel_pruning", 0.77, 0.5, 0.98),
                row(6, 3, "channel_pruning", 0.67, 0.5, 0.975),
            ],
            json!({"variant": 5, "reason": "best score within the MAC target"}),
        )
    } else {
        (vec![], Value::Null)
    };
    json!({
        "base": 0, "target": 0.5, "max_drop": 2.0, "metric": "accuracy",
        "base_score": score(0.99),
        "base_latency": {"median_ms": 2.5, "p90_ms": 2.7, "runs": 30, "batch": 1, "threads": 1},
        "ssvd": ssvd, "advice": null, "cp": cp_rows, "pick": pick,
    })
}

/// Queue, start and finish a job of `kind` with `summary` as its result.
pub(super) fn finish(app: &mut App, id: u64, kind: JobKind, summary: Value) -> Vec<Effect> {
    let id = JobId(id);
    update(app, Action::Job(JobEvent::Queued { id, kind }));
    update(app, Action::Job(JobEvent::Started { id }));
    update(app, Action::Job(JobEvent::Finished { id, summary }))
}

#[test]
fn r_opens_the_dialog_and_cssvd_follows_the_target_until_typed() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::SweepDialog);
    assert_eq!(*form(&app), SweepForm::new(0));
    assert_eq!(form(&app).cssvd(), [0.5, 0.65, 0.75]);
    update(&mut app, Action::Left); // target 0.50 → 0.45
    assert_eq!(form(&app).cssvd(), [0.45, 0.6, 0.7]);
    update(&mut app, Action::Down); // Cssvd 1: typed, so it stops following
    for c in ['5', '5'] {
        update(&mut app, Action::Char(c));
    }
    update(&mut app, Action::Up);
    update(&mut app, Action::Right); // target 0.45 → 0.50 leaves the Cssvd alone
    assert_eq!(form(&app).cssvd(), [0.55, 0.6, 0.7]);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let JobKind::Sweep {
        target,
        cssvd,
        stage,
        reconstruct,
        ..
    } = &jobs[0]
    else {
        panic!("not a sweep job: {jobs:?}");
    };
    assert_eq!((*target, cssvd.as_slice()), (0.5, &[0.55, 0.6, 0.7][..]));
    assert_eq!((stage, *reconstruct), (&SweepStage::Ssvd, true));
    assert!(app.popups.is_empty());
}

#[test]
fn a_cssvd_below_the_target_launches_nothing() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::SweepDialog);
    update(&mut app, Action::Down);
    update(&mut app, Action::Char('3'));
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("below C"), "{}", app.status);
}

#[test]
fn step_one_opens_decision_one_and_enter_queues_step_two_for_the_picked() {
    let (mut app, _d) = sample_app();
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    let d = decision(&app);
    assert_eq!(d.step, Step::Ssvd);
    assert_eq!(d.picked, [false, true, true], "the rule's pre-selection");
    // Unpick 0.75, pick 0.5, neighbours 0.05 → 0.03, fine-tuning off.
    update(&mut app, Action::Down);
    update(&mut app, Action::Down);
    update(&mut app, Action::Toggle);
    update(&mut app, Action::Up);
    update(&mut app, Action::Up);
    update(&mut app, Action::Toggle);
    update(&mut app, Action::FocusNext);
    update(&mut app, Action::Right);
    update(&mut app, Action::FocusNext);
    update(&mut app, Action::Left);
    update(&mut app, Action::Left);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let JobKind::Sweep {
        stage,
        neighbour,
        reconstruct,
        ..
    } = &jobs[0]
    else {
        panic!("not a sweep job: {jobs:?}");
    };
    assert_eq!(stage, &SweepStage::Cp { ssvd: vec![1, 2] });
    assert_eq!((*neighbour, *reconstruct), (0.03, false));
    assert!(app.popups.is_empty() && app.pending_decision.is_none());
}

#[test]
fn step_two_opens_decision_two_and_enter_tags_the_pick() {
    let (mut app, _d) = sample_app();
    let stage = SweepStage::Cp { ssvd: vec![2, 3] };
    finish(&mut app, 1, stage_job(stage), report(true));
    let d = decision(&app);
    assert_eq!(d.step, Step::Cp);
    assert_eq!(d.picked, [false, true, false], "the rule's pick");
    update(&mut app, Action::Down); // to v6
    update(&mut app, Action::Toggle);
    assert_eq!(decision(&app).picked, [false, false, true], "one pick only");
    let effects = update(&mut app, Action::Confirm);
    assert!(effects.contains(&Effect::TagVariant {
        id: 6,
        tag: "picked".into(),
        untag: vec![4, 5, 6],
    }));
    assert_eq!((app.mark_a, app.mark_b), (Some(6), Some(0)));
    assert_eq!(app.focus, Pane::Compare);
}

#[test]
fn a_decision_waits_behind_an_open_dialog_and_d_reopens_it() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::CompressDialog);
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    assert!(matches!(app.popups.last(), Some(Popup::Compress(_))));
    assert!(app.status.contains("press d"), "{}", app.status);
    update(&mut app, Action::Close);
    update(&mut app, Action::SweepDecision);
    assert_eq!(decision(&app).step, Step::Ssvd);
    // Another job's result opens nothing.
    let (mut app, _d) = sample_app();
    finish(
        &mut app,
        1,
        JobKind::FoldBn { variant: 0 },
        json!({"variant": 1}),
    );
    assert!(app.popups.is_empty());
}

#[test]
fn snapshots_of_the_sweep_dialogs() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::SweepDialog);
    insta::assert_snapshot!("sweep_form_80x24", render(&app, 80, 24));
    update(&mut app, Action::Close);
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    insta::assert_snapshot!("sweep_decision_1_80x24", render(&app, 80, 24));
    update(&mut app, Action::Close);
    let stage = SweepStage::Cp { ssvd: vec![2, 3] };
    finish(&mut app, 2, stage_job(stage), report(true));
    insta::assert_snapshot!("sweep_decision_2_80x24", render(&app, 80, 24));
}
