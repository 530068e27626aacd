//! The sensitivity sweep: for every layer, the score with only that layer quantized (its
//! weights and its output quantizer) and with only that layer left FP32 (everything else as
//! in the W+A simulation). Two evaluations per layer, so it is optional; progress per layer,
//! cancellable between evaluations, and checkpointed after each layer so a rerun with the same
//! model, data and settings continues where a killed one stopped.
//!
//! The score is the analysis's metric (`metrics::score_all`): top-1 accuracy with labels on
//! `[N, C]` outputs, else fidelity to FP32 by output shape, or the user's metric command.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::qdq::{build_quantsim_with, ActivationOps, QuantMode, SimModel, WeightConfig};
use super::simulate::{Prepared, QuantsimSettings};
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::sample_shapes;
use crate::fsutil::write_json_atomic;
use crate::metrics::score_all;
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    pub layer: String,
    /// Score with only this layer quantized.
    pub only_this_quantized: f64,
    /// Score with every layer but this one quantized.
    pub only_this_fp32: f64,
}

/// The checkpoint file: results so far for one key (model + data + settings).
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    key: String,
    results: Vec<Sensitivity>,
}

pub struct SweepInput<'a> {
    pub model: &'a Model,
    pub prepared: &'a Prepared,
    pub settings: &'a QuantsimSettings,
    /// The W+A simulation whose encodings every sweep model reuses.
    pub sim: &'a SimModel,
    pub data: &'a Dataset,
    /// The FP32 model's first output on `data` (name, array), the fidelity reference.
    pub fp32: &'a [(String, ndarray::ArrayD<f32>)],
    /// The metric the scores are taken with.
    pub scoring: &'a crate::metrics::Scoring,
    pub options: RunOptions,
    /// Checkpoint file and the key its results must match.
    pub checkpoint: Option<(&'a Path, String)>,
}

/// Run the sweep; `progress(done, total)` counts layers.
pub fn sensitivity_sweep(
    input: &SweepInput,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<Sensitivity>> {
    let mut results = load_checkpoint(input.checkpoint.as_ref());
    let layers: Vec<_> = input
        .prepared
        .weights
        .iter()
        .filter(|q| input.sim.weights.iter().any(|w| w.weight == q.weight))
        .collect();
    let total = layers.len();
    for (done, q) in layers.iter().enumerate() {
        progress(done, total);
        if results.iter().any(|r| r.layer == q.layer) {
            continue;
        }
        cancel.check()?;
        let output = input
            .prepared
            .layers
            .iter()
            .position(|l| l.name == q.layer)
            .and_then(|i| input.prepared.layer_outputs[i].clone());
        let spec = input
            .settings
            .weight_spec_of(&q.layer, &q.weight)?
            .ok_or_else(|| Error::runtime(format!("layer '{}' is not quantized", q.layer)))?;
        let config = WeightConfig {
            spec,
            scheme: input.settings.weight_scheme_for(spec),
            per_channel: input.settings.per_channel,
        };
        // Only this layer: its weights and output quantizer.
        let only: BTreeMap<_, _> = output
            .iter()
            .filter_map(|v| input.sim.activations.get(v).map(|e| (v.clone(), *e)))
            .collect();
        let only_this_quantized = score(input, &[((*q).clone(), config)], &only, cancel)?;
        cancel.check()?;
        // All but this layer.
        let mut rest = input.sim.activations.clone();
        if let Some(v) = &output {
            rest.remove(v);
        }
        let others: Vec<_> = input
            .prepared
            .weights
            .iter()
            .filter(|o| o.layer != q.layer)
            .filter_map(|o| {
                let spec = input.settings.weight_spec_of(&o.layer, &o.weight).ok()??;
                Some((o.clone(), WeightConfig { spec, ..config }))
            })
            .collect();
        let only_this_fp32 = score(input, &others, &rest, cancel)?;
        results.push(Sensitivity {
            layer: q.layer.clone(),
            only_this_quantized,
            only_this_fp32,
        });
        if let Some((path, key)) = &input.checkpoint {
            write_json_atomic(
                path,
                &Checkpoint {
                    key: key.clone(),
                    results: results.clone(),
                },
            )?;
        }
    }
    progress(total, total);
    // Report in layer order whatever order the checkpoint held them in.
    let order: Vec<&str> = layers.iter().map(|q| q.layer.as_str()).collect();
    results.retain(|r| order.contains(&r.layer.as_str()));
    results.sort_by_key(|r| order.iter().position(|l| *l == r.layer));
    Ok(results)
}

/// Results of an earlier run with the same key; anything unreadable starts afresh.
fn load_checkpoint(checkpoint: Option<&(&Path, String)>) -> Vec<Sensitivity> {
    let Some((path, key)) = checkpoint else {
        return Vec::new();
    };
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Checkpoint>(&bytes).ok())
        .filter(|c| c.key == *key)
        .map(|c| c.results)
        .unwrap_or_default()
}

fn score(
    input: &SweepInput,
    weights: &[(super::points::WeightQuantizer, WeightConfig)],
    activations: &BTreeMap<String, super::Encoding>,
    cancel: &CancelToken,
) -> Result<f64> {
    let sim = build_quantsim_with(
        input.model,
        weights,
        activations,
        QuantMode::WeightsAndActivations,
        ActivationOps::Auto,
    )?;
    let shapes = sample_shapes(input.model, input.data)?;
    let compiled = CompiledModel::compile(&sim.model, &shapes, input.options.batch_size, &[])?;
    let run = compiled.run_dataset(input.data, input.options, cancel, &|_, _| {})?;
    let first = run
        .outputs
        .into_iter()
        .next()
        .ok_or_else(|| Error::runtime("the model produced no output"))?;
    let name = input
        .fp32
        .first()
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    let score = score_all(
        &[(name, first)],
        input.data.labels.as_deref(),
        Some(input.fp32),
        input.scoring,
        cancel,
    )?;
    Ok(score.value().unwrap_or(0.0))
}
