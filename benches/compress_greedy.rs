//! Greedy per-layer ratio selection on the sample models, both ways of filling the
//! eval-score dictionary in the same run, each with a cold cache: every candidate's whole
//! model compiled and scored (before), and only the part each candidate changes run from the
//! parent's values, a layer's candidates side by side (after). Printed per model and method:
//! both wall times, their ratio, the number of evaluations, the time per image-evaluation
//! next to one FP32 evaluation of the same samples, and whether the two selections agree
//! (they must: same entries, same ratios). Criterion then measures the fast way on the
//! sample ResNet scored on 100 samples.
//!
//! `QSTEER_BENCH_SAMPLES` (default 200, at most 400) sets the evaluation samples of the
//! printed runs.

use criterion::{criterion_group, criterion_main, Criterion};
use qsteer::cancel::CancelToken;
use qsteer::compress::build::{build_compressor, CompressorSpec};
use qsteer::compress::greedy::{select_greedy, GreedyRequest, GreedySelection};
use qsteer::compress::scorer::ModelScorer;
use qsteer::compress::{LayerCompressor, LayerRatios, Method};
use qsteer::data::Dataset;
use qsteer::experiment::evaluate::{sample_shapes, select_samples, Subset};
use qsteer::model::Model;
use qsteer::runtime::{CompiledModel, RunOptions};
use std::path::Path;
use std::time::{Duration, Instant};

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models")
}

fn compressor(model: &Model, method: Method, options: RunOptions) -> Box<dyn LayerCompressor> {
    let data = root().join("digits");
    let eval = select_samples(&data, Subset::Evaluation, 200, 0).expect("digits");
    build_compressor(&CompressorSpec {
        method,
        sample_shapes: sample_shapes(model, &eval.data).expect("shapes"),
        selection: None,
        data,
        calibration_size: 200,
        seed: 0,
        options,
    })
    .expect("compressor")
}

/// The first `n` of the 400 evaluation samples of the digits.
fn evaluation_samples(n: usize) -> Dataset {
    let eval = select_samples(&root().join("digits"), Subset::Evaluation, 200, 0).expect("digits");
    let n = n.min(eval.data.len());
    eval.data.subset(&(0..n).collect::<Vec<_>>())
}

fn select(
    model: &Model,
    compressor: &dyn LayerCompressor,
    scorer: &ModelScorer,
    target: f64,
    changed_part_only: bool,
) -> GreedySelection {
    let cache = tempfile::tempdir().expect("temp dir");
    let pin = LayerRatios::new();
    let req = GreedyRequest {
        model,
        compressor,
        scorer,
        target,
        candidates: 10,
        pin: &pin,
        exclude: &[],
        cache_dir: Some(cache.path()),
        settings: "bench",
        changed_part_only,
    };
    select_greedy(&req, &CancelToken::new(), &|_| {}).expect("greedy selection")
}

/// Both ways on one model and method, printed.
fn compare(file: &str, method: Method, target: f64, samples: usize) {
    let model = Model::load(&root().join(file)).expect("sample model");
    let options = RunOptions::default();
    let data = evaluation_samples(samples);
    let shapes = sample_shapes(&model, &data).expect("shapes");
    let cancel = CancelToken::new();
    // One FP32 evaluation of the same samples (compile and run), the unit of the goal.
    let started = Instant::now();
    let compiled = CompiledModel::compile(&model, &shapes, options.batch_size, &[]).expect("fp32");
    compiled
        .run_dataset(&data, options, &cancel, &|_, _| {})
        .expect("fp32 run");
    let fp32 = started.elapsed().as_secs_f64();
    let n = data.len();
    let scorer = ModelScorer::new(&model, data, options, &cancel).expect("scorer");
    let compressor = compressor(&model, method, options);
    let timed = |fast| {
        let started = Instant::now();
        let sel = select(&model, compressor.as_ref(), &scorer, target, fast);
        (sel, started.elapsed().as_secs_f64())
    };
    let (before, t_before) = timed(false);
    let (after, t_after) = timed(true);
    let evals = before.dictionary.computed.max(1) as f64;
    eprintln!(
        "greedy {} {target} on {file}, {n} samples, {} threads: whole models {t_before:.2} s, \
         changed parts {t_after:.2} s ({:.2}x faster); {} evaluations ({} on the changed part); \
         per image-evaluation {:.3} ms -> {:.3} ms, FP32 evaluation {:.3} ms per image \
         ({:.2}x -> {:.2}x); same selection: {}",
        method.short(),
        options.threads,
        t_before / t_after,
        before.dictionary.computed,
        after.dictionary.partial,
        1e3 * t_before / evals / n as f64,
        1e3 * t_after / evals / n as f64,
        1e3 * fp32 / n as f64,
        t_before / evals / fp32,
        t_after / evals / fp32,
        before.entries == after.entries && before.ratios == after.ratios,
    );
}

fn greedy(c: &mut Criterion) {
    let samples = std::env::var("QSTEER_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    compare("resnet_digits.onnx", Method::SpatialSvd, 0.5, samples);
    compare("resnet_digits.onnx", Method::WeightSvd, 0.5, samples);
    compare("mbv2_digits.onnx", Method::WeightSvd, 0.7, samples);

    let model = Model::load(&root().join("resnet_digits.onnx")).expect("sample model");
    let options = RunOptions::default();
    let cancel = CancelToken::new();
    let scorer =
        ModelScorer::new(&model, evaluation_samples(100), options, &cancel).expect("scorer");
    let compressor = compressor(&model, Method::SpatialSvd, options);
    let mut group = c.benchmark_group("compress_greedy");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("resnet_digits ssvd 0.5, cold cache, 100 samples", |b| {
        b.iter(|| select(&model, compressor.as_ref(), &scorer, 0.5, true))
    });
    group.finish();
}

criterion_group!(benches, greedy);
criterion_main!(benches);
