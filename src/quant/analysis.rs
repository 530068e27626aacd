//! Per-layer quantization analysis (diagnosis) in a fixed number of passes over the data,
//! whatever the number of layers:
//!
//! 1. calibration (one pass of the FP32 model, histograms);
//! 2. one joint pass over the evaluation samples of four models, batch by batch: the probe
//!    (FP32 + isolated copies of every layer, see [`super::probe`]) and the simulations in
//!    the modes weights-only, activations-only and W+A.
//!
//! From the joint pass: the four scores (FP32 / W / A / W+A) and, per layer, the output SQNR
//! against FP32 of each simulation (cumulative: every layer before it quantized too) and of
//! the isolated copies. Static columns come from the weights and encodings: per-channel
//! weight ranges and the activation range and encoding. The optional sensitivity sweep
//! ([`super::sweep`]) costs one evaluation per layer and mode and runs separately.

use std::time::Instant;

use ndarray::{ArrayD, ArrayViewD, Axis};
use serde::{Deserialize, Serialize};

use super::calibration::RangeSpread;
use super::float_op_advice::{self, FloatOpAdvice, TrialInput};
use super::probe::build_probe;
use super::qdq::{QuantMode, SimModel};
use super::simulate::{prepare, simulate, Prepared, QuantsimRequest, QuantsimSettings};
use super::sweep::{sensitivity_sweep, Sensitivity, SweepInput};
use super::Encoding;
use crate::cancel::CancelToken;
use crate::experiment::evaluate::{check_fits, sample_shapes, select_samples, Subset};
use crate::metrics::{clamp_db, score_all, Score};
use crate::model::graph::node_label;
use crate::model::{Layer, Model};
use crate::runtime::{run_together_fold, CompiledModel};
use crate::{Error, Result};

/// The diagnosis of one model at one set of quantsim settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub settings: QuantsimSettings,
    pub step: String,
    /// Evaluation samples the scores and SQNRs are measured on.
    pub samples: usize,
    pub dataset_fingerprint: String,
    pub scores: ModeScores,
    pub layers: Vec<LayerAnalysis>,
    /// Passes over the data: calibration, then the joint pass. The joint pass runs the probe
    /// (FP32 plus two copies of every layer) and three simulations, so in compute it costs
    /// several FP32 passes (the quantsim bench measures how many).
    pub data_passes: usize,
    pub calibration_seconds: f64,
    pub seconds: f64,
    /// The sensitivity sweep, when it was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Vec<Sensitivity>>,
    /// Every activation quantizer point (layers' outputs or not, e.g. a Concat), with how
    /// unevenly its range spreads over channels or Concat inputs; `flagged` when one scale
    /// cannot serve them all ([`WIDE_RANGE_RATIO`]).
    #[serde(default)]
    pub activations: Vec<ActivationAnalysis>,
    /// Per graph output: SQNR of the W+A simulation against FP32, over the whole output and
    /// for its worst channel (one SQNR for the model can hide a destroyed channel group).
    #[serde(default)]
    pub outputs: Vec<OutputAnalysis>,
    /// The op types kept in float that buy back most of the W+A score, measured
    /// ([`super::float_op_advice`]), and the `--fp32-ops` flag to pass.
    #[serde(default)]
    pub float_ops: FloatOpAdvice,
}

/// A range spread above this (widest channel or Concat input range over the median or
/// narrowest one) is flagged: at 8 bit the narrow channels keep 256 / ratio grid steps or
/// fewer (under 4 bits' worth above 16).
pub const WIDE_RANGE_RATIO: f64 = 16.0;

/// One activation quantizer point in the diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationAnalysis {
    pub value: String,
    /// The producing node (None for a graph input) and its op.
    pub node: Option<String>,
    pub op: String,
    pub observed_min: f32,
    pub observed_max: f32,
    /// None when kept FP32.
    pub encoding: Option<Encoding>,
    /// The most uneven spread of the range (None when nothing could be measured).
    pub spread: Option<RangeSpread>,
    /// `spread.ratio`, the `act_rng` column.
    pub act_rng: Option<f64>,
    /// Quantized with `act_rng` above [`WIDE_RANGE_RATIO`].
    pub flagged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// Why no quantizer sits here although a runtime would place one (the mixed-range
    /// Concat rule, [`super::mixed_range`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_fp32: Option<String>,
}

/// The noise of one graph output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputAnalysis {
    pub output: String,
    pub sqnr_db: Option<f64>,
    /// Channels are along this axis (1) when the output has one with more than one index.
    pub channel_axis: Option<usize>,
    pub worst_channel: Option<usize>,
    pub worst_channel_sqnr_db: Option<f64>,
}

/// Scores of the FP32 model and of the three simulation modes on the same samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeScores {
    pub fp32: Score,
    pub weights_only: Score,
    pub activations_only: Score,
    pub weights_and_activations: Score,
}

/// One row of the quant-noise table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAnalysis {
    pub layer: String,
    pub op: String,
    /// The value the SQNRs are measured on (the end of the layer's group).
    pub output: Option<String>,
    /// Output SQNR vs FP32 with the whole model quantized (W+A), weights only, activations
    /// only.
    pub sqnr_db: Option<f64>,
    pub sqnr_weights_db: Option<f64>,
    pub sqnr_activations_db: Option<f64>,
    /// Output SQNR with only this layer quantized (input, weights, output), and with only
    /// its weights quantized.
    pub sqnr_isolated_db: Option<f64>,
    pub sqnr_isolated_weights_db: Option<f64>,
    /// Weight bitwidth used (None: left FP32 by an override).
    pub weight_bits: Option<u8>,
    pub weights: WeightRanges,
    pub activation: Option<ActivationRange>,
}

/// Per-channel weight ranges along the output-channel axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightRanges {
    pub min: f32,
    pub max: f32,
    /// `[min, max]` per output channel (one entry for a per-tensor layer).
    pub channels: Vec<[f32; 2]>,
    /// Widest channel range over the median channel range: large values are what CLE fixes.
    pub max_median_ratio: f64,
}

/// The observed range of a layer's output and the encoding the simulation gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRange {
    pub observed_min: f32,
    pub observed_max: f32,
    pub encoding: Option<Encoding>,
    /// Widest channel range over the median one (see [`ActivationAnalysis::act_rng`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_rng: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// Also run the sensitivity sweep (two evaluations per layer).
    pub sweep: bool,
    /// Where the sweep checkpoints (a workspace's `cache/`); none: no resume.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// Run the analysis. `progress(stage, done, total)`.
pub fn analyze(
    model: &Model,
    req: &QuantsimRequest,
    options: &AnalyzeOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Analysis, Prepared)> {
    let start = Instant::now();
    let prepared = prepare(model, req, true, cancel, progress)?;
    let with_mode = |mode| QuantsimSettings {
        mode,
        ..req.settings.clone()
    };
    let sim_w = simulate(model, &prepared, &with_mode(QuantMode::WeightsOnly))?;
    let sim_a = simulate(model, &prepared, &with_mode(QuantMode::ActivationsOnly))?;
    let sim_wa = simulate(
        model,
        &prepared,
        &with_mode(QuantMode::WeightsAndActivations),
    )?;
    let probe = build_probe(model, &prepared, &sim_wa)?;
    cancel.check()?;

    let selected = select_samples(
        &req.data,
        Subset::Evaluation,
        req.calibration_size,
        req.seed,
    )?;
    let mut scoring = crate::experiment::evaluate::scoring_for(
        &req.data,
        &selected,
        Subset::Evaluation,
        &req.metric,
    );
    scoring.states = crate::metrics::state_outputs::state_outputs(model);
    let data = selected.data;
    check_fits(model, &data)?;
    let shapes = sample_shapes(model, &data)?;
    // Captured in the probe: each layer's FP32 output and its isolated copies.
    let outputs: Vec<Option<String>> = prepared.layer_outputs.clone();
    let reference_names: Vec<String> = outputs.iter().flatten().cloned().collect();
    let mut probe_names = reference_names.clone();
    for v in probe.values.iter().flatten() {
        probe_names.push(v.isolated.clone());
        probe_names.push(v.isolated_weights.clone());
    }
    let batch = req.options.batch_size.max(1);
    let compiled_probe = CompiledModel::compile(&probe.model, &shapes, batch, &probe_names)?;
    let sims = [&sim_w, &sim_a, &sim_wa];
    let compiled_sims = sims
        .iter()
        .map(|s| CompiledModel::compile(&s.model, &shapes, batch, &reference_names))
        .collect::<Result<Vec<_>>>()?;
    let mut models = vec![&compiled_probe];
    models.extend(compiled_sims.iter());

    let slot = |c: &CompiledModel, name: &str| c.output_names().iter().position(|n| n == name);
    let layer_slots: Vec<Option<LayerSlots>> = prepared
        .layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let out = outputs[i].as_ref()?;
            let iso = probe.values[i].as_ref();
            Some(LayerSlots {
                reference: slot(&compiled_probe, out)?,
                sims: compiled_sims
                    .iter()
                    .map(|c| slot(c, out))
                    .collect::<Option<Vec<_>>>()?,
                isolated: iso.and_then(|v| slot(&compiled_probe, &v.isolated)),
                isolated_weights: iso.and_then(|v| slot(&compiled_probe, &v.isolated_weights)),
            })
        })
        .collect();

    let output_names = model.output_names();
    // Each worker sums the noise of its own batches (the per-layer comparisons touch every
    // captured activation and would otherwise run one batch at a time under a lock).
    let (parts, _) = run_together_fold(
        &models,
        &data,
        crate::runtime::RunOptions {
            batch_size: batch,
            threads: req.options.threads,
        },
        cancel,
        &|d, t| progress("analysis", d, t),
        &|| JointSums::new(prepared.layers.len(), output_names.len(), models.len()),
        &|sums, from, outs| sums.add(&layer_slots, from, &outs),
    )?;
    let mut joint = JointSums::new(prepared.layers.len(), output_names.len(), models.len());
    for part in parts {
        joint.merge(part);
    }
    let JointSums {
        noise,
        outputs: output_sums,
        logits,
    } = joint;

    let labels = data.labels.as_deref();
    // The graph outputs of each run (FP32, W, A, W+A), scored with the request's metric.
    let outs: Vec<Vec<(String, ArrayD<f32>)>> = logits
        .into_iter()
        .map(|parts| stack_outputs(parts, &output_names))
        .collect::<Result<_>>()?;
    let fp32 = score_all(&outs[0], labels, None, &scoring, cancel)?;
    let score = |k: usize| score_all(&outs[k], labels, Some(&outs[0]), &scoring, cancel);
    let scores = ModeScores {
        fp32,
        weights_only: score(1)?,
        activations_only: score(2)?,
        weights_and_activations: score(3)?,
    };

    let float_ops = float_op_advice::measure(
        &TrialInput {
            model,
            prepared: &prepared,
            settings: &with_mode(QuantMode::WeightsAndActivations),
            data: &data,
            shapes: &shapes,
            fp32: &outs[0],
            baseline: scores.weights_and_activations.value().unwrap_or(f64::NAN),
            metric: scores
                .weights_and_activations
                .metric_name()
                .unwrap_or("score"),
            scoring: &scoring,
            options: crate::runtime::RunOptions {
                batch_size: batch,
                threads: req.options.threads,
            },
        },
        cancel,
    )?;
    let layers = prepared
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| layer_row(model, &prepared, &sim_wa, layer, i, &noise[i]))
        .collect::<Result<Vec<_>>>()?;
    let activations = activation_rows(
        model,
        &prepared,
        &sim_wa,
        &with_mode(QuantMode::WeightsAndActivations),
    );
    let outputs = output_names
        .iter()
        .zip(&output_sums)
        .map(|(name, sums)| sums.analysis(name))
        .collect();
    let sweep = if options.sweep {
        let key = sweep_key(model, &data, req)?;
        let path = options
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("sensitivity-{}.json", &key[..16])));
        let input = SweepInput {
            model,
            prepared: &prepared,
            settings: &req.settings,
            sim: &sim_wa,
            data: &data,
            fp32: &outs[0],
            scoring: &scoring,
            options: req.options,
            checkpoint: path.as_deref().map(|p| (p, key.clone())),
        };
        Some(sensitivity_sweep(&input, cancel, &|d, t| {
            progress("sweep", d, t)
        })?)
    } else {
        None
    };
    Ok((
        Analysis {
            step: req.settings.step(),
            settings: req.settings.clone(),
            samples: data.len(),
            dataset_fingerprint: data.fingerprint()?,
            scores,
            layers,
            data_passes: 2,
            activations,
            outputs,
            calibration_seconds: prepared.calibration_seconds,
            seconds: start.elapsed().as_secs_f64(),
            sweep,
            float_ops,
        },
        prepared,
    ))
}

/// What a sweep checkpoint must match: model, evaluation data, settings and split.
fn sweep_key(model: &Model, data: &crate::data::Dataset, req: &QuantsimRequest) -> Result<String> {
    use sha2::Digest;
    let text = format!(
        "{}|{}|{}|{}|{}",
        model.content_hash(),
        data.fingerprint()?,
        req.settings.step(),
        req.calibration_size,
        req.seed
    );
    // Scores by another metric are other scores (`auto` keeps the keys it always had).
    let text = if req.metric == crate::metrics::MetricSpec::default() {
        text
    } else {
        format!("{text}|{}", req.metric.label())
    };
    Ok(sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

struct LayerSlots {
    reference: usize,
    sims: Vec<usize>,
    isolated: Option<usize>,
    isolated_weights: Option<usize>,
}

/// Σ reference² and Σ (reference − test)² per comparison, in f64.
#[derive(Debug, Clone, Default)]
struct NoiseSums {
    measured: bool,
    signal: f64,
    /// Weights-only, activations-only, W+A.
    sims: [f64; 3],
    isolated: f64,
    isolated_weights: f64,
}

impl NoiseSums {
    fn merge(&mut self, other: &NoiseSums) {
        self.measured |= other.measured;
        self.signal += other.signal;
        for (s, o) in self.sims.iter_mut().zip(other.sims) {
            *s += o;
        }
        self.isolated += other.isolated;
        self.isolated_weights += other.isolated_weights;
    }
}

/// What the joint pass accumulates over batches: per-layer noise, per-output noise, and
/// each model's graph outputs per batch (for the scores, which take every output as
/// quantsim's do, so both commands report the same figures).
struct JointSums {
    noise: Vec<NoiseSums>,
    outputs: Vec<OutputSums>,
    logits: Vec<Vec<(usize, Vec<ArrayD<f32>>)>>,
}

impl JointSums {
    fn new(layers: usize, outputs: usize, models: usize) -> JointSums {
        JointSums {
            noise: vec![NoiseSums::default(); layers],
            outputs: vec![OutputSums::default(); outputs],
            logits: vec![Vec::new(); models],
        }
    }

    /// One batch: `outs[0]` is the probe's outputs, `outs[1..]` the W, A and W+A sims'.
    fn add(
        &mut self,
        layer_slots: &[Option<LayerSlots>],
        from: usize,
        outs: &[Vec<ArrayD<f32>>],
    ) -> Result<()> {
        let graph_outputs = self.outputs.len();
        for (m, o) in outs.iter().enumerate() {
            self.logits[m].push((from, o[..graph_outputs.min(o.len())].to_vec()));
        }
        for (k, sums) in self.outputs.iter_mut().enumerate() {
            if let (Some(r), Some(q)) = (outs[0].get(k), outs[3].get(k)) {
                sums.add(r.view(), q.view())?;
            }
        }
        for (sums, slots) in self.noise.iter_mut().zip(layer_slots) {
            let Some(s) = slots else { continue };
            sums.measured = true;
            let reference = outs[0][s.reference].view();
            sums.signal += sum_sq(reference.view());
            for (k, &slot) in s.sims.iter().enumerate() {
                sums.sims[k] += diff_sq(reference.view(), outs[k + 1][slot].view())?;
            }
            if let Some(slot) = s.isolated {
                sums.isolated += diff_sq(reference.view(), outs[0][slot].view())?;
            }
            if let Some(slot) = s.isolated_weights {
                sums.isolated_weights += diff_sq(reference.view(), outs[0][slot].view())?;
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: JointSums) {
        for (s, o) in self.noise.iter_mut().zip(&other.noise) {
            s.merge(o);
        }
        for (s, o) in self.outputs.iter_mut().zip(&other.outputs) {
            s.merge(o);
        }
        for (s, o) in self.logits.iter_mut().zip(other.logits) {
            s.extend(o);
        }
    }
}

fn sum_sq(a: ArrayViewD<f32>) -> f64 {
    // Contiguous values (the usual case) as a slice: the same sum in the same order, without
    // the n-dimensional iterator, which dominated big models' analysis in debug builds.
    if let Some(a) = a.as_slice() {
        let mut sum = 0.0;
        for &x in a {
            sum += (x as f64) * (x as f64);
        }
        return sum;
    }
    a.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

fn diff_sq(a: ArrayViewD<f32>, b: ArrayViewD<f32>) -> Result<f64> {
    if a.shape() != b.shape() {
        return Err(Error::runtime(format!(
            "compared values have shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    if let (Some(a), Some(b)) = (a.as_slice(), b.as_slice()) {
        let mut sum = 0.0;
        for (&x, &y) in a.iter().zip(b) {
            let d = x as f64 - y as f64;
            sum += d * d;
        }
        return Ok(sum);
    }
    Ok(a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum())
}

fn db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        return clamp_db(f64::INFINITY);
    }
    clamp_db(10.0 * (signal / noise).log10())
}

/// The batches' first outputs in sample order, as `[N, C]`.
/// Each named output's batches joined in sample order.
fn stack_outputs(
    mut parts: Vec<(usize, Vec<ArrayD<f32>>)>,
    names: &[String],
) -> Result<Vec<(String, ArrayD<f32>)>> {
    parts.sort_by_key(|(from, _)| *from);
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let views = parts
                .iter()
                .map(|(_, a)| a.get(k).map(|a| a.view()))
                .collect::<Option<Vec<ArrayViewD<f32>>>>()
                .ok_or_else(|| Error::runtime(format!("a run lacks output '{name}'")))?;
            let joined = ndarray::concatenate(Axis(0), &views)
                .map_err(|e| Error::runtime(format!("stacking output '{name}': {e}")))?;
            Ok((name.clone(), joined))
        })
        .collect()
}

fn layer_row(
    model: &Model,
    prepared: &Prepared,
    sim: &SimModel,
    layer: &Layer,
    i: usize,
    noise: &NoiseSums,
) -> Result<LayerAnalysis> {
    let output = prepared.layer_outputs[i].clone();
    let has_iso = sim.weights.iter().any(|w| w.layer == layer.name);
    let sqnr = |n: f64, ok: bool| (noise.measured && ok).then(|| db(noise.signal, n));
    let axis = prepared
        .weights
        .iter()
        .find(|q| q.weight == layer.weight)
        .and_then(|q| q.axis);
    let weight = model.weight(&layer.weight).ok_or_else(|| {
        Error::runtime(format!(
            "layer '{}' has no weight '{}'",
            layer.name, layer.weight
        ))
    })?;
    let activation = output
        .as_ref()
        .and_then(|v| prepared.histograms.get(v).map(|h| (v, h)))
        .and_then(|(v, h)| {
            h.range().map(|(lo, hi)| ActivationRange {
                observed_min: lo,
                observed_max: hi,
                encoding: sim.activations.get(v).cloned(),
                act_rng: prepared
                    .channel_stats
                    .get(v)
                    .and_then(|s| s.spread())
                    .map(|s| s.ratio),
            })
        });
    Ok(LayerAnalysis {
        layer: layer.name.clone(),
        op: layer.kind.label().to_string(),
        sqnr_db: sqnr(noise.sims[2], true),
        sqnr_weights_db: sqnr(noise.sims[0], true),
        sqnr_activations_db: sqnr(noise.sims[1], true),
        sqnr_isolated_db: sqnr(noise.isolated, has_iso),
        sqnr_isolated_weights_db: sqnr(noise.isolated_weights, has_iso),
        weight_bits: sim
            .weights
            .iter()
            .find(|w| w.weight == layer.weight)
            .and_then(|w| w.encodings.first())
            .map(|e| e.bitwidth),
        weights: weight_ranges(weight.view(), axis),
        activation,
        output,
    })
}

/// Σ reference² and Σ (reference − test)² of one graph output, whole and per channel (axis 1).
#[derive(Debug, Clone, Default)]
struct OutputSums {
    signal: f64,
    noise: f64,
    channels: Vec<(f64, f64)>,
    measured: bool,
}

impl OutputSums {
    fn add(&mut self, r: ArrayViewD<f32>, q: ArrayViewD<f32>) -> Result<()> {
        self.noise += diff_sq(r.view(), q.view())?;
        self.signal += sum_sq(r.view());
        self.measured = true;
        if r.ndim() >= 2 && r.shape()[1] > 1 {
            let n = r.shape()[1];
            if self.channels.is_empty() {
                self.channels = vec![(0.0, 0.0); n];
            }
            if self.channels.len() == n {
                for (c, (rc, qc)) in r.axis_iter(Axis(1)).zip(q.axis_iter(Axis(1))).enumerate() {
                    self.channels[c].0 += sum_sq(rc.view());
                    self.channels[c].1 += diff_sq(rc.view(), qc.view())?;
                }
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: &OutputSums) {
        if !other.measured {
            return;
        }
        self.signal += other.signal;
        self.noise += other.noise;
        self.measured = true;
        if self.channels.is_empty() {
            self.channels = other.channels.clone();
        } else if self.channels.len() == other.channels.len() {
            for (s, o) in self.channels.iter_mut().zip(&other.channels) {
                s.0 += o.0;
                s.1 += o.1;
            }
        }
    }

    fn analysis(&self, name: &str) -> OutputAnalysis {
        let worst = self
            .channels
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| *s > 0.0)
            .map(|(c, (s, n))| (c, db(*s, *n)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        OutputAnalysis {
            output: name.to_string(),
            sqnr_db: self.measured.then(|| db(self.signal, self.noise)),
            channel_axis: (!self.channels.is_empty()).then_some(1),
            worst_channel: worst.map(|w| w.0),
            worst_channel_sqnr_db: worst.map(|w| w.1),
        }
    }
}

/// One row per activation point, with its range spread and, when flagged, what to do.
fn activation_rows(
    model: &Model,
    prepared: &Prepared,
    sim: &SimModel,
    settings: &QuantsimSettings,
) -> Vec<ActivationAnalysis> {
    let kept = prepared.kept_fp32(settings);
    prepared
        .points
        .iter()
        .map(|p| {
            let (observed_min, observed_max) = prepared
                .histograms
                .get(&p.value)
                .and_then(|h| h.range())
                .unwrap_or((0.0, 0.0));
            let encoding = sim.activations.get(&p.value).cloned();
            let spread = prepared
                .channel_stats
                .get(&p.value)
                .and_then(|s| s.spread());
            let act_rng = spread.as_ref().map(|s| s.ratio);
            let flagged = encoding.is_some() && act_rng.is_some_and(|r| r > WIDE_RANGE_RATIO);
            let node = p.node.map(|n| node_label(model.graph(), n));
            let kept_fp32 = kept
                .iter()
                .find(|k| k.value == p.value)
                .map(|k| k.reason.clone());
            let advice = flagged.then(|| {
                let s = spread.as_ref().expect("flagged has a spread");
                let bits = encoding.map(|e| e.bitwidth).unwrap_or(8);
                let steps = ((1u64 << bits) as f64 / s.ratio).max(1.0);
                let name = node.clone().unwrap_or_else(|| p.value.clone());
                let what = if s.inputs.is_empty() {
                    format!(
                        "its channels (axis {}) span {:.0}× different ranges",
                        s.axis, s.ratio
                    )
                } else {
                    let parts: Vec<String> = s
                        .inputs
                        .iter()
                        .map(|(n, r)| format!("'{n}' [{:.3}, {:.3}]", r[0], r[1]))
                        .collect();
                    format!("it joins {} under one scale", parts.join(" and "))
                };
                format!(
                    "{what}: the narrow ones keep about {steps:.0} of {} steps; keep FP32 \
                     (--fp32 {name}) or per-channel",
                    1u64 << bits
                )
            });
            ActivationAnalysis {
                value: p.value.clone(),
                node,
                op: p.producer_op.clone(),
                observed_min,
                observed_max,
                encoding,
                spread,
                act_rng,
                flagged,
                advice,
                kept_fp32,
            }
        })
        .collect()
}

/// Per-channel `[min, max]` along `axis` (the whole tensor when `None`).
pub fn weight_ranges(w: ArrayViewD<f32>, axis: Option<usize>) -> WeightRanges {
    let min_max = |values: &mut dyn Iterator<Item = &f32>| {
        values.fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], &v| {
            [lo.min(v), hi.max(v)]
        })
    };
    let channels: Vec<[f32; 2]> = match axis {
        Some(a) if a < w.ndim() => w
            .axis_iter(Axis(a))
            .map(|c| min_max(&mut c.iter()))
            .collect(),
        _ => vec![min_max(&mut w.iter())],
    };
    WeightRanges::from_channels(channels)
}

impl WeightRanges {
    /// The summary of per-channel `[min, max]` pairs (computed however suits the caller).
    pub fn from_channels(channels: Vec<[f32; 2]>) -> WeightRanges {
        let min = channels.iter().map(|c| c[0]).fold(f32::INFINITY, f32::min);
        let max = channels
            .iter()
            .map(|c| c[1])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut widths: Vec<f64> = channels.iter().map(|c| (c[1] - c[0]) as f64).collect();
        widths.sort_by(|a, b| a.total_cmp(b));
        let median = widths.get(widths.len() / 2).copied().unwrap_or(0.0);
        let widest = widths.last().copied().unwrap_or(0.0);
        WeightRanges {
            min,
            max,
            channels,
            max_median_ratio: if median > 0.0 { widest / median } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::points::tests::sample_model;
    use crate::quant::simulate::quantsim;
    use crate::quant::simulate::tests::request;
    use crate::runtime::RunOptions;

    fn w4a8() -> QuantsimSettings {
        QuantsimSettings {
            w_bits: 4,
            ..QuantsimSettings::default()
        }
    }

    #[test]
    fn mbv2_w4a8_table_is_consistent_with_quantsim() {
        let model = sample_model("mbv2_digits.onnx");
        let req = request(w4a8());
        let cancel = CancelToken::new();
        let (a, prepared) = analyze(
            &model,
            &req,
            &AnalyzeOptions::default(),
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        assert_eq!(a.layers.len(), prepared.layers.len());
        assert_eq!(a.samples, 400);
        assert!((a.scores.fp32.accuracy.unwrap() - 0.9925).abs() < 1e-9);
        // The W+A score is the quantsim job's score at the same settings.
        let q = quantsim(&model, &req, &cancel, &|_, _, _| {}).unwrap();
        assert_eq!(
            a.scores.weights_and_activations.accuracy,
            q.report.score.accuracy
        );
        for l in &a.layers {
            for db in [
                l.sqnr_db,
                l.sqnr_weights_db,
                l.sqnr_activations_db,
                l.sqnr_isolated_db,
                l.sqnr_isolated_weights_db,
            ] {
                let db = db.unwrap_or_else(|| panic!("{}: missing SQNR", l.layer));
                assert!(
                    db.is_finite() && db > 0.0 && db < 100.0,
                    "{}: {db}",
                    l.layer
                );
            }
            assert_eq!(l.weight_bits, Some(4));
            assert!(l.weights.max_median_ratio >= 1.0);
            assert!(l.activation.as_ref().unwrap().encoding.is_some());
        }
        // At the first layer nothing upstream is quantized but its input: the cumulative
        // noise is the isolated noise, and weights-only cumulative is isolated-weights.
        let first = &a.layers[0];
        assert!(
            (first.sqnr_db.unwrap() - first.sqnr_isolated_db.unwrap()).abs() < 0.1,
            "{first:?}"
        );
        assert!(
            (first.sqnr_weights_db.unwrap() - first.sqnr_isolated_weights_db.unwrap()).abs() < 0.01,
            "{first:?}"
        );
        // Noise accumulates: deeper layers are noisier with everything quantized than alone.
        let last = a.layers.last().unwrap();
        assert!(
            last.sqnr_db.unwrap() < last.sqnr_isolated_db.unwrap(),
            "{last:?}"
        );
    }

    /// `x` [N, 4, 8] → MatMul → Mul(scale) → Add(bias) → a HardSwish written out as
    /// paddle2onnx writes it (Add 3 → Clip 0..6 → Mul x → Div 6) → MatMul → `y`: the first
    /// layer's group is a DAG of seven nodes (the Mul reads the Clip and the Add(bias)).
    fn affine_hardswish_layers() -> Model {
        use crate::model::builder::ProtoBuilder;
        use ndarray::{arr0, Array2};
        let mut rng = crate::quant::test_data::Rng::new(3);
        let w1 = Array2::from_shape_fn((8, 8), |_| rng.normal()).into_dyn();
        let w2 = Array2::from_shape_fn((8, 8), |_| rng.normal()).into_dyn();
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[4, 8])
            .initializer("w1", &w1)
            .initializer("w2", &w2)
            .initializer("scale", &arr0(1.5f32).into_dyn())
            .initializer("bias", &arr0(0.25f32).into_dyn())
            .initializer("three", &arr0(3.0f32).into_dyn())
            .initializer("zero", &arr0(0.0f32).into_dyn())
            .initializer("six", &arr0(6.0f32).into_dyn())
            .node("MatMul", "mm1", &["x", "w1"], &["h"], vec![])
            .node("Mul", "scale1", &["h", "scale"], &["hs"], vec![])
            .node("Add", "bias1", &["hs", "bias"], &["hb"], vec![])
            .node("Add", "plus3", &["hb", "three"], &["s"], vec![])
            .node("Clip", "relu6", &["s", "zero", "six"], &["r"], vec![])
            .node("Mul", "times_x", &["hb", "r"], &["p"], vec![])
            .node("Div", "by6", &["p", "six"], &["a"], vec![])
            .node("MatMul", "mm2", &["a", "w2"], &["y"], vec![])
            .output("y");
        b.model("affine_hardswish").unwrap()
    }

    #[test]
    fn a_layers_isolated_copy_spans_its_whole_group_up_to_a_written_out_hardswish() {
        let model = affine_hardswish_layers();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::quant::test_data::Rng::new(7);
        let x = ndarray::Array3::from_shape_fn((64, 4, 8), |_| rng.normal()).into_dyn();
        crate::data::write_npy_f32(&dir.path().join("inputs.npy"), &x).unwrap();
        let req = QuantsimRequest {
            data: dir.path().to_path_buf(),
            calibration_size: 32,
            seed: 0,
            settings: QuantsimSettings::default(),
            options: RunOptions::default(),
            metric: Default::default(),
        };
        let (a, _) = analyze(
            &model,
            &req,
            &AnalyzeOptions::default(),
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        let first = &a.layers[0];
        assert_eq!(first.output.as_deref(), Some("a"), "{first:?}");
        // Nothing before the first layer has weights: its weights-only noise alone is the
        // cumulative weights-only noise, when the copy computes what the group computes
        // (a copy stopping at the Add(bias) was ~0 dB here against the HardSwish's output).
        let (cumulative, isolated) = (
            first.sqnr_weights_db.unwrap(),
            first.sqnr_isolated_weights_db.unwrap(),
        );
        assert!(
            isolated > 25.0 && (cumulative - isolated).abs() < 0.01,
            "cumulative {cumulative} dB, isolated {isolated} dB"
        );
    }

    /// A detector head's last Concat (boxes and sigmoid scores) as the graph output.
    fn yolo_like() -> Model {
        let mut b = crate::model::fixtures::boxes_and_scores_head();
        b.output("det");
        b.model("yolo-like").unwrap()
    }

    /// `analyze` of the yolo-like head on 64 random samples (32 calibrating) under `settings`.
    fn analyze_yolo_like(settings: QuantsimSettings) -> Analysis {
        let model = yolo_like();
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::quant::test_data::Rng::new(7);
        let x = ndarray::Array3::from_shape_fn((64, 4, 16), |_| rng.normal()).into_dyn();
        crate::data::write_npy_f32(&dir.path().join("inputs.npy"), &x).unwrap();
        let req = QuantsimRequest {
            data: dir.path().to_path_buf(),
            calibration_size: 32,
            seed: 0,
            settings,
            options: RunOptions::default(),
            metric: Default::default(),
        };
        analyze(
            &model,
            &req,
            &AnalyzeOptions::default(),
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap()
        .0
    }

    #[test]
    fn a16_flagged_puts_the_flagged_tensor_alone_on_16_bits_and_repairs_its_channels() {
        // The mixed-range rule off, so the boxes-and-scores Concat is quantized and flagged.
        let eight = QuantsimSettings {
            mixed_range_factor: None,
            ..QuantsimSettings::default()
        };
        let run = analyze_yolo_like;
        let bits = |a: &Analysis, v: &str| {
            let row = a.activations.iter().find(|x| x.value == v).unwrap();
            row.encoding.as_ref().map(|e| e.bitwidth)
        };
        let a = run(eight.clone());
        let b = run(QuantsimSettings {
            a16_flagged: true,
            ..eight
        });
        assert_eq!(bits(&a, "det"), Some(8));
        assert_eq!(bits(&b, "det"), Some(16));
        for v in ["x", "boxes", "scores"] {
            assert_eq!(bits(&b, v), Some(8), "{v} is not flagged");
        }
        let worst = |a: &Analysis| a.outputs[0].worst_channel_sqnr_db.unwrap();
        assert!(
            worst(&a) < 10.0 && worst(&b) > 30.0,
            "{} → {}",
            worst(&a),
            worst(&b)
        );
        assert!(
            b.settings.step().contains(",a16:flagged"),
            "{}",
            b.settings.step()
        );
    }

    #[test]
    fn a_concat_of_boxes_and_scores_is_flagged_and_keeping_it_fp32_repairs_the_scores() {
        // The mixed-range rule off: the Concat is quantized as a runtime would by default.
        let rule_off = QuantsimSettings {
            mixed_range_factor: None,
            a16_flagged: false,
            ..QuantsimSettings::default()
        };
        use crate::quant::simulate::LayerOverride;
        let run = analyze_yolo_like;
        let a = run(rule_off.clone());
        let row = |a: &Analysis, v: &str| a.activations.iter().find(|x| x.value == v).cloned();
        let det = row(&a, "det").unwrap();
        assert!(det.flagged, "{det:?}");
        let spread = det.spread.as_ref().unwrap();
        assert_eq!(spread.over, "concat inputs");
        assert!(spread.ratio > 100.0, "{spread:?}");
        assert!(
            det.advice.as_deref().unwrap().contains("--fp32 detect"),
            "{det:?}"
        );
        for v in ["x", "boxes", "scores"] {
            assert!(!row(&a, v).unwrap().flagged, "{v}");
        }
        // One SQNR for the output looks fine; its score channels (4..8) are destroyed.
        let out = &a.outputs[0];
        assert_eq!(out.output, "det");
        assert!(out.sqnr_db.unwrap() > 20.0, "{out:?}");
        assert!(out.worst_channel_sqnr_db.unwrap() < 10.0, "{out:?}");
        assert!(out.worst_channel.unwrap() >= 4, "{out:?}");
        // Keeping the Concat FP32: the scores keep their own 8-bit grid.
        let b = run(QuantsimSettings {
            overrides: vec![LayerOverride {
                layer: "detect".into(),
                skip: true,
                ..Default::default()
            }],
            ..rule_off
        });
        let det = row(&b, "det").unwrap();
        assert!(det.encoding.is_none() && !det.flagged, "{det:?}");
        assert!(det.kept_fp32.is_none(), "kept by the user, not the rule");
        assert!(
            b.outputs[0].worst_channel_sqnr_db.unwrap() > 30.0,
            "{:?}",
            b.outputs[0]
        );
        // The default settings: the mixed-range rule leaves it unquantized, says why, and
        // the scores keep their grid.
        let c = run(QuantsimSettings::default());
        let det = row(&c, "det").unwrap();
        assert!(det.encoding.is_none() && !det.flagged, "{det:?}");
        assert!(
            det.kept_fp32.as_deref().unwrap().contains("mixed-range"),
            "{det:?}"
        );
        for v in ["boxes", "scores"] {
            assert!(row(&c, v).unwrap().encoding.is_some(), "{v} keeps its own");
        }
        assert!(
            c.outputs[0].worst_channel_sqnr_db.unwrap() > 30.0,
            "{:?}",
            c.outputs[0]
        );
    }

    #[test]
    fn probe_keeps_the_fp32_function() {
        use crate::experiment::evaluate::{sample_shapes, select_samples, Subset};
        let model = sample_model("mbv2_digits.onnx");
        let req = request(w4a8());
        let cancel = CancelToken::new();
        let prepared = prepare(&model, &req, true, &cancel, &|_, _, _| {}).unwrap();
        let sim = simulate(&model, &prepared, &req.settings).unwrap();
        let probe = build_probe(&model, &prepared, &sim).unwrap();
        assert_eq!(probe.values.iter().flatten().count(), prepared.layers.len());
        let data = select_samples(&req.data, Subset::Evaluation, 200, 0)
            .unwrap()
            .data
            .subset(&(0..32).collect::<Vec<_>>());
        let shapes = sample_shapes(&model, &data).unwrap();
        let run = |m: &Model| {
            CompiledModel::compile(m, &shapes, 8, &[])
                .unwrap()
                .run_dataset(&data, RunOptions::default(), &cancel, &|_, _| {})
                .unwrap()
                .outputs
                .remove(0)
        };
        assert_eq!(run(&model), run(&probe.model));
    }

    #[test]
    fn sweep_scores_every_layer_and_resumes_from_its_checkpoint() {
        let model = sample_model("mbv2_digits.onnx");
        let req = request(w4a8());
        let dir = tempfile::tempdir().unwrap();
        let options = AnalyzeOptions {
            sweep: true,
            cache_dir: Some(dir.path().to_path_buf()),
        };
        let (a, prepared) =
            analyze(&model, &req, &options, &CancelToken::new(), &|_, _, _| {}).unwrap();
        let sweep = a.sweep.unwrap();
        assert_eq!(sweep.len(), prepared.layers.len());
        for s in &sweep {
            assert!((0.0..=1.0).contains(&s.only_this_quantized), "{s:?}");
            assert!((0.0..=1.0).contains(&s.only_this_fp32), "{s:?}");
        }
        // W4 on one layer hurts less than W4 everywhere.
        let wa = a.scores.weights_and_activations.accuracy.unwrap();
        assert!(
            sweep.iter().all(|s| s.only_this_quantized >= wa),
            "{sweep:?} vs {wa}"
        );
        // Every layer is in the checkpoint: a rerun evaluates nothing (a cancelled token
        // would stop the first evaluation) and returns the same results.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let cancelled = CancelToken::new();
        let (again, _) = analyze(
            &model,
            &req,
            &AnalyzeOptions {
                sweep: false,
                ..options.clone()
            },
            &cancelled,
            &|_, _, _| {},
        )
        .unwrap();
        assert!(again.sweep.is_none());
        let data = select_samples(&req.data, Subset::Evaluation, 200, 0)
            .unwrap()
            .data;
        let sim = simulate(&model, &prepared, &req.settings).unwrap();
        let fp32 = vec![(
            "logits".to_string(),
            ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[data.len(), 10])),
        )];
        let scoring = crate::metrics::Scoring::default();
        cancelled.cancel();
        let key = sweep_key(&model, &data, &req).unwrap();
        let path = dir.path().join(format!("sensitivity-{}.json", &key[..16]));
        let input = SweepInput {
            model: &model,
            prepared: &prepared,
            settings: &req.settings,
            sim: &sim,
            data: &data,
            fp32: &fp32,
            scoring: &scoring,
            options: req.options,
            checkpoint: Some((&path, key.clone())),
        };
        let resumed = sensitivity_sweep(&input, &cancelled, &|_, _| {}).unwrap();
        assert_eq!(resumed, sweep);
    }
}
