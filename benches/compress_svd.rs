//! Weight SVD and Spatial SVD of every eligible layer at ratio 0.5, end to end (shape
//! analysis, rank choice, the SVDs, graph rewrite, and the cost of the result), on the
//! sample models and on the ResNet-50-sized synthetic model (53 convs + the 1000-way Gemm;
//! Spatial SVD takes the 7×7 stem and the sixteen 3×3 convs). Target: all layers of the
//! ResNet-50-sized model under 10 s on two cores.

mod common;

use common::resnet50_like;
use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::cancel::CancelToken;
use qsteer::compress::{LayerCompressor, LayerRatios, SpatialSvd, WeightSvd};
use qsteer::model::Model;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every layer `c` can compress, at `ratio`.
fn all_eligible(c: &dyn LayerCompressor, model: &Model, ratio: f64) -> LayerRatios {
    c.eligible(model)
        .expect("eligibility")
        .into_iter()
        .filter(|e| e.not_eligible.is_none())
        .map(|e| (e.layer, ratio))
        .collect()
}

fn compress_svd(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut models = vec![];
    for name in ["mbv2_digits", "resnet_digits"] {
        let m = Model::load(&root.join(format!("sample-models/{name}.onnx"))).expect("sample");
        models.push((name.to_string(), m, vec![1, 16, 16]));
    }
    models.push(("resnet50_like".into(), resnet50_like(), vec![3, 224, 224]));
    let mut group = c.benchmark_group("compress_svd");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for (name, model, shape) in &models {
        let methods: [(&str, Box<dyn LayerCompressor>); 2] = [
            ("wsvd", Box::new(WeightSvd::new(Some(vec![shape.clone()])))),
            ("ssvd", Box::new(SpatialSvd::new(Some(vec![shape.clone()])))),
        ];
        for (short, method) in &methods {
            let ratios = all_eligible(method.as_ref(), model, 0.5);
            let start = Instant::now();
            let out = method
                .apply(model, &ratios, &CancelToken::new())
                .expect("compress");
            eprintln!(
                "{name}/{short}: {} layers, MAC ratio {:.3}, one run {:.2} s",
                out.changes.len(),
                out.mac_ratio(),
                start.elapsed().as_secs_f64()
            );
            group.bench_function(format!("{name}/{short}_all_layers_0.5"), |b| {
                b.iter(|| {
                    method
                        .apply(model, &ratios, &CancelToken::new())
                        .expect("compress")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compress_svd);
criterion_main!(benches);
