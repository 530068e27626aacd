//! The quantsim job: calibrate on the calibration samples, build the simulated model and
//! score it on the evaluation samples. Shared by the CLI (and, next, the app) so both make
//! the same variant with the same numbers.

use super::calibration::{calibrate_activations, ActivationConfig, CalibrationOptions};
use super::encodings_file::{encodings_document, EncodingsVersion};
use super::points::{activation_points, weight_quantizers};
use super::qdq::{build_quantsim, ActivationOps, QuantMode, SimConfig, SimModel, WeightConfig};
use super::{QuantSpec, Scheme};
use crate::cancel::CancelToken;
use crate::experiment::evaluate::{
    check_fits, evaluate, sample_shapes, select_samples, EvalReport, EvalRequest, Subset,
};
use crate::model::Model;
use crate::runtime::RunOptions;
use crate::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantsimSettings {
    pub w_bits: u8,
    pub a_bits: u8,
    pub per_channel: bool,
    pub symmetric: bool,
    pub scheme: Scheme,
    pub mode: QuantMode,
    /// Per-layer exceptions (leave FP32, other bitwidths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<LayerOverride>,
}

/// AIMET's defaults: W8A8 asymmetric per tensor, `tf_enhanced`, weights and activations.
impl Default for QuantsimSettings {
    fn default() -> Self {
        QuantsimSettings {
            w_bits: 8,
            a_bits: 8,
            per_channel: false,
            symmetric: false,
            scheme: Scheme::TfEnhanced,
            mode: QuantMode::WeightsAndActivations,
            overrides: Vec::new(),
        }
    }
}

/// A per-layer exception to the quantsim settings. `layer` is the layer's name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerOverride {
    pub layer: String,
    /// Leave the layer FP32: no weight quantizer and no quantizer on its output.
    #[serde(default)]
    pub skip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_bits: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_bits: Option<u8>,
}

impl QuantsimSettings {
    /// The recipe step recorded on the variant, e.g. `quantsim{w:8,a:8,per_channel:true,…}`.
    pub fn step(&self) -> String {
        format!(
            "quantsim{{w:{},a:{},per_channel:{},symmetric:{},scheme:{},mode:{}}}",
            self.w_bits,
            self.a_bits,
            self.per_channel,
            self.symmetric,
            serde_json::to_value(self.scheme)
                .map(|v| v.to_string().replace('"', ""))
                .unwrap_or_default(),
            self.mode
        )
    }
}

pub struct QuantsimRequest {
    pub data: PathBuf,
    pub calibration_size: usize,
    pub seed: u64,
    pub settings: QuantsimSettings,
    pub options: RunOptions,
}

pub struct QuantsimOutcome {
    pub sim: SimModel,
    pub report: EvalReport,
    pub activation_points: usize,
    pub calibration_seconds: f64,
}

/// Calibrate, simulate and evaluate. `progress(stage, done, total)`.
pub fn quantsim(
    model: &Model,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimOutcome> {
    let s = &req.settings;
    let calibration = select_samples(
        &req.data,
        Subset::Calibration,
        req.calibration_size,
        req.seed,
    )?
    .data;
    check_fits(model, &calibration)?;
    let shapes = model.shapes(Some(&sample_shapes(&calibration)))?;
    let layers = model.layers(&shapes)?;
    let points = activation_points(model)?;
    let weights = weight_quantizers(model, &layers)?;
    let start = Instant::now();
    let activations = if s.mode.activations() {
        let config = ActivationConfig {
            spec: QuantSpec::new(s.a_bits, s.symmetric)?,
            scheme: s.scheme,
        };
        let options = CalibrationOptions {
            run: RunOptions {
                batch_size: 16,
                threads: req.options.threads,
            },
            ..CalibrationOptions::default()
        };
        calibrate_activations(
            model,
            &points,
            &calibration,
            config,
            options,
            cancel,
            &|d, t| progress("calibration", d, t),
        )?
    } else {
        BTreeMap::new()
    };
    let calibration_seconds = start.elapsed().as_secs_f64();
    let config = SimConfig {
        mode: s.mode,
        weights: WeightConfig {
            spec: QuantSpec::new(s.w_bits, s.symmetric)?,
            scheme: s.scheme,
            per_channel: s.per_channel,
        },
        activation_ops: ActivationOps::Auto,
    };
    let sim = build_quantsim(model, &weights, &activations, &config)?;
    cancel.check()?;
    let report = evaluate_sim(model, &sim, req, cancel, progress)?;
    Ok(QuantsimOutcome {
        activation_points: points.len(),
        sim,
        report,
        calibration_seconds,
    })
}

/// Score the simulated model of `model` on the request's evaluation samples.
pub(crate) fn evaluate_sim(
    model: &Model,
    sim: &SimModel,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<EvalReport> {
    let eval = EvalRequest {
        model: PathBuf::from(model.source()),
        data: req.data.clone(),
        subset: Subset::Evaluation,
        reference: None,
        options: req.options,
        calibration_size: req.calibration_size,
        seed: req.seed,
    };
    evaluate(&eval, &sim.model, cancel, &|d, t| {
        progress("evaluation", d, t)
    })
}

/// The encodings in AIMET's 1.0.0 JSON layout (activations and parameters); other layouts:
/// [`super::encodings_file::encodings_document`].
pub fn encodings_json(sim: &SimModel) -> Result<Value> {
    encodings_document(&sim.weights, &sim.activations, EncodingsVersion::V1)
}
