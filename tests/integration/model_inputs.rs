//! What real models take and how they store weights (issue #16, the zoo's loading bugs):
//! several named inputs, integer / bool / scalar inputs, weights in an external data file,
//! and a model that is already quantized. Each runs through the CLI against ONNX Runtime's
//! outputs stored with the fixture.

use crate::common::*;
use qsteer::data::write_npy_f32;
use qsteer::model::Model;
use std::path::Path;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `eval --save-outputs` of a fixture on its own data, compared with ONNX Runtime's outputs.
fn eval_matches_onnx_runtime(dir: &Path, model: &Path, data: &Path, expected: &Path) {
    let out = dir.join("out.npy");
    json_ok(
        dir,
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "all",
            "--workspace",
            dir.join("ws-eval").to_str().unwrap(),
            "--save-outputs",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let ours = read_f32(&out);
    let ort = read_f32(expected);
    assert_eq!(ours.shape(), ort.shape());
    assert!(max_abs_diff(&ours, &ort) < 1e-5, "{}", model.display());
}

/// quantsim W8A8 with `--export`; the exported QDQ model.
fn quantsim_export(dir: &Path, model: &Path, data: &Path) -> (serde_json::Value, Model) {
    let export = dir.join("export");
    let doc = json_ok(
        dir,
        &[
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibration-size",
            "4",
            "--workspace",
            dir.join("ws").to_str().unwrap(),
            "--export",
            export.to_str().unwrap(),
            "--json",
        ],
    );
    let path = doc["export"]["output"]
        .as_str()
        .expect("exported")
        .to_string();
    (doc, Model::load_any(Path::new(&path)).unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn named_inputs_are_fed_by_name_in_the_models_order() {
    let dir = tmp();
    let (model, data) = (fixture_model("multi_input"), fixture_dir("multi_input"));
    // The files list as c, h, input; the model takes input, h, c.
    eval_matches_onnx_runtime(dir.path(), &model, &data, &data.join("ort_outputs.npy"));
    let (doc, _) = quantsim_export(dir.path(), &model, &data);
    // Each graph input is calibrated on its own file: `c` reaches 3.6 in its calibration
    // samples, `input` never 2.3 (before, `input` took the first file listed, inputs.c.npy,
    // and the two grids were swapped; cosine was 0.988 by that luck, 0.72 now: 4 calibration
    // samples clip the 4 evaluated ones).
    let enc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(doc["encodings"].as_str().unwrap()).unwrap())
            .unwrap();
    let top = |name: &str| {
        let e = enc["activation_encodings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no encoding for {name}: {enc}"));
        (255.0 + e["offset"][0].as_f64().unwrap()) * e["scale"][0].as_f64().unwrap()
    };
    assert!(top("c") > 3.0 && top("input") < 2.3, "{enc}");
    assert!(doc["cosine"].as_f64().unwrap() > 0.5, "{doc}");
    json_ok(
        dir.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
    );
    // A name the model does not have is named, with the model's inputs.
    let renamed = dir.path().join("renamed");
    copy_dir(&data, &renamed);
    std::fs::rename(
        renamed.join("inputs.c.npy"),
        renamed.join("inputs.cell.npy"),
    )
    .unwrap();
    let o = run(
        dir.path(),
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            renamed.to_str().unwrap(),
            "--workspace",
            dir.path().join("ws2").to_str().unwrap(),
        ],
    );
    let line = assert_bad_input(&o, "unknown input name");
    assert!(
        line.contains("inputs.cell.npy") && line.contains("model inputs: input, h, c"),
        "{line}"
    );
}

#[test]
fn integer_bool_and_scalar_inputs_are_fed_in_the_models_types() {
    let dir = tmp();
    let (model, data) = (fixture_model("int_inputs"), fixture_dir("int_inputs"));
    eval_matches_onnx_runtime(dir.path(), &model, &data, &data.join("ort_outputs.npy"));
    let doc = json_ok(dir.path(), &["inspect", model.to_str().unwrap(), "--json"]);
    assert_eq!(doc["inputs"][2]["name"], "sr");
    assert_eq!(doc["inputs"][2]["shape"], serde_json::json!([]));
    assert_eq!(doc["inputs"][0]["type"], "int64");
    assert_eq!(doc["inputs"][1]["type"], "bool");

    // Quantizers only on float values; the integer inputs stay what they are.
    let (doc, exported) = quantsim_export(dir.path(), &model, &data);
    assert!(doc["cosine"].as_f64().unwrap() > 0.98, "{doc}");
    let types: Vec<(String, i32)> = exported
        .graph()
        .input
        .iter()
        .map(
            |i| match i.r#type.as_ref().unwrap().value.as_ref().unwrap() {
                tract_onnx::pb::type_proto::Value::TensorType(t) => (i.name.clone(), t.elem_type),
            },
        )
        .collect();
    assert_eq!(
        types,
        [("x".into(), 7), ("mask".into(), 9), ("sr".into(), 7)]
    );
    for n in &exported.graph().node {
        if n.op_type == "QuantizeLinear" {
            assert!(!["x", "mask", "sr"].contains(&n.input[0].as_str()), "{n:?}");
        }
    }
    assert!(
        exported
            .graph()
            .node
            .iter()
            .any(|n| n.op_type == "QuantizeLinear" && n.input[0] == "embed_fp32"),
        "the embedding's output (float, from token ids) is quantized"
    );
    json_ok(
        dir.path(),
        &[
            "analyze",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibration-size",
            "4",
            "--workspace",
            dir.path().join("ws").to_str().unwrap(),
            "--json",
        ],
    );

    // A token id that is not an integer is named, not rounded.
    let bad = dir.path().join("bad");
    copy_dir(&data, &bad);
    let mut x = read_f32(&bad.join("inputs.x.npy"));
    x[[3, 2]] = 2.5;
    write_npy_f32(&bad.join("inputs.x.npy"), &x).unwrap();
    let o = run(
        dir.path(),
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            bad.to_str().unwrap(),
            "--split",
            "all",
            "--workspace",
            dir.path().join("ws3").to_str().unwrap(),
        ],
    );
    let line = assert_bad_input(&o, "non-integral id");
    assert!(
        line.contains("input 'x' takes int64 values; the data holds 2.5"),
        "{line}"
    );
}

#[test]
fn weights_in_an_external_data_file_load_and_export_inline() {
    let dir = tmp();
    let (model, data) = (fixture_model("external_data"), fixture_dir("external_data"));
    eval_matches_onnx_runtime(dir.path(), &model, &data, &data.join("ort_outputs.npy"));
    let (_, exported) = quantsim_export(dir.path(), &model, &data);
    assert!(exported
        .graph()
        .initializer
        .iter()
        .all(|t| t.external_data.is_empty() && t.data_location.unwrap_or(0) == 0));

    // Without its data file: the file and the initializer are named.
    let alone = dir.path().join("alone.onnx");
    std::fs::copy(&model, &alone).unwrap();
    let o = run(dir.path(), &["inspect", alone.to_str().unwrap()]);
    let line = assert_bad_input(&o, "missing external data");
    assert!(
        line.contains("initializer 'conv.weight'") && line.contains("external_data.weights"),
        "{line}"
    );
}

#[test]
fn an_already_quantized_model_is_refused_in_one_line() {
    let dir = tmp();
    let model = fixture_model("prequantized");
    let data = fixture_dir("prequantized");
    for args in [
        vec!["inspect", model.to_str().unwrap()],
        vec![
            "quantsim",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--workspace",
            dir.path().join("ws").to_str().unwrap(),
        ],
    ] {
        let o = run(dir.path(), &args);
        let line = assert_bad_input(&o, args[0]);
        assert!(
            line.contains("already quantized")
                && line.contains("'fc.weight_q'")
                && line.contains("FP32 model"),
            "{line}"
        );
    }
}

/// A recurrent state with its batch on axis 1 (`state [2, ?, 3]` beside `input [?, 4]`, as
/// Silero VAD writes it): the dataset's samples leave that axis out, so it is found from the
/// data and the samples are fed there; without data the error names both inputs.
#[test]
fn a_state_with_its_batch_on_axis_1_is_fed_there() {
    let dir = tmp();
    let (model, data) = (fixture_model("state_axis1"), fixture_dir("state_axis1"));
    eval_matches_onnx_runtime(dir.path(), &model, &data, &data.join("ort_outputs.npy"));
    let (doc, exported) = quantsim_export(dir.path(), &model, &data);
    assert!(doc["cosine"].as_f64().unwrap() > 0.98, "{doc}");
    assert_eq!(exported.input_names(), ["input", "state"]);
    assert!(
        exported
            .graph()
            .node
            .iter()
            .any(|n| n.op_type == "QuantizeLinear" && n.input[0] == "state"),
        "the state is quantized like any float input"
    );
    // analyze scores every output as quantsim does: the same W8A8 figures.
    let an = json_ok(
        dir.path(),
        &[
            "analyze",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibration-size",
            "4",
            "--workspace",
            dir.path().join("ws-an").to_str().unwrap(),
            "--json",
        ],
    );
    let wa = &an["scores"]["weights_and_activations"];
    assert_eq!(wa["outputs"].as_array().unwrap().len(), 2, "{wa}");
    for key in ["sqnr_db", "metric_value"] {
        let (a, q) = (wa[key].as_f64().unwrap(), doc[key].as_f64().unwrap());
        assert!((a - q).abs() < 1e-6, "{key}: analyze {a}, quantsim {q}");
    }
    let e = Model::load(&model)
        .unwrap()
        .shapes(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input 'state' fixes axis 0 to 2 while input 'input' leaves its batch open"),
        "{e}"
    );
}

/// An `If` on a scalar input whose else branch does not fit the data (Silero VAD's
/// `If(sr == 16000)`): with the value every sample holds, or given with `--input-value`, the
/// model is specialised (the then branch inlined) and computes what ONNX Runtime computes;
/// without a value the one-line error names the node, the input and the flag; the export
/// keeps `sr` as a declared input and says in its metadata what it was specialised on.
#[test]
fn an_if_on_a_fixed_input_is_specialised_to_its_branch() {
    let dir = tmp();
    let (model, data) = (fixture_model("if_on_input"), fixture_dir("if_on_input"));
    eval_matches_onnx_runtime(dir.path(), &model, &data, &data.join("ort_outputs.npy"));
    let out = run(
        dir.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--input-shape",
            "x=6",
            "--json",
        ],
    );
    let line = assert_bad_input(&out, "no value for sr");
    assert!(
        line.contains("If 'sr_switch'") && line.contains("--input-value sr=VALUE"),
        "{line}"
    );
    let out = run(
        dir.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--input-shape",
            "x=6",
            "--input-value",
            "sr=16000",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("specialised If 'sr_switch' on sr=16000 (then branch"),
        "{}",
        stderr(&out)
    );
    // The flag wins over the data: sr=8000 picks the else branch, which does not fit.
    let out = run(
        dir.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--input-value",
            "sr=8000",
        ],
    );
    assert!(
        stderr(&out).contains("specialised If 'sr_switch' on sr=8000 (else branch"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (doc, exported) = quantsim_export(dir.path(), &model, &data);
    // `x` is calibrated on x's samples, not on the file listed first (inputs.sr.npy: x's
    // grid was [0, 16000], every output 0, cosine 0). Measured: 14.0 dB, cosine 0.75 (one of
    // the 4 evaluated samples falls under the 4-sample tf_enhanced grids of this 3-unit model).
    assert!(doc["cosine"].as_f64().unwrap() > 0.5, "{doc}");
    assert!(doc["sqnr_db"].as_f64().unwrap() > 10.0, "{doc}");
    assert_eq!(exported.input_names(), ["x", "sr"]);
    assert!(exported.graph().node.iter().all(|n| n.op_type != "If"));
    let meta = &exported.proto().metadata_props;
    assert!(
        meta.iter()
            .any(|p| p.key == "qsteer.input_values" && p.value == "sr=16000"),
        "{meta:?}"
    );
    // The workspace recorded the value: a later command on it needs neither flag nor data.
    let ws = dir.path().join("ws");
    let index = std::fs::read_to_string(ws.join("workspace.json")).unwrap();
    assert!(index.contains("\"input_values\": \"sr=16000\""), "{index}");
    let out = run(
        dir.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--input-shape",
            "x=6",
            "--workspace",
            ws.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
