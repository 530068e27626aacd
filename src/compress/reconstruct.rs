//! Layer-wise reconstruction (DESIGN.md §3, fine-tuning path 1): after a compression, refit
//! each changed layer to the FP32 parent's outputs on calibration data by closed-form least
//! squares: no labels, no training framework. Changes are visited in the parent's graph
//! order, so each refit reads its inputs from a model whose upstream layers are already
//! refitted. Of a change's `refit` layers the last one (the one writing the original
//! layer's output value) is refitted; layers before it (the first factor of an SVD split)
//! are kept, since the parent has no value their outputs should match.

use super::activations::{compile_capturing, sample_layer, slot_of};
use super::calibration::CalibrationData;
use super::refit::{current, fit_linear, output_mse, takes_bias, write_fit};
use super::CompressOutcome;
use crate::cancel::CancelToken;
use crate::model::Model;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One refitted layer: its output error against the parent on the sampled positions
/// (the fit's own samples), before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReconstruction {
    /// The original layer (the change's name).
    pub layer: String,
    /// The layer of the compressed model that was refitted.
    pub refit: String,
    /// Sampled output positions the fit used.
    pub samples: usize,
    pub mse_before: f64,
    pub mse_after: f64,
    pub sqnr_before_db: f64,
    pub sqnr_after_db: f64,
    /// False when the fit did not lower the error and the weights were kept.
    pub refitted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionReport {
    pub layers: Vec<LayerReconstruction>,
    /// Calibration samples (images) run.
    pub images: usize,
    pub seconds: f64,
}

fn sqnr_db(signal: f64, mse: f64) -> f64 {
    crate::metrics::clamp_db(10.0 * (signal / mse).log10())
}

/// Refit the changed layers of `outcome.model` to `parent`'s outputs; `progress(stage,
/// done, total)` per layer.
pub fn reconstruct(
    parent: &Model,
    outcome: &CompressOutcome,
    data: &CalibrationData,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Model, ReconstructionReport)> {
    let start = Instant::now();
    data.check_fits(parent)?;
    let parent_layers = parent.layers(&parent.shapes(Some(&data.sample_shapes))?)?;
    let position = |node: usize| parent.index().order().iter().position(|&n| n == node);
    // (graph position, change, parent output value)
    let mut todo = Vec::new();
    for change in &outcome.changes {
        let Some(refit) = change.refit.last() else {
            continue;
        };
        let layer = parent_layers
            .iter()
            .find(|l| l.name == change.layer)
            .ok_or_else(|| {
                Error::input(format!(
                    "{}: the parent has no layer '{}' for the change to refit",
                    parent.source(),
                    change.layer
                ))
            })?;
        todo.push((
            position(layer.node),
            change,
            refit.clone(),
            layer.output.clone(),
        ));
    }
    todo.sort_by_key(|t| t.0);
    let total = todo.len();
    let mut model = outcome.model.clone();
    let mut layers_report = Vec::new();
    if total > 0 {
        let targets: Vec<String> = todo.iter().map(|t| t.3.clone()).collect();
        let compiled = compile_capturing(parent, data, &targets)?;
        for (done, (_, change, refit, value)) in todo.iter().enumerate() {
            progress("layer-wise reconstruction", done, total);
            cancel.check()?;
            let layers = model.layers(&model.shapes(Some(&data.sample_shapes))?)?;
            let layer = layers.iter().find(|l| &l.name == refit).ok_or_else(|| {
                Error::input(format!(
                    "{}: no layer '{refit}' to refit for '{}'",
                    model.source(),
                    change.layer
                ))
            })?;
            let slot = slot_of(&compiled, value)?;
            let (op, samples) = sample_layer(&model, layer, &compiled, slot, data, cancel)?;
            let before = current(&model, layer, &op)?;
            let mse_before = output_mse(&before.weight, before.bias.as_ref(), &samples);
            let fit = fit_linear(&samples, takes_bias(layer))?;
            let mse_after = output_mse(&fit.weight, fit.bias.as_ref(), &samples);
            let signal = samples
                .targets
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / samples.targets.len().max(1) as f64;
            let refitted = mse_after < mse_before;
            if refitted {
                model = write_fit(&model, layer, &op, &fit)?;
            }
            layers_report.push(LayerReconstruction {
                layer: change.layer.clone(),
                refit: refit.clone(),
                samples: samples.len(),
                mse_before,
                mse_after: if refitted { mse_after } else { mse_before },
                sqnr_before_db: sqnr_db(signal, mse_before),
                sqnr_after_db: sqnr_db(signal, mse_after.min(mse_before)),
                refitted,
            });
        }
    }
    progress("layer-wise reconstruction", total, total);
    Ok((
        model,
        ReconstructionReport {
            layers: layers_report,
            images: data.len(),
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}
