//! Greedy per-layer ratio selection on the sample ResNet (spatial SVD, target MAC ratio 0.5,
//! candidates k/10) with a cold dictionary cache each iteration: the whole selection — one
//! evaluation per (layer, candidate), the search, the final compression. One timed cold run
//! on the 400 evaluation samples is printed with its number of evaluations; criterion then
//! measures the same selection scored on the first 100 samples (ten runs of the full set
//! would take minutes).

use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::cancel::CancelToken;
use qsteer::compress::build::{build_compressor, CompressorSpec};
use qsteer::compress::greedy::{select_greedy, GreedyRequest};
use qsteer::compress::scorer::ModelScorer;
use qsteer::compress::{LayerRatios, Method};
use qsteer::experiment::evaluate::{sample_shapes, select_samples, Subset};
use qsteer::model::Model;
use qsteer::runtime::RunOptions;
use std::path::Path;
use std::time::Duration;

fn greedy(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models");
    let model = Model::load(&root.join("resnet_digits.onnx")).expect("sample model");
    let data = root.join("digits");
    let eval = select_samples(&data, Subset::Evaluation, 200, 0).expect("digits");
    let options = RunOptions::default();
    let spec = CompressorSpec {
        method: Method::SpatialSvd,
        sample_shapes: sample_shapes(&model, &eval.data).expect("shapes"),
        selection: None,
        data: data.clone(),
        calibration_size: 200,
        seed: 0,
        options,
    };
    let compressor = build_compressor(&spec).expect("spatial SVD");
    let cancel = CancelToken::new();
    let first_100 = eval.data.subset(&(0..100).collect::<Vec<_>>());
    let full = ModelScorer::new(&model, eval.data, options, &cancel).expect("scorer");
    let small = ModelScorer::new(&model, first_100, options, &cancel).expect("scorer");
    let settings = spec.settings_key();
    let pin = LayerRatios::new();
    let run = |scorer: &ModelScorer| {
        let cache = tempfile::tempdir().expect("temp dir");
        let req = GreedyRequest {
            model: &model,
            compressor: compressor.as_ref(),
            scorer,
            target: 0.5,
            candidates: 10,
            pin: &pin,
            exclude: &[],
            cache_dir: Some(cache.path()),
            settings: &settings,
        };
        select_greedy(&req, &cancel, &|_| {}).expect("greedy selection")
    };
    let started = std::time::Instant::now();
    let first = run(&full);
    eprintln!(
        "greedy ssvd 0.5 on resnet_digits, 400 samples, cold: {:.2} s, {} evaluations \
         ({} threads), MAC ratio {:.4} (predicted {:.4})",
        started.elapsed().as_secs_f64(),
        first.dictionary.computed,
        options.threads,
        first.outcome.mac_ratio(),
        first.search.predicted_mac_ratio,
    );
    let mut group = c.benchmark_group("compress_greedy");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("resnet_digits ssvd 0.5, cold cache, 100 samples", |b| {
        b.iter(|| run(&small))
    });
    group.finish();
}

criterion_group!(benches, greedy);
criterion_main!(benches);
