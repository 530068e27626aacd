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
