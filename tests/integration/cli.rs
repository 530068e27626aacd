//! The `qsteer` binary: `inspect` and `eval`, their `--json` documents, the workspace they
//! record into, and exit codes. Every run gets its own `QSTEER_DATA_DIR`.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// stdout must be exactly one JSON document (and nothing else).
fn one_json(o: &std::process::Output, what: &str) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: failed; stderr: {}",
        stderr(o)
    );
    let text = stdout(o);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {text}"));
    assert_eq!(docs.len(), 1, "{what}: expected one JSON document: {text}");
    docs.into_iter().next().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn inspect_without_a_model_opens_the_embedded_resnet_sample() {
    let home = tempfile::tempdir().unwrap();
    let doc = one_json(&run(home.path(), &["inspect", "--json"]), "inspect --json");
    assert_eq!(doc["macs_total"], 3_052_160);
    assert_eq!(doc["layers"].as_array().unwrap().len(), 10);
    // the embedded sample and its three splits were written under QSTEER_DATA_DIR
    let samples = home.path().join("samples");
    assert!(samples.join("resnet_digits.onnx").is_file());
    for split in ["calibration", "evaluation", "training"] {
        assert!(samples
            .join("digits")
            .join(split)
            .join("inputs.npy")
            .is_file());
    }
}

#[test]
fn inspect_mbv2_json() {
    let home = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let o = run(home.path(), &["inspect", s(&model), "--json"]);
    let doc = one_json(&o, "inspect --json");
    assert_eq!(doc["macs_total"], 1_280_128);
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 17);
    assert_eq!(doc["layer_params_total"], 27_434);
    assert_eq!(doc["inputs"][0]["name"], "input");
    assert_eq!(
        doc["inputs"][0]["shape"],
        serde_json::json!(["N", 1, 16, 16])
    );
    assert_eq!(doc["outputs"][0]["shape"], serde_json::json!(["N", 10]));
    assert_eq!(doc["opset"], 13);
    assert_eq!(layers[0]["name"], "stem.conv");
    assert_eq!(layers[0]["macs"], 36_864);
    assert_eq!(layers[16]["name"], "fc");
    assert_eq!(layers[16]["op"], "gemm");
    let dw = layers
        .iter()
        .find(|l| l["name"] == "block2.dw.conv")
        .unwrap();
    assert_eq!(dw["op"], "depthwise_conv");
    assert_eq!(dw["strides"], serde_json::json!([2, 2]));
    let sum: u64 = layers.iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(sum, 1_280_128);
}

#[test]
fn inspect_resnet_json_and_table() {
    let home = tempfile::tempdir().unwrap();
    let model = sample_model("resnet_digits");
    let doc = one_json(
        &run(home.path(), &["inspect", s(&model), "--json"]),
        "inspect resnet --json",
    );
    assert_eq!(doc["macs_total"], 3_052_160);
    assert_eq!(doc["layers"].as_array().unwrap().len(), 10);
    assert_eq!(doc["layer_params_total"], 77_082);
    assert_eq!(doc["nodes"], 31);
    let down = doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "layer2.downsample.conv")
        .unwrap();
    assert_eq!(down["macs"], 32_768);
    assert_eq!(down["kernel"], serde_json::json!([1, 1]));

    let o = run(home.path(), &["inspect", s(&model)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("layer3.downsample.conv"), "{text}");
    assert!(text.contains("10 layers"), "{text}");
    assert!(text.contains("N×64×4×4"), "{text}");
}

#[test]
fn eval_records_in_the_workspace_and_reopens() {
    let home = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let data = digits();
    let args = ["eval", s(&model), "--data", s(&data), "--json"];
    let doc = one_json(&run(home.path(), &args), "eval --json");
    let accuracy = doc["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.97, "accuracy {accuracy}");
    assert!(doc["top5_accuracy"].as_f64().unwrap() >= accuracy);
    assert_eq!(doc["samples"], 400);
    assert_eq!(doc["subset"], "evaluation");
    assert_eq!(doc["variant"], 0);
    assert!(doc["seconds"].as_f64().unwrap() > 0.0);
    assert!(doc["agreement"].is_null());
    let ws = std::path::PathBuf::from(doc["workspace"].as_str().unwrap());
    assert!(
        ws.starts_with(home.path()),
        "default workspace {} is not under QSTEER_DATA_DIR",
        ws.display()
    );
    let index = ws.join("workspace.json");
    assert!(index.is_file());
    let file = read_json(&index);
    let v0 = &file["variants"][0];
    assert_eq!(v0["id"], 0);
    assert_eq!(v0["results"].as_array().unwrap().len(), 1);
    assert_eq!(v0["results"][0]["score"]["accuracy"], accuracy);
    assert!(ws.join(v0["model_file"].as_str().unwrap()).is_file());

    // again: the workspace is reopened, not recreated, and the result appended
    let doc2 = one_json(&run(home.path(), &args), "eval again");
    assert_eq!(doc2["workspace"], doc["workspace"]);
    assert_eq!(doc2["accuracy"], doc["accuracy"]);
    let file = read_json(&index);
    assert_eq!(file["variants"].as_array().unwrap().len(), 1);
    assert_eq!(file["variants"][0]["results"].as_array().unwrap().len(), 2);

    // an explicit --workspace is used as given
    let mine = home.path().join("my-ws");
    let doc3 = one_json(
        &run(
            home.path(),
            &[
                "eval",
                s(&model),
                "--data",
                s(&data),
                "--workspace",
                s(&mine),
                "--split",
                "calibration",
                "--json",
            ],
        ),
        "eval --workspace",
    );
    assert_eq!(doc3["samples"], 200);
    assert_eq!(
        Path::new(doc3["workspace"].as_str().unwrap()),
        mine.as_path()
    );
    assert!(mine.join("workspace.json").is_file());
}

#[test]
fn eval_split_all_saves_outputs() {
    let home = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("outputs.npy");
    let model = sample_model("resnet_digits");
    let data = digits();
    let doc = one_json(
        &run(
            home.path(),
            &[
                "eval",
                s(&model),
                "--data",
                s(&data),
                "--split",
                "all",
                "--save-outputs",
                s(&out),
                "--batch-size",
                "7",
                "--no-workspace",
                "--json",
            ],
        ),
        "eval --split all --save-outputs",
    );
    assert_eq!(doc["samples"], 600);
    assert_eq!(doc["batch_size"], 7);
    let saved = read_f32(&out);
    assert_eq!(saved.shape(), &[600, 10]);
    // the saved outputs are the scored ones: calibration then evaluation samples
    let mut labels = read_i64(&data.join("calibration/labels.npy"));
    labels.extend(read_i64(&data.join("evaluation/labels.npy")));
    let predicted = argmax(rows(&saved).view());
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p as i64 == **l)
        .count();
    let accuracy = doc["accuracy"].as_f64().unwrap();
    assert_eq!(correct, (accuracy * 600.0).round() as usize);
    assert!(accuracy >= 0.97, "{accuracy}");
}

#[test]
fn eval_unlabeled_fixture_against_itself() {
    let home = tempfile::tempdir().unwrap();
    let model = fixture_model("named_batch_ops");
    let data = fixture_dir("named_batch_ops");
    for extra in [&["--no-workspace"][..], &[]] {
        let mut args = vec![
            "eval",
            s(&model),
            "--data",
            s(&data),
            "--reference",
            s(&model),
            "--split",
            "all",
            "--json",
        ];
        args.extend(extra);
        let doc = one_json(&run(home.path(), &args), &format!("{args:?}"));
        assert_eq!(doc["samples"], 8);
        assert_eq!(doc["agreement"], 1.0);
        assert_eq!(doc["sqnr_db"], 200.0);
        assert!(doc["accuracy"].is_null());
        assert!(doc["top5_accuracy"].is_null());
    }
}

#[test]
fn eval_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let data = digits();
    let o = run(home.path(), &["eval", s(&model), "--json"]);
    let line = assert_bad_input(&o, "eval without --data");
    assert!(line.contains("--data"), "{line}");

    let o = run(
        home.path(),
        &["eval", "/no/such/model.onnx", "--data", s(&data)],
    );
    let line = assert_bad_input(&o, "missing model");
    assert!(line.contains("/no/such/model.onnx"), "{line}");

    let o = run(home.path(), &["inspect", "/no/such/model.onnx", "--json"]);
    assert_bad_input(&o, "inspect missing model");

    let o = run(
        home.path(),
        &["eval", s(&model), "--data", s(&data), "--batch-size", "0"],
    );
    let line = assert_bad_input(&o, "--batch-size 0");
    assert!(line.contains("--batch-size"), "{line}");
    // nothing was recorded for the failed runs
    assert!(!home.path().join("workspaces").exists());
}

/// `qsteer … --json | head -0`: a reader that goes away ends qsteer quietly (SIGPIPE, as
/// other command-line tools), not with a panic and a backtrace.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let home = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let mut child = qsteer(home.path())
        .args(["inspect", s(&model), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before qsteer writes
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        o.status
    );
}
