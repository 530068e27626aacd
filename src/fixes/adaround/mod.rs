//! AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
//! Quantization"; AIMET's AdaRound): per layer, learn whether each weight rounds up or down
//! on its quantization grid so the layer's output on calibration data stays close to FP32.
//!
//! - Grids: the weight encodings the simulation computes for the same settings (bits,
//!   per-channel, symmetric, scheme); AdaRound only chooses the rounding, and the encodings
//!   are then frozen (AIMET's `set_and_freeze_param_encodings`).
//! - Order and inputs (AIMET's): layers one after another in graph order; a layer's input
//!   comes from the weights-only simulation in which every earlier layer already holds its
//!   rounded weight (layers AdaRound skips: rounded to nearest), activations unquantized;
//!   its target is the FP32 model's output of the layer. Both pass through the activation
//!   that directly follows the layer (Relu, Clip, Sigmoid, Tanh, Softmax, PRelu) before the
//!   loss. The FP32 outputs of all layers are captured in one pass; a layer's simulated
//!   inputs when its turn comes (one simulation pass per layer). Per layer at most
//!   `cache_bytes` (64 MB) of input columns and targets are kept: a layer whose samples are
//!   larger keeps the first samples that fit.
//! - Each iteration draws `batch_size` (32) distinct cached samples with a seeded generator
//!   per layer, so a run is reproducible for a seed.
//! - Result: the FP32 graph with each rounded weight written in (values exactly on the
//!   grid) plus the frozen encodings; a simulation with those encodings uses exactly these
//!   weights. Layers AdaRound cannot handle (ConvTranspose, Gemm with transA/alpha, …) keep
//!   their FP32 weight and are rounded to nearest by the simulation (reported as skipped).

pub mod activation;
mod capture;
mod checkpoint;
pub mod linear;
pub mod optimize;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Instant;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{select_samples, Subset};
use crate::model::{Layer, Model};
use crate::quant::encodings_file::{encodings_document, EncodingsVersion};
use crate::quant::per_channel::{
    fake_quant_tensor, fake_quant_weight, per_channel_encodings, per_tensor_encoding,
};
use crate::quant::points::WeightQuantizer;
use crate::quant::qdq::WeightEncodings;
use crate::quant::simulate::{activation_encodings_for, prepare, QuantsimRequest};
use crate::{Error, Result};
use activation::Activation;
use capture::{Inputs, Target};
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
    /// The activation both outputs pass before the loss (`none`, `Relu`, `Clip`, …).
    #[serde(default)]
    pub activation: String,
    /// Output MSE (after the activation, inputs from the simulation) on those samples:
    /// round-to-nearest and AdaRound.
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
    let dir = checkpoints
        .map(|root| {
            Ok::<_, Error>(checkpoint::run_dir(
                root,
                &run_key(model, req, options, &data)?,
            ))
        })
        .transpose()?;

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
    let mut todo: Vec<usize> = (0..plan.len())
        .filter(|&i| plan[i].op.is_ok() && done[i].is_none())
        .collect();
    // Graph order even when the file lists nodes otherwise: a layer's producers go first.
    let order = model.index().order();
    let rank = |node: usize| order.iter().position(|&n| n == node).unwrap_or(usize::MAX);
    todo.sort_by_key(|&i| rank(plan[i].layer.node));
    let mut targets = capture::targets(
        model,
        &plan,
        &todo,
        &data,
        options.cache_bytes,
        req,
        cancel,
        progress,
    )?;
    // The weights-only simulation: skipped layers rounded to nearest, finished ones rounded.
    let mut sim = model.clone();
    for (p, d) in plan.iter().zip(&done) {
        match (&p.op, d) {
            (_, Some((w, _))) => sim.set_weight(&p.quantizer.weight, w.clone())?,
            (Err(_), None) => sim.set_weight(&p.quantizer.weight, nearest_tensor(p)?)?,
            (Ok(_), None) => {}
        }
    }
    let total = todo.len() * options.hyper.iterations;
    for (k, &i) in todo.iter().enumerate() {
        cancel.check()?;
        let p = &plan[i];
        let target = targets[i]
            .take()
            .ok_or_else(|| Error::runtime(format!("no target for layer '{}'", p.layer.name)))?;
        let inputs = capture::inputs(&sim, p, &data, target.samples, req, cancel, progress)?;
        let stage = format!("adaround {}", p.layer.name);
        let base = k * options.hyper.iterations;
        let (w, report) = round_layer(
            model,
            p,
            &inputs,
            &target,
            options,
            req.seed,
            cancel,
            &|t| progress(&stage, base + t, total),
        )?;
        if let Some(dir) = dir.as_deref() {
            checkpoint::store(dir, p.index, &p.quantizer.weight, &w, &report)?;
        }
        sim.set_weight(&p.quantizer.weight, w.clone())?;
        done[i] = Some((w, report));
    }
    progress("adaround", total, total);

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
        activation: String::new(),
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
                per_channel_encodings(w.view(), axis, spec, settings.weight_scheme_for(spec))
                    .map_err(context)?,
            ),
            None => (
                None,
                vec![
                    per_tensor_encoding(w.view(), spec, settings.weight_scheme_for(spec))
                        .map_err(context)?,
                ],
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
) -> Result<String> {
    use sha2::Digest;
    let text = format!(
        "adaround v2 sequential\n{}\n{}\n{:?}\n{}\n{}\n{}",
        model.content_hash(),
        serde_json::to_string(&req.settings).unwrap_or_default(),
        options,
        data.fingerprint()?,
        req.seed,
        req.calibration_size,
    );
    Ok(crate::model::hex(&sha2::Sha256::digest(text.as_bytes()))[..24].to_string())
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

/// Layer `p`'s weight rounded to nearest on its grid, as the simulation rounds it.
fn nearest_tensor(p: &Planned) -> Result<ArrayD<f32>> {
    let mut w = p.fp32.clone();
    match p.encodings.axis {
        Some(axis) => fake_quant_weight(&mut w, &p.encodings.encodings, axis)?,
        None => fake_quant_tensor(&mut w, &p.encodings.encodings[0]),
    }
    Ok(w)
}

/// Optimise one layer; returns its rounded weight (original tensor layout) and report.
#[allow(clippy::too_many_arguments)]
fn round_layer(
    model: &Model,
    p: &Planned,
    inputs: &Inputs,
    target: &Target,
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
    let bias = capture::bias_of(model, p, op)?;
    let act = Activation::following(model, &p.layer);
    let problem = Problem {
        op,
        weight: &fp32,
        bias: &bias,
        grid: &grid,
        cols: &inputs.cols,
        target: &target.rows,
        act: &act,
        positions: target.positions,
        samples: target.samples,
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
        samples: target.samples,
        activation: act.name().to_string(),
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
