//! AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
//! Quantization"; AIMET's AdaRound): per layer, learn whether each weight rounds up or down
//! on its quantization grid so the layer's output on calibration data stays close to FP32.
//!
//! - Grids: the weight encodings the simulation computes for the same settings (bits,
//!   per-channel, symmetric, scheme); AdaRound only chooses the rounding, and the encodings
//!   are then frozen (AIMET's `set_and_freeze_param_encodings`).
//! - Inputs: every layer's input captured from the FP32 model in one pass over the
//!   calibration samples and kept as im2col columns, at most `cache_bytes` (64 MB) per
//!   layer: a layer whose columns are larger keeps the first samples that fit. All layers
//!   are captured in the one pass, so the run holds Σ layers of these caches at once.
//! - Layers are independent (FP32 inputs, FP32 targets), so they are optimised on
//!   `threads` workers in parallel; each has its own seeded batch draws, so the result
//!   does not depend on the thread count or order.
//! - Result: the FP32 graph with each rounded weight written in (values exactly on the
//!   grid) plus the frozen encodings; a simulation with those encodings uses exactly these
//!   weights. Layers AdaRound cannot handle (ConvTranspose, Gemm with transA/alpha, …) keep
//!   their FP32 weight and are rounded to nearest by the simulation (reported as skipped).

mod checkpoint;
pub mod linear;
pub mod optimize;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ndarray::{Array2, ArrayD, Axis};
use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{sample_shapes, select_samples, Subset};
use crate::model::graph::Producer;
use crate::model::{Layer, Model};
use crate::quant::encodings_file::{encodings_document, EncodingsVersion};
use crate::quant::per_channel::{per_channel_encodings, per_tensor_encoding};
use crate::quant::points::WeightQuantizer;
use crate::quant::qdq::WeightEncodings;
use crate::quant::simulate::{activation_encodings_for, prepare, QuantsimRequest};
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use linear::LinearOp;
use optimize::{Hyper, Problem, RowGrid};

/// Per-layer budget for cached input columns.
pub const CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaroundOptions {
    pub hyper: Hyper,
    pub cache_bytes: usize,
}

impl AdaroundOptions {
    /// AIMET's defaults for `w_bits`, with `iterations` instead of the default when given.
    pub fn new(w_bits: u8, iterations: Option<usize>) -> AdaroundOptions {
        let mut hyper = Hyper::aimet(w_bits);
        if let Some(n) = iterations {
            hyper.iterations = n;
        }
        AdaroundOptions {
            hyper,
            cache_bytes: CACHE_BYTES,
        }
    }
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRound {
    pub layer: String,
    /// `adarounded`, `loaded` (from a checkpoint), or `skipped: why`.
    pub how: String,
    pub iterations: usize,
    /// Cached samples the layer was optimised on.
    pub samples: usize,
    /// Output MSE on those samples: round-to-nearest and AdaRound.
    pub mse_nearest: Option<f64>,
    pub mse_adaround: Option<f64>,
    /// Fraction of weights rounded differently from nearest.
    pub flipped: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaroundReport {
    pub layers: Vec<LayerRound>,
    pub iterations: usize,
    pub samples: usize,
    /// Layers loaded from checkpoints of an earlier run.
    pub loaded: usize,
    pub seconds: f64,
}

pub struct AdaroundOutcome {
    /// The FP32 graph with the rounded weights.
    pub model: Model,
    /// The frozen weight encodings (every quantized layer, AdaRounded or not).
    pub weights: Vec<WeightEncodings>,
    pub report: AdaroundReport,
}

/// One quantized layer's plan.
struct Planned {
    index: usize,
    quantizer: WeightQuantizer,
    layer: Layer,
    /// The FP32 weight tensor.
    fp32: ArrayD<f32>,
    encodings: WeightEncodings,
    /// The op, or why the layer is left to round-to-nearest.
    op: std::result::Result<LinearOp, String>,
}

/// A rounded weight (original layout) and its report.
type Rounded = (ArrayD<f32>, LayerRound);

/// Input columns of one layer.
struct Cache {
    cols: Vec<Array2<f32>>,
    positions: usize,
    samples: usize,
}

/// AdaRound `model` for `req.settings`. `checkpoints`: the directory for per-layer
/// checkpoints (e.g. `<workspace>/cache/adaround`); `progress(stage, done, total)`.
pub fn adaround(
    model: &Model,
    req: &QuantsimRequest,
    options: &AdaroundOptions,
    checkpoints: Option<&Path>,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<AdaroundOutcome> {
    let start = Instant::now();
    if !req.settings.mode.weights() {
        return Err(Error::input(
            "AdaRound rounds weights: these settings quantize activations only",
        ));
    }
    if options.hyper.iterations == 0 {
        return Err(Error::input("AdaRound needs at least one iteration"));
    }
    let prepared = prepare(model, req, false, cancel, progress)?;
    let data = select_samples(
        &req.data,
        Subset::Calibration,
        req.calibration_size,
        req.seed,
    )?
    .data;
    let plan = plan_layers(model, req, &prepared.layers, &prepared.weights)?;
    let dir =
        checkpoints.map(|root| checkpoint::run_dir(root, &run_key(model, req, options, &data)));

    // Finished layers from an earlier run.
    let mut done: Vec<Option<(ArrayD<f32>, LayerRound)>> = plan
        .iter()
        .map(|p| {
            let dir = dir.as_ref()?;
            p.op.as_ref().ok()?;
            checkpoint::load(
                dir,
                p.index,
                &p.layer.name,
                &p.quantizer.weight,
                &p.quantizer.shape,
            )
            .map(|(w, mut r)| {
                r.how = "loaded".into();
                (w, r)
            })
        })
        .collect();
    let loaded = done.iter().filter(|d| d.is_some()).count();
    let todo: Vec<usize> = (0..plan.len())
        .filter(|&i| plan[i].op.is_ok() && done[i].is_none())
        .collect();
    let caches = capture(model, &plan, &todo, &data, req, options, cancel, progress)?;
    let results = optimise_all(
        &plan,
        &todo,
        caches,
        req,
        options,
        dir.as_deref(),
        cancel,
        progress,
    )?;
    for (i, r) in todo.iter().zip(results) {
        done[*i] = Some(r);
    }

    let mut rounded = model.clone();
    let mut layers = Vec::new();
    for (p, d) in plan.iter().zip(done) {
        match (&p.op, d) {
            (Ok(_), Some((w, report))) => {
                rounded.set_weight(&p.quantizer.weight, w)?;
                layers.push(report);
            }
            (Err(why), _) => layers.push(skipped(&p.layer.name, why)),
            (Ok(_), None) => {
                return Err(Error::runtime(format!(
                    "layer '{}' was not rounded",
                    p.layer.name
                )))
            }
        }
    }
    Ok(AdaroundOutcome {
        model: rounded,
        weights: plan.into_iter().map(|p| p.encodings).collect(),
        report: AdaroundReport {
            layers,
            iterations: options.hyper.iterations,
            samples: data.len(),
            loaded,
            seconds: start.elapsed().as_secs_f64(),
        },
    })
}

fn skipped(layer: &str, why: &str) -> LayerRound {
    LayerRound {
        layer: layer.to_string(),
        how: format!("skipped: {why} (rounded to nearest)"),
        iterations: 0,
        samples: 0,
        mse_nearest: None,
        mse_adaround: None,
        flipped: 0.0,
        seconds: 0.0,
    }
}

/// The quantized layers with their encodings, computed as the simulation computes them.
fn plan_layers(
    model: &Model,
    req: &QuantsimRequest,
    layers: &[Layer],
    quantizers: &[WeightQuantizer],
) -> Result<Vec<Planned>> {
    let settings = &req.settings;
    let mut plan = Vec::new();
    for (index, q) in quantizers.iter().enumerate() {
        let Some(spec) = settings.weight_spec_of(&q.layer, &q.weight)? else {
            continue;
        };
        let layer = layers
            .iter()
            .find(|l| l.name == q.layer)
            .ok_or_else(|| Error::runtime(format!("no layer '{}'", q.layer)))?;
        let w = model.weight(&q.weight).ok_or_else(|| {
            Error::input(format!(
                "layer '{}' has no float weight '{}'",
                q.layer, q.weight
            ))
        })?;
        let context =
            |e: Error| Error::input(format!("weight '{}' of '{}': {e}", q.weight, q.layer));
        let (axis, encodings) = match q.axis.filter(|_| settings.per_channel) {
            Some(axis) => (
                Some(axis),
                per_channel_encodings(w.view(), axis, spec, settings.scheme).map_err(context)?,
            ),
            None => (
                None,
                vec![per_tensor_encoding(w.view(), spec, settings.scheme).map_err(context)?],
            ),
        };
        let op = LinearOp::of(model, layer).and_then(|op| {
            op.weight_matrix(w).map_err(|e| e.to_string())?;
            Ok(op)
        });
        plan.push(Planned {
            index,
            quantizer: q.clone(),
            layer: layer.clone(),
            fp32: w.clone(),
            encodings: WeightEncodings {
                layer: q.layer.clone(),
                weight: q.weight.clone(),
                axis,
                encodings,
            },
            op,
        });
    }
    Ok(plan)
}

/// Everything the rounded weights depend on: model, settings, hyper-parameters, samples.
fn run_key(
    model: &Model,
    req: &QuantsimRequest,
    options: &AdaroundOptions,
    data: &Dataset,
) -> String {
    use sha2::Digest;
    let text = format!(
        "adaround v1\n{}\n{}\n{:?}\n{}\n{}\n{}",
        model.content_hash(),
        serde_json::to_string(&req.settings).unwrap_or_default(),
        options,
        data.fingerprint(),
        req.seed,
        req.calibration_size,
    );
    crate::model::hex(&sha2::Sha256::digest(text.as_bytes()))[..24].to_string()
}

/// One FP32 pass over the calibration samples capturing the inputs of layers `todo`
/// (graph inputs are read from the samples), kept as columns within the cache budget.
#[allow(clippy::too_many_arguments)]
fn capture(
    model: &Model,
    plan: &[Planned],
    todo: &[usize],
    data: &Dataset,
    req: &QuantsimRequest,
    options: &AdaroundOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Vec<Option<Cache>>> {
    let mut caches: Vec<Option<Cache>> = (0..plan.len()).map(|_| None).collect();
    if todo.is_empty() {
        return Ok(caches);
    }
    let mut captured = Vec::new();
    let mut from_data = Vec::new();
    for &i in todo {
        let input = &plan[i].layer.input;
        match model.index().producer(input) {
            Some(Producer::Input) => {
                let slot = data_input(model, data, input)?;
                from_data.push((i, slot));
            }
            _ => {
                if !captured.contains(input) {
                    captured.push(input.clone());
                }
            }
        }
    }
    let n = data.len();
    let budget = options.cache_bytes;
    // Fills layer `i`'s cache with samples `from..` of a batch of its input.
    let fill =
        |caches: &mut Vec<Option<Cache>>, i: usize, from: usize, x: &ArrayD<f32>| -> Result<()> {
            let op = plan[i].op.as_ref().map_err(|e| Error::runtime(e.clone()))?;
            let context =
                |e: Error| Error::runtime(format!("input of layer '{}': {e}", plan[i].layer.name));
            if caches[i].is_none() {
                let sample = &x.shape()[1.min(x.ndim())..];
                op.check_sample(sample).map_err(context)?;
                let positions = op.positions(sample);
                let per_sample = (op.groups() * op.k() * positions * 4).max(1);
                let samples = (budget / per_sample).clamp(1, n.max(1));
                caches[i] = Some(Cache {
                    cols: vec![Array2::zeros((samples * positions, op.k())); op.groups()],
                    positions,
                    samples,
                });
            }
            let cache = caches[i].as_mut().expect("allocated above");
            for (k, sample) in x.axis_iter(Axis(0)).enumerate() {
                let s = from + k;
                if s < cache.samples {
                    op.fill_columns(sample, &mut cache.cols, s * cache.positions)
                        .map_err(context)?;
                }
            }
            Ok(())
        };
    for &(i, slot) in &from_data {
        fill(&mut caches, i, 0, &data.inputs[slot].data)?;
    }
    if !captured.is_empty() {
        let shapes = sample_shapes(data);
        let compiled = CompiledModel::compile(model, &shapes, 16, &captured)?;
        let slot_of = |name: &String| compiled.output_names().iter().position(|o| o == name);
        let routes: Vec<(usize, usize)> = todo
            .iter()
            .filter_map(|&i| slot_of(&plan[i].layer.input).map(|s| (i, s)))
            .filter(|(i, _)| !from_data.iter().any(|(j, _)| j == i))
            .collect();
        let run = RunOptions {
            batch_size: 16,
            threads: req.options.threads,
        };
        compiled.run_dataset_streaming(
            data,
            run,
            cancel,
            &|d, t| progress("caching layer inputs", d, t),
            &mut |from, outs| {
                for &(i, slot) in &routes {
                    fill(&mut caches, i, from, &outs[slot])?;
                }
                Ok(())
            },
        )?;
    }
    Ok(caches)
}

/// Which dataset input feeds graph input `name`.
pub(crate) fn data_input(model: &Model, data: &Dataset, name: &str) -> Result<usize> {
    if let Some(i) = data
        .inputs
        .iter()
        .position(|x| x.name.as_deref() == Some(name))
    {
        return Ok(i);
    }
    // By position among the graph inputs.
    model
        .inputs()
        .iter()
        .position(|v| v.name == name)
        .filter(|&i| i < data.inputs.len())
        .ok_or_else(|| Error::input(format!("the dataset has no samples for input '{name}'")))
}

/// Optimise layers `todo` on worker threads; results in `todo`'s order.
#[allow(clippy::too_many_arguments)]
fn optimise_all(
    plan: &[Planned],
    todo: &[usize],
    caches: Vec<Option<Cache>>,
    req: &QuantsimRequest,
    options: &AdaroundOptions,
    dir: Option<&Path>,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Vec<Rounded>> {
    let caches: Vec<Mutex<Option<Cache>>> = caches.into_iter().map(Mutex::new).collect();
    let results: Vec<Mutex<Option<Rounded>>> = todo.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let workers = req.options.threads.clamp(1, todo.len().max(1));
    let total = todo.len() * options.hyper.iterations;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= todo.len() || failure.lock().map_or(true, |f| f.is_some()) {
                    return;
                }
                let i = todo[k];
                let cache = caches[i].lock().ok().and_then(|mut c| c.take());
                let outcome = cache
                    .ok_or_else(|| {
                        Error::runtime(format!(
                            "no inputs cached for layer '{}'",
                            plan[i].layer.name
                        ))
                    })
                    .and_then(|cache| {
                        let base = finished.load(Ordering::SeqCst) * options.hyper.iterations;
                        let stage = format!("adaround {}", plan[i].layer.name);
                        round_layer(&plan[i], &cache, options, req.seed, cancel, &|t| {
                            progress(&stage, (base + t).min(total), total)
                        })
                    })
                    .and_then(|(w, report)| {
                        if let Some(dir) = dir {
                            checkpoint::store(
                                dir,
                                plan[i].index,
                                &plan[i].quantizer.weight,
                                &w,
                                &report,
                            )?;
                        }
                        Ok((w, report))
                    });
                finished.fetch_add(1, Ordering::SeqCst);
                match outcome {
                    Ok(r) => {
                        if let Ok(mut slot) = results[k].lock() {
                            *slot = Some(r);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            // A cancel elsewhere is not the cause of a real failure.
                            if f.is_none() || matches!(*f, Some(Error::Cancelled)) {
                                *f = Some(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    progress("adaround", total, total);
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .ok_or_else(|| Error::runtime("a layer was not rounded"))
        })
        .collect()
}

/// Optimise one layer; returns its rounded weight (original tensor layout) and report.
fn round_layer(
    p: &Planned,
    cache: &Cache,
    options: &AdaroundOptions,
    seed: u64,
    cancel: &CancelToken,
    progress: &dyn Fn(usize),
) -> Result<(ArrayD<f32>, LayerRound)> {
    let start = Instant::now();
    let op = p.op.as_ref().map_err(|e| Error::runtime(e.clone()))?;
    let context = |e: Error| Error::runtime(format!("layer '{}': {e}", p.layer.name));
    let fp32 = op.weight_matrix(&p.fp32).map_err(context)?;
    let grid = RowGrid::new(&p.encodings.encodings, fp32.nrows());
    let problem = Problem {
        op,
        weight: &fp32,
        grid: &grid,
        cols: &cache.cols,
        positions: cache.positions,
        samples: cache.samples,
    };
    // Distinct, reproducible batch draws per layer.
    let layer_seed = seed ^ (p.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let v = optimize::optimize(&problem, &options.hyper, layer_seed, cancel, progress)?;
    let hard = optimize::hard_weight(&problem, &v);
    let nearest = optimize::nearest_weight(&problem);
    let flipped = hard
        .iter()
        .zip(nearest.iter())
        .filter(|(a, b)| a != b)
        .count() as f64
        / hard.len().max(1) as f64;
    let report = LayerRound {
        layer: p.layer.name.clone(),
        how: "adarounded".into(),
        iterations: options.hyper.iterations,
        samples: cache.samples,
        mse_nearest: Some(optimize::output_mse(&problem, &nearest)),
        mse_adaround: Some(optimize::output_mse(&problem, &hard)),
        flipped,
        seconds: start.elapsed().as_secs_f64(),
    };
    let tensor = op
        .weight_tensor(&hard, &p.quantizer.shape)
        .map_err(context)?;
    Ok((tensor, report))
}

/// The AIMET 1.0.0 encodings document for the rounded model: AdaRound's frozen parameter
/// encodings plus activation encodings calibrated on the rounded model (none in
/// weights-only mode). A quantsim from this file uses exactly the rounded weights.
pub fn frozen_encodings(
    outcome: &AdaroundOutcome,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<serde_json::Value> {
    let activations = if req.settings.mode.activations() {
        let prepared = prepare(&outcome.model, req, true, cancel, progress)?;
        activation_encodings_for(&prepared, &req.settings)?
    } else {
        Default::default()
    };
    encodings_document(&outcome.weights, &activations, EncodingsVersion::V1)
}
