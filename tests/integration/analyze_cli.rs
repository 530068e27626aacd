//! `qsteer analyze`: the diagnosis document, its storage on the base variant, per-layer
//! overrides, and clear errors.

use crate::common::*;
use serde_json::Value;

fn analyze(dir: &std::path::Path, ws: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = sample_model("mbv2_digits");
    let data = digits();
    let mut args = vec![
        "analyze",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--workspace",
        ws.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    run(dir, &args)
}

#[test]
fn analyze_reports_scores_and_a_row_per_layer_and_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let out = analyze(dir.path(), &ws, &["--w-bits", "4", "--fp32", "stem.conv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let acc = |mode: &str| doc["scores"][mode]["accuracy"].as_f64().unwrap();
    assert!((acc("fp32") - 0.9925).abs() < 1e-9);
    assert!(acc("weights_and_activations") < acc("fp32"));
    assert_eq!(doc["data_passes"], 2);
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 17);
    // The overridden layer stays FP32: no weight bits, no isolated columns.
    assert_eq!(layers[0]["layer"], "stem.conv");
    assert!(layers[0]["weight_bits"].is_null());
    assert!(layers[0]["sqnr_isolated_db"].is_null());
    for l in &layers[1..] {
        assert_eq!(l["weight_bits"], 4);
        assert!(l["sqnr_db"].as_f64().unwrap() > 0.0);
        assert!(l["weights"]["channels"].as_array().unwrap().len() > 1);
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
    let file = index["variants"][0]["analysis_file"].as_str().unwrap();
    let stored: Value = serde_json::from_slice(&std::fs::read(ws.join(file)).unwrap()).unwrap();
    assert_eq!(stored["layers"].as_array().unwrap().len(), layers.len());
    assert_eq!(stored["layers"][5]["sqnr_db"], layers[5]["sqnr_db"]);
    assert_eq!(
        stored["layers"][5]["weights"]["max"],
        layers[5]["weights"]["max"]
    );
}

#[test]
fn analyze_names_an_unknown_override_layer() {
    let dir = tempfile::tempdir().unwrap();
    let out = analyze(
        dir.path(),
        &dir.path().join("ws"),
        &["--fp32", "conv_that_is_not_there"],
    );
    assert_bad_input(&out, "conv_that_is_not_there");
}

#[test]
fn analyze_rejects_a_malformed_layer_bitwidth() {
    let dir = tempfile::tempdir().unwrap();
    let out = analyze(
        dir.path(),
        &dir.path().join("ws"),
        &["--layer-w-bits", "stem.conv"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("LAYER=BITS"), "{}", stderr(&out));
}
