//! Fine-tuning in the app: `t` opens the settings form on a variant and Enter queues a
//! fine-tune job with exactly those settings; a sweep decision's `t` trains its picked
//! candidates (one job each); a quantized variant is refused; the job's `train_step` and
//! `train_epoch` partials draw the live loss curve in the jobs pane (snapshots at 80×24).

use super::action::Action;
use super::finetune_form::{Field, FineTuneForm, Trainer};
use super::fix_tests::add_w4a8_quantsim_child;
use super::quantsim_tests::submitted;
use super::state::{App, Pane, Popup};
use super::sweep_tests::{finish, report, stage_job};
use super::tests::{render, sample_app};
use super::update::update;
use qsteer::jobs::{JobEvent, JobId, JobKind, SweepStage};
use qsteer::train::{FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
use serde_json::json;

fn form(app: &App) -> &FineTuneForm {
    match app.popups.last() {
        Some(Popup::FineTune(f)) => f,
        other => panic!("no fine-tune dialog on top: {other:?}"),
    }
}

#[test]
fn t_opens_the_form_with_the_cli_defaults_and_enter_queues_those_settings() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::FineTuneDialog);
    // The sample data has a training set beside its calibration part: it is the default.
    let training = std::path::absolute("sample-models/digits/training").unwrap();
    let defaults = FineTuneSettings {
        train_data: Some(training.clone()),
        ..FineTuneSettings::default()
    };
    assert_eq!(form(&app).settings(), defaults);
    assert_eq!(form(&app).trainer, Trainer::BuiltIn);
    update(&mut app, Action::Down); // past the trainer
                                    // epochs 5 → 12 (typed), lr 1e-3 → 3e-3, schedule cosine → constant, Adam → SGD,
                                    // batch 32 → 64, weight decay 0 → 1e-5, layers all → the last one,
                                    // loss → distillation, early stop 0 → 2.
    for c in ['1', '2'] {
        update(&mut app, Action::Char(c));
    }
    for _field in 0..8 {
        update(&mut app, Action::Down);
        update(&mut app, Action::Right);
    }
    update(&mut app, Action::Char('2'));
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let [JobKind::FineTune {
        variant,
        data,
        settings,
        threads,
    }] = jobs.as_slice()
    else {
        panic!("not one fine-tune job: {jobs:?}");
    };
    assert_eq!((*variant, *threads), (0, 2));
    assert_eq!(data, &std::path::PathBuf::from("sample-models/digits"));
    let want = FineTuneSettings {
        epochs: 12,
        lr: 3e-3,
        schedule: Schedule::Constant,
        optimizer: Optimizer::Sgd,
        batch_size: 64,
        weight_decay: 1e-5,
        train_layers: TrainLayers::Last(1),
        loss: Loss::Distill { temperature: 2.0 },
        early_stop_patience: 2,
        train_data: Some(training),
        ..FineTuneSettings::default()
    };
    assert_eq!(settings, &want);
    assert!(app.popups.is_empty());
    assert_eq!(app.focus, Pane::Layers, "the focus stays where it was");
}

/// The training-set field offers the workspace's saved set, the `training/` folder beside
/// the data and the calibration part; the augmentation field steps through its choices;
/// the job carries both.
#[test]
fn the_train_set_and_augmentation_fields_reach_the_job() {
    let (mut app, dir) = sample_app();
    let saved = dir.path().join("my-train");
    std::fs::create_dir_all(&saved).unwrap();
    app.train_data = Some(saved.clone());
    update(&mut app, Action::FineTuneDialog);
    let training = std::path::absolute("sample-models/digits/training").unwrap();
    assert_eq!(
        form(&app).train_sets,
        [None, Some(saved.clone()), Some(training.clone())]
    );
    assert_eq!(form(&app).settings().train_data, Some(saved.clone()));
    let at = |f: Field| Field::ALL.iter().position(|x| *x == f).unwrap();
    for _ in 0..at(Field::TrainSet) {
        update(&mut app, Action::Down);
    }
    assert_eq!(form(&app).field(), Field::TrainSet);
    update(&mut app, Action::Right);
    assert_eq!(form(&app).settings().train_data, Some(training));
    update(&mut app, Action::Right);
    assert_eq!(
        form(&app).settings().train_data,
        None,
        "the calibration part"
    );
    assert!(form(&app)
        .value_text(Field::TrainSet)
        .contains("calibration part"));
    update(&mut app, Action::Down);
    update(&mut app, Action::Down);
    assert_eq!(form(&app).field(), Field::Augment);
    assert_eq!(form(&app).value_text(Field::Augment), "off");
    update(&mut app, Action::Right);
    update(&mut app, Action::Right);
    update(&mut app, Action::Right);
    assert_eq!(
        form(&app).value_text(Field::Augment),
        "shift ±1 px, horizontal flip (images only)"
    );
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let [JobKind::FineTune { settings, .. }] = jobs.as_slice() else {
        panic!("not one fine-tune job: {jobs:?}");
    };
    assert_eq!(settings.train_data, None);
    assert_eq!(
        settings.augment,
        qsteer::train::Augment {
            shift: 1,
            flip: true
        }
    );
}

#[test]
fn the_layers_field_freezes_the_skip_marked_layers_or_trains_the_last_n() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Layers;
    let first = app.layers[app.layer_order()[0]].name.clone();
    update(&mut app, Action::ExcludeLayer);
    update(&mut app, Action::FineTuneDialog);
    let layers = Field::ALL.iter().position(|f| *f == Field::Layers).unwrap();
    for _ in 0..layers {
        update(&mut app, Action::Down);
    }
    assert_eq!(form(&app).field(), Field::Layers);
    assert_eq!(form(&app).settings().train_layers, TrainLayers::All);
    update(&mut app, Action::Left);
    assert_eq!(
        form(&app).settings().train_layers,
        TrainLayers::Except(vec![first])
    );
    assert!(render(&app, 80, 24).contains("all but the 1 marked [skip]"));
    update(&mut app, Action::Left); // stays: nothing below "freeze the marked"
    update(&mut app, Action::Right);
    update(&mut app, Action::Right);
    assert_eq!(form(&app).settings().train_layers, TrainLayers::Last(1));
    for c in ['1', '2'] {
        update(&mut app, Action::Char(c));
    }
    assert_eq!(form(&app).settings().train_layers, TrainLayers::Last(12));
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let [JobKind::FineTune { settings, .. }] = jobs.as_slice() else {
        panic!("not one fine-tune job: {jobs:?}");
    };
    assert_eq!(settings.train_layers, TrainLayers::Last(12));
}

#[test]
fn a_quantized_variant_trains_by_qat_and_without_a_dataset_nothing_launches() {
    let (mut app, _d) = sample_app();
    add_w4a8_quantsim_child(&mut app);
    app.focus = Pane::Variants;
    update(&mut app, Action::Bottom);
    update(&mut app, Action::FineTuneDialog);
    assert_eq!(form(&app).variants, [1]);
    assert_eq!(
        form(&app).trainers,
        [Trainer::Qat],
        "no FP32 training of a quantsim"
    );
    let jobs = submitted(&update(&mut app, Action::Confirm));
    assert!(
        matches!(jobs.as_slice(), [JobKind::Qat { variant: 1, settings, .. }]
        if *settings == FineTuneSettings {
            train_data: Some(std::path::absolute("sample-models/digits/training").unwrap()),
            ..FineTuneSettings::default()
        }),
        "{jobs:?}"
    );
    // QAT of an FP32 variant is refused with the reason.
    let (mut app, _d) = sample_app();
    update(&mut app, Action::FineTuneDialog);
    if let Some(Popup::FineTune(f)) = app.popups.last_mut() {
        f.trainer = Trainer::Qat;
    }
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("not quantized"), "{}", app.status);
    let (mut app, _d) = sample_app();
    app.data_path = None;
    update(&mut app, Action::FineTuneDialog);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("no dataset"), "{}", app.status);
}

#[test]
fn t_in_a_sweep_decision_trains_each_picked_candidate() {
    let (mut app, _d) = sample_app();
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    // The rule pre-selected v2 and v3.
    update(&mut app, Action::FineTuneDialog);
    assert_eq!(form(&app).variants, [2, 3]);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let trained: Vec<u32> = jobs
        .iter()
        .map(|k| match k {
            JobKind::FineTune { variant, .. } => *variant,
            other => panic!("not a fine-tune job: {other:?}"),
        })
        .collect();
    assert_eq!(trained, [2, 3]);
    // The decision stays open beneath for step 2.
    assert!(matches!(app.popups.last(), Some(Popup::SweepDecision(_))));
}

#[test]
fn training_partials_draw_the_loss_curve_and_epoch_scores() {
    let (mut app, _d) = sample_app();
    let id = JobId(1);
    let kind = JobKind::FineTune {
        variant: 0,
        data: "sample-models/digits".into(),
        settings: FineTuneSettings::default(),
        threads: 2,
    };
    update(&mut app, Action::Job(JobEvent::Queued { id, kind }));
    update(&mut app, Action::Job(JobEvent::Started { id }));
    for step in 1..=14u32 {
        let epoch = 1 + (step - 1) / 7;
        let result = json!({"train_step": {"epoch": epoch, "step": 1 + (step - 1) % 7,
            "steps": 7, "loss": 2.0 / f64::from(step), "lr": 1e-3}});
        let result = serde_json::from_value(result).unwrap();
        update(&mut app, Action::Job(JobEvent::Partial { id, result }));
        if step % 7 == 0 {
            let result = json!({"train_epoch": {"epoch": epoch, "loss": 0.5,
                "score": 0.97 + 0.01 * f64::from(epoch), "metric": "accuracy", "seconds": 1.0}});
            let result = serde_json::from_value(result).unwrap();
            update(&mut app, Action::Job(JobEvent::Partial { id, result }));
        }
    }
    let curve = app.jobs[0].curve.as_ref().expect("a curve");
    assert_eq!(curve.steps.len(), 14);
    assert_eq!(curve.steps[13].0, 14.0);
    app.focus = Pane::Jobs;
    let screen = render(&app, 80, 24);
    assert!(screen.contains("loss 0.1429"), "{screen}");
    assert!(screen.contains("e2 99.00%↑"), "{screen}");
    insta::assert_snapshot!("finetune_curve_80x24", screen);
}

#[test]
fn snapshot_of_the_form() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::FineTuneDialog);
    insta::assert_snapshot!("finetune_form_80x24", render(&app, 80, 24));
}

#[test]
fn a_trained_child_shows_its_gain_over_the_parent_in_a_wide_variants_pane() {
    use super::panes::variants::delta_text;
    use super::quantsim_tests::result;
    let (mut app, _d) = sample_app();
    app.variants[0].results.push(result(0.985));
    let mut tuned = qsteer::experiment::Variant::new(
        1,
        Some(0),
        &FineTuneSettings::default().step_name(),
        "variants/1.onnx".into(),
        0,
    );
    tuned.results.push(result(0.9875));
    let mut worse = tuned.clone();
    worse.id = 2;
    worse.results = vec![result(0.95)];
    let mut elsewhere = tuned.clone();
    elsewhere.id = 3;
    elsewhere.results[0].dataset_fingerprint = "other data".into();
    app.variants.extend([tuned, worse, elsewhere]);
    let delta = |id: u32| delta_text(&app, app.variant(id).unwrap());
    assert_eq!(delta(1).as_deref(), Some("+0.25"));
    assert_eq!(delta(2).as_deref(), Some("−3.50"));
    assert_eq!(delta(3), None, "scores on other data do not compare");
    assert_eq!(delta(0), None, "the base has no parent");
    let screen = render(&app, 160, 48);
    assert!(screen.contains("+0.25"), "{screen}");
}

#[test]
fn a_candidate_trained_from_decision_one_is_what_step_two_prunes() {
    let (mut app, _d) = sample_app();
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    update(&mut app, Action::FineTuneDialog);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    // The runner queues them as jobs 2 and 3; v3's training is still running.
    for (n, kind) in jobs.into_iter().enumerate() {
        let id = JobId(2 + n as u64);
        update(&mut app, Action::Job(JobEvent::Queued { id, kind }));
        update(&mut app, Action::Job(JobEvent::Started { id }));
    }
    let screen = render(&app, 80, 24);
    assert_eq!(screen.matches("training").count(), 2, "{screen}");
    let summary = json!({"variant": 7, "parent": 2, "after": {"accuracy": 0.995,
        "top5_accuracy": null, "agreement": null, "sqnr_db": null, "samples": 400}});
    update(
        &mut app,
        Action::Job(JobEvent::Finished {
            id: JobId(2),
            summary,
        }),
    );
    let d = match app.popups.last() {
        Some(Popup::SweepDecision(d)) => d.clone(),
        other => panic!("the decision is not on top: {other:?}"),
    };
    assert_eq!(
        d.report.ssvd[1].variant, 7,
        "the row is the trained variant"
    );
    assert!((d.report.ssvd[1].drop_points - (-0.5)).abs() < 1e-9);
    assert_eq!(app.pending_decision.as_ref(), Some(&*d));
    // v3 still trains: Enter waits for it.
    assert!(submitted(&update(&mut app, Action::Confirm)).is_empty());
    assert!(
        app.status.contains("v3 still fine-tuning"),
        "{}",
        app.status
    );
    update(
        &mut app,
        Action::Job(JobEvent::Failed {
            id: JobId(3),
            error: "boom".into(),
        }),
    );
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let [JobKind::Sweep { stage, .. }] = jobs.as_slice() else {
        panic!("not one sweep job: {jobs:?}");
    };
    assert_eq!(stage, &SweepStage::Cp { ssvd: vec![7, 3] });
}

#[test]
fn a_saved_trainer_command_is_offered_and_gets_epochs_and_lr() {
    let (mut app, _d) = sample_app();
    app.trainer_command = Some("train.sh {input} {output} {epochs} {lr}".into());
    update(&mut app, Action::FineTuneDialog);
    assert_eq!(form(&app).trainers, [Trainer::BuiltIn, Trainer::External]);
    update(&mut app, Action::Right);
    assert_eq!(form(&app).trainer, Trainer::External);
    assert_eq!(
        form(&app).value_text(super::finetune_form::Field::Optimizer),
        "(your trainer's)"
    );
    update(&mut app, Action::Down);
    update(&mut app, Action::Char('3'));
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let [JobKind::ExternalFineTune {
        variant,
        command,
        epochs,
        lr,
        ..
    }] = jobs.as_slice()
    else {
        panic!("not one external job: {jobs:?}");
    };
    assert_eq!((*variant, *epochs, *lr), (0, 3, 1e-3));
    assert_eq!(command, "train.sh {input} {output} {epochs} {lr}");
}
