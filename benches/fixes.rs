//! BN folding and cross-layer equalization time on the sample models and on a synthetic
//! model with ResNet-50's conv shapes (53 convs + the 1000-way Gemm, ≈25.6M parameters,
//! random weights, BN after every conv). CLE is measured end to end from the unfolded
//! model (fold, chain search, iterated scaling, HBA, rebuilding the model) and on the
//! folded model. Target: CLE under 1 s on two cores for the ResNet-50-sized model.
//! Bias correction (empirical, and hybrid on the folded model with its BN statistics) is
//! measured on the sample models at W4A8 per tensor with the 200 calibration samples of
//! the digits data, two threads.

mod common;

use common::resnet50_like;
use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::cancel::CancelToken;
use qsteer::fixes::{equalize, fold_batchnorms, BnStats, CleOptions};
use qsteer::model::Model;
use std::path::Path;
use std::time::Duration;

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
