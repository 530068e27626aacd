//! The diagnosis's float-op measurement: which op types, kept in float (`--fp32-ops`), buy
//! back most of the W+A score, and the exact flag to pass.
//!
//! Quantization keeps every op type on integer grids by default (the export is then an
//! all-integer graph where a runtime has the kernels). The candidates are the op types ONNX
//! Runtime's QDQ quantizer has no int8 kernel for and leaves in float ([`CANDIDATES`]: a
//! power spectrum's `Pow`/`Sqrt`, `Log`, `Exp`, `Reciprocal`, recurrent cells). Keeping one in
//! float here also removes the quantizer on what feeds it (a Conv's output, see
//! [`super::float_ops`]), so that producer runs in float too in ORT: a cost the default does
//! not take silently. Instead the analysis measures each candidate present (alone, then all
//! of them together), one evaluation each, and names the best when it gains.

use std::collections::BTreeSet;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use super::float_ops::float_op_points;
use super::simulate::{simulate, LayerOverride, Prepared, QuantsimSettings};
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::metrics::{score_all, Scoring};
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};

/// Op types without an int8 kernel in ONNX Runtime's QDQ registry, worth measuring in float.
pub const CANDIDATES: [&str; 8] = [
    "Pow",
    "Sqrt",
    "Log",
    "Exp",
    "Reciprocal",
    "LSTM",
    "GRU",
    "RNN",
];

/// A gain below this (in the metric's unit: a fraction, or dB for `sqnr`) is not advice.
const MIN_GAIN: f64 = 0.005;

/// One measured set of op types kept in float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatOpTrial {
    pub ops: Vec<String>,
    /// Activation quantizers this removes.
    pub quantizers: usize,
    /// The W+A score (the request's metric) with them in float.
    pub metric_value: f64,
    /// Over the W+A score without them.
    pub gain: f64,
}

/// The trials and, when the best gains at least [`MIN_GAIN`], the advice naming its flag.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatOpAdvice {
    pub trials: Vec<FloatOpTrial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// What the analysis measures with.
pub struct TrialInput<'a> {
    pub model: &'a Model,
    pub prepared: &'a Prepared,
    pub settings: &'a QuantsimSettings,
    pub data: &'a Dataset,
    pub shapes: &'a [Vec<usize>],
    pub fp32: &'a [(String, ArrayD<f32>)],
    /// The W+A score without extra float ops.
    pub baseline: f64,
    pub metric: &'a str,
    pub scoring: &'a Scoring,
    pub options: RunOptions,
}

/// The candidate sets to measure on this model: each candidate op type present that removes
/// a quantizer the settings keep, alone, then all of them together (when more than one).
pub fn candidate_sets(
    model: &Model,
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<Vec<(Vec<String>, BTreeSet<String>)>> {
    if !settings.mode.activations() {
        return Ok(Vec::new());
    }
    let present: BTreeSet<&str> = model
        .graph()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    let mut sets = Vec::new();
    for op in CANDIDATES {
        if !present.contains(op) || settings.fp32_ops.iter().any(|o| o == op) {
            continue;
        }
        let points = float_op_points(model, &prepared.points, &[op.to_string()])?;
        let points: BTreeSet<String> = points
            .into_iter()
            .filter(|p| !prepared.fp32_op_points.contains(p) && !settings.keeps_fp32(p))
            .collect();
        if !points.is_empty() {
            sets.push((vec![op.to_string()], points));
        }
    }
    if sets.len() > 1 {
        let ops: Vec<String> = sets.iter().flat_map(|(o, _)| o.clone()).collect();
        let points: BTreeSet<String> = sets.iter().flat_map(|(_, p)| p.clone()).collect();
        sets.push((ops, points));
    }
    Ok(sets)
}

/// Measure every candidate set (one evaluation each) and advise the best.
pub fn measure(input: &TrialInput, cancel: &CancelToken) -> Result<FloatOpAdvice> {
    let sets = candidate_sets(input.model, input.prepared, input.settings)?;
    let mut trials = Vec::new();
    for (ops, points) in sets {
        cancel.check()?;
        // The removed quantizers as keep-FP32 overrides by value: the same points the
        // settings' own `fp32_ops` would remove, on the quantizers already placed.
        let mut settings = input.settings.clone();
        settings
            .overrides
            .extend(points.iter().map(|p| LayerOverride {
                layer: p.clone(),
                skip: true,
                ..Default::default()
            }));
        let sim = simulate(input.model, input.prepared, &settings)?;
        let compiled = CompiledModel::compile(
            &sim.model,
            input.shapes,
            input.options.batch_size.max(1),
            &[],
        )?;
        let run = compiled.run_dataset(input.data, input.options, cancel, &|_, _| {})?;
        let outputs: Vec<(String, ArrayD<f32>)> = compiled
            .output_names()
            .iter()
            .cloned()
            .zip(run.outputs)
            .collect();
        if outputs.is_empty() {
            return Err(Error::runtime("the model produced no output"));
        }
        let score = score_all(
            &outputs,
            input.data.labels.as_deref(),
            Some(input.fp32),
            input.scoring,
            cancel,
        )?;
        let value = score.value().unwrap_or(f64::NAN);
        trials.push(FloatOpTrial {
            ops,
            quantizers: points.len(),
            metric_value: value,
            gain: value - input.baseline,
        });
    }
    let advice = best(&trials).map(|t| {
        format!(
            "--fp32-ops {}: W+A {} {} → {} ({} quantizer(s) left float; their producers run \
             in float in an integer runtime too)",
            t.ops.join(","),
            input.metric,
            round(input.baseline),
            round(t.metric_value),
            t.quantizers
        )
    });
    Ok(FloatOpAdvice { trials, advice })
}

/// The trial with the highest score, if it gains at least [`MIN_GAIN`]; on a tie the one
/// with fewer op types (listed first).
fn best(trials: &[FloatOpTrial]) -> Option<&FloatOpTrial> {
    trials
        .iter()
        .filter(|t| t.gain.is_finite() && t.gain >= MIN_GAIN)
        .fold(None, |b: Option<&FloatOpTrial>, t| match b {
            Some(b) if b.metric_value >= t.metric_value => Some(b),
            _ => Some(t),
        })
}

fn round(v: f64) -> String {
    format!("{v:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builder::ProtoBuilder;
    use crate::quant::analysis::{analyze, AnalyzeOptions};
    use crate::quant::simulate::QuantsimRequest;
    use crate::quant::test_data::Rng;
    use ndarray::{Array2, IxDyn};

    /// A power spectrum before its Log, as a melspectrogram computes it: `x` (magnitudes
    /// over six decades) → MatMul (identity) → Pow 2 → Add 1e-6 → Log → MatMul → `[N, 4]`.
    /// On 8 bits the quiet bins round to 0 before the Log.
    fn power_log_model() -> Model {
        let mut rng = Rng::new(7);
        let eye = Array2::<f32>::eye(8).into_dyn();
        let head = ArrayD::from_shape_fn(IxDyn(&[8, 4]), |_| rng.normal());
        let scalar = |v: f32| ArrayD::from_elem(IxDyn(&[]), v);
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[8])
            .initializer("stft.weight", &eye)
            .initializer("two", &scalar(2.0))
            .initializer("eps", &scalar(1e-6))
            .initializer("head.weight", &head)
            .node("MatMul", "stft", &["x", "stft.weight"], &["spec"], vec![])
            .node("Pow", "power", &["spec", "two"], &["power"], vec![])
            .node("Add", "floor", &["power", "eps"], &["floored"], vec![])
            .node("Log", "log", &["floored"], &["logmel"], vec![])
            .node("MatMul", "head", &["logmel", "head.weight"], &["y"], vec![])
            .output("y");
        b.model("power_log").unwrap()
    }

    #[test]
    fn the_analysis_measures_the_float_ops_and_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(11);
        let x = ArrayD::from_shape_fn(IxDyn(&[64, 8]), |_| {
            10f32.powf(6.0 * rng.uniform() as f32 - 3.0)
        });
        crate::data::write_npy_f32(&dir.path().join("inputs.npy"), &x).unwrap();
        let model = power_log_model();
        let req = QuantsimRequest {
            data: dir.path().to_path_buf(),
            calibration_size: 32,
            seed: 0,
            settings: QuantsimSettings::default(),
            options: RunOptions::default(),
            metric: crate::metrics::MetricSpec {
                choice: crate::metrics::MetricChoice::Cosine,
                command: None,
            },
        };
        let (analysis, _) = analyze(
            &model,
            &req,
            &AnalyzeOptions::default(),
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        let a = &analysis.float_ops;
        let sets: Vec<String> = a.trials.iter().map(|t| t.ops.join(",")).collect();
        assert_eq!(sets, ["Pow", "Log", "Pow,Log"], "{a:?}");
        let baseline = analysis.scores.weights_and_activations.value().unwrap();
        let pow = &a.trials[0];
        assert!(pow.gain > 0.05, "baseline {baseline}, {a:?}");
        let advice = a.advice.as_deref().unwrap();
        assert!(advice.starts_with("--fp32-ops Pow"), "{advice}");
        // What it advises is what `--fp32-ops` then scores.
        let best = best(&a.trials).unwrap();
        let flagged = QuantsimRequest {
            settings: QuantsimSettings {
                fp32_ops: best.ops.clone(),
                ..QuantsimSettings::default()
            },
            ..req
        };
        let (with_flag, _) = analyze(
            &model,
            &flagged,
            &AnalyzeOptions::default(),
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        let scored = with_flag.scores.weights_and_activations.value().unwrap();
        assert!(
            (scored - best.metric_value).abs() < 1e-9,
            "{scored} vs {best:?}"
        );
    }

    fn trial(ops: &[&str], value: f64, baseline: f64) -> FloatOpTrial {
        FloatOpTrial {
            ops: ops.iter().map(|s| s.to_string()).collect(),
            quantizers: 1,
            metric_value: value,
            gain: value - baseline,
        }
    }

    #[test]
    fn the_best_gaining_set_is_advised_and_a_small_gain_is_not() {
        let trials = [
            trial(&["Pow"], 0.93, 0.896),
            trial(&["Log"], 0.61, 0.896),
            trial(&["Pow", "Log"], 0.9997, 0.896),
        ];
        assert_eq!(best(&trials).unwrap().ops, ["Pow", "Log"]);
        assert!(best(&[trial(&["Log"], 0.898, 0.896)]).is_none());
        // A tie keeps the smaller set, listed first.
        let tie = [
            trial(&["Pow"], 0.95, 0.9),
            trial(&["Pow", "Log"], 0.95, 0.9),
        ];
        assert_eq!(best(&tie).unwrap().ops, ["Pow"]);
    }
}
