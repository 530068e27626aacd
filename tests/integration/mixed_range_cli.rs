//! The mixed-range Concat rule on the CLI: a detector head joining boxes (pixels) and scores
//! (0–1) in its output Concat keeps the scores on their own grid by default, says so in
//! `kept_fp32`, exports a QDQ model that computes the same, and `--mixed-range off`
//! quantizes the join (the scores collapse).

use crate::common::*;
use ndarray::{Array, ArrayD, IxDyn};
use qsteer::data::write_npy_f32;
use std::path::{Path, PathBuf};

/// The boxes-and-scores head (YOLOv8's last join) as the graph output `det`.
fn head(dir: &Path) -> PathBuf {
    let mut b = qsteer::model::fixtures::boxes_and_scores_head();
    b.output("det");
    let path = dir.join("head.onnx");
    b.model("head").unwrap().save(&path).unwrap();
    path
}

fn data(dir: &Path) -> PathBuf {
    let x = Array::from_shape_fn(IxDyn(&[64, 4, 16]), |d| {
        2.0 * (((d[0] * 64 + d[1] * 16 + d[2]) as f32) * 0.731).sin()
    });
    let data = dir.join("data");
    write_npy_f32(&data.join("inputs.npy"), &x).unwrap();
    data
}

/// Outputs of `model` on every sample of `data`.
fn outputs(dir: &Path, model: &Path, data: &Path, name: &str) -> ArrayD<f32> {
    let out = dir.join(format!("{name}.npy"));
    json_ok(
        dir,
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "all",
            "--save-outputs",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    read_f32(&out)
}

/// Largest error of the score channels (4..8) against FP32.
fn score_error(fp32: &ArrayD<f32>, other: &ArrayD<f32>) -> f32 {
    let s = |a: &ArrayD<f32>| a.slice(ndarray::s![.., 4..8, ..]).to_owned().into_dyn();
    max_abs_diff(&s(fp32), &s(other))
}

#[test]
fn an_output_concat_of_boxes_and_scores_keeps_the_scores_grid_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (head(dir.path()), data(dir.path()));
    let fp32 = outputs(dir.path(), &model, &data, "fp32");
    let quantsim = |extra: &[&str], tag: &str| {
        let (sim, export) = (
            dir.path().join(format!("sim-{tag}.onnx")),
            dir.path().join(format!("export-{tag}")),
        );
        let mut args = vec![
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibration-size",
            "32",
            "--out",
            sim.to_str().unwrap(),
            "--export",
            export.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        (json_ok(dir.path(), &args), sim, export)
    };

    let (doc, sim, export) = quantsim(&[], "default");
    let kept = doc["kept_fp32"].as_array().expect("kept_fp32 is a list");
    assert_eq!(kept.len(), 1, "{doc}");
    assert_eq!(kept[0]["node"], "detect");
    assert_eq!(kept[0]["value"], "det");
    assert!(
        kept[0]["reason"].as_str().unwrap().contains("mixed-range"),
        "{doc}"
    );
    assert!(doc["step"].as_str().unwrap().starts_with("quantsim{"));
    let simulated = outputs(dir.path(), &sim, &data, "sim");
    // Sigmoid's own 8-bit grid: steps of ~1/255.
    assert!(
        score_error(&fp32, &simulated) < 0.01,
        "scores keep their grid"
    );
    // The exported QDQ graph (each input dequantized, the join in float) computes the same.
    let qdq = std::fs::read_dir(&export)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".qdq.onnx"))
        .expect("a QDQ model");
    let exported = outputs(dir.path(), &qdq, &data, "qdq");
    assert_eq!(max_abs_diff(&simulated, &exported), 0.0);

    // Off: one 8-bit grid over 0–400 for the scores too.
    let (doc, sim, _) = quantsim(&["--mixed-range", "off"], "off");
    assert_eq!(doc["kept_fp32"].as_array().map(Vec::len), Some(0), "{doc}");
    assert!(doc["step"].as_str().unwrap().contains("mixed_range:off"));
    let collapsed = outputs(dir.path(), &sim, &data, "sim-off");
    assert!(score_error(&fp32, &collapsed) > 0.3, "one grid for both");

    // A factor above the measured spread leaves it quantized too.
    let (doc, _, _) = quantsim(&["--mixed-range", "1000"], "wide");
    assert_eq!(doc["kept_fp32"].as_array().map(Vec::len), Some(0), "{doc}");

    let out = run(
        dir.path(),
        &[
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--mixed-range",
            "0.5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--mixed-range"), "{}", stderr(&out));
}
