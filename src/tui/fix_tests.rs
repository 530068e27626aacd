//! The fix dialog's chain: Space picks steps in the fixed order, exclusive rows drop each
//! other, ◂▸ sets the bias-correction mode, Enter submits one fix-chain job.

use super::action::Action;
use super::state::Pane;
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::fixes::bias_correction::BcMode;
use qsteer::jobs::{ChainStep, JobKind};
use qsteer::quant::simulate::QuantsimSettings;

/// A W4A8 quantsim child (variant 1) of the base, as a quantsim job would record it; its
/// settings are returned.
pub(super) fn add_w4a8_quantsim_child(app: &mut super::state::App) -> QuantsimSettings {
    let stored = QuantsimSettings {
        w_bits: 4,
        ..Default::default()
    };
    let mut child = qsteer::experiment::Variant::new(1, Some(0), "quantsim", "v/1.onnx".into(), 0);
    child.quantsim = Some(stored.clone());
    child.encodings_file = Some("v/1.encodings.json".into());
    app.variants.push(child);
    stored
}

#[test]
fn space_picks_a_chain_and_enter_runs_it_as_one_job_on_the_fp32_parent() {
    let (mut app, _d) = sample_app();
    let stored = add_w4a8_quantsim_child(&mut app);
    app.focus = Pane::Variants;
    update(&mut app, Action::Bottom);
    update(&mut app, Action::FixDialog);
    // Rows: fold, CLE, CLE Relu6→Relu, bias correction, AdaRound, quantsim.
    let keys = [
        Action::Toggle, // fold
        Action::Down,
        Action::Toggle, // CLE
        Action::Down,
        Action::Toggle, // CLE Relu6 → Relu drops plain CLE
        Action::Down,
        Action::Toggle, // bias correction
        Action::Right,  // hybrid → empirical
        Action::Down,
        Action::Toggle, // AdaRound drops bias correction
        Action::Up,
        Action::Toggle, // bias correction again drops AdaRound
        Action::Down,
        Action::Down,
        Action::Toggle, // quantsim
    ];
    for k in keys {
        update(&mut app, k);
    }
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("[x] bias correction ◂ empirical ▸"),
        "{screen}"
    );
    assert!(screen.contains("[ ] CLE + high-bias"), "{screen}");
    assert!(screen.contains("[ ] AdaRound"), "{screen}");
    insta::assert_snapshot!("popup_fix_chain_80x24", screen);
    let effects = update(&mut app, Action::Confirm);
    let Some(Effect::Submit(JobKind::FixChain {
        variant,
        steps,
        settings,
        data,
        ..
    })) = effects.first()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*variant, settings), (0, &stored));
    assert!(data.is_some());
    assert_eq!(
        steps,
        &vec![
            ChainStep::FoldBn,
            ChainStep::Cle {
                relu6_to_relu: true
            },
            ChainStep::BiasCorrect {
                mode: BcMode::Empirical
            },
            ChainStep::Quantsim,
        ]
    );
    assert_eq!(app.focus, Pane::Jobs);
    assert!(
        app.status.starts_with("fix chain v0: fold BN"),
        "{}",
        app.status
    );
}

#[test]
fn a_chain_without_a_dataset_names_the_step_that_needs_one() {
    let (mut app, _d) = sample_app();
    app.data_path = None;
    update(&mut app, Action::FixDialog);
    update(&mut app, Action::Toggle); // fold needs no data
    let screen = render(&app, 80, 24);
    assert!(screen.contains("Enter runs: fold-bn v0"), "{screen}");
    for _ in 0..5 {
        update(&mut app, Action::Down);
    }
    update(&mut app, Action::Toggle); // quantsim does
    let effects = update(&mut app, Action::Confirm);
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(
        app.status,
        "no dataset for quantsim: restart with --data DIR"
    );
}
