//! `qsteer adaround`: the rounded model, its encodings and its quantsim land in the
//! workspace and in `--out`; a rerun loads every layer from the workspace's checkpoints;
//! zero iterations is a usage error.

use crate::common::*;
use serde_json::Value;

#[test]
fn adaround_records_the_rounded_model_its_encodings_and_its_quantsim() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let model = sample_model("mbv2_digits");
    let data = digits();
    let out_file = dir.path().join("rounded.onnx");
    let run_json = |extra: &[&str]| -> Value {
        let mut a = vec![
            "adaround",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--workspace",
            ws.to_str().unwrap(),
            "--w-bits",
            "4",
            "--mode",
            "w",
            "--iterations",
            "60",
            "--json",
        ];
        a.extend(extra);
        let out = run(dir.path(), &a);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("one JSON document")
    };
    let first = run_json(&["--out", out_file.to_str().unwrap()]);
    assert_eq!(first["output"], out_file.to_str().unwrap());
    assert!(out_file.is_file());
    let enc_file = dir.path().join("rounded.onnx.encodings.json");
    assert_eq!(first["encodings"], enc_file.to_str().unwrap());
    let enc: Value = serde_json::from_slice(&std::fs::read(&enc_file).unwrap()).unwrap();
    assert_eq!(enc["version"], "1.0.0");
    assert_eq!(enc["param_encodings"].as_array().unwrap().len(), 17);
    let layers = first["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 17);
    assert!(
        layers.iter().all(|l| l["how"] == "adarounded"),
        "{layers:?}"
    );
    assert!(first["accuracy"].as_f64().unwrap() > 0.5);
    let index: Value =
        serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
    let v = &index["variants"];
    let rounded = first["rounded_variant"].as_u64().unwrap() as usize;
    let sim = first["variant"].as_u64().unwrap() as usize;
    assert_eq!(v[rounded]["parent"], 0);
    assert_eq!(
        v[rounded]["step"],
        "adaround{w:4,a:8,per_channel:false,iterations:60}"
    );
    assert_eq!(v[sim]["parent"], rounded as u64);
    // Read from AdaRound's frozen file but made for these settings: recorded with the
    // variant (in the same index write as its encodings and score).
    assert_eq!(v[sim]["quantsim"]["w_bits"], 4);
    assert!(v[sim]["encodings_file"].is_string() && v[sim]["results"][0].is_object());

    // Same model, settings and data: every layer comes from the checkpoints, same score.
    let again = run_json(&[]);
    assert_eq!(again["loaded_layers"], 17);
    assert_eq!(again["accuracy"], first["accuracy"]);
}

#[test]
fn zero_iterations_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits();
    let out = run(
        dir.path(),
        &[
            "adaround",
            "--data",
            data.to_str().unwrap(),
            "--iterations",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("iterations"), "{}", stderr(&out));
}
