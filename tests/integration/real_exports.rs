//! Models shaped the way real exporters write them (issue #16): a `-1` batch that the graph
//! turns into a reshape target (paddle2onnx), named H/W that only concrete sizes can analyse
//! (detectors); every command opens them the same way, with or without `--data`.

use crate::common::*;
use qsteer::model::{Dim, Model};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_batch_the_graph_reshapes_with_is_analysed_at_a_concrete_batch() {
    let model = Model::load(&fixture_model("paddle_reshape")).unwrap();
    let shapes = model
        .shapes(None)
        .expect("analysed despite Shape→Slice→Concat→Reshape");
    assert!(
        shapes.fallback.as_deref().unwrap_or("").contains("batch"),
        "the fallback is reported: {:?}",
        shapes.fallback
    );
    // The batch dims are recognised by analysing at two batch sizes.
    assert_eq!(
        shapes.get("probs").unwrap(),
        &vec![Dim::Batch, Dim::Known(16), Dim::Known(10)]
    );
    assert_eq!(shapes.fixed_batch, None);
    let layers = model.layers(&shapes).unwrap();
    let conv = layers.iter().find(|l| l.name == "conv1").unwrap();
    // 8 out channels × 4×4 positions × 3 in × 3×3
    assert_eq!(conv.macs, Some(8 * 16 * 27));
}

#[test]
fn paddle_style_model_runs_and_matches_onnx_runtime_from_the_cli() {
    let dir = tmp();
    let model = fixture_model("paddle_reshape");
    let data = fixture_dir("paddle_reshape");
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    // inspect without and with data
    let plain = json_ok(dir.path(), &["inspect", m, "--json"]);
    assert_eq!(plain["layers"].as_array().unwrap().len(), 2);
    json_ok(dir.path(), &["inspect", m, "--data", d, "--json"]);
    let out = dir.path().join("out.npy");
    let ws = dir.path().join("ws");
    json_ok(
        dir.path(),
        &[
            "eval",
            m,
            "--data",
            d,
            "--split",
            "all",
            "--workspace",
            ws.to_str().unwrap(),
            "--save-outputs",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    let ours = read_f32(&out);
    let ort = read_f32(&data.join("ort_outputs.npy"));
    assert_eq!(ours.shape(), ort.shape());
    assert!(max_abs_diff(&ours, &ort) < 1e-5);
}

#[test]
fn open_input_sizes_without_data_name_the_input_and_the_flag() {
    let dir = tmp();
    let model = fixture_model("symbolic_hw");
    let m = model.to_str().unwrap();
    let o = run(dir.path(), &["inspect", m]);
    let line = assert_bad_input(&o, "symbolic H/W without data");
    assert!(line.contains("'images'"), "{line}");
    assert!(line.contains("dim 2, 3"), "{line}");
    assert!(line.contains("--input-shape images=3xDxD"), "{line}");
    // The flag it names works, and so does the dataset.
    let doc = json_ok(
        dir.path(),
        &["inspect", m, "--input-shape", "images=3x16x16", "--json"],
    );
    assert_eq!(
        doc["inputs"][0]["shape"],
        serde_json::json!(["N", 3, 16, 16])
    );
    let d = fixture_dir("symbolic_hw");
    json_ok(
        dir.path(),
        &["inspect", m, "--data", d.to_str().unwrap(), "--json"],
    );
    // A wrong input name is named back.
    let o = run(
        dir.path(),
        &["inspect", m, "--input-shape", "pixels=3x16x16"],
    );
    let line = assert_bad_input(&o, "unknown input");
    assert!(
        line.contains("'pixels'") && line.contains("images"),
        "{line}"
    );
}

#[test]
fn quantsim_export_and_encodings_import_open_the_model_at_the_data_shapes() {
    let dir = tmp();
    let model = fixture_model("symbolic_hw");
    let data = fixture_dir("symbolic_hw");
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let ws = dir.path().join("ws");
    let ws = ws.to_str().unwrap();
    let export = dir.path().join("export");
    let doc = json_ok(
        dir.path(),
        &[
            "quantsim",
            m,
            "--data",
            d,
            "--calibration-size",
            "4",
            "--workspace",
            ws,
            "--export",
            export.to_str().unwrap(),
            "--json",
        ],
    );
    let variant = doc["variant"].as_u64().unwrap().to_string();
    assert!(doc["export"]["output"].as_str().is_some(), "{doc}");
    // `export` of the variant without --data: the workspace remembers the data's shapes.
    let again = dir.path().join("again");
    json_ok(
        dir.path(),
        &[
            "export",
            &variant,
            "--workspace",
            ws,
            "--out",
            again.to_str().unwrap(),
            "--json",
        ],
    );
    // Importing the exported encodings runs at the data's shapes too.
    let encodings = std::fs::read_dir(&again)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".encodings.json"))
        .unwrap();
    json_ok(
        dir.path(),
        &[
            "quantsim",
            m,
            "--data",
            d,
            "--calibration-size",
            "4",
            "--workspace",
            ws,
            "--encodings",
            encodings.to_str().unwrap(),
            "--json",
        ],
    );
}

/// The file's own name for the batch (`batch`, in its value_info) is the symbol we analyse
/// the batch as: with ours (`N`) beside it, tract could not unify the two ("Impossible to
/// unify Sym(batch) with Sym(N)"), the value_info had to be thrown away, and without sizes
/// the error blamed that instead of the open H/W.
#[test]
fn the_files_own_dim_names_are_the_symbols_of_the_analysis() {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value, Dimension};
    let model = Model::load(&fixture_model("symbolic_hw")).unwrap();
    let mut proto = model.proto().clone();
    let graph = proto.graph.as_mut().unwrap();
    let mut info = graph.input[0].clone();
    info.name = "stem".into();
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        let dims = &mut t.shape.as_mut().unwrap().dim;
        dims[1] = Dimension {
            value: Some(Value::DimValue(4)),
            ..Default::default()
        };
        for d in &mut dims[2..] {
            d.value = Some(Value::DimValue(16));
        }
    }
    graph.value_info.push(info); // stem: [batch, 4, 16, 16]
    let model = Model::from_proto(proto, "symbolic_hw+value_info").unwrap();
    let shapes = model.shapes(Some(&[vec![3, 16, 16]])).unwrap();
    assert_eq!(shapes.fallback, None, "the file's value_info agrees");
    assert_eq!(
        shapes.get("stem").unwrap(),
        &vec![Dim::Batch, Dim::Known(4), Dim::Known(16), Dim::Known(16)]
    );
    // Without sizes: one short line naming the file's dims, tract's reason left out.
    let dir = tmp();
    let o = run(
        dir.path(),
        &["inspect", fixture_model("symbolic_hw").to_str().unwrap()],
    );
    let line = assert_bad_input(&o, "open H/W");
    assert!(
        line.contains("input 'images' N×3×height×width has no size for dim 2, 3"),
        "{line}"
    );
    assert!(
        !line.contains("Sym(") && line.contains("RUST_LOG=debug"),
        "{line}"
    );
}
