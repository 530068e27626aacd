//! `qsteer bias-correct`: the corrected model and its quantsim land in the workspace, the
//! correction helps where quantization hurts, and a bad mode is a usage error.

use crate::common::*;
use serde_json::Value;

#[test]
fn bias_correction_records_the_corrected_model_and_its_better_quantsim() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let model = sample_model("mbv2_digits");
    let data = digits();
    let out_file = dir.path().join("corrected.onnx");
    let args = |extra: &[&str]| {
        let mut a = vec![
            model.to_str().unwrap().to_string(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--workspace".into(),
            ws.to_str().unwrap().into(),
            "--w-bits".into(),
            "4".into(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run_json = |cmd: &str, extra: &[&str]| -> Value {
        let mut a = vec![cmd.to_string()];
        a.extend(args(extra));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = run(dir.path(), &a);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).expect("one JSON document")
    };
    let plain = run_json("quantsim", &[]);
    let bc = run_json(
        "bias-correct",
        &[
            "--bc-mode",
            "empirical",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    let acc = |v: &Value| v["accuracy"].as_f64().unwrap();
    assert!(
        acc(&bc) > acc(&plain) + 0.1,
        "{} vs {}",
        acc(&bc),
        acc(&plain)
    );
    assert_eq!(bc["output"], out_file.to_str().unwrap());
    assert!(out_file.is_file());
    // `samples` counts the scored (evaluation) samples, as in every other command; the
    // correction's own data is `calibration_samples`.
    assert_eq!(bc["samples"], plain["samples"]);
    assert_eq!(bc["samples"], 400);
    assert_eq!(bc["calibration_samples"], 200);
    let layers = bc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 17);
    assert!(layers.iter().all(|l| l["how"] == "empirical"));
    let index: Value =
        serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
    let v = &index["variants"];
    let corrected = bc["corrected_variant"].as_u64().unwrap() as usize;
    let sim = bc["variant"].as_u64().unwrap() as usize;
    assert_eq!(v[corrected]["parent"], 0);
    assert!(v[corrected]["step"]
        .as_str()
        .unwrap()
        .starts_with("bias_correct{mode:empirical"));
    assert_eq!(v[sim]["parent"], corrected as u64);
}

#[test]
fn an_unknown_bias_correction_mode_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["bias-correct", "--bc-mode", "magic"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("magic"));
}
