//! Slurm in the app: a dialog's "run on" field sends its jobs to Slurm with the workspace's
//! Slurm settings (the next dialog starts there), `S` edits those settings and saves them,
//! and the jobs pane shows a job's Slurm id, state, node and queue time.

use super::action::Action;
use super::slurm_form::SlurmForm;
use super::state::{App, Popup};
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::jobs::{Executor, JobEvent, JobId, JobKind, SlurmSettings};
use serde_json::json;

fn with_slurm(app: &mut App) {
    app.slurm.available = true;
    app.slurm.partitions = vec!["debug".into(), "gpu".into()];
    app.slurm.settings = SlurmSettings {
        partition: Some("debug".into()),
        cpus: Some(2),
        ..Default::default()
    };
}

/// Move the open dialog's cursor to its last field (run on).
fn to_last_field(app: &mut App) {
    update(app, Action::Up);
}

#[test]
fn run_on_slurm_sends_the_job_with_the_settings_and_the_next_dialog_starts_there() {
    let (mut app, _d) = sample_app();
    with_slurm(&mut app);
    update(&mut app, Action::CompressDialog);
    to_last_field(&mut app);
    assert!(render(&app, 120, 40).contains("run on      ◂ this machine (◂▸: Slurm)"));
    update(&mut app, Action::Right);
    assert!(
        render(&app, 120, 40).contains("Slurm: partition debug · 2 CPUs"),
        "{}",
        render(&app, 120, 40)
    );
    assert!(render(&app, 120, 40).contains("of the MACs on Slurm"));
    let effects = update(&mut app, Action::Confirm);
    let [Effect::SubmitOn(JobKind::Compress { .. }, Executor::Slurm(s)), Effect::RememberDialog { .. }] =
        effects.as_slice()
    else {
        panic!("not one compress job on Slurm: {effects:?}");
    };
    assert_eq!(s, &app.slurm.settings);
    // The fine-tune dialog opens on Slurm now; back to this machine, its job is local.
    update(&mut app, Action::FineTuneDialog);
    let Some(Popup::FineTune(form)) = app.popups.last() else {
        panic!("no fine-tune dialog")
    };
    assert!(form.run_on.slurm);
    to_last_field(&mut app);
    update(&mut app, Action::Left);
    let effects = update(&mut app, Action::Confirm);
    assert!(
        matches!(
            effects.as_slice(),
            [
                Effect::Submit(JobKind::FineTune { .. }),
                Effect::RememberDialog { .. }
            ]
        ),
        "{effects:?}"
    );
}

#[test]
fn without_a_slurm_client_jobs_stay_here_and_s_says_why() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::SweepDialog);
    to_last_field(&mut app);
    update(&mut app, Action::Right);
    assert!(render(&app, 120, 40).contains("this machine (no Slurm client here)"));
    let effects = update(&mut app, Action::Confirm);
    assert!(
        matches!(
            effects.as_slice(),
            [
                Effect::Submit(JobKind::Sweep { .. }),
                Effect::RememberDialog { .. }
            ]
        ),
        "{effects:?}"
    );
    update(&mut app, Action::SlurmDialog);
    assert!(app.popups.is_empty());
    assert!(app.status.contains("no Slurm client"), "{}", app.status);
}

#[test]
fn the_settings_dialog_edits_and_saves_the_slurm_settings() {
    let (mut app, _d) = sample_app();
    with_slurm(&mut app);
    update(&mut app, Action::SlurmDialog);
    insta::assert_snapshot!("slurm_settings_80x24", render(&app, 80, 24));
    update(&mut app, Action::Right); // partition debug → gpu
    update(&mut app, Action::Down);
    update(&mut app, Action::Char('8')); // CPUs 2 → 8
    update(&mut app, Action::Down);
    for c in ['9', '0'] {
        update(&mut app, Action::Char(c)); // 90 minutes
    }
    update(&mut app, Action::Down);
    update(&mut app, Action::Char('4')); // 4 GB
    update(&mut app, Action::Down);
    update(&mut app, Action::Right); // 1 GPU
    update(&mut app, Action::Down);
    update(&mut app, Action::Right); // the dictionary by an array of 2 tasks
    update(&mut app, Action::Right); // 3
    let effects = update(&mut app, Action::Confirm);
    let want = SlurmSettings {
        partition: Some("gpu".into()),
        cpus: Some(8),
        time: Some("90".into()),
        mem: Some("4G".into()),
        gres: Some("gpu:1".into()),
        array_tasks: Some(3),
        ..Default::default()
    };
    assert_eq!(effects, vec![Effect::SaveSlurm(want.clone())]);
    assert_eq!(app.slurm.settings, want);
    assert!(app.popups.is_empty());
    assert!(
        app.status
            .contains("partition gpu · 8 CPUs · 90 min · 4G · gpu:1 · dictionary ×3"),
        "{}",
        app.status
    );
    // Reopened, it shows what was saved.
    update(&mut app, Action::SlurmDialog);
    let Some(Popup::Slurm(form)) = app.popups.last() else {
        panic!("no Slurm dialog")
    };
    assert_eq!(
        form,
        &SlurmForm::new(&want, &["debug".to_string(), "gpu".to_string()])
    );
}

#[test]
fn the_jobs_pane_shows_the_slurm_id_state_node_and_queue_time() {
    let (mut app, _d) = sample_app();
    let id = JobId(7);
    let kind = JobKind::Evaluate {
        variant: 0,
        data: "sample-models/digits".into(),
        subset: qsteer::experiment::evaluate::Subset::Evaluation,
        batch_size: 32,
        threads: 1,
        calibration_size: 200,
        seed: 0,
        reference: None,
        reference_model: None,
        save_outputs: None,
        metric: None,
    };
    update(&mut app, Action::Job(JobEvent::Queued { id, kind }));
    update(&mut app, Action::Job(JobEvent::Started { id }));
    // Built from the wire form the executor writes.
    let partial = |v| {
        Action::Job(JobEvent::Partial {
            id,
            result: serde_json::from_value(v).unwrap(),
        })
    };
    update(
        &mut app,
        partial(json!({"slurm": {"job_id": "41", "state": "PENDING", "reason": "Priority"}})),
    );
    assert!(render(&app, 120, 40).contains("[slurm 41 PENDING (Priority)]"));
    update(
        &mut app,
        partial(
            json!({"slurm": {"job_id": "41", "state": "RUNNING", "node": "n3",
            "queued_seconds": 12.0}}),
        ),
    );
    assert!(
        render(&app, 120, 40).contains("[slurm 41 RUNNING on n3, queued 0:12]"),
        "{}",
        render(&app, 120, 40)
    );
    // Quitting says the Slurm job goes on.
    update(&mut app, Action::Quit);
    assert!(render(&app, 120, 40).contains("(1 of them on Slurm)"));
}

#[test]
fn decision_one_sends_step_two_where_its_run_on_field_says() {
    use super::sweep_tests::{finish, report, stage_job};
    use qsteer::jobs::SweepStage;
    let (mut app, _d) = sample_app();
    with_slurm(&mut app);
    app.slurm.last_used = true; // the sweep itself went to Slurm
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    let Some(Popup::SweepDecision(d)) = app.popups.last() else {
        panic!("no decision")
    };
    assert!(d.run_on.slurm, "step 2 starts where the sweep ran");
    for _ in 0..3 {
        update(&mut app, Action::FocusNext);
    }
    assert!(render(&app, 100, 40).contains("run on      ◂ Slurm: partition debug"));
    update(&mut app, Action::Left); // back to this machine
    let effects = update(&mut app, Action::Confirm);
    assert!(
        matches!(effects.as_slice(), [Effect::Submit(JobKind::Sweep { .. })]),
        "{effects:?}"
    );
    assert!(!app.slurm.last_used);
}
