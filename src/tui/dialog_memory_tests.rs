//! Dialogs open with the values they last launched with, after a restart too (stored in the
//! workspace); odd stored values keep the defaults; a sweep decision offers a candidate's
//! trained child, not the untrained candidate.

use super::action::Action;
use super::init;
use super::quantsim_tests::result;
use super::state::{App, Popup};
use super::sweep_tests::{finish, report, stage_job};
use super::tests::sample_app;
use super::theme::Theme;
use super::update::{update, Effect};
use qsteer::experiment::{Variant, Workspace};
use qsteer::jobs::SweepStage;
use std::path::{Path, PathBuf};

/// Store what the effects ask to, as the running app does.
fn store(ws_dir: &Path, effects: &[Effect]) -> usize {
    let mut ws = Workspace::open(ws_dir).unwrap();
    let mut n = 0;
    for e in effects {
        if let Effect::RememberDialog { dialog, values } = e {
            ws.set_dialog(dialog, values.clone()).unwrap();
            n += 1;
        }
    }
    n
}

fn reopen(dir: &Path) -> App {
    init::open(
        &PathBuf::from("sample-models/mbv2_digits.onnx"),
        Some(PathBuf::from("sample-models/digits")),
        Some(dir.join("ws")),
        Theme::load("mono").unwrap(),
    )
    .unwrap()
    .app
}

#[test]
fn quantsim_and_sweep_dialogs_open_with_their_last_values_after_a_restart() {
    let (mut app, d) = sample_app();
    let ws_dir = d.path().join("ws");
    // Quantsim: W4, activations-only mode.
    update(&mut app, Action::QuantsimDialog);
    update(&mut app, Action::Char('4')); // W bits 4
    for _ in 0..6 {
        update(&mut app, Action::Down); // to the mode field
    }
    update(&mut app, Action::Right); // weights only
    let effects = update(&mut app, Action::Confirm);
    assert_eq!(store(&ws_dir, &effects), 1);
    // Sweep: target 0.45 (Cssvd following it), tolerable drop 3.
    update(&mut app, Action::SweepDialog);
    update(&mut app, Action::Left); // target 0.50 → 0.45
    for _ in 0..4 {
        update(&mut app, Action::Down); // Cssvd 1–3, drop
    }
    update(&mut app, Action::Char('3'));
    let effects = update(&mut app, Action::Confirm);
    assert_eq!(store(&ws_dir, &effects), 1);

    let mut app = reopen(d.path());
    update(&mut app, Action::QuantsimDialog);
    let Some(Popup::Quantsim(q)) = app.popups.last() else {
        panic!("no quantsim dialog")
    };
    assert_eq!((q.w_bits, q.a_bits, q.mode), (4, 8, 1));
    // The variant is the moment's, not the remembered one's.
    assert_eq!(q.variant, 0);
    app.popups.clear();
    update(&mut app, Action::SweepDialog);
    let Some(Popup::Sweep(s)) = app.popups.last() else {
        panic!("no sweep dialog")
    };
    assert_eq!((s.target_pct, s.max_drop), (45, 3));
    assert_eq!(s.cssvd(), [0.45, 0.6, 0.7]);
}

#[test]
fn stored_values_from_another_version_keep_the_defaults() {
    let (app, d) = sample_app();
    drop(app);
    let mut ws = Workspace::open(&d.path().join("ws")).unwrap();
    let odd = serde_json::json!({"w_bits": 99, "scheme": "no such scheme", "a_bits": "8",
                                 "mode": "activations only", "extra": [1, 2]});
    ws.set_dialog("quantsim", odd).unwrap();
    ws.set_dialog("finetune", serde_json::json!({"lr": 1000, "epochs": 7}))
        .unwrap();
    let mut app = reopen(d.path());
    update(&mut app, Action::QuantsimDialog);
    let Some(Popup::Quantsim(q)) = app.popups.last() else {
        panic!("no quantsim dialog")
    };
    // Out of range, unknown or mistyped: the defaults; the known mode is taken.
    assert_eq!((q.w_bits, q.a_bits, q.scheme, q.mode), (8, 8, 1, 2));
    app.popups.clear();
    update(&mut app, Action::FineTuneDialog);
    let Some(Popup::FineTune(f)) = app.popups.last() else {
        panic!("no fine-tune dialog")
    };
    let fresh = super::finetune_form::FineTuneForm::new(vec![0], false, None);
    assert_eq!((f.epochs, f.lr), (7, fresh.lr));
}

/// A variant trained from `parent` (as a fine-tune job records it), scored `acc`.
fn trained(id: u32, parent: u32, acc: f64) -> Variant {
    let mut v = Variant::new(
        id,
        Some(parent),
        "finetune{epochs:3,lr:0.001}",
        format!("variants/{id}.onnx"),
        120_000,
    );
    v.results.push(result(acc));
    v
}

fn rows(app: &App) -> Vec<u32> {
    let Some(Popup::SweepDecision(d)) = app.popups.last() else {
        panic!("no decision on top: {:?}", app.popups.last())
    };
    d.rows().iter().map(|r| r.variant).collect()
}

#[test]
fn the_decision_offers_a_candidates_trained_child() {
    let (mut app, _d) = sample_app();
    // v2 was fine-tuned before the decision arrived (say, by a job that outlived the app).
    app.variants.push(trained(9, 2, 0.988));
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    assert_eq!(rows(&app), [1, 9, 3]);
    let Some(Popup::SweepDecision(d)) = app.popups.last() else {
        panic!()
    };
    let row = &d.rows()[1];
    assert!((row.drop_points - 0.2).abs() < 1e-6, "{}", row.drop_points);
    // One trained later, found when the workspace is read again (the reload after a job).
    app.variants.push(trained(10, 3, 0.991));
    super::sweep_decision::follow_trained(&mut app);
    assert_eq!(rows(&app), [1, 9, 10]);
    assert_eq!(
        app.pending_decision
            .as_ref()
            .map(|d| d.picked_variants().len()),
        Some(2)
    );
    // Step 2 prunes the trained models.
    let Some(Popup::SweepDecision(d)) = app.popups.last() else {
        panic!()
    };
    let Some(qsteer::jobs::JobKind::Sweep {
        stage: SweepStage::Cp { ssvd },
        ..
    }) = d.next_job()
    else {
        panic!("no step 2")
    };
    assert!(ssvd.iter().all(|v| [9, 10].contains(v)), "{ssvd:?}");
}
