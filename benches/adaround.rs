//! AdaRound time per layer per 1000 iterations (batch 32 of 200 cached samples) for a few
//! layers of the sample MobileNetV2: the stem conv, the first 1×1 projection, a 1×1
//! expansion and the classifier. Inputs are random with the layers' shapes: the cost depends
//! on shapes only.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array2, ArrayD, IxDyn};
use qsteer::cancel::CancelToken;
use qsteer::fixes::adaround::activation::Activation;
use qsteer::fixes::adaround::linear::LinearOp;
use qsteer::fixes::adaround::optimize::{optimize, Hyper, Problem, RowGrid, SplitMix};
use qsteer::model::{Dim, Model};
use qsteer::quant::per_channel::per_tensor_encoding;
use qsteer::quant::{QuantSpec, Scheme};
use std::path::Path;

fn random(shape: &[usize], rng: &mut SplitMix) -> ArrayD<f32> {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape")
}

fn adaround_layers(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(&root.join("sample-models/mbv2_digits.onnx")).expect("sample model");
    let shapes = model.shapes(Some(&[vec![1, 16, 16]])).expect("shapes");
    let layers = model.layers(&shapes).expect("layers");
    let picks = [0, 2, 3, layers.len() - 1];
    let mut group = c.benchmark_group("adaround_1000_iterations");
    group.sample_size(10);
    let mut rng = SplitMix::new(1);
    for &i in &picks {
        let layer = &layers[i];
        let op = LinearOp::of(&model, layer).expect("supported layer");
        let sample: Vec<usize> = layer
            .input_shape
            .as_ref()
            .expect("input shape")
            .iter()
            .skip(1)
            .map(|d| match d {
                Dim::Known(v) => *v,
                _ => 1,
            })
            .collect();
        let mut shape = vec![200];
        shape.extend(&sample);
        let cols = op
            .columns(random(&shape, &mut rng).view())
            .expect("columns");
        let w = model.weight(&layer.weight).expect("weight");
        let weight: Array2<f32> = op.weight_matrix(w).expect("matrix");
        let spec = QuantSpec::new(4, false).expect("spec");
        let enc = per_tensor_encoding(w.view(), spec, Scheme::TfEnhanced).expect("encoding");
        let grid = RowGrid::new(&[enc], weight.nrows());
        let bias = vec![0.0; op.out_channels()];
        let act = Activation::Relu;
        let target = Problem::activated_output(&op, &weight, &bias, &act, &cols);
        let problem = Problem {
            op: &op,
            weight: &weight,
            bias: &bias,
            grid: &grid,
            cols: &cols,
            target: &target,
            act: &act,
            positions: op.positions(&sample),
            samples: 200,
        };
        let hyper = Hyper {
            iterations: 1000,
            ..Hyper::aimet(4)
        };
        let name = format!("{}/{:?}/{:?}", layer.name, layer.kind, layer.weight_shape);
        group.bench_function(name, |b| {
            b.iter(|| optimize(&problem, &hyper, 7, &CancelToken::new(), &|_| {}).expect("run"))
        });
    }
    group.finish();
}

criterion_group!(benches, adaround_layers);
criterion_main!(benches);
