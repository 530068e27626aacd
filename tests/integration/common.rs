//! Helpers shared by the integration tests: paths of the shipped models and fixtures,
//! arrays and datasets, the binary, a seeded PRNG. Not every test file uses every helper.
#![allow(dead_code)]

use ndarray::{ArrayD, ArrayView2, Axis, Ix2};
use qsteer::data::{read_npy, Dataset, NamedInput, NpyArray};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample_model(name: &str) -> PathBuf {
    root().join("sample-models").join(format!("{name}.onnx"))
}

pub fn digits() -> PathBuf {
    root().join("sample-models").join("digits")
}

pub fn fixture_model(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(format!("{name}.onnx"))
}

pub fn fixture_dir(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// Fixtures that come with ONNX Runtime's outputs.
pub const FIXTURES: &[&str] = &[
    "constant_weights",
    "named_batch_ops",
    "grouped_strided",
    "opset_variants_11",
    "opset_variants_15",
];

pub fn read_f32(path: &Path) -> ArrayD<f32> {
    match read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        NpyArray::F32(a) => a,
        other => panic!(
            "{}: expected float32, got {:?}",
            path.display(),
            other.dtype()
        ),
    }
}

pub fn read_i64(path: &Path) -> Vec<i64> {
    read_npy(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_i64()
        .unwrap_or_else(|| panic!("{}: not integers", path.display()))
        .iter()
        .copied()
        .collect()
}

/// The first `n` samples of an array (axis 0).
pub fn first(a: &ArrayD<f32>, n: usize) -> ArrayD<f32> {
    a.slice_axis(Axis(0), ndarray::Slice::from(0..n)).to_owned()
}

/// A single-input dataset held in memory.
pub fn dataset(name: &str, inputs: ArrayD<f32>) -> Dataset {
    Dataset::from_arrays(
        name,
        vec![NamedInput::from_array(None, name.to_string(), inputs)],
        None,
    )
    .expect("valid dataset")
}

/// The per-sample shape of a single-input dataset, as `CompiledModel::compile` wants it.
pub fn sample_shapes(data: &Dataset) -> Vec<Vec<usize>> {
    vec![data.sample_shape(0).to_vec()]
}

/// Outputs as `[N, C]` rows (trailing dims flattened).
pub fn rows(a: &ArrayD<f32>) -> ndarray::Array2<f32> {
    let n = a.shape()[0];
    let c = a.len() / n.max(1);
    a.to_shape((n, c))
        .unwrap()
        .to_owned()
        .into_dimensionality::<Ix2>()
        .unwrap()
}

pub fn argmax(rows: ArrayView2<f32>) -> Vec<usize> {
    qsteer::metrics::argmax_rows(rows)
}

pub fn max_abs(a: &ArrayD<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn bits(a: &ArrayD<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// The `qsteer` binary with its data directory pointed at `data_dir` (nothing touches the
/// real home).
pub fn qsteer(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qsteer"));
    c.env("QSTEER_DATA_DIR", data_dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    c
}

pub fn run(data_dir: &Path, args: &[&str]) -> Output {
    qsteer(data_dir)
        .args(args)
        .output()
        .expect("the qsteer binary runs")
}

/// Run, expect success, parse stdout as one JSON document.
pub fn json_ok(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = run(data_dir, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON document")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the process failed on bad input: exit code 2, nothing on stdout, and exactly one
/// stderr line `qsteer: error: ...`. Returns that line.
pub fn assert_bad_input(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{what}: expected exit code 2; stderr: {err}"
    );
    assert!(
        o.stdout.is_empty(),
        "{what}: stdout must be empty, got {:?}",
        stdout(o)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got {err:?}"
    );
    assert!(
        lines[0].starts_with("qsteer: error: "),
        "{what}: stderr line {:?}",
        lines[0]
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
    lines[0].to_string()
}

/// splitmix64 (Steele, Lea, Flood 2014): the tests' only source of randomness.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0);
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// An integer in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The first `n` samples of each half of the digits split, as a dataset directory.
pub fn small_digits(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("digits");
    for half in ["calibration", "evaluation"] {
        for file in ["inputs.npy", "labels.npy"] {
            let out = root.join(half).join(file);
            match qsteer::data::read_npy(&digits().join(half).join(file)).unwrap() {
                NpyArray::F32(x) => qsteer::data::write_npy_f32(&out, &first(&x, n)),
                other => {
                    let x = other.to_i64().unwrap();
                    let x = x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..n));
                    qsteer::data::write_npy_i64(&out, &x.to_owned())
                }
            }
            .unwrap();
        }
    }
    root
}
