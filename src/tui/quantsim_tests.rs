//! The quantsim dialog's keys (action in, jobs out), and snapshots of the dialog, the
//! graph pane's quantizer marks and a variants tree with quantsim children.

use super::action::Action;
use super::quantsim_form::QuantsimForm;
use super::state::{App, Pane, Popup};
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::experiment::{EvalRecord, Variant};
use qsteer::jobs::JobKind;
use qsteer::metrics::Score;
use qsteer::quant::qdq::QuantMode;
use qsteer::quant::simulate::QuantsimSettings;
use qsteer::quant::Scheme;

fn form(app: &App) -> &QuantsimForm {
    match app.popups.last() {
        Some(Popup::Quantsim(f)) => f,
        other => panic!("no quantsim dialog on top: {other:?}"),
    }
}

pub(super) fn submitted(effects: &[Effect]) -> Vec<JobKind> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Submit(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

/// A result on the sample's evaluation split, as the evaluate job records it.
pub(super) fn result(accuracy: f64) -> EvalRecord {
    EvalRecord {
        dataset: "sample-models/digits".into(),
        dataset_fingerprint: "f".into(),
        subset: "evaluation".into(),
        split: None,
        score: Score {
            accuracy: Some(accuracy),
            top5_accuracy: None,
            agreement: None,
            sqnr_db: None,
            samples: 400,
            ..Default::default()
        },
        seconds: 1.0,
        samples_per_second: 400.0,
        batch_size: 1,
        threads: 2,
        reference: None,
        when: 0,
    }
}

fn quantsim_child(id: u32, settings: &QuantsimSettings, accuracy: f64) -> Variant {
    let mut v = Variant::new(
        id,
        Some(0),
        &settings.step(),
        format!("variants/{id}.onnx"),
        0,
    );
    v.quantsim = Some(settings.clone());
    v.results.push(result(accuracy));
    // As a quantsim job records them: the parent's MACs, the integer model's size.
    v.macs = Some(1_280_000);
    v.size_bytes = 36_000 * u64::from(settings.w_bits) / 8 + 10_000;
    v
}

#[test]
fn the_form_offers_the_models_float_op_types_and_the_settings_carry_them() {
    use super::form::Editable;
    use super::quantsim_form::Field;
    let mut form = QuantsimForm::new(0, 200);
    form.offer_float_ops(["Conv", "LSTM", "Pow", "Log", "Pow"]);
    let field = Field::ALL
        .iter()
        .position(|f| *f == Field::FloatOps)
        .unwrap();
    form.field = field;
    assert_eq!(form.value_text(Field::FloatOps), "none");
    assert!(form.settings().fp32_ops.is_empty());
    form.change(1);
    assert_eq!(form.value_text(Field::FloatOps), "Pow,Log,LSTM");
    assert_eq!(form.settings().fp32_ops, ["Pow", "Log", "LSTM"]);
    assert!(form.settings().step().contains("fp32_ops:[Pow,Log,LSTM]"));
    form.change(1);
    assert_eq!(form.settings().fp32_ops, ["Pow"]);
    form.change(-2);
    assert!(form.settings().fp32_ops.is_empty());
}

#[test]
fn the_weight_scheme_field_sets_the_weights_own_scheme() {
    use super::form::Editable;
    use super::quantsim_form::Field;
    use qsteer::quant::weight_scheme::WeightScheme;
    let mut form = QuantsimForm::new(0, 200);
    form.field = Field::ALL
        .iter()
        .position(|f| *f == Field::WeightScheme)
        .unwrap();
    assert_eq!(form.value_text(Field::WeightScheme), "auto");
    assert_eq!(form.settings().weight_scheme, WeightScheme::Auto);
    form.change(1);
    assert_eq!(
        form.settings().weight_scheme,
        WeightScheme::Fixed(Scheme::Minmax)
    );
    assert!(form.settings().step().contains("weight_scheme:minmax"));
    form.change(-2);
    assert_eq!(form.value_text(Field::WeightScheme), "same as activations");
    assert_eq!(form.settings().weight_scheme, WeightScheme::Same);
    assert!(!form.settings().step().contains("weight_scheme"));
}

#[test]
fn the_calibrate_on_field_chooses_the_model_activations_are_calibrated_on() {
    use super::form::Editable;
    use super::quantsim_form::Field;
    use qsteer::quant::simulate::CalibrateOn;
    let mut form = QuantsimForm::new(0, 200);
    form.field = Field::ALL
        .iter()
        .position(|f| *f == Field::CalibrateOn)
        .unwrap();
    assert_eq!(form.value_text(Field::CalibrateOn), "FP32 model");
    assert_eq!(form.settings().calibrate_on, CalibrateOn::Fp32);
    form.change(1);
    assert_eq!(form.value_text(Field::CalibrateOn), "quantized weights");
    assert_eq!(form.settings().calibrate_on, CalibrateOn::QuantizedWeights);
    assert!(form
        .settings()
        .step()
        .contains("calibrate_on:quantized_weights"));
}

#[test]
fn s_opens_the_dialog_with_aimets_defaults_and_enter_launches_the_form() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Graph;
    update(&mut app, Action::QuantsimDialog);
    assert_eq!(*form(&app), QuantsimForm::new(0, 200));
    assert_eq!(form(&app).settings(), QuantsimSettings::default());
    update(&mut app, Action::Down); // A bits
    update(&mut app, Action::Char('4'));
    update(&mut app, Action::Down); // per-channel
    update(&mut app, Action::Toggle);
    update(&mut app, Action::FocusNext); // symmetric
    update(&mut app, Action::Right);
    update(&mut app, Action::Down); // scheme: tf_enhanced → percentile
    update(&mut app, Action::Right);
    update(&mut app, Action::Down); // weight scheme: auto ← same as activations
    update(&mut app, Action::Left);
    assert_eq!(
        form(&app).value_text(super::quantsim_form::Field::WeightScheme),
        "same as activations"
    );
    update(&mut app, Action::Down); // mode: W+A ← activations only
    update(&mut app, Action::Left);
    // Activations only: "calib. on" has no effect and is stepped over.
    update(&mut app, Action::Down); // float ops: the digits CNN has none to offer
    assert_eq!(
        form(&app).value_text(super::quantsim_form::Field::FloatOps),
        "none (no Pow/Sqrt/Log/Exp/LSTM… here)"
    );
    update(&mut app, Action::Down); // calibration: the first digit replaces 200
    for c in ['5', '0'] {
        update(&mut app, Action::Char(c));
    }
    let jobs = submitted(&update(&mut app, Action::Confirm));
    assert_eq!(
        jobs,
        [JobKind::Quantsim {
            variant: 0,
            data: "sample-models/digits".into(),
            settings: QuantsimSettings {
                a_bits: 4,
                per_channel: true,
                symmetric: true,
                scheme: Scheme::Percentile(99.99),
                weight_scheme: qsteer::quant::weight_scheme::WeightScheme::Same,
                mode: QuantMode::ActivationsOnly,
                ..Default::default()
            },
            calibration_size: 50,
            seed: 0,
            threads: 2,
            encodings: None,
            metric: None,
        }]
    );
    assert!(app.popups.is_empty());
    assert_eq!(app.focus, Pane::Graph, "the focus stays where it was");
}

#[test]
fn d_launches_fp32_and_the_three_modes_at_the_chosen_bits() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::QuantsimDialog);
    update(&mut app, Action::Char('4')); // W bits 4
    let jobs = submitted(&update(&mut app, Action::Char('d')));
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    assert!(matches!(
        &jobs[0],
        JobKind::Evaluate {
            variant: 0,
            calibration_size: 200,
            threads: 2,
            ..
        }
    ));
    let modes: Vec<(u8, u8, QuantMode)> = jobs[1..]
        .iter()
        .map(|k| match k {
            JobKind::Quantsim { settings: s, .. } => (s.w_bits, s.a_bits, s.mode),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        modes,
        [
            (4, 8, QuantMode::WeightsAndActivations),
            (4, 8, QuantMode::WeightsOnly),
            (4, 8, QuantMode::ActivationsOnly)
        ]
    );

    // With an FP32 score on these samples already, the set is the three quantsims.
    app.variants[0].results.push(result(0.9925));
    update(&mut app, Action::QuantsimDialog);
    let jobs = submitted(&update(&mut app, Action::Char('d')));
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|k| matches!(k, JobKind::Quantsim { .. })));
}

#[test]
fn bits_out_of_range_block_the_launch_and_say_why() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::QuantsimDialog);
    update(&mut app, Action::Backspace); // W bits 8 → 0
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert_eq!(app.status, "W bits must be 2–16");
    assert!(matches!(app.popups.last(), Some(Popup::Quantsim(_))));
    for c in ['1', '6'] {
        update(&mut app, Action::Char(c));
    }
    assert_eq!(form(&app).w_bits, 16);
    // Left/right stay in range; a flag ignores digits.
    update(&mut app, Action::Right);
    assert_eq!(form(&app).w_bits, 16);
    update(&mut app, Action::Down);
    update(&mut app, Action::Down);
    update(&mut app, Action::Char('3'));
    assert!(!form(&app).per_channel);
    update(&mut app, Action::Close);
    assert!(app.popups.is_empty());
}

#[test]
fn the_dialog_targets_the_selected_variant_and_refuses_a_quantized_one() {
    let (mut app, _d) = sample_app();
    let copy = Variant::new(1, Some(0), "copy", "variants/1.onnx".into(), 0);
    let mut quantized = quantsim_child(2, &QuantsimSettings::default(), 0.99);
    quantized.encodings_file = Some("variants/2.encodings.json".into());
    app.variants.extend([copy, quantized]);
    app.focus = Pane::Variants;
    update(&mut app, Action::Down);
    update(&mut app, Action::QuantsimDialog);
    assert_eq!(form(&app).variant, 1);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    assert!(matches!(jobs[0], JobKind::Quantsim { variant: 1, .. }));

    app.focus = Pane::Variants;
    update(&mut app, Action::Bottom);
    update(&mut app, Action::QuantsimDialog);
    assert_eq!(form(&app).variant, 2);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("already quantized"), "{}", app.status);
}

#[test]
fn without_a_dataset_the_dialog_says_so_and_launches_nothing() {
    let (mut app, _d) = sample_app();
    app.data_path = None;
    update(&mut app, Action::QuantsimDialog);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(update(&mut app, Action::Char('d')).is_empty());
    assert!(app.status.contains("--data"), "{}", app.status);
    assert!(matches!(app.popups.last(), Some(Popup::Quantsim(_))));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("no dataset"), "{screen}");
}

#[test]
fn snapshots_of_the_dialog_marks_and_quantsim_variants() {
    let (mut app, _d) = sample_app();
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        app.focus = Pane::Layers;
        update(&mut app, Action::QuantsimDialog);
        insta::assert_snapshot!(format!("popup_quantsim_{w}x{h}"), render(&app, w, h));
        app.popups.clear();
        app.focus = Pane::Graph;
        update(&mut app, Action::Help);
        insta::assert_snapshot!(format!("help_graph_marks_{w}x{h}"), render(&app, w, h));
        app.popups.clear();
    }
    app.variants[0].results.push(result(0.9925));
    let w4 = QuantsimSettings {
        w_bits: 4,
        per_channel: true,
        mode: QuantMode::WeightsOnly,
        ..Default::default()
    };
    app.variants
        .push(quantsim_child(1, &QuantsimSettings::default(), 0.9925));
    app.variants.push(quantsim_child(2, &w4, 0.98));
    app.focus = Pane::Variants;
    insta::assert_snapshot!("variants_with_quantsim_80x24", render(&app, 80, 24));
    // At 80×24 every row keeps its score, MAC ratio, size and marks; decoration goes first.
    app.variants[2].macs = app.variants[0].macs.map(|m| m / 2);
    app.variants[2].tags.push("picked".into());
    app.mark_a = Some(0);
    app.mark_b = Some(2);
    let screen = render(&app, 80, 24);
    let row = |start: &str| {
        screen
            .lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no row {start}:\n{screen}"))
            .to_string()
    };
    let base = row("│0 base");
    for part in ["99.25%", "1.00", "136.7kB ●A"] {
        assert!(base.contains(part), "{part} missing: {base}\n{screen}");
    }
    let w4 = row("└ 2 ");
    for part in ["98.00%", "0.50", "28.0kB", "★B"] {
        assert!(w4.contains(part), "{part} missing: {w4}\n{screen}");
    }
    assert!(screen.contains("Variants · score MACs size"), "{screen}");
}

#[test]
fn every_layer_row_is_marked_w_and_each_activation_point_once() {
    let (app, _d) = sample_app();
    let model =
        qsteer::model::Model::load(std::path::Path::new("sample-models/mbv2_digits.onnx")).unwrap();
    let points = qsteer::quant::points::activation_points(&model).unwrap();
    let marks: Vec<String> = app.graph.iter().map(|r| app.quant_marks.mark(r)).collect();
    let with = |m: &str| marks.iter().filter(|x| x.contains(m)).count();
    assert_eq!(with("◆w"), app.layers.len());
    assert_eq!(with("◆a"), points.len());
    // Collapsed, a Conv row carries the mark of the activation folded into it.
    let collapsed: Vec<String> = app
        .graph_collapsed
        .iter()
        .map(|r| app.quant_marks.mark(r))
        .collect();
    assert_eq!(collapsed[1], "◆w◆a", "{:?}", app.graph_collapsed[1]);
}

#[test]
fn a_finished_quantsim_reloads_the_tree_and_states_its_result() {
    use qsteer::jobs::{JobEvent, JobId};
    let (mut app, _d) = sample_app();
    let kind = JobKind::quantsim(0, "sample-models/digits".into(), Default::default());
    update(
        &mut app,
        Action::Job(JobEvent::Queued { id: JobId(1), kind }),
    );
    assert_eq!(app.jobs[0].label, "quantsim v0 W8A8 per-tensor tf_enhanced");
    update(&mut app, Action::Job(JobEvent::Started { id: JobId(1) }));
    let result = "W8A8 per-tensor tf_enhanced: 99.25 % (FP32 99.25 %)";
    let effects = update(
        &mut app,
        Action::Job(JobEvent::Finished {
            id: JobId(1),
            summary: serde_json::json!({"variant": 1, "result": result}),
        }),
    );
    assert!(effects.contains(&Effect::ReloadWorkspace));
    assert_eq!(
        app.jobs[0].log.last().unwrap(),
        &format!("finished: {result}")
    );
    assert!(app.status.ends_with(result), "{}", app.status);
}

#[test]
fn f_keeps_a_graph_node_fp32_and_the_dialog_sends_it() {
    use super::keys::lookup;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let (mut app, _d) = sample_app();
    app.focus = Pane::Graph;
    // The first Add of the graph (not a layer: its quantizer is an activation quantizer).
    let row = app
        .graph_rows()
        .iter()
        .position(|r| r.op == "Add")
        .expect("an Add row");
    let name = app.graph_rows()[row].name.clone();
    app.cursor[Pane::Graph.index()] = row;
    let f = KeyEvent::new(KeyCode::Char('F'), KeyModifiers::NONE);
    let action = lookup(Pane::Graph, &f).expect("F is bound in the graph pane");
    assert_eq!(action, Action::KeepFp32);
    update(&mut app, action);
    assert!(app.keep_fp32.contains(&name));
    assert!(render(&app, 120, 36).contains(&format!("{name} [fp32]")));
    update(&mut app, Action::QuantsimDialog);
    assert_eq!(form(&app).keep_fp32, vec![name.clone()]);
    assert!(render(&app, 120, 36).contains(&format!("keep FP32: {name}")));
    let jobs = submitted(&update(&mut app, Action::Confirm));
    let JobKind::Quantsim { settings, .. } = &jobs[0] else {
        panic!("{jobs:?}")
    };
    assert_eq!(settings.overrides.len(), 1);
    assert!(settings.overrides[0].skip && settings.overrides[0].layer == name);
    assert!(settings.keeps_fp32(&name));
    // F again: quantized again.
    app.focus = Pane::Graph;
    update(&mut app, Action::KeepFp32);
    assert!(app.keep_fp32.is_empty());
}

/// In activations-only mode "calib. on" has no effect: it says so and the cursor steps
/// over it.
#[test]
fn activations_only_steps_over_calibrate_on() {
    use super::quantsim_form::Field;
    let (mut app, _d) = sample_app();
    update(&mut app, Action::QuantsimDialog);
    for _ in 0..6 {
        update(&mut app, Action::Down); // to the mode
    }
    assert_eq!(form(&app).field(), Field::Mode);
    update(&mut app, Action::Right);
    update(&mut app, Action::Right); // activations only
    assert!(!form(&app).weights_quantized());
    assert!(render(&app, 80, 24).contains("calib. on   ◂ – (no weights quantized) ▸"));
    update(&mut app, Action::Down);
    assert_eq!(form(&app).field(), Field::FloatOps);
    update(&mut app, Action::Up);
    assert_eq!(form(&app).field(), Field::Mode);
    // With weights quantized it is a field like the others.
    update(&mut app, Action::Right); // W+A
    update(&mut app, Action::Down);
    assert_eq!(form(&app).field(), Field::CalibrateOn);
}
