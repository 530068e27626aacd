//! Datasets stream (#16 item 9): what the whole-file readers refused or read eagerly.

use crate::common::*;
use qsteer::data::{write_npy, NpyArray};
use std::path::Path;

fn eval_json(home: &Path, model: &str, data: &Path) -> serde_json::Value {
    json_ok(
        home,
        &[
            "eval",
            sample_model(model).to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "all",
            "--threads",
            "1",
            "--no-workspace",
            "--json",
        ],
    )
}

/// float64 inputs (refused before) give exactly the float32 set's accuracy: every float32
/// value converts to float64 and back unchanged.
#[test]
fn eval_reads_float64_inputs_like_float32() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let x = first(&read_f32(&digits().join("evaluation/inputs.npy")), 60);
    let labels: Vec<i64> = read_i64(&digits().join("evaluation/labels.npy"))[..60].to_vec();
    let labels = NpyArray::I64(ndarray::Array::from_vec(labels).into_dyn());
    for (name, inputs) in [
        ("f32", NpyArray::F32(x.clone())),
        ("f64", NpyArray::F64(x.mapv(f64::from))),
    ] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        write_npy(&dir.path().join(name).join("inputs.npy"), &inputs).unwrap();
        write_npy(&dir.path().join(name).join("labels.npy"), &labels).unwrap();
    }
    let a = eval_json(home.path(), "mbv2_digits", &dir.path().join("f32"));
    let b = eval_json(home.path(), "mbv2_digits", &dir.path().join("f64"));
    assert_eq!(a["samples"], 60);
    assert_eq!(a["accuracy"], b["accuracy"]);
}

/// A corrupt image is not read until its batch is: `inspect --data` only needs the sample
/// shape and succeeds; `eval` fails on bad input naming the file.
#[test]
fn a_corrupt_image_is_reported_by_the_batch_that_reads_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    for entry in std::fs::read_dir(digits().join("images")).unwrap() {
        let from = entry.unwrap().path();
        let to = root.join(from.file_name().unwrap());
        if from.is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&from).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    let class = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .min()
        .unwrap();
    std::fs::write(class.join("zzz_corrupt.png"), b"not a png").unwrap();

    let model = sample_model("mbv2_digits");
    json_ok(
        home.path(),
        &[
            "inspect",
            model.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--json",
        ],
    );
    let o = run(
        home.path(),
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--split",
            "all",
            "--no-workspace",
            "--json",
        ],
    );
    let line = assert_bad_input(&o, "eval on a folder with a corrupt image");
    assert!(
        line.contains("zzz_corrupt.png") && line.contains("cannot decode"),
        "{line}"
    );
}
