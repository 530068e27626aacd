//! The quant-noise table in the layers pane (from a real analysis of the sample model), the
//! analyze keys of the quantsim dialog, and the analysis reaching the app from disk.

use super::action::Action;
use super::state::{LayerSort, Pane, Popup};
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::cancel::CancelToken;
use qsteer::jobs::JobKind;
use qsteer::model::Model;
use qsteer::quant::analysis::{analyze, Analysis, AnalyzeOptions};
use qsteer::quant::simulate::{QuantsimRequest, QuantsimSettings};
use qsteer::runtime::RunOptions;
use std::path::PathBuf;

fn w4a8_analysis() -> Analysis {
    let model = Model::load(&PathBuf::from("sample-models/mbv2_digits.onnx")).unwrap();
    let req = QuantsimRequest {
        data: PathBuf::from("sample-models/digits"),
        calibration_size: 200,
        seed: 0,
        settings: QuantsimSettings {
            w_bits: 4,
            ..Default::default()
        },
        options: RunOptions::default(),
        metric: Default::default(),
    };
    analyze(
        &model,
        &req,
        &AnalyzeOptions::default(),
        &CancelToken::new(),
        &|_, _, _| {},
    )
    .unwrap()
    .0
}

#[test]
fn an_analysis_turns_the_layers_pane_into_the_noise_table_worst_first() {
    let (mut app, _d) = sample_app();
    let analysis = w4a8_analysis();
    let worst = analysis
        .layers
        .iter()
        .min_by(|a, b| a.sqnr_db.unwrap().total_cmp(&b.sqnr_db.unwrap()))
        .unwrap()
        .layer
        .clone();
    update(&mut app, Action::Analysis(0, Some(Box::new(analysis))));
    assert_eq!(app.layer_sort, LayerSort::Sqnr);
    let order = app.layer_order();
    assert_eq!(app.layers[order[0]].name, worst);
    app.focus = Pane::Layers;
    let wide = render(&app, 160, 48);
    assert!(wide.contains("noise W4A8 pt"), "{wide}");
    assert!(
        wide.contains("SQNR dB") && wide.contains("W only"),
        "{wide}"
    );
    assert!(wide.contains("output observed"), "{wide}");
    let narrow = render(&app, 80, 24);
    assert!(narrow.contains("SQNR dB"), "{narrow}");
    insta::assert_snapshot!("layers_noise_160x48", wide);
    insta::assert_snapshot!("layers_noise_80x24", narrow);
    // n: back to the costs table, and again to the noise table.
    update(&mut app, Action::ToggleNoise);
    assert!(render(&app, 160, 48).contains("MACs"));
    update(&mut app, Action::ToggleNoise);
    assert!(render(&app, 160, 48).contains("SQNR dB"));
    // Another variant made current: its (absent) analysis, not variant 0's.
    app.current = 7;
    assert!(!render(&app, 160, 48).contains("SQNR dB"));
}

#[test]
fn the_dialog_analyzes_fp32_variants_with_its_settings_and_quantsim_variants_with_theirs() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::QuantsimDialog);
    update(&mut app, Action::Right); // W bits 8 → 9: any change shows the form is used
    let effects = update(&mut app, Action::Char('A'));
    let Some(Effect::Submit(JobKind::Analyze {
        variant,
        settings,
        sweep,
        ..
    })) = effects.first()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*variant, *sweep), (0, true));
    assert_ne!(settings, &QuantsimSettings::default());

    let mut child = qsteer::experiment::Variant::new(1, Some(0), "quantsim", "v/1.onnx".into(), 0);
    let stored = QuantsimSettings {
        w_bits: 4,
        per_channel: true,
        ..Default::default()
    };
    child.quantsim = Some(stored.clone());
    child.encodings_file = Some("v/1.encodings.json".into());
    app.variants.push(child);
    app.focus = Pane::Variants;
    update(&mut app, Action::Bottom);
    update(&mut app, Action::QuantsimDialog);
    let effects = update(&mut app, Action::Char('a'));
    let Some(Effect::Submit(JobKind::Analyze {
        variant,
        settings,
        sweep,
        ..
    })) = effects.first()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*variant, settings, *sweep), (1, &stored, false));
}

#[test]
fn a_finished_job_reloads_the_current_variants_analysis() {
    let (mut app, _d) = sample_app();
    let effects = update(
        &mut app,
        Action::Job(qsteer::jobs::JobEvent::Finished {
            id: qsteer::jobs::JobId(1),
            summary: serde_json::json!({}),
        }),
    );
    assert!(effects.contains(&Effect::LoadAnalysis(0)), "{effects:?}");
}

#[test]
fn compare_shows_per_layer_sqnr_deltas_when_both_variants_have_an_analysis() {
    use qsteer::experiment::Workspace;
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(&PathBuf::from("sample-models/mbv2_digits.onnx")).unwrap();
    let mut ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
    let a = ws.add_variant(0, "a", &model).unwrap();
    let b = ws.add_variant(0, "b", &model).unwrap();
    let analysis = w4a8_analysis();
    let mut better = analysis.clone();
    better.layers[2].sqnr_db = better.layers[2].sqnr_db.map(|d| d + 12.5);
    ws.set_analysis(a, &analysis).unwrap();
    ws.set_analysis(b, &better).unwrap();
    let data = super::compare::compute(&ws, a, b);
    let with_both = data
        .layers
        .iter()
        .filter(|l| l.sqnr_a.is_some() && l.sqnr_b.is_some())
        .count();
    assert_eq!(with_both, analysis.layers.len());

    let (app, _d) = super::fix_tests::comparing(&ws, a, b, data);
    let screen = render(&app, 160, 48);
    let first = screen
        .lines()
        .skip_while(|l| !l.contains("per-layer SQNR"))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(first.contains(&analysis.layers[2].layer), "{screen}");
    assert!(first.contains("(+12.5)"), "{first}");
}

#[test]
fn x_exports_a_quantized_variant_and_refuses_an_fp32_one() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Variants;
    assert!(update(&mut app, Action::Export).is_empty());
    assert!(app.status.contains("not quantized"), "{}", app.status);
    let mut child = qsteer::experiment::Variant::new(1, Some(0), "quantsim", "v/1.onnx".into(), 0);
    child.encodings_file = Some("v/1.encodings.json".into());
    app.variants.push(child);
    update(&mut app, Action::Bottom);
    // x asks where first: the workspace's exports/ shown, editable.
    assert!(update(&mut app, Action::Export).is_empty());
    for (w, h) in [(80, 24), (120, 40)] {
        let screen = render(&app, w, h);
        assert!(screen.contains("export variant 1"), "{screen}");
        assert!(
            screen.contains("writes mbv2_digits_v1.qdq.onnx"),
            "{screen}"
        );
        assert!(screen.contains("exports▏"), "{screen}");
    }
    // Typed keys edit it (q, x and digits are text here), through the terminal's translation.
    use crossterm::event::KeyCode as K;
    for _ in 0.."exports".len() {
        super::tests::press(&mut app, K::Backspace);
    }
    for c in "q-x1".chars() {
        super::tests::press(&mut app, K::Char(c));
    }
    let dir = app.workspace_dir.join("q-x1");
    let Some(Popup::Export(p)) = app.popups.last() else {
        panic!("no export prompt")
    };
    assert_eq!(p.dir, dir.display().to_string());
    let effects = update(&mut app, Action::Confirm);
    let [Effect::Submit(JobKind::Export {
        variant: 1,
        out: Some(out),
        ..
    }), Effect::RememberDialog {
        dialog: "export", ..
    }] = effects.as_slice()
    else {
        panic!("no export job: {effects:?}")
    };
    assert_eq!(out, &dir);
    let file = dir.join("mbv2_digits_v1.qdq.onnx").display().to_string();
    assert!(app.status.contains(&file), "{}", app.status);
    // The next export starts in the directory used last.
    update(&mut app, Action::Export);
    let Some(Popup::Export(p)) = app.popups.last() else {
        panic!("no export prompt")
    };
    assert_eq!(p.dir, dir.display().to_string());
}

#[test]
fn the_fix_dialog_targets_the_fp32_parent_with_the_quantsim_settings_and_gives_reasons() {
    let (mut app, _d) = sample_app();
    let stored = super::fix_tests::add_w4a8_quantsim_child(&mut app);
    update(
        &mut app,
        Action::Analysis(1, Some(Box::new(w4a8_analysis()))),
    );
    app.focus = Pane::Variants;
    update(&mut app, Action::Bottom);
    update(&mut app, Action::FixDialog);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("weights dominate"), "{screen}");
    assert!(screen.contains("BatchNorms are not folded"), "{screen}");
    // mbv2's Relu6s stop every CLE chain: the dialog says so and names the form that works.
    let Some(super::state::Popup::Fix(form)) = app.popups.last() else {
        panic!("no fix dialog")
    };
    let relu6 = form
        .reasons
        .iter()
        .find(|r| r.contains("Relu6 (Clip 0–6) stops every CLE chain"))
        .unwrap_or_else(|| panic!("{:?}", form.reasons));
    assert!(
        relu6.contains("\"CLE, Relu6 → Relu\" equalizes 5 sets"),
        "{relu6}"
    );
    insta::assert_snapshot!("popup_fix_80x24", screen);
    // The first choice folds the parent's BNs; bias correction gets the quantsim settings.
    let effects = update(&mut app, Action::Confirm);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Submit(JobKind::FoldBn { variant: 0 })]
        ),
        "{effects:?}"
    );
    app.focus = Pane::Variants;
    update(&mut app, Action::FixDialog);
    for _ in 0..3 {
        update(&mut app, Action::Down);
    }
    let effects = update(&mut app, Action::Confirm);
    let Some(Effect::Submit(JobKind::BiasCorrect {
        variant, settings, ..
    })) = effects.first()
    else {
        panic!("{effects:?}")
    };
    assert_eq!((*variant, settings), (0, &stored));
}
