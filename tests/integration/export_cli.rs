//! `qsteer export` and `qsteer quantsim --export / --encodings`: the QDQ model and the AIMET
//! encodings file, from a variant or a model + encodings file, in both file versions; a file
//! read back reproduces the calibrated variant.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

fn read_json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn read(path: &Value) -> Vec<u8> {
    std::fs::read(path.as_str().unwrap()).unwrap()
}

#[test]
fn quantsim_export_and_export_of_variant_or_model_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    let model = sample_model("mbv2_digits").display().to_string();
    let data = digits().display().to_string();
    let sim = json_ok(
        d,
        &[
            "quantsim",
            &model,
            "--data",
            &data,
            "--w-bits",
            "4",
            "--per-channel",
            "--export",
            &p("direct"),
            "--workspace",
            &p("ws"),
            "--json",
        ],
    );
    let export = &sim["export"];
    assert_eq!(export["output"], p("direct/mbv2_digits_v1.qdq.onnx"));
    assert_eq!(export["encodings_version"], "1.0.0");
    assert_eq!(export["integer_weights"], 17);
    assert_eq!(export["float_op_tensors"], serde_json::json!([]));
    assert_eq!(
        export["qdq_activations"].as_u64(),
        sim["activation_points"].as_u64()
    );
    // Standard ops only at W4A8: qsteer itself loads the QDQ model.
    let qdq =
        qsteer::model::Model::load_any(Path::new(export["output"].as_str().unwrap())).unwrap();
    assert!(qdq.opset() >= 13);
    let direct_bytes = read(&export["output"]);

    // The variant's own encodings, written as 0.6.1.
    let legacy = json_ok(
        d,
        &[
            "export",
            "1",
            "--workspace",
            &p("ws"),
            "--out",
            &p("legacy"),
            "--encodings-version",
            "0.6.1",
            "--json",
        ],
    );
    assert_eq!(legacy["variant"], 1);
    assert_eq!(legacy["encodings_version"], "0.6.1");
    let doc = read_json(legacy["encodings"].as_str().unwrap());
    assert_eq!(doc["version"], "0.6.1");
    let params = doc["param_encodings"].as_object().unwrap();
    assert_eq!(params.len(), 17);
    // Asymmetric 4-bit weights (the default): AIMET offsets in [-15, 0].
    for channels in params.values() {
        for c in channels.as_array().unwrap() {
            assert_eq!(c["bitwidth"], 4);
            let offset = c["offset"].as_i64().unwrap();
            assert!((-15..=0).contains(&offset), "{c}");
        }
    }
    assert_eq!(read(&legacy["output"]), direct_bytes);

    // A model file plus the 0.6.1 file gives the same QDQ model again.
    let from_file = json_ok(
        d,
        &[
            "export",
            &model,
            "--encodings",
            legacy["encodings"].as_str().unwrap(),
            "--out",
            &p("from_file"),
            "--json",
        ],
    );
    assert_eq!(from_file["variant"], Value::Null);
    assert_eq!(from_file["output"], p("from_file/mbv2_digits.qdq.onnx"));
    assert_eq!(read(&from_file["output"]), direct_bytes);
    let v1 = read_json(from_file["encodings"].as_str().unwrap());
    assert_eq!(v1["version"], "1.0.0");
    assert_eq!(v1["param_encodings"].as_array().unwrap().len(), 17);

    // quantsim with the encodings file instead of calibration scores like the calibrated one.
    let again = json_ok(
        d,
        &[
            "quantsim",
            &model,
            "--data",
            &data,
            "--encodings",
            legacy["encodings"].as_str().unwrap(),
            "--workspace",
            &p("ws"),
            "--json",
        ],
    );
    assert_eq!(again["accuracy"], sim["accuracy"]);
    assert_eq!(again["variant"], 2);
    assert!(again["step"]
        .as_str()
        .unwrap()
        .starts_with("quantsim{encodings:"));
}

#[test]
fn export_and_import_errors_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).display().to_string();
    let model = sample_model("mbv2_digits").display().to_string();
    let data = digits().display().to_string();
    let out = p("out");

    let o = run(d, &["export", &model, "--out", &out]);
    assert!(assert_bad_input(&o, "no encodings").contains("--encodings"));

    let o = run(
        d,
        &["export", "3", "--workspace", &p("nowhere"), "--out", &out],
    );
    assert!(assert_bad_input(&o, "no workspace").contains("no workspace"));

    // A workspace with only the base variant: no variant 3, and the base has no encodings.
    json_ok(
        d,
        &[
            "eval",
            &model,
            "--data",
            &data,
            "--workspace",
            &p("ws"),
            "--json",
        ],
    );
    let o = run(d, &["export", "3", "--workspace", &p("ws"), "--out", &out]);
    assert!(assert_bad_input(&o, "missing variant").contains("no variant 3"));
    let o = run(d, &["export", "0", "--workspace", &p("ws"), "--out", &out]);
    assert!(assert_bad_input(&o, "base variant").contains("variant 0"));

    let bad = d.join("bad.encodings.json");
    std::fs::write(
        &bad,
        r#"{"version": "1.0.0", "activation_encodings": [], "param_encodings": [
            {"name": "not.a.weight", "enc_type": "PER_TENSOR", "dtype": "INT", "bw": 8,
             "is_sym": false, "scale": [0.1], "offset": [-3]}]}"#,
    )
    .unwrap();
    let bad_path = bad.display().to_string();
    let o = run(
        d,
        &["export", &model, "--encodings", &bad_path, "--out", &out],
    );
    let line = assert_bad_input(&o, "unknown tensor");
    assert!(
        line.contains("bad.encodings.json") && line.contains("not.a.weight"),
        "{line}"
    );
    let o = run(
        d,
        &[
            "quantsim",
            &model,
            "--data",
            &data,
            "--encodings",
            &bad_path,
            "--workspace",
            &p("ws"),
        ],
    );
    assert!(assert_bad_input(&o, "quantsim import").contains("not.a.weight"));

    let o = run(
        d,
        &[
            "export",
            &model,
            "--encodings",
            &bad_path,
            "--out",
            &out,
            "--encodings-version",
            "0.7",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!Path::new(&out).exists());
}
