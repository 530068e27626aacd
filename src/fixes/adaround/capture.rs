//! What AdaRound optimises a layer on (AIMET's `ActivationSampler`): the FP32 model's output
//! of the layer as target, captured for every layer in one pass, and the layer's input from
//! the simulation in which the layers before it already hold their rounded weights, captured
//! when the layer's turn comes. Both keep the same first samples, at most the cache budget.

use ndarray::{Array2, ArrayD, Axis};

use super::activation::Activation;
use super::linear::LinearOp;
use super::Planned;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::sample_shapes;
use crate::model::graph::Producer;
use crate::model::Model;
use crate::quant::simulate::QuantsimRequest;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};

/// A layer's FP32 output after its activation, one row per position: `[samples · positions, out]`.
pub struct Target {
    pub rows: Array2<f32>,
    pub samples: usize,
    pub positions: usize,
}

/// A layer's input columns from the simulation, per group `[samples · positions, K]`.
pub struct Inputs {
    pub cols: Vec<Array2<f32>>,
}

/// How many samples of layer `op` (per-sample input shape `sample`) fit in `budget` bytes of
/// columns and targets, at most `n`.
fn samples_within(op: &LinearOp, sample: &[usize], budget: usize, n: usize) -> usize {
    let positions = op.positions(sample);
    let per_sample = ((op.groups() * op.k() + op.out_channels()) * positions * 4).max(1);
    (budget / per_sample).clamp(1, n.max(1))
}

/// The per-sample input shape of layer `p`.
fn sample_shape(p: &Planned) -> Result<Vec<usize>> {
    p.layer
        .input_shape
        .as_ref()
        .and_then(|s| {
            s.iter()
                .skip(1)
                .map(|d| match d {
                    crate::model::Dim::Known(v) => Some(*v),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or_else(|| {
            Error::runtime(format!(
                "layer '{}': the input shape is not known",
                p.layer.name
            ))
        })
}

/// A batch of the layer's output (batch on axis 0, channels on axis 1 for a conv, last for
/// dense) as rows `[batch · positions, out]`.
fn output_rows(op: &LinearOp, y: &ArrayD<f32>) -> Result<Array2<f32>> {
    let out = op.out_channels();
    let bad = |e: ndarray::ShapeError| Error::runtime(format!("layer output {:?}: {e}", y.shape()));
    match op {
        LinearOp::Conv(_) => {
            let b = y.shape().first().copied().unwrap_or(0);
            let positions = y.len() / (b * out).max(1);
            let y = y
                .to_shape((b, out, positions))
                .map_err(bad)?
                .permuted_axes([0, 2, 1])
                .as_standard_layout()
                .into_owned();
            y.into_shape_with_order((b * positions, out)).map_err(bad)
        }
        LinearOp::Dense { .. } => Ok(y
            .to_shape((y.len() / out.max(1), out))
            .map_err(bad)?
            .into_owned()),
    }
}

/// The layer's bias, one value per output channel (zeros without one).
pub fn bias_of(model: &Model, p: &Planned, op: &LinearOp) -> Result<Vec<f32>> {
    let out = op.out_channels();
    let Some(name) = p.layer.bias.as_ref() else {
        return Ok(vec![0.0; out]);
    };
    let b = model.weight(name).ok_or_else(|| {
        Error::input(format!(
            "layer '{}': bias '{name}' is not a float initializer",
            p.layer.name
        ))
    })?;
    let node = &model.graph().node[p.layer.node];
    let beta = if node.op_type == "Gemm" {
        crate::model::attrs::float(node, "beta").unwrap_or(1.0)
    } else {
        1.0
    };
    match b.len() {
        1 => Ok(vec![b.iter().next().copied().unwrap_or(0.0) * beta; out]),
        n if n == out => Ok(b.iter().map(|v| v * beta).collect()),
        _ => Err(Error::input(format!(
            "layer '{}': bias '{name}' of shape {:?} is not one value per output channel",
            p.layer.name,
            b.shape()
        ))),
    }
}

/// One FP32 pass over `data` capturing the activated outputs of layers `todo`.
#[allow(clippy::too_many_arguments)]
pub fn targets(
    model: &Model,
    plan: &[Planned],
    todo: &[usize],
    data: &Dataset,
    budget: usize,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Vec<Option<Target>>> {
    let mut targets: Vec<Option<Target>> = (0..plan.len()).map(|_| None).collect();
    if todo.is_empty() {
        return Ok(targets);
    }
    let n = data.len();
    let mut wanted = Vec::new();
    for &i in todo {
        let op = plan[i].op.as_ref().map_err(|e| Error::runtime(e.clone()))?;
        let sample = sample_shape(&plan[i])?;
        let samples = samples_within(op, &sample, budget, n);
        let positions = op.positions(&sample);
        targets[i] = Some(Target {
            rows: Array2::zeros((samples * positions, op.out_channels())),
            samples,
            positions,
        });
        if !wanted.contains(&plan[i].layer.output) {
            wanted.push(plan[i].layer.output.clone());
        }
    }
    let shapes = sample_shapes(model, data)?;
    let compiled = CompiledModel::compile(model, &shapes, 16, &wanted)?;
    let routes: Vec<(usize, usize)> = todo
        .iter()
        .filter_map(|&i| {
            let slot = compiled
                .output_names()
                .iter()
                .position(|o| *o == plan[i].layer.output)?;
            Some((i, slot))
        })
        .collect();
    let run = RunOptions {
        batch_size: 16,
        threads: req.options.threads,
    };
    compiled.run_dataset_streaming(
        data,
        run,
        cancel,
        &|d, t| progress("caching FP32 layer outputs", d, t),
        &mut |from, outs| {
            for &(i, slot) in &routes {
                let (p, t) = (&plan[i], targets[i].as_mut().expect("allocated above"));
                if from >= t.samples {
                    continue;
                }
                let op = p.op.as_ref().map_err(|e| Error::runtime(e.clone()))?;
                let rows = output_rows(op, &outs[slot])
                    .map_err(|e| Error::runtime(format!("layer '{}': {e}", p.layer.name)))?;
                let keep = (t.samples - from).min(outs[slot].shape()[0]) * t.positions;
                let at = from * t.positions;
                let act = Activation::following(model, &p.layer);
                for (src, mut dst) in rows
                    .rows()
                    .into_iter()
                    .take(keep)
                    .zip(t.rows.rows_mut().into_iter().skip(at))
                {
                    act.forward(
                        src.to_slice().expect("standard layout"),
                        dst.as_slice_mut().expect("standard layout"),
                    );
                }
            }
            Ok(())
        },
    )?;
    Ok(targets)
}

/// Layer `p`'s input columns for the first `samples` samples, run through `sim` (or read
/// from the samples when the layer reads a graph input).
pub fn inputs(
    sim: &Model,
    p: &Planned,
    data: &Dataset,
    samples: usize,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Inputs> {
    let op = p.op.as_ref().map_err(|e| Error::runtime(e.clone()))?;
    let context = |e: Error| Error::runtime(format!("input of layer '{}': {e}", p.layer.name));
    let sample = sample_shape(p)?;
    op.check_sample(&sample).map_err(context)?;
    let positions = op.positions(&sample);
    let mut cols = vec![Array2::zeros((samples * positions, op.k())); op.groups()];
    let mut fill = |from: usize, x: &ArrayD<f32>| -> Result<()> {
        for (k, one) in x.axis_iter(Axis(0)).enumerate() {
            let s = from + k;
            if s < samples {
                op.fill_columns(one, &mut cols, s * positions)
                    .map_err(context)?;
            }
        }
        Ok(())
    };
    let input = &p.layer.input;
    if let Some(Producer::Input) = sim.index().producer(input) {
        // Graph inputs come from the samples, a batch at a time (the data stream).
        let slot = super::data_input(sim, data, input)?;
        let stream = &data.inputs[slot].data;
        let wanted = samples.min(stream.len());
        for from in (0..wanted).step_by(64) {
            fill(from, &stream.read_range(from..(from + 64).min(wanted))?)?;
        }
    } else {
        let shapes = sample_shapes(sim, data)?;
        let compiled = CompiledModel::compile(sim, &shapes, 16, std::slice::from_ref(input))?;
        let slot = compiled
            .output_names()
            .iter()
            .position(|o| o == input)
            .ok_or_else(|| Error::runtime(format!("no value '{input}' to capture")))?;
        let run = RunOptions {
            batch_size: 16,
            threads: req.options.threads,
        };
        compiled.run_dataset_streaming(
            data,
            run,
            cancel,
            &|d, t| progress(&format!("simulating inputs of {}", p.layer.name), d, t),
            &mut |from, outs| {
                if from < samples {
                    fill(from, &outs[slot])?;
                }
                Ok(())
            },
        )?;
    }
    Ok(Inputs { cols })
}
