//! `qsteer fold-bn` and `qsteer cle`: the JSON documents, the variants they record, the
//! files `--out` writes, the score with `--data`, and bad arguments.

use crate::common::*;
use qsteer::model::Model;

fn ops(path: &str) -> Vec<String> {
    let m = Model::load(std::path::Path::new(path)).unwrap();
    m.graph().node.iter().map(|n| n.op_type.clone()).collect()
}

#[test]
fn fold_bn_writes_the_folded_model_and_scores_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("folded.onnx").display().to_string();
    let model = sample_model("mbv2_digits").display().to_string();
    let digits = digits().display().to_string();
    let doc = json_ok(
        d,
        &[
            "fold-bn", &model, "--out", &out, "--data", &digits, "--json",
        ],
    );
    assert_eq!(doc["output"], out.as_str());
    assert_eq!(doc["variant"], 1);
    assert_eq!(doc["step"], "fold_bn");
    assert_eq!(doc["folded"].as_array().unwrap().len(), 16);
    assert_eq!(doc["folded"][0]["bn"], "stem.bn");
    assert_eq!(doc["folded"][0]["layer"], "stem.conv");
    assert!(doc["skipped"].as_array().unwrap().is_empty());
    // Folding changes nothing the score can see: the sample's FP32 accuracy.
    assert_eq!(doc["accuracy"], 0.9925);
    assert_eq!(doc["samples"], 400);
    assert!(!ops(&out).contains(&"BatchNormalization".to_string()));
    // The variant is in the workspace with its BN statistics.
    let ws = d.join("workspaces");
    let ws_dir = std::fs::read_dir(&ws)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(ws_dir.join("variants/1.bn_stats.json").is_file());
    assert!(ws_dir.join("variants/1.onnx").is_file());
}

#[test]
fn cle_reports_conversions_only_with_consent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = sample_model("mbv2_digits").display().to_string();
    let refused = json_ok(d, &["cle", &model, "--json"]);
    assert!(refused["sets"].as_array().unwrap().is_empty());
    assert!(refused["converted"].as_array().unwrap().is_empty());
    assert_eq!(refused["folded"].as_array().unwrap().len(), 16);
    assert!(refused["accuracy"].is_null());
    let ends = refused["ends"].as_array().unwrap();
    assert!(ends
        .iter()
        .any(|e| e["reason"].as_str().unwrap().contains("relu6_to_relu")));

    let out = d.join("cle.onnx").display().to_string();
    let doc = json_ok(
        d,
        &["cle", &model, "--relu6-to-relu", "--out", &out, "--json"],
    );
    assert_eq!(doc["variant"], 2);
    assert_eq!(doc["step"], "cle{relu6_to_relu:true,hba:true}");
    assert_eq!(doc["output"], out.as_str());
    assert_eq!(doc["converted"].as_array().unwrap().len(), 9);
    assert_eq!(doc["converted"][0]["was"], "Clip(0, 6)");
    assert_eq!(doc["sets"].as_array().unwrap().len(), 5);
    for l in doc["layers"].as_array().unwrap() {
        let (b, a) = (
            l["ratio_before"].as_f64().unwrap(),
            l["ratio_after"].as_f64().unwrap(),
        );
        assert!(a >= 1.0 && b >= 1.0, "{l}");
    }
    assert_eq!(
        ops(&out).iter().filter(|o| *o == "Relu").count(),
        9,
        "the converted Clips"
    );

    // People get the sets and the range table.
    let text = run(d, &["cle", &model, "--relu6-to-relu", "--no-hba"]);
    let text = stdout(&text);
    assert!(text.contains("5 set(s) equalized"), "{text}");
    assert!(text.contains("block2.expand.conv → block2.dw.conv → block2.project.conv"));
    assert!(text.contains("range max/med before"));
    // Without consent people are told the Relu6s stopped every chain, and what lifts it.
    let text = run(d, &["cle", &model]);
    let text = stdout(&text);
    assert!(text.contains("0 set(s) equalized"), "{text}");
    assert!(
        text.contains("Relu6 (Clip 0..6) stops every chain (9 of them)")
            && text.contains("`--relu6-to-relu`"),
        "{text}"
    );
}

#[test]
fn cle_scales_each_set_once_unless_told_to_settle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A ResNet whose chains are pairs: one pass balances each, settling passes once more.
    let model = sample_model("resnet_digits").display().to_string();
    let once = json_ok(d, &["cle", &model, "--json"]);
    assert_eq!(once["scaling"], "once");
    assert_eq!(once["iterations"], 1);
    assert_eq!(once["step"], "cle{relu6_to_relu:false,hba:true}");
    let settle = json_ok(d, &["cle", &model, "--scaling", "settle", "--json"]);
    assert_eq!(settle["scaling"], "settle");
    assert_eq!(
        settle["step"],
        "cle{relu6_to_relu:false,hba:true,scaling:settle}"
    );
    assert!(settle["converged"].as_bool().unwrap());
    let text = stdout(&run(d, &["cle", &model, "--scaling", "settle"]));
    assert!(text.contains("equalized in 2 iteration(s)"), "{text}");
    let text = stdout(&run(d, &["cle", &model]));
    assert!(text.contains("equalized in one pass"), "{text}");
    // The chain takes the same choice.
    let data = small_digits(d, 16).display().to_string();
    let chain = json_ok(
        d,
        &[
            "fix",
            &model,
            "--chain",
            "cle",
            "--cle-scaling",
            "settle",
            "--data",
            &data,
            "--json",
        ],
    );
    assert_eq!(
        chain["steps"][0]["step"], "cle{relu6_to_relu:false,hba:true,scaling:settle}",
        "{chain}"
    );
    // A bad value is refused by the argument parser (exit 2), naming it.
    let o = run(d, &["cle", &model, "--scaling", "twice"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown CLE scaling 'twice' (expected once or settle)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fix_commands_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("nope.onnx").display().to_string();
    assert_bad_input(&run(d, &["fold-bn", &missing]), "missing model");
    let model = sample_model("resnet_digits").display().to_string();
    let o = run(d, &["cle", &model, "--no-hba", "--hba-padded"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let garbage = d.join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let line = assert_bad_input(
        &run(d, &["cle", garbage.to_str().unwrap()]),
        "garbage model",
    );
    assert!(line.contains("garbage.onnx"), "{line}");
}

/// Conv 1×1 → BN (β = 5, γ = 1: HBA's c = β − 3|γ| = 2) → Relu → Conv 1×1 → mean → [N, 2],
/// written to `dir`, with a dataset whose inputs take c1's output far below −3.
fn statistically_high_model(dir: &std::path::Path) -> (String, String) {
    use ndarray::{ArrayD, IxDyn};
    use qsteer::model::builder::{attr_ints, ProtoBuilder};
    let mut rng = SplitMix64(7);
    let mut arr = |shape: &[usize], scale: f32| {
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            (rng.below(2001) as f32 / 1000.0 - 1.0) * scale
        })
    };
    let fill = |v: f32| ArrayD::from_elem(IxDyn(&[4]), v);
    let mut b = ProtoBuilder::new(13);
    b.input("x", &[3, 4, 4])
        .initializer("c1.w", &arr(&[4, 3, 1, 1], 0.8))
        .node("Conv", "c1", &["x", "c1.w"], &["c1"], vec![]);
    for (p, v) in [("scale", 1.0), ("bias", 5.0), ("mean", 0.0), ("var", 1.0)] {
        b.initializer(&format!("bn.{p}"), &fill(v));
    }
    b.node(
        "BatchNormalization",
        "bn",
        &["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
        &["b"],
        vec![],
    )
    .node("Relu", "relu", &["b"], &["r"], vec![])
    .initializer("c2.w", &arr(&[2, 4, 1, 1], 0.5))
    .initializer("c2.b", &arr(&[2], 0.5))
    .node("Conv", "c2", &["r", "c2.w", "c2.b"], &["c2"], vec![])
    .node(
        "ReduceMean",
        "pool",
        &["c2"],
        &["y"],
        vec![
            attr_ints("axes", &[2, 3]),
            qsteer::model::builder::attr_int("keepdims", 0),
        ],
    )
    .output("y");
    let model = dir.join("high.onnx");
    b.model("high").unwrap().save(&model).unwrap();
    let data = dir.join("data");
    for (half, n) in [("calibration", 40usize), ("evaluation", 40)] {
        let x = arr(&[n, 3, 4, 4], 4.0);
        let labels = ArrayD::from_shape_fn(IxDyn(&[n]), |i| (i[0] % 2) as i64);
        std::fs::create_dir_all(data.join(half)).unwrap();
        qsteer::data::write_npy_f32(&data.join(half).join("inputs.npy"), &x).unwrap();
        qsteer::data::write_npy_i64(&data.join(half).join("labels.npy"), &labels).unwrap();
    }
    (model.display().to_string(), data.display().to_string())
}

#[test]
fn cle_limits_high_bias_absorption_to_what_the_data_allows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (model, data) = statistically_high_model(d);
    // Without data: absorbed from the statistics, with a note saying what that means.
    let o = run(d, &["cle", &model, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: high-bias absorption is statistical"),
        "{}",
        stderr(&o)
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["hba"]["absorbed"].as_array().unwrap().len(), 1, "{doc}");
    assert!(doc["hba"]["checked_on"].is_null());
    assert!(doc["fp32_change"].is_null());
    // With data: limited to the calibration samples, the cost measured on the evaluation
    // samples (which the absorption never saw: small, not necessarily zero).
    let doc = json_ok(d, &["cle", &model, "--data", &data, "--json"]);
    assert_eq!(doc["hba"]["checked_on"], 40, "{doc}");
    let a = &doc["hba"]["absorbed"];
    let lowered = a.as_array().map_or(0, |l| {
        l.iter()
            .map(|x| x["reduced"].as_u64().unwrap())
            .sum::<u64>()
    }) + doc["hba"]["skipped"].as_array().unwrap().len() as u64;
    assert!(lowered > 0, "the data lowers c: {doc}");
    let change = &doc["fp32_change"];
    assert_eq!(change["samples"], 40, "{doc}");
    assert!(change["max_abs"].as_f64().unwrap() < 0.05, "{change}");
    assert!(change["sqnr_db"].as_f64().unwrap() > 30.0, "{change}");
    assert_eq!(doc["samples"], 40);
}
