//! `qsteer quantsim`: a child variant with its encodings, and numbers that move the way
//! quantization noise says they must (W8A8 ≈ FP32; 4-bit per-tensor weights hurt; per-channel
//! recovers most of it).

use crate::common::*;
use serde_json::Value;

fn quantsim(dir: &std::path::Path, ws: &std::path::Path, extra: &[&str]) -> Value {
    let model = sample_model("mbv2_digits");
    let data = digits();
    let mut args = vec![
        "quantsim",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--workspace",
        ws.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = run(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON document")
}

#[test]
fn quantsim_variants_and_their_scores() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let w8a8 = quantsim(dir.path(), &ws, &["--per-channel"]);
    let w4 = quantsim(dir.path(), &ws, &["--w-bits", "4", "--mode", "w"]);
    let w4pc = quantsim(
        dir.path(),
        &ws,
        &["--w-bits", "4", "--mode", "w", "--per-channel"],
    );
    let acc = |v: &Value| v["accuracy"].as_f64().unwrap();
    assert!(acc(&w8a8) >= 0.97, "W8A8 {}", acc(&w8a8));
    assert!(
        acc(&w4) < acc(&w8a8) - 0.05,
        "W4 per-tensor {} vs W8A8 {}",
        acc(&w4),
        acc(&w8a8)
    );
    assert!(
        acc(&w4pc) > acc(&w4),
        "per-channel {} vs per-tensor {}",
        acc(&w4pc),
        acc(&w4)
    );
    assert_eq!(w8a8["variant"], 1);
    assert_eq!(w4pc["variant"], 3);
    assert!(w8a8["activation_points"].as_u64().unwrap() > 10);

    let index: Value =
        serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
    let variants = index["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4);
    assert_eq!(variants[1]["parent"], 0);
    // Sizes are the integer model's, not the simulation file's (which is larger than its
    // parent): on this small model (137 kB, a third of it graph and BN parameters) 8-bit
    // weights give 62 kB, 4-bit ones about 12 kB less.
    let size = |i: usize| variants[i]["size_bytes"].as_f64().unwrap();
    assert!(
        size(1) < 0.6 * size(0),
        "W8 {} vs FP32 {}",
        size(1),
        size(0)
    );
    assert!(size(2) < 0.9 * size(1), "W4 {} vs W8 {}", size(2), size(1));
    assert!(variants[1]["step"]
        .as_str()
        .unwrap()
        .starts_with("quantsim{w:8,a:8,per_channel:true"));
    let enc: Value =
        serde_json::from_slice(&std::fs::read(ws.join("variants/1.encodings.json")).unwrap())
            .unwrap();
    assert_eq!(enc["version"], "1.0.0");
    assert!(!enc["activation_encodings"].as_array().unwrap().is_empty());
    let params = enc["param_encodings"].as_array().unwrap();
    assert_eq!(params.len(), 17);
    assert!(params.iter().all(|p| p["enc_type"] == "PER_CHANNEL"));
    // Weights-only has no activation encodings.
    let enc2: Value =
        serde_json::from_slice(&std::fs::read(ws.join("variants/2.encodings.json")).unwrap())
            .unwrap();
    assert!(enc2["activation_encodings"].as_array().unwrap().is_empty());

    // Leaving the most sensitive layer (the stem) in FP32 recovers part of the W4 loss;
    // the override is in the step and the layer has no weight encoding.
    let skip = quantsim(
        dir.path(),
        &ws,
        &["--w-bits", "4", "--mode", "w", "--fp32", "stem.conv"],
    );
    assert!(acc(&skip) > acc(&w4), "{} vs {}", acc(&skip), acc(&w4));
    assert!(skip["step"].as_str().unwrap().contains("fp32:[stem.conv]"));
    let enc5: Value =
        serde_json::from_slice(&std::fs::read(skip["encodings"].as_str().unwrap()).unwrap())
            .unwrap();
    let params = enc5["param_encodings"].as_array().unwrap();
    assert_eq!(params.len(), 16);
    assert!(params
        .iter()
        .all(|p| !p["name"].as_str().unwrap().starts_with("stem")));
}

#[test]
fn bad_quantsim_settings_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let data = digits();
    for extra in [["--w-bits", "1"], ["--scheme", "bogus"], ["--mode", "x"]] {
        let mut args = vec![
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(&extra);
        let out = run(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
    }
}

/// `--weight-scheme` calibrates the weights apart from the activations: recorded in the
/// settings and the step, the weights' grids those of the chosen scheme, the activations'
/// unchanged; `same` is the activations' scheme (AIMET's one `quant_scheme`).
/// (On main, `--weight-scheme` does not exist: exit 2.)
#[test]
fn the_weight_scheme_is_its_own_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let grids = |doc: &Value| -> (Value, Value) {
        let text = std::fs::read_to_string(doc["encodings"].as_str().unwrap()).unwrap();
        let enc: Value = serde_json::from_str(&text).unwrap();
        (
            enc["param_encodings"].clone(),
            enc["activation_encodings"].clone(),
        )
    };
    let minmax = quantsim(dir.path(), &ws, &["--weight-scheme", "minmax"]);
    let same = quantsim(dir.path(), &ws, &["--weight-scheme", "same"]);
    let default = quantsim(dir.path(), &ws, &[]);
    assert_eq!(minmax["settings"]["weight_scheme"], "minmax");
    assert_eq!(minmax["settings"]["scheme"], "tf_enhanced");
    assert!(minmax["step"]
        .as_str()
        .unwrap()
        .contains("weight_scheme:minmax"));
    assert!(
        same["settings"].get("weight_scheme").is_none(),
        "{}",
        same["settings"]
    );
    assert!(!same["step"].as_str().unwrap().contains("weight_scheme"));
    // The default, auto: minmax for these 8-bit per-tensor weights.
    assert_eq!(default["settings"]["weight_scheme"], "auto");
    assert_eq!(grids(&default).0, grids(&minmax).0);
    let (w_minmax, a_minmax) = grids(&minmax);
    let (w_same, a_same) = grids(&same);
    assert_eq!(a_minmax, a_same, "the activations keep --scheme");
    assert_ne!(w_minmax, w_same, "the weights follow --weight-scheme");
    let out = run(
        dir.path(),
        &[
            "quantsim",
            sample_model("mbv2_digits").to_str().unwrap(),
            "--data",
            digits().to_str().unwrap(),
            "--weight-scheme",
            "bogus",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bogus"), "{}", stderr(&out));
}
