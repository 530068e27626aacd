//! BN folding and cross-layer equalization time on the sample models and on a synthetic
//! model with ResNet-50's conv shapes (53 convs + the 1000-way Gemm, ≈25.6M parameters,
//! random weights, BN after every conv). CLE is measured end to end from the unfolded
//! model (fold, chain search, iterated scaling, HBA, rebuilding the model) and on the
//! folded model. Target: CLE under 1 s on two cores for the ResNet-50-sized model.
//! Bias correction (empirical, and hybrid on the folded model with its BN statistics) is
//! measured on the sample models at W4A8 per tensor with the 200 calibration samples of
//! the digits data, two threads.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{ArrayD, IxDyn};
use qsteer::cancel::CancelToken;
use qsteer::data::SplitMix64;
use qsteer::fixes::{equalize, fold_batchnorms, BnStats, CleOptions};
use qsteer::model::builder::{attr_int, attr_ints, ProtoBuilder};
use qsteer::model::Model;
use std::path::Path;
use std::time::Duration;

struct Net {
    b: ProtoBuilder,
    rng: SplitMix64,
    n: usize,
}

impl Net {
    fn random(&mut self, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
        let rng = &mut self.rng;
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            lo + (hi - lo) * (rng.symmetric() * 0.5 + 0.5)
        })
    }

    /// Conv k×k (He-scaled random weights, no bias) → BN, optionally → Relu.
    fn conv_bn(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        relu: bool,
    ) -> String {
        self.n += 1;
        let name = format!("conv{}", self.n);
        let bound = (6.0 / (cin * k * k) as f32).sqrt();
        let w = self.random(&[cout, cin, k, k], -bound, bound);
        let p = (k / 2) as i64;
        let bn: Vec<ArrayD<f32>> = vec![
            self.random(&[cout], 0.5, 1.5),
            self.random(&[cout], -1.0, 3.0),
            self.random(&[cout], -0.5, 0.5),
            self.random(&[cout], 0.5, 2.0),
        ];
        let w_name = format!("{name}.w");
        self.b.initializer(&w_name, &w).node(
            "Conv",
            &name,
            &[x, &w_name],
            &[&format!("{name}.out")],
            vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_int("group", 1),
            ],
        );
        let params: Vec<String> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|s| format!("{name}.bn.{s}"))
            .collect();
        for (p, a) in params.iter().zip(&bn) {
            self.b.initializer(p, a);
        }
        let out = format!("{name}.bn.out");
        let conv_out = format!("{name}.out");
        let mut bn_inputs = vec![conv_out.as_str()];
        bn_inputs.extend(params.iter().map(|s| s.as_str()));
        self.b.node(
            "BatchNormalization",
            &format!("{name}.bn"),
            &bn_inputs,
            &[&out],
            vec![],
        );
        if !relu {
            return out;
        }
        let r = format!("{name}.relu");
        self.b.node("Relu", &r, &[&out], &[&r], vec![]);
        r
    }
}

/// ResNet-50: stem 7×7/2, max-pool, bottlenecks [3, 4, 6, 3] (1×1, 3×3, 1×1 ×4) with a 1×1
/// projection on the first block of each stage, global pool, Gemm 2048 → 1000.
fn resnet50_like() -> Model {
    let mut net = Net {
        b: ProtoBuilder::new(13),
        rng: SplitMix64(50),
        n: 0,
    };
    net.b.input("input", &[3, 224, 224]);
    let stem = net.conv_bn("input", 3, 64, 7, 2, true);
    net.b.node(
        "MaxPool",
        "pool0",
        &[&stem],
        &["pool0"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let mut x = "pool0".to_string();
    let mut cin = 64;
    for (stage, (blocks, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let a = net.conv_bn(&x, cin, width, 1, 1, true);
            let b = net.conv_bn(&a, width, width, 3, stride, true);
            let c = net.conv_bn(&b, width, width * 4, 1, 1, false);
            let shortcut = if block == 0 {
                net.conv_bn(&x, cin, width * 4, 1, stride, false)
            } else {
                x.clone()
            };
            let add = format!("add{stage}.{block}");
            net.b.node("Add", &add, &[&c, &shortcut], &[&add], vec![]);
            let relu = format!("{add}.relu");
            net.b.node("Relu", &relu, &[&add], &[&relu], vec![]);
            x = relu;
            cin = width * 4;
        }
    }
    let fc_w = net.random(&[1000, 2048], -0.05, 0.05);
    let fc_b = net.random(&[1000], -0.05, 0.05);
    net.b
        .node("GlobalAveragePool", "gap", &[&x], &["gap"], vec![])
        .node("Flatten", "flatten", &["gap"], &["flat"], vec![])
        .initializer("fc.w", &fc_w)
        .initializer("fc.b", &fc_b)
        .node(
            "Gemm",
            "fc",
            &["flat", "fc.w", "fc.b"],
            &["logits"],
            vec![attr_int("transB", 1)],
        )
        .output("logits");
    assert_eq!(net.n, 53);
    net.b.model("resnet50-like").expect("a valid model")
}

fn fixes(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut models = vec![];
    for name in ["mbv2_digits", "resnet_digits"] {
        let m = Model::load(&root.join(format!("sample-models/{name}.onnx"))).expect("sample");
        models.push((name.to_string(), m));
    }
    let big = resnet50_like();
    let params: usize = big.weights().map(|(_, w)| w.array.len()).sum();
    eprintln!("resnet50_like: {params} weight values (BN statistics included)");
    models.push(("resnet50_like".into(), big));
    let options = CleOptions {
        relu6_to_relu: true,
        ..Default::default()
    };
    let mut group = c.benchmark_group("fixes");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, model) in &models {
        group.bench_function(format!("{name}/fold_bn"), |b| {
            b.iter(|| fold_batchnorms(model).expect("fold"))
        });
        group.bench_function(format!("{name}/cle"), |b| {
            b.iter(|| {
                equalize(model, &BnStats::default(), &options, &CancelToken::new()).expect("cle")
            })
        });
        // CLE proper: on the model already folded (what `qsteer cle` does on a fold_bn variant).
        let folded = fold_batchnorms(model).expect("fold");
        group.bench_function(format!("{name}/cle_on_folded"), |b| {
            b.iter(|| {
                equalize(&folded.model, &folded.stats, &options, &CancelToken::new()).expect("cle")
            })
        });
    }
    group.finish();
}

/// Bias correction at W4A8 per tensor: empirical on the shipped model (every layer from
/// data), hybrid on the folded model (analytical where a folded BN's statistics exist).
fn bias_correction(c: &mut Criterion) {
    use qsteer::fixes::bias_correction::{bias_correct, BcMode};
    use qsteer::quant::simulate::{QuantsimRequest, QuantsimSettings};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = QuantsimSettings {
        w_bits: 4,
        ..Default::default()
    };
    let req = QuantsimRequest::checked(&root.join("sample-models/digits"), &settings, 200, 0, 2)
        .expect("settings");
    let mut group = c.benchmark_group("bias_correction");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for name in ["mbv2_digits", "resnet_digits"] {
        let model = Model::load(&root.join(format!("sample-models/{name}.onnx"))).expect("sample");
        let folded = fold_batchnorms(&model).expect("fold");
        let runs = [
            ("empirical", &model, BnStats::default(), BcMode::Empirical),
            (
                "hybrid_on_folded",
                &folded.model,
                folded.stats.clone(),
                BcMode::Hybrid,
            ),
        ];
        for (label, m, stats, mode) in runs {
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    bias_correct(m, &req, mode, &stats, &CancelToken::new(), &|_, _, _| {})
                        .expect("bias correction")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fixes, bias_correction);
criterion_main!(benches);
