//! `qsteer finetune --qat` (quantization-aware training to a new quantsim variant that
//! `qsteer export` writes), `finetune` and `compress` on a variant id or a variant's own
//! file, and the bad `--qat` inputs.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn qat_makes_an_exportable_quantsim_variant_and_variant_ids_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = small_digits(root, 40).display().to_string();
    let ws = root.join("ws").display().to_string();
    let model = sample_model("mbv2_digits").display().to_string();
    let base = [
        "--data",
        data.as_str(),
        "--workspace",
        ws.as_str(),
        "--threads",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--json",
    ];
    let with = |head: &[&str]| -> Vec<String> {
        head.iter()
            .chain(base.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let call = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        json_ok(root, &a)
    };

    // --qat alone: quantsim W4A8 of the model (variant 1), then QAT from it: the trained
    // FP32 weights (variant 2) and the new quantsim variant (3) under them.
    let doc = call(with(&["finetune", &model, "--qat", "--w-bits", "4"]));
    assert_eq!(doc["quantsim_variant"], 1);
    assert_eq!(doc["trained_variant"], 2);
    assert_eq!(doc["parent"], 2);
    assert_eq!(doc["variant"], 3);
    assert_eq!(doc["step"], "qat{from:1,epochs:1,lr:0.001}");
    assert_eq!(doc["quantsim"]["w_bits"], 4);
    assert_eq!(doc["weight_encodings"], "recomputed");
    assert_eq!(doc["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(doc["steps_per_epoch"], 3);
    for k in ["score_before", "score_after", "score_frozen_encodings"] {
        let v = doc[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    let encodings = Path::new(doc["encodings"].as_str().unwrap()).to_path_buf();
    let enc = read_json(&encodings);
    let params = enc["param_encodings"].as_array().unwrap();
    assert_eq!(params.len(), 17);
    assert!(
        params.iter().all(|p| p["bw"] == 4 || p["bitwidth"] == 4),
        "{}",
        params[0]
    );

    // The workspace records it as a quantsim variant with those encodings and its score.
    let wsdoc = read_json(&root.join("ws/workspace.json"));
    let v3 = wsdoc["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == 3)
        .unwrap();
    assert_eq!(v3["parent"], 2);
    assert!(v3["encodings_file"].is_string());
    assert_eq!(v3["quantsim"]["w_bits"], 4);
    assert_eq!(
        v3["results"][0]["score"]["accuracy"].as_f64(),
        doc["score_after"].as_f64()
    );

    // `qsteer export` writes its QDQ model and encodings unchanged.
    let out = root.join("export").display().to_string();
    let export = json_ok(
        root,
        &["export", "3", "--workspace", &ws, "--out", &out, "--json"],
    );
    let qdq = Path::new(export["output"].as_str().unwrap());
    let loaded = qsteer::model::Model::load_any(qdq).unwrap();
    assert!(loaded
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear"));

    // QAT again from the new quantsim variant by id: its float parent is variant 2.
    let again = call(with(&["finetune", &model, "--qat", "3"]));
    assert_eq!(again["quantsim_variant"], 3);
    assert_eq!(again["trained_variant"], 4);
    assert_eq!(again["variant"], 5);

    // Plain fine-tuning by variant id, and by the variant's own file.
    let tuned = call(with(&["finetune", "2"]));
    assert_eq!(tuned["parent"], 2);
    assert_eq!(tuned["variant"], 6);
    let file = root.join("ws/variants/2.onnx").display().to_string();
    let by_file = call(with(&["finetune", &file]));
    assert_eq!(by_file["parent"], 2);

    // Compress takes a variant id too.
    let compressed = json_ok(
        root,
        &[
            "compress",
            "2",
            "--data",
            &data,
            "--workspace",
            &ws,
            "--threads",
            "1",
            "--method",
            "wsvd",
            "--target",
            "0.8",
            "--json",
        ],
    );
    assert_eq!(compressed["parent"], 2);

    // Bad --qat input: a float variant, a missing file, encodings naming a tensor the
    // model lacks.
    let bad = |qat: &str, what: &str| {
        let mut a = vec!["finetune", &model, "--qat", qat];
        a.extend_from_slice(&base);
        let line = assert_bad_input(&run(root, &a), what);
        assert!(line.contains(what), "{line}");
    };
    bad("2", "not quantized");
    bad(
        &root.join("none.json").display().to_string(),
        "neither a variant id nor an encodings file",
    );
    let mut wrong = enc.clone();
    wrong["param_encodings"][0]["name"] = "no_such_weight".into();
    let wrong_file = root.join("wrong.encodings.json");
    std::fs::write(&wrong_file, serde_json::to_vec(&wrong).unwrap()).unwrap();
    bad(&wrong_file.display().to_string(), "no_such_weight");
    // And a variant id the workspace does not have.
    let mut a = vec!["finetune", "99"];
    a.extend_from_slice(&base);
    let line = assert_bad_input(&run(root, &a), "unknown variant");
    assert!(line.contains("no variant 99"), "{line}");
}

/// `--train-data DIR` trains on that set whole and the result says which samples trained
/// and scored; without it the calibration part trains, with a note; the workspace keeps
/// the training set for the app. A missing directory is bad input naming it.
#[test]
fn finetune_trains_on_the_training_set_and_says_which_samples() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = small_digits(root, 40);
    let train = root.join("train");
    let src = digits().join("training");
    match qsteer::data::read_npy(&src.join("inputs.npy")).unwrap() {
        qsteer::data::NpyArray::F32(x) => {
            qsteer::data::write_npy_f32(&train.join("inputs.npy"), &first(&x, 24)).unwrap()
        }
        _ => panic!("training inputs are float32"),
    }
    let labels = qsteer::data::read_npy(&src.join("labels.npy"))
        .unwrap()
        .to_i64()
        .unwrap();
    let labels = labels.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..24));
    qsteer::data::write_npy_i64(&train.join("labels.npy"), &labels.to_owned()).unwrap();
    let (data, train) = (data.display().to_string(), train.display().to_string());
    let ws = root.join("ws").display().to_string();
    let model = sample_model("resnet_digits").display().to_string();
    let base = [
        "finetune",
        model.as_str(),
        "--data",
        data.as_str(),
        "--workspace",
        ws.as_str(),
        "--threads",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--json",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let call = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        json_ok(root, &a)
    };

    let doc = call(with(&["--train-data", &train, "--augment-shift", "1"]));
    assert_eq!(doc["train_samples"], 24);
    assert_eq!(doc["steps_per_epoch"], 3);
    let used = &doc["samples_used"];
    assert_eq!(used["train"]["subset"], "training");
    assert_eq!(used["train"]["samples"], 24);
    assert!(used["train"]["dataset"]
        .as_str()
        .unwrap()
        .ends_with("train"));
    assert_eq!(used["score"]["subset"], "evaluation");
    assert_eq!(used["score"]["samples"], 40);
    assert!(
        used["selection"].is_null(),
        "no early stopping, no selection"
    );
    assert_eq!(used["augment"]["shift"], 1);
    assert_eq!(
        doc["notes"].as_array().unwrap().len(),
        0,
        "{}",
        doc["notes"]
    );
    let wsdoc = read_json(&root.join("ws/workspace.json"));
    assert!(wsdoc["settings"]["train_data"]
        .as_str()
        .unwrap()
        .ends_with("train"));

    // Without a training set: the 40 calibration samples train, and the result says so.
    let doc = call(with(&["--patience", "1"]));
    assert_eq!(doc["train_samples"], 40);
    assert_eq!(doc["samples_used"]["train"]["subset"], "calibration");
    assert_eq!(doc["samples_used"]["selection"]["subset"], "evaluation");
    let notes = doc["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("no training set was given")),
        "{notes:?}"
    );

    let missing = root.join("nowhere").display().to_string();
    let mut a: Vec<&str> = base.to_vec();
    a.extend(["--train-data", missing.as_str()]);
    let line = assert_bad_input(&run(root, &a), "train-data");
    assert!(line.contains("nowhere"), "{line}");
}
