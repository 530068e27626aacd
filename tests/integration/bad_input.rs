//! Bad input, at the library level and through the binary: each case is a clear error that
//! names what is wrong (exit code 2, one line on stderr, nothing on stdout) — never a panic.

use crate::common::*;
use ndarray::{Array, ArrayD, IxDyn};
use prost::Message;
use qsteer::data::{load_dataset, write_npy, write_npy_f32, write_npy_i64, NpyArray};
use qsteer::experiment::evaluate::check_fits;
use qsteer::experiment::Workspace;
use qsteer::model::Model;
use qsteer::Error;
use std::path::{Path, PathBuf};
use tract_onnx::pb::ModelProto;

fn err_of<T>(r: qsteer::Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    }
}

/// An input error (exit code 2) whose message contains every one of `needles`.
fn assert_input_error(e: &Error, what: &str, needles: &[&str]) {
    let msg = e.to_string();
    assert_eq!(e.exit_code(), 2, "{what}: {msg}");
    assert!(!msg.contains('\n'), "{what}: message spans lines: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{what}: {msg:?} does not mention {n:?}");
    }
}

fn mbv2_bytes() -> Vec<u8> {
    std::fs::read(sample_model("mbv2_digits")).unwrap()
}

/// `bytes` written to `dir/name`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A dataset directory whose `inputs.npy` is uint16 `[5, 1, 16, 16]`, a dtype qsteer does not
/// read (float16/32/64, integers up to int64, uint8 and bool are read).
fn uint16_dir(root: &Path) -> PathBuf {
    let dir = root.join("u16");
    std::fs::create_dir_all(&dir).unwrap();
    let header = "{'descr': '<u2', 'fortran_order': False, 'shape': (5, 1, 16, 16), }";
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend(((total - 10) as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.resize(total - 1, b' ');
    bytes.push(b'\n');
    bytes.resize(total + 5 * 256 * 2, 0);
    write(&dir, "inputs.npy", &bytes);
    dir
}

fn digits_inputs(n: usize) -> ArrayD<f32> {
    first(&read_f32(&digits().join("evaluation/inputs.npy")), n)
}

/// A dataset directory with `inputs.npy` (and `labels.npy` if given).
fn npy_dir(root: &Path, name: &str, inputs: &NpyArray, labels: Option<&[i64]>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_npy(&dir.join("inputs.npy"), inputs).unwrap();
    if let Some(l) = labels {
        write_npy_i64(
            &dir.join("labels.npy"),
            &Array::from_vec(l.to_vec()).into_dyn(),
        )
        .unwrap();
    }
    dir
}

fn dangling_model_bytes() -> Vec<u8> {
    let mut proto = ModelProto::decode(mbv2_bytes().as_slice()).unwrap();
    let node = proto
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name == "block3.dw.conv")
        .unwrap();
    node.input[0] = "no_such_tensor".into();
    proto.encode_to_vec()
}

const CUTS: [usize; 8] = [1, 2, 10, 100, 5_000, 60_000, 136_000, 0];

fn cut_points(len: usize) -> Vec<usize> {
    CUTS.iter()
        .map(|&c| if c == 0 { len - 1 } else { c.min(len - 1) })
        .collect()
}

// ---------------------------------------------------------------- library level

#[test]
fn garbage_and_empty_bytes() {
    let e = err_of(Model::from_bytes(b"", "empty.onnx"), "empty");
    assert_input_error(&e, "empty", &["empty.onnx", "empty"]);

    let mut rng = SplitMix64(7);
    let random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    for (what, bytes) in [
        (
            "text",
            b"this is not an ONNX model, just some text\n".to_vec(),
        ),
        ("random", random),
        ("zeros", vec![0u8; 1000]),
        ("png header", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
    ] {
        let e = err_of(Model::from_bytes(&bytes, "junk.onnx"), what);
        assert_input_error(&e, what, &["junk.onnx"]);
    }
    // a valid protobuf that is not a model: no graph
    let e = err_of(
        Model::from_bytes(&ModelProto::default().encode_to_vec(), "nograph.onnx"),
        "no graph",
    );
    assert_input_error(&e, "no graph", &["nograph.onnx"]);
}

#[test]
fn truncated_models_fail_cleanly() {
    for name in ["mbv2_digits", "resnet_digits"] {
        let bytes = std::fs::read(sample_model(name)).unwrap();
        for at in cut_points(bytes.len()) {
            let what = format!("{name} cut at {at}");
            let e = err_of(Model::from_bytes(&bytes[..at], "cut.onnx"), &what);
            // mostly "not a valid ONNX model (protobuf decode failed ...)"; a cut right
            // after the header fields leaves a protobuf with no graph
            assert_input_error(&e, &what, &["cut.onnx"]);
        }
    }
}

#[test]
fn unsupported_op_names_node_and_op() {
    let e = err_of(
        Model::load(&fixture_model("unsupported_op")),
        "unsupported op",
    );
    assert_input_error(
        &e,
        "unsupported op",
        &["unsupported_op.onnx", "mystery_node", "FancyCustomOp"],
    );
}

#[test]
fn dangling_input_names_node_and_value() {
    let e = err_of(
        Model::from_bytes(&dangling_model_bytes(), "dangling.onnx"),
        "dangling",
    );
    assert_input_error(
        &e,
        "dangling",
        &["dangling.onnx", "block3.dw.conv", "no_such_tensor"],
    );
}

#[test]
fn missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/model.onnx");
    let e = err_of(Model::load(&missing), "missing model");
    assert_input_error(&e, "missing model", &["nowhere/model.onnx"]);
    let e = err_of(Model::load(dir.path()), "directory as model");
    assert_input_error(&e, "directory as model", &[]);
    let e = err_of(load_dataset(&dir.path().join("no-data")), "missing data");
    assert_input_error(&e, "missing data", &["no-data"]);
}

#[test]
fn dataset_shape_mismatch_names_file_and_both_shapes() {
    let model = Model::load(&sample_model("mbv2_digits")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let small = ArrayD::<f32>::zeros(IxDyn(&[5, 1, 8, 8]));
    let dir = npy_dir(root.path(), "small", &NpyArray::F32(small), None);
    let data = load_dataset(&dir).unwrap();
    let e = err_of(check_fits(&model, &data), "shape mismatch");
    let file = dir.join("inputs.npy").display().to_string();
    assert_input_error(
        &e,
        "shape mismatch",
        &[&file, "[1, 8, 8]", "[N, 1, 16, 16]", "'input'"],
    );
    // the same through the evaluation job
    let req = qsteer::experiment::evaluate::EvalRequest {
        model: sample_model("mbv2_digits"),
        data: dir.clone(),
        subset: qsteer::experiment::evaluate::Subset::All,
        reference: None,
        options: qsteer::runtime::RunOptions {
            batch_size: 1,
            threads: 1,
        },
        calibration_size: 0,
        seed: 0,
        metric: Default::default(),
    };
    let e = err_of(
        qsteer::experiment::evaluate::evaluate(
            &req,
            &model,
            &qsteer::cancel::CancelToken::new(),
            &|_, _| {},
        ),
        "evaluate shape mismatch",
    );
    assert_input_error(&e, "evaluate", &[&file, "[1, 8, 8]", "[N, 1, 16, 16]"]);
}

#[test]
fn dataset_dtype_count_and_nan() {
    let root = tempfile::tempdir().unwrap();
    let x = digits_inputs(5);

    // float64 is read (exactly converted); an unsupported dtype is an error naming the file.
    let f64_dir = npy_dir(root.path(), "f64", &NpyArray::F64(x.mapv(f64::from)), None);
    assert_eq!(load_dataset(&f64_dir).unwrap().read_all().unwrap()[0], x);
    let u16_dir = uint16_dir(root.path());
    let e = err_of(load_dataset(&u16_dir), "uint16");
    let file = u16_dir.join("inputs.npy").display().to_string();
    assert_input_error(&e, "uint16", &[&file, "unsupported dtype '<u2'"]);

    let count_dir = npy_dir(
        root.path(),
        "count",
        &NpyArray::F32(x.clone()),
        Some(&[0, 1, 2, 3]),
    );
    let e = err_of(load_dataset(&count_dir), "count");
    assert_input_error(
        &e,
        "count",
        &[
            &count_dir.join("labels.npy").display().to_string(),
            &count_dir.join("inputs.npy").display().to_string(),
            "4 labels",
            "5 samples",
        ],
    );

    let mut nan = x.clone();
    nan[[3, 0, 7, 9]] = f32::NAN;
    let nan_dir = npy_dir(root.path(), "nan", &NpyArray::F32(nan), Some(&[0; 5]));
    // Values are checked when a batch reads them.
    let e = err_of(load_dataset(&nan_dir).unwrap().read_all(), "nan");
    assert_input_error(
        &e,
        "nan",
        &[
            &nan_dir.join("inputs.npy").display().to_string(),
            "sample 3",
            "NaN",
        ],
    );

    let mut inf = x;
    inf[[1, 0, 0, 0]] = f32::INFINITY;
    let inf_dir = npy_dir(root.path(), "inf", &NpyArray::F32(inf), None);
    let e = err_of(load_dataset(&inf_dir).unwrap().batch(0..2), "inf");
    assert_input_error(&e, "inf", &["sample 1", "inf"]);

    // a truncated .npy: the header promises more data than the file holds
    let bad_dir = root.path().join("short");
    std::fs::create_dir_all(&bad_dir).unwrap();
    write_npy_f32(&bad_dir.join("inputs.npy"), &digits_inputs(4)).unwrap();
    let bytes = std::fs::read(bad_dir.join("inputs.npy")).unwrap();
    std::fs::write(bad_dir.join("inputs.npy"), &bytes[..bytes.len() - 10]).unwrap();
    let e = err_of(load_dataset(&bad_dir), "short npy");
    assert_input_error(&e, "short npy", &["inputs.npy"]);
}

#[test]
fn unwritable_workspace() {
    let model = Model::load(&sample_model("mbv2_digits")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let blocker = write(root.path(), "ws", b"a file, not a directory");
    let e = err_of(
        Workspace::open_or_create(&blocker, &model, "mbv2_digits"),
        "workspace is a file",
    );
    assert_input_error(&e, "workspace is a file", &["ws"]);
    assert_eq!(
        std::fs::read(&blocker).unwrap(),
        b"a file, not a directory",
        "the file in the way was changed"
    );
    // a workspace below a file
    let e = err_of(
        Workspace::open_or_create(&blocker.join("below"), &model, "mbv2_digits"),
        "workspace below a file",
    );
    assert_input_error(&e, "workspace below a file", &["ws"]);
}

#[test]
fn corrupt_workspace_json_is_a_clear_error_and_left_unchanged() {
    let model = Model::load(&sample_model("mbv2_digits")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ws");
    Workspace::open_or_create(&dir, &model, "mbv2_digits").unwrap();
    let index = dir.join("workspace.json");
    for garbage in [
        &b"{\"format_version\": 1, \"variants\": [ trunc"[..],
        b"\x00\x01\x02 binary junk \xff\xfe",
        b"",
        b"[1, 2, 3]",
        b"{\"format_version\": 1}",
    ] {
        std::fs::write(&index, garbage).unwrap();
        let what = format!("workspace.json = {:?}", String::from_utf8_lossy(garbage));
        let e = err_of(Workspace::open(&dir), &what);
        assert_input_error(&e, &what, &["workspace.json"]);
        let e = err_of(
            Workspace::open_or_create(&dir, &model, "mbv2_digits"),
            &what,
        );
        assert_input_error(&e, &what, &["workspace.json"]);
        assert_eq!(
            std::fs::read(&index).unwrap(),
            garbage,
            "{what}: file changed"
        );
    }
    // written by a newer qsteer
    std::fs::write(&index, b"{\"format_version\": 999, \"variants\": []}").unwrap();
    let e = err_of(Workspace::open(&dir), "newer");
    assert_input_error(&e, "newer", &["workspace.json", "newer"]);
}

#[test]
fn workspace_of_another_model_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ws");
    let mbv2 = Model::load(&sample_model("mbv2_digits")).unwrap();
    let resnet = Model::load(&sample_model("resnet_digits")).unwrap();
    Workspace::open_or_create(&dir, &mbv2, "mbv2_digits").unwrap();
    let before = std::fs::read(dir.join("workspace.json")).unwrap();
    let e = err_of(
        Workspace::open_or_create(&dir, &resnet, "resnet_digits"),
        "other model",
    );
    assert_input_error(&e, "other model", &["another model", "mbv2_digits"]);
    assert_eq!(std::fs::read(dir.join("workspace.json")).unwrap(), before);
}

#[test]
fn absurd_geometry_is_an_error_not_a_crash() {
    use tract_onnx::pb::{AttributeProto, TensorProto};
    // A group of i64::MAX on a Conv with 16 input channels per group: layer extraction
    // must not overflow (found by tests/corruption.rs) and analysis must refuse it.
    let mut proto = ModelProto::decode(mbv2_bytes().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let conv = g
        .node
        .iter_mut()
        .find(|n| n.name == "block1.project.conv")
        .unwrap();
    conv.attribute.retain(|a| a.name != "group");
    conv.attribute.push(AttributeProto {
        name: "group".into(),
        r#type: 2, // INT
        i: i64::MAX,
        ..Default::default()
    });
    let model = Model::from_proto(proto, "absurd_group.onnx").unwrap();
    let unanalysed = qsteer::model::ModelShapes {
        values: Default::default(),
        inputs: vec![],
        fixed_batch: None,
        fallback: None,
    };
    let layers = model.layers(&unanalysed).unwrap();
    assert!(layers.iter().all(|l| l.name != "block1.project.conv"));
    assert!(layers.iter().any(|l| l.name == "stem.conv"));
    let e = err_of(model.shapes(None), "absurd group");
    assert_input_error(&e, "absurd group", &["absurd_group.onnx"]);

    // A weight with a zero dim holds no data, so absurd other dims would pass a size
    // check on the data alone: rejected at load.
    let mut proto = ModelProto::decode(mbv2_bytes().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "stem.conv.weight")
        .unwrap();
    *w = TensorProto {
        name: w.name.clone(),
        dims: vec![16, 0, 1 << 40, 1 << 40],
        data_type: 1, // FLOAT
        ..Default::default()
    };
    let e = err_of(Model::from_proto(proto, "zero_dim.onnx"), "zero dim");
    assert_input_error(&e, "zero dim", &["zero_dim.onnx", "stem.conv.weight"]);
}

/// mbv2 with a pad of 2^40 on one conv: it loads and analyses (the shapes are just
/// numbers), but its activations would need petabytes.
fn huge_pads_model_bytes() -> Vec<u8> {
    let mut proto = ModelProto::decode(mbv2_bytes().as_slice()).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let conv = g
        .node
        .iter_mut()
        .find(|n| n.name == "block4.project.conv")
        .unwrap();
    let pads = conv
        .attribute
        .iter_mut()
        .find(|a| a.name == "pads")
        .unwrap();
    pads.ints[1] = 1 << 40;
    proto.encode_to_vec()
}

#[test]
fn values_too_large_to_compute_are_refused_at_compile() {
    // Before the size check in CompiledModel::compile, running this hung (tests/corruption.rs).
    let model = Model::from_bytes(&huge_pads_model_bytes(), "huge_pads.onnx").unwrap();
    let shapes = model.shapes(None).unwrap();
    assert!(shapes.get("block4.project.conv.out").is_some());
    let e = err_of(
        qsteer::runtime::CompiledModel::compile(&model, &[vec![1, 16, 16]], 1, &[]),
        "huge pads",
    );
    assert_input_error(
        &e,
        "huge pads",
        &["huge_pads.onnx", "block4.project.conv.out", "more than"],
    );
}

// ---------------------------------------------------------------- through the binary

#[test]
fn cli_bad_models() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let d = files.path();
    let bytes = mbv2_bytes();
    let mut cases: Vec<(String, PathBuf, Vec<&str>)> = vec![
        (
            "garbage".into(),
            write(d, "garbage.onnx", b"definitely not protobuf \xff\xff\xff"),
            vec!["garbage.onnx"],
        ),
        ("empty".into(), write(d, "empty.onnx", b""), vec!["empty"]),
        (
            "unsupported op".into(),
            fixture_model("unsupported_op"),
            vec!["mystery_node", "FancyCustomOp"],
        ),
        (
            "dangling".into(),
            write(d, "dangling.onnx", &dangling_model_bytes()),
            vec!["block3.dw.conv", "no_such_tensor"],
        ),
        (
            "missing".into(),
            d.join("missing.onnx"),
            vec!["missing.onnx"],
        ),
        ("directory".into(), d.to_path_buf(), vec![]),
    ];
    // loads and inspects fine; only eval (which compiles) must refuse it
    let huge = write(d, "huge_pads.onnx", &huge_pads_model_bytes());
    let o = run(home.path(), &["inspect", huge.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(
        home.path(),
        &[
            "eval",
            huge.to_str().unwrap(),
            "--data",
            digits().to_str().unwrap(),
            "--json",
        ],
    );
    let line = assert_bad_input(&o, "huge pads eval");
    assert!(line.contains("block4.project.conv.out"), "{line}");
    // The job compiles the workspace's copy of the model: the message names the user's file.
    assert!(line.contains("huge_pads.onnx"), "{line}");
    assert!(!line.contains("variants/0.onnx"), "{line}");
    for at in cut_points(bytes.len()) {
        cases.push((
            format!("truncated at {at}"),
            write(d, &format!("cut{at}.onnx"), &bytes[..at]),
            vec![],
        ));
    }
    for (what, path, needles) in &cases {
        let p = path.to_str().unwrap();
        for args in [
            vec!["inspect", p],
            vec!["inspect", p, "--json"],
            vec![
                "eval",
                p,
                "--data",
                digits().to_str().unwrap(),
                "--no-workspace",
                "--json",
            ],
        ] {
            let o = run(home.path(), &args);
            let line = assert_bad_input(&o, &format!("{what}: {args:?}"));
            for n in needles {
                assert!(line.contains(n), "{what}: {line:?} lacks {n:?}");
            }
        }
    }
}

#[test]
fn cli_bad_datasets() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let x = digits_inputs(5);
    let small = npy_dir(
        root.path(),
        "small",
        &NpyArray::F32(ArrayD::zeros(IxDyn(&[5, 1, 8, 8]))),
        None,
    );
    let u16_dir = uint16_dir(root.path());
    let count = npy_dir(
        root.path(),
        "count",
        &NpyArray::F32(x.clone()),
        Some(&[1, 2]),
    );
    // Values are checked when a batch reads them: the NaN goes in a sample that `--split
    // evaluation` evaluates (the default split of 5 samples holds 2 for calibration).
    let k = qsteer::data::seeded_split(5, 2, 0).evaluation[0];
    let mut nan = x.clone();
    nan[[k, 0, 3, 3]] = f32::NAN;
    let nan_dir = npy_dir(root.path(), "nan", &NpyArray::F32(nan), None);
    let nan_needle = format!("sample {k} contains NaN");
    let label_range = npy_dir(
        root.path(),
        "labels_out_of_range",
        &NpyArray::F32(x),
        Some(&[0, 1, 2, 3, 10]),
    );
    let empty_dir = root.path().join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let model = sample_model("mbv2_digits");
    let cases: Vec<(&str, PathBuf, Vec<String>)> = vec![
        (
            "shape",
            small.clone(),
            vec![
                small.join("inputs.npy").display().to_string(),
                "[1, 8, 8]".into(),
                "[N, 1, 16, 16]".into(),
            ],
        ),
        (
            "dtype",
            u16_dir.clone(),
            vec![
                u16_dir.join("inputs.npy").display().to_string(),
                "unsupported dtype".into(),
            ],
        ),
        (
            "count",
            count.clone(),
            vec![
                count.join("labels.npy").display().to_string(),
                "2 labels".into(),
            ],
        ),
        (
            "nan",
            nan_dir.clone(),
            vec![nan_dir.join("inputs.npy").display().to_string(), nan_needle],
        ),
        (
            "label out of range",
            label_range,
            vec!["label 10".into(), "10 classes".into()],
        ),
        ("missing", root.path().join("nope"), vec!["nope".into()]),
        ("no dataset", empty_dir, vec!["no dataset found".into()]),
    ];
    for (what, dir, needles) in &cases {
        for split in ["all", "evaluation"] {
            let o = run(
                home.path(),
                &[
                    "eval",
                    model.to_str().unwrap(),
                    "--data",
                    dir.to_str().unwrap(),
                    "--split",
                    split,
                    "--no-workspace",
                    "--json",
                ],
            );
            let line = assert_bad_input(&o, &format!("{what} --split {split}"));
            for n in needles {
                assert!(line.contains(n.as_str()), "{what}: {line:?} lacks {n:?}");
            }
        }
    }
}

#[test]
fn cli_bad_workspaces() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = sample_model("mbv2_digits");
    let m = model.to_str().unwrap();
    let data = digits();
    let dd = data.to_str().unwrap();

    // a file where the workspace directory should be
    let blocker = write(root.path(), "blocker", b"x");
    let o = run(
        home.path(),
        &[
            "eval",
            m,
            "--data",
            dd,
            "--workspace",
            blocker.to_str().unwrap(),
        ],
    );
    let line = assert_bad_input(&o, "workspace is a file");
    assert!(line.contains("blocker"), "{line}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");

    // a corrupt workspace.json: clear error, file untouched
    let ws = root.path().join("ws");
    let o = run(
        home.path(),
        &[
            "eval",
            m,
            "--data",
            dd,
            "--workspace",
            ws.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let index = ws.join("workspace.json");
    let garbage = b"{ \"variants\": [ {\"id\": 0, oops";
    std::fs::write(&index, garbage).unwrap();
    let o = run(
        home.path(),
        &[
            "eval",
            m,
            "--data",
            dd,
            "--workspace",
            ws.to_str().unwrap(),
            "--json",
        ],
    );
    let line = assert_bad_input(&o, "corrupt workspace.json");
    assert!(
        line.contains("workspace.json") && line.contains("corrupt"),
        "{line}"
    );
    assert_eq!(std::fs::read(&index).unwrap(), garbage);
}

#[test]
fn cli_bad_arguments() {
    let home = tempfile::tempdir().unwrap();
    let m = sample_model("mbv2_digits");
    let m = m.to_str().unwrap();
    let data = digits();
    let dd = data.to_str().unwrap();
    // eval of a user model without --data
    let o = run(home.path(), &["eval", m, "--json"]);
    let line = assert_bad_input(&o, "eval without --data");
    assert!(line.contains("--data"), "{line}");
    for args in [
        vec!["eval", m, "--data", dd, "--batch-size", "0"],
        vec!["eval", m, "--data", dd, "--threads", "0"],
    ] {
        let o = run(home.path(), &args);
        let line = assert_bad_input(&o, &format!("{args:?}"));
        assert!(line.contains("at least 1"), "{line}");
    }
    // a missing reference model
    let o = run(
        home.path(),
        &[
            "eval",
            m,
            "--data",
            dd,
            "--reference",
            "/nonexistent/ref.onnx",
            "--no-workspace",
        ],
    );
    let line = assert_bad_input(&o, "missing reference");
    assert!(line.contains("ref.onnx"), "{line}");
}
