//! The fix dialog's chain: Space picks steps in the fixed order, exclusive rows drop each
//! other, ◂▸ sets the bias-correction mode and how CLE scales, Enter submits one fix-chain
//! job.

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

/// The sample app showing the comparison of `a` and `b` of `ws`.
pub(super) fn comparing(
    ws: &qsteer::experiment::Workspace,
    a: u32,
    b: u32,
    data: super::compare::CompareData,
) -> (super::state::App, tempfile::TempDir) {
    let (mut app, d) = sample_app();
    app.variants = ws.variants().to_vec();
    app.mark_a = Some(a);
    app.mark_b = Some(b);
    app.compare = Some(data);
    app.focus = Pane::Compare;
    (app, d)
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
                relu6_to_relu: true,
                scaling: qsteer::fixes::CleScaling::default(),
            },
            ChainStep::BiasCorrect {
                mode: BcMode::Empirical
            },
            ChainStep::Quantsim,
        ]
    );
    assert_eq!(app.focus, Pane::Variants, "the focus stays where it was");
    assert!(
        app.status.starts_with("fix chain v0: fold BN"),
        "{}",
        app.status
    );
}

#[test]
fn arrows_on_a_cle_row_switch_how_cle_scales_and_the_job_carries_it() {
    use qsteer::fixes::CleScaling;
    let (mut app, _d) = sample_app();
    update(&mut app, Action::FixDialog);
    update(&mut app, Action::Down); // CLE
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("CLE + high-bias absorption ◂ once ▸"),
        "{screen}"
    );
    update(&mut app, Action::Right);
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("CLE + high-bias absorption ◂ settle ▸"),
        "{screen}"
    );
    // Both CLE rows show the one choice; ◂ flips it back.
    assert!(
        screen.contains("Relu (changes the function) ◂ settle ▸"),
        "{screen}"
    );
    update(&mut app, Action::Left);
    update(&mut app, Action::Right);
    let effects = update(&mut app, Action::Confirm); // the CLE under the cursor alone
    let Some(Effect::Submit(JobKind::Cle {
        scaling,
        relu6_to_relu,
        ..
    })) = effects.first()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*scaling, *relu6_to_relu), (CleScaling::Settle, false));
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

#[test]
fn compare_shows_the_per_channel_ranges_before_and_after_cle_side_by_side() {
    use qsteer::cancel::CancelToken;
    use qsteer::experiment::Workspace;
    use qsteer::fixes::{equalize, fold_batchnorms, CleOptions};
    use qsteer::model::Model;
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(std::path::Path::new("sample-models/mbv2_digits.onnx")).unwrap();
    let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
    let folded = fold_batchnorms(&model).unwrap();
    let a = ws.add_variant(0, "fold_bn", &folded.model).unwrap();
    let options = CleOptions {
        relu6_to_relu: true,
        ..CleOptions::default()
    };
    let cle = equalize(&folded.model, &folded.stats, &options, &CancelToken::new()).unwrap();
    let b = ws.add_variant(a, "cle", &cle.model).unwrap();
    let data = super::compare::compute(&ws, a, b);
    // The equalized layers: block1's dw and project, expand/dw/project of blocks 2–5.
    let changed: Vec<&str> = data
        .layers
        .iter()
        .filter(|l| l.ranges_a != l.ranges_b)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(changed.len(), 14, "{changed:?}");

    let (app, _d) = comparing(&ws, a, b, data);
    let screen = render(&app, 120, 40);
    assert!(
        screen.contains("per-channel weight range A │ B (max/median), 14 layers changed"),
        "{screen}"
    );
    insta::assert_snapshot!("compare_cle_ranges_120x40", screen);
}

/// The same chain typed as a user types it: the keys go through the terminal's translation
/// (`to_action`), not straight into `update`. Space and ◂▸ once never reached this dialog.
#[test]
fn a_fix_chain_is_built_with_the_keys_a_user_types() {
    use super::tests::press;
    use crossterm::event::KeyCode as K;
    let (mut app, _d) = sample_app();
    add_w4a8_quantsim_child(&mut app);
    app.focus = Pane::Variants;
    press(&mut app, K::End);
    press(&mut app, K::Char('f'));
    for code in [
        K::Char(' '), // fold
        K::Down,
        K::Down,
        K::Char(' '), // CLE Relu6 → Relu
        K::Down,
        K::Char(' '), // bias correction
        K::Right,     // hybrid → empirical
        K::Down,
        K::Down,
        K::Char(' '), // quantsim
    ] {
        press(&mut app, code);
    }
    let screen = render(&app, 80, 24);
    for row in [
        "[x] fold",
        "[x] CLE, Relu6",
        "[x] bias correction ◂ empirical ▸",
        "[x] quantsim",
    ] {
        assert!(screen.contains(row), "{row} not ticked:\n{screen}");
    }
    let effects = update(&mut app, Action::Confirm);
    let Some(Effect::Submit(JobKind::FixChain { steps, .. })) = effects.first() else {
        panic!("{effects:?}")
    };
    assert_eq!(steps.len(), 4, "{steps:?}");
}
