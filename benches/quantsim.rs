//! What quantization simulation costs on the sample models (DESIGN.md §7), on all cores:
//!
//! - `quantsim_calibration/<model>/<scheme>`: placing the quantizers, the ONE calibration
//!   pass over the 200 calibration samples (histograms) and the encodings of every
//!   quantizer with `minmax`, `tf_enhanced` (the default) or `mse`, up to the simulated
//!   W8A8 model — what a quantsim run spends before it evaluates.
//! - `quantsim_eval/<model>/batch<B>/{fp32,w8a8}`: the 400 evaluation samples through the
//!   FP32 model and through the simulated W8A8 model (same batch, same threads, compiled
//!   beforehand). Target: W8A8 ≤ 1.5× FP32.
//! - `quantsim_analysis/<model>`: the per-layer diagnosis (`analyze` without the sweep,
//!   calibration included, batch 16), to read in FP32 evaluation passes.
//!
//! A summary follows the criterion output: the ratios above, measured in pairs (FP32 and
//! W8A8 runs interleaved, medians), so load from other processes hits both sides alike.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qsteer::cancel::CancelToken;
use qsteer::data::Dataset;
use qsteer::experiment::evaluate::{sample_shapes, select_samples, Subset};
use qsteer::model::Model;
use qsteer::quant::analysis::{analyze, AnalyzeOptions};
use qsteer::quant::simulate::{prepare, simulate, QuantsimRequest, QuantsimSettings};
use qsteer::quant::Scheme;
use qsteer::runtime::{CompiledModel, RunOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MODELS: [&str; 2] = ["mbv2_digits", "resnet_digits"];
const SCHEMES: [(&str, Scheme); 3] = [
    ("minmax", Scheme::Minmax),
    ("tf_enhanced", Scheme::TfEnhanced),
    ("mse", Scheme::Mse),
];
const CALIBRATION_SIZE: usize = 200;
/// Batch of the analysis and of the FP32 pass it is measured against.
const ANALYSIS_BATCH: usize = 16;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn data_dir() -> PathBuf {
    root().join("sample-models/digits")
}

fn load_model(name: &str) -> Model {
    Model::load(&root().join(format!("sample-models/{name}.onnx"))).expect("sample model")
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn options(batch_size: usize) -> RunOptions {
    RunOptions {
        batch_size,
        threads: cores(),
    }
}

fn request(scheme: Scheme, batch_size: usize) -> QuantsimRequest {
    QuantsimRequest {
        data: data_dir(),
        calibration_size: CALIBRATION_SIZE,
        seed: 0,
        settings: QuantsimSettings {
            scheme,
            ..QuantsimSettings::default()
        },
        options: options(batch_size),
        metric: Default::default(),
    }
}

fn evaluation_set() -> Dataset {
    select_samples(&data_dir(), Subset::Evaluation, CALIBRATION_SIZE, 0)
        .expect("evaluation samples")
        .data
}

fn no_progress(_: &str, _: usize, _: usize) {}

/// The FP32 model and its simulated W8A8 model (default settings), compiled for `batch`.
fn compile_pair(model: &Model, data: &Dataset, batch: usize) -> (CompiledModel, CompiledModel) {
    let req = request(Scheme::TfEnhanced, batch);
    let prepared = prepare(model, &req, true, &CancelToken::new(), &no_progress).expect("prepare");
    let sim = simulate(model, &prepared, &req.settings).expect("simulate");
    let shapes = sample_shapes(model, data).expect("shapes");
    let fp32 = CompiledModel::compile(model, &shapes, batch, &[]).expect("compile fp32");
    let w8a8 = CompiledModel::compile(&sim.model, &shapes, batch, &[]).expect("compile w8a8");
    (fp32, w8a8)
}

fn run_seconds(compiled: &CompiledModel, data: &Dataset, batch: usize) -> f64 {
    let start = Instant::now();
    compiled
        .run_dataset(data, options(batch), &CancelToken::new(), &|_, _| {})
        .expect("run");
    start.elapsed().as_secs_f64()
}

fn calibration(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantsim_calibration");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(CALIBRATION_SIZE as u64));
    for name in MODELS {
        let model = load_model(name);
        for (label, scheme) in SCHEMES {
            let req = request(scheme, 1);
            group.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| {
                    let prepared = prepare(&model, &req, true, &CancelToken::new(), &no_progress)
                        .expect("prepare");
                    simulate(&model, &prepared, &req.settings).expect("simulate")
                })
            });
        }
    }
    group.finish();
}

fn evaluation(c: &mut Criterion) {
    let data = evaluation_set();
    let mut group = c.benchmark_group("quantsim_eval");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(data.len() as u64));
    for name in MODELS {
        let model = load_model(name);
        for batch in [1usize, 16] {
            let (fp32, w8a8) = compile_pair(&model, &data, batch);
            for (label, compiled) in [("fp32", &fp32), ("w8a8", &w8a8)] {
                group.bench_function(format!("{name}/batch{batch}/{label}"), |b| {
                    b.iter(|| run_seconds(compiled, &data, batch))
                });
            }
        }
    }
    group.finish();
}

fn analysis(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantsim_analysis");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    for name in MODELS {
        let model = load_model(name);
        let req = request(Scheme::TfEnhanced, ANALYSIS_BATCH);
        group.bench_function(name, |b| {
            b.iter(|| {
                analyze(
                    &model,
                    &req,
                    &AnalyzeOptions::default(),
                    &CancelToken::new(),
                    &no_progress,
                )
                .expect("analyze")
            })
        });
    }
    group.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// FP32 and W8A8 runs interleaved; the medians of each.
fn paired_eval(
    fp32: &CompiledModel,
    w8a8: &CompiledModel,
    data: &Dataset,
    batch: usize,
    rounds: usize,
) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    run_seconds(fp32, data, batch);
    run_seconds(w8a8, data, batch);
    for _ in 0..rounds {
        a.push(run_seconds(fp32, data, batch));
        b.push(run_seconds(w8a8, data, batch));
    }
    (median(a), median(b))
}

/// The derived figures: evaluation overhead and diagnosis cost as ratios, calibration split
/// into its pass and the encodings of each scheme. Medians of 5 rounds (3 for the analysis);
/// `--test` (as `cargo test --benches` runs it) measures one round.
fn summary(_: &mut Criterion) {
    let rounds = if std::env::args().any(|a| a == "--test") {
        1
    } else {
        5
    };
    let data = evaluation_set();
    println!();
    println!(
        "quantsim summary ({} cores, {} evaluation / {CALIBRATION_SIZE} calibration samples, \
         W8A8 asymmetric per-tensor; medians of {rounds})",
        cores(),
        data.len()
    );
    for name in MODELS {
        let model = load_model(name);
        println!("{name}");
        let req = request(Scheme::TfEnhanced, 1);
        let passes: Vec<_> = (0..rounds)
            .map(|_| {
                prepare(&model, &req, true, &CancelToken::new(), &no_progress).expect("prepare")
            })
            .collect();
        let pass = median(passes.iter().map(|p| p.calibration_seconds).collect());
        let prepared = &passes[0];
        let encodings: Vec<String> = SCHEMES
            .iter()
            .map(|(label, scheme)| {
                let settings = request(*scheme, 1).settings;
                let seconds = median(
                    (0..rounds)
                        .map(|_| {
                            let start = Instant::now();
                            simulate(&model, prepared, &settings).expect("simulate");
                            start.elapsed().as_secs_f64()
                        })
                        .collect(),
                );
                format!("{label} {:.1} ms", seconds * 1e3)
            })
            .collect();
        println!(
            "  calibration pass {:.1} ms; encodings + simulated model: {}",
            pass * 1e3,
            encodings.join(", ")
        );
        let mut fp32_seconds = Vec::new();
        for batch in [1usize, ANALYSIS_BATCH] {
            let (fp32, w8a8) = compile_pair(&model, &data, batch);
            let (f, q) = paired_eval(&fp32, &w8a8, &data, batch, rounds);
            fp32_seconds.push((batch, f));
            println!(
                "  eval batch {batch:>2}: fp32 {:.1} ms, w8a8 {:.1} ms, ratio {:.2}× (target ≤ 1.5×)",
                f * 1e3,
                q * 1e3,
                q / f
            );
        }
        let req = request(Scheme::TfEnhanced, ANALYSIS_BATCH);
        let runs: Vec<_> = (0..rounds.min(3))
            .map(|_| {
                analyze(
                    &model,
                    &req,
                    &AnalyzeOptions::default(),
                    &CancelToken::new(),
                    &no_progress,
                )
                .expect("analyze")
                .0
            })
            .collect();
        let seconds = median(runs.iter().map(|a| a.seconds).collect());
        let calibration = median(runs.iter().map(|a| a.calibration_seconds).collect());
        println!(
            "  analysis {:.1} ms at batch {ANALYSIS_BATCH}, {:.1} ms of it calibration \
             ({} passes over the data):",
            seconds * 1e3,
            calibration * 1e3,
            runs[0].data_passes
        );
        for (batch, f) in fp32_seconds {
            println!(
                "    = {:.1} FP32 evaluation passes at batch {batch} ({:.1} without calibration)",
                seconds / f,
                (seconds - calibration) / f
            );
        }
    }
}

criterion_group!(benches, calibration, evaluation, analysis, summary);
criterion_main!(benches);
