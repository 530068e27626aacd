//! Helpers shared by the compression tests: the sample models and digits, synthetic nets,
//! running a model and comparing outputs.

use super::CalibrationData;
use crate::data::{load_dataset, Dataset, NamedInput, SplitMix64};
use crate::metrics::sqnr_db;
use crate::model::builder::{attr_int, attr_ints, ProtoBuilder};
use crate::model::{Layer, Model};
use crate::runtime::{CompiledModel, RunOptions};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models")
}

pub fn sample(name: &str) -> Model {
    Model::load(&root().join(format!("{name}.onnx"))).unwrap()
}

pub fn options() -> RunOptions {
    RunOptions {
        batch_size: 1,
        threads: 2,
    }
}

pub fn digits_calibration() -> Arc<CalibrationData> {
    Arc::new(CalibrationData::load(&root().join("digits"), 200, 0, options()).unwrap())
}

/// The first `n` evaluation digits.
pub fn digits(n: usize) -> ArrayD<f32> {
    let data = load_dataset(&root().join("digits/evaluation")).unwrap();
    data.inputs[0].data.read_range(0..n).unwrap()
}

pub fn outputs(model: &Model, x: &ArrayD<f32>) -> ArrayD<f32> {
    let shape = vec![x.shape()[1..].to_vec()];
    let compiled = CompiledModel::compile(model, &shape, x.shape()[0], &[]).unwrap();
    compiled.run(&[x.view()]).unwrap().remove(0)
}

pub fn sqnr(reference: &Model, test: &Model, x: &ArrayD<f32>) -> f64 {
    sqnr_db(outputs(reference, x).view(), outputs(test, x).view())
}

pub fn layer_of<'a>(layers: &'a [Layer], name: &str) -> &'a Layer {
    layers.iter().find(|l| l.name == name).unwrap()
}

pub fn layers(model: &Model, data: &CalibrationData) -> Vec<Layer> {
    model
        .layers(&model.shapes(Some(&data.sample_shapes)).unwrap())
        .unwrap()
}

/// Seeded values in [-scale, scale].
pub fn random(rng: &mut SplitMix64, shape: &[usize], scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.symmetric() * scale)
}

pub fn synthetic_data(rng: &mut SplitMix64, sample: &[usize], n: usize) -> Arc<CalibrationData> {
    let mut shape = vec![n];
    shape.extend_from_slice(sample);
    let x = random(rng, &shape, 1.0);
    let input = NamedInput::from_array(None, "synthetic", x);
    let data = Dataset::from_arrays("synthetic", vec![input], None).unwrap();
    Arc::new(CalibrationData::from_dataset(data, 1, options()).unwrap())
}

pub fn conv(
    b: &mut ProtoBuilder,
    rng: &mut SplitMix64,
    name: &str,
    io: [&str; 2],
    shape: [usize; 4],
    group: usize,
) {
    let w = format!("{name}.w");
    let bias = format!("{name}.b");
    b.initializer(&w, &random(rng, &shape, 0.5));
    b.initializer(&bias, &random(rng, &[shape[0]], 0.2));
    let pad = (shape[2] / 2) as i64;
    b.node(
        "Conv",
        name,
        &[io[0], &w, &bias],
        &[io[1]],
        vec![
            attr_int("group", group as i64),
            attr_ints("pads", &[pad; 4]),
        ],
    );
}

pub fn bn(b: &mut ProtoBuilder, rng: &mut SplitMix64, name: &str, io: [&str; 2], c: usize) {
    let names = ["scale", "bias", "mean", "var"].map(|p| format!("{name}.{p}"));
    b.initializer(&names[0], &random(rng, &[c], 0.5).mapv(|v| v + 1.0));
    b.initializer(&names[1], &random(rng, &[c], 0.5));
    b.initializer(&names[2], &random(rng, &[c], 0.5));
    b.initializer(&names[3], &random(rng, &[c], 0.5).mapv(|v| v + 1.0));
    let mut inputs = vec![io[0]];
    inputs.extend(names.iter().map(String::as_str));
    b.node("BatchNormalization", name, &inputs, &[io[1]], vec![]);
}
