//! Channel pruning (DESIGN.md §3): a layer at keep-ratio r keeps `round(r × Cin)` of its
//! input channels, the nodes upstream drop the matching channels (winnowing, down to the
//! producing Conv / Gemm, which loses those output channels), and the pruned layer's
//! weights are refitted by least squares from its inputs in the pruned model to the
//! original layer's outputs on sampled calibration positions.
//!
//! Several layers in one call are pruned in graph order. Each refit then sees the inputs
//! of a model already pruned upstream, and a layer that is both pruned and, later,
//! winnowed by a layer downstream simply loses rows of its refitted weights (least squares
//! fits each output row on its own, so the remaining rows stay optimal). Two pruned layers
//! cannot share a producer: winnowing requires every value on the way up to have a single
//! reader.

pub mod select;
pub mod winnow;

use super::activations::{compile_capturing, sample_layer, slot_of, LayerSamples};
use super::calibration::CalibrationData;
use super::refit::{fit_linear, takes_bias, write_fit};
use super::{
    ChangeDetail, CompressOutcome, Eligibility, LayerChange, LayerCompressor, LayerRatios, Method,
};
use crate::cancel::CancelToken;
use crate::fixes::adaround::linear::LinearOp;
use crate::model::{Layer, Model};
use crate::runtime::CompiledModel;
use crate::{Error, Result};
use ndarray::Axis;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use winnow::{cut, input_axis, winnow_path};

/// How the kept input channels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelSelection {
    /// AIMET's rule: largest Σ W² per input channel.
    Magnitude,
    /// Greedy forward selection on the refitted layer's sampled output error (after He et al.).
    #[default]
    Greedy,
}

pub struct ChannelPruner {
    data: Arc<CalibrationData>,
    selection: ChannelSelection,
}

impl ChannelPruner {
    pub fn new(data: Arc<CalibrationData>, selection: ChannelSelection) -> ChannelPruner {
        ChannelPruner { data, selection }
    }

    pub fn selection(&self) -> ChannelSelection {
        self.selection
    }

    fn layers(&self, model: &Model) -> Result<Vec<Layer>> {
        let shapes = model.shapes(Some(&self.data.shapes_for(model)?))?;
        model.layers(&shapes)
    }

    /// Why `layer` cannot be pruned, if it cannot.
    fn refusal(model: &Model, layer: &Layer, layers: &[Layer]) -> Option<String> {
        if let Err(why) = input_axis(model, layer) {
            return Some(why);
        }
        if let Err(why) = LinearOp::of(model, layer) {
            return Some(why);
        }
        if layer.in_channels < 2 {
            return Some("a single input channel".into());
        }
        if crate::fixes::edit::private_constant(model, layer.node, 1).is_none() {
            return Some("its weight is shared or computed".into());
        }
        winnow_path(model, layer, layers).err()
    }

    /// Prune one layer of `current` (the model pruned so far); `target` holds the original
    /// model's outputs of every layer to prune.
    fn prune_one(
        &self,
        current: &Model,
        name: &str,
        ratio: f64,
        target: &CompiledModel,
        cancel: &CancelToken,
    ) -> Result<(Model, LayerChange)> {
        let layers = self.layers(current)?;
        let layer = find(&layers, name, current)?;
        let path = winnow_path(current, layer, &layers)
            .map_err(|why| Error::input(format!("layer '{name}' cannot be pruned: {why}")))?;
        let total = layer.in_channels;
        let keep = select::keep_count(ratio, total);
        let unchanged = |layer: &Layer| LayerChange {
            layer: name.to_string(),
            ratio,
            macs_before: layer.macs.unwrap_or(0),
            macs_after: layer.macs.unwrap_or(0),
            params_before: layer.params,
            params_after: layer.params,
            detail: ChangeDetail::Channels {
                kept: (0..total).collect(),
                total,
                winnowed: vec![],
            },
            refit: vec![],
        };
        if keep == total {
            return Ok((current.clone(), unchanged(layer)));
        }
        let slot = slot_of(target, &layer.output)?;
        let (op, samples) = sample_layer(current, layer, target, slot, None, &self.data, cancel)?;
        if op.groups() != 1 {
            return Err(Error::input(format!(
                "layer '{name}': grouped layers are not pruned"
            )));
        }
        let kk = op.k() / total;
        let weight = super::refit::current(current, layer, &op)?;
        let kept = match self.selection {
            ChannelSelection::Magnitude => select::by_magnitude(weight.weight.view(), kk, keep),
            ChannelSelection::Greedy => {
                select::by_reconstruction(samples.cols[0].view(), samples.targets.view(), kk, keep)
            }
        };
        cancel.check()?;
        let winnowed = path.winnowed(current);
        let pruned = cut(current, layer, &path, &kept)?;
        // The pruned model's inputs to the layer are the kept channels' rows: winnowing
        // removes channels without changing the others.
        let rows: Vec<usize> = kept.iter().flat_map(|&c| c * kk..(c + 1) * kk).collect();
        let restricted = LayerSamples {
            cols: vec![samples.cols[0].select(Axis(0), &rows)],
            targets: samples.targets,
        };
        let fit = fit_linear(&restricted, takes_bias(layer))?;
        let pruned_layers = self.layers(&pruned)?;
        let pruned_layer = find(&pruned_layers, name, &pruned)?;
        let pruned_op = LinearOp::of(&pruned, pruned_layer)
            .map_err(|why| Error::runtime(format!("pruned layer '{name}': {why}")))?;
        let refitted = write_fit(&pruned, pruned_layer, &pruned_op, &fit)?;
        let after = self.layers(&refitted)?;
        let touched: Vec<&str> = std::iter::once(name)
            .chain(winnowed.iter().map(String::as_str))
            .collect();
        let (macs_before, params_before) = cost(&layers, &touched);
        let (macs_after, params_after) = cost(&after, &touched);
        let change = LayerChange {
            layer: name.to_string(),
            ratio,
            macs_before,
            macs_after,
            params_before,
            params_after,
            detail: ChangeDetail::Channels {
                kept,
                total,
                winnowed,
            },
            refit: vec![name.to_string()],
        };
        Ok((refitted, change))
    }
}

fn find<'a>(layers: &'a [Layer], name: &str, model: &Model) -> Result<&'a Layer> {
    layers
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| Error::input(format!("{}: no layer named '{name}'", model.source())))
}

/// MACs and params of the named layers.
fn cost(layers: &[Layer], names: &[&str]) -> (u64, u64) {
    layers
        .iter()
        .filter(|l| names.contains(&l.name.as_str()))
        .fold((0, 0), |(m, p), l| (m + l.macs.unwrap_or(0), p + l.params))
}

fn total_macs(layers: &[Layer]) -> u64 {
    layers.iter().map(|l| l.macs.unwrap_or(0)).sum()
}

impl LayerCompressor for ChannelPruner {
    fn method(&self) -> Method {
        Method::ChannelPruning
    }

    fn eligible(&self, model: &Model) -> Result<Vec<Eligibility>> {
        let layers = self.layers(model)?;
        Ok(layers
            .iter()
            .map(|l| Eligibility {
                layer: l.name.clone(),
                not_eligible: Self::refusal(model, l, &layers),
            })
            .collect())
    }

    fn apply(
        &self,
        model: &Model,
        ratios: &LayerRatios,
        cancel: &CancelToken,
    ) -> Result<CompressOutcome> {
        self.data.check_fits(model)?;
        let layers = self.layers(model)?;
        let by_name: HashMap<&str, &Layer> = layers.iter().map(|l| (l.name.as_str(), l)).collect();
        for (name, &ratio) in ratios {
            let layer = by_name.get(name.as_str()).ok_or_else(|| {
                Error::input(format!("{}: no layer named '{name}'", model.source()))
            })?;
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(Error::input(format!(
                    "layer '{name}': ratio {ratio} is not in (0, 1]"
                )));
            }
            if ratio < 1.0 {
                if let Some(why) = Self::refusal(model, layer, &layers) {
                    return Err(Error::input(format!(
                        "layer '{name}' cannot be channel-pruned: {why}"
                    )));
                }
            }
        }
        let todo: Vec<(&Layer, f64)> = layers
            .iter()
            .filter_map(|l| ratios.get(&l.name).map(|&r| (l, r)))
            .filter(|(_, r)| *r < 1.0)
            .collect();
        let targets: Vec<String> = todo.iter().map(|(l, _)| l.output.clone()).collect();
        let compiled = if todo.is_empty() {
            None
        } else {
            Some(compile_capturing(model, &self.data, &targets)?)
        };
        let mut current = model.clone();
        let mut changes = Vec::new();
        for (layer, ratio) in &todo {
            cancel.check()?;
            let target = compiled.as_ref().expect("compiled when there is work");
            let (next, change) = self.prune_one(&current, &layer.name, *ratio, target, cancel)?;
            current = next;
            changes.push(change);
        }
        let final_layers = self.layers(&current)?;
        Ok(CompressOutcome {
            macs_before: total_macs(&layers),
            macs_after: total_macs(&final_layers),
            model: current,
            changes,
            skipped: vec![],
        })
    }
}

#[cfg(test)]
mod tests;
