//! The quantsim job: calibrate on the calibration samples, build the simulated model and
//! score it on the evaluation samples. Shared by the CLI (and, next, the app) so both make
//! the same variant with the same numbers.

use super::calibrate::calibrate;
use super::calibration::{collect_histograms, CalibrationOptions};
use super::encodings_file::{encodings_document, EncodingsVersion};
use super::points::{
    activation_points, layer_output_points, weight_quantizers, QuantPoint, WeightQuantizer,
};
use super::qdq::{build_quantsim_with, ActivationOps, QuantMode, SimModel, WeightConfig};
use super::{Encoding, Histogram, QuantSpec, Scheme};
use crate::cancel::CancelToken;
use crate::experiment::evaluate::{
    check_fits, evaluate, sample_shapes, select_samples, EvalReport, EvalRequest, Subset,
};
use crate::model::{Layer, Model};
use crate::runtime::RunOptions;
use crate::{Error, Result};
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
    /// The recipe step recorded on the variant, e.g. `quantsim{w:8,a:8,per_channel:true,…}`;
    /// overrides follow as `fp32:[a,b]`, `w_bits:{c:4}`, `a_bits:{d:16}`.
    pub fn step(&self) -> String {
        let mut step = format!(
            "quantsim{{w:{},a:{},per_channel:{},symmetric:{},scheme:{},mode:{}",
            self.w_bits,
            self.a_bits,
            self.per_channel,
            self.symmetric,
            serde_json::to_value(self.scheme)
                .map(|v| v.to_string().replace('"', ""))
                .unwrap_or_default(),
            self.mode
        );
        let skipped: Vec<&str> = self
            .overrides
            .iter()
            .filter(|o| o.skip)
            .map(|o| o.layer.as_str())
            .collect();
        if !skipped.is_empty() {
            step.push_str(&format!(",fp32:[{}]", skipped.join(",")));
        }
        let bits = |pick: fn(&LayerOverride) -> Option<u8>| -> Vec<String> {
            self.overrides
                .iter()
                .filter(|o| !o.skip)
                .filter_map(|o| pick(o).map(|b| format!("{}:{b}", o.layer)))
                .collect()
        };
        for (key, list) in [
            ("w_bits", bits(|o| o.w_bits)),
            ("a_bits", bits(|o| o.a_bits)),
        ] {
            if !list.is_empty() {
                step.push_str(&format!(",{key}:{{{}}}", list.join(",")));
            }
        }
        step.push('}');
        step
    }

    /// Bitwidths and scheme are usable (checked before any work is done).
    pub fn validate(&self) -> Result<()> {
        QuantSpec::new(self.w_bits, self.symmetric)
            .map_err(|e| Error::input(format!("weight bits: {e}")))?;
        QuantSpec::new(self.a_bits, self.symmetric)
            .map_err(|e| Error::input(format!("activation bits: {e}")))?;
        self.scheme.validate()
    }

    /// The grid of this layer's weights, `None` when the layer stays FP32.
    pub(crate) fn weight_spec(&self, layer: &str) -> Result<Option<QuantSpec>> {
        let o = self.overrides.iter().find(|o| o.layer == layer);
        if o.is_some_and(|o| o.skip) {
            return Ok(None);
        }
        let bits = o.and_then(|o| o.w_bits).unwrap_or(self.w_bits);
        QuantSpec::new(bits, self.symmetric)
            .map(Some)
            .map_err(|e| Error::input(format!("weights of layer '{layer}': {e}")))
    }

    /// The grid of an activation point owned by `layer` (None: not a layer's output).
    fn activation_spec(&self, layer: Option<&str>) -> Result<Option<QuantSpec>> {
        let o = layer.and_then(|l| self.overrides.iter().find(|o| o.layer == l));
        if o.is_some_and(|o| o.skip) {
            return Ok(None);
        }
        let bits = o.and_then(|o| o.a_bits).unwrap_or(self.a_bits);
        QuantSpec::new(bits, self.symmetric).map(Some).map_err(|e| {
            Error::input(format!(
                "activations of layer '{}': {e}",
                layer.unwrap_or_default()
            ))
        })
    }
}

pub struct QuantsimRequest {
    pub data: PathBuf,
    pub calibration_size: usize,
    pub seed: u64,
    pub settings: QuantsimSettings,
    pub options: RunOptions,
    /// How the simulated model is scored (`auto`: accuracy with labels, else fidelity to
    /// the FP32 model by output shape).
    pub metric: crate::metrics::MetricSpec,
}

impl QuantsimRequest {
    /// A request with checked settings, as a job gives it (`threads` 0: one per core).
    pub fn checked(
        data: &std::path::Path,
        settings: &QuantsimSettings,
        calibration_size: usize,
        seed: u64,
        threads: usize,
    ) -> Result<QuantsimRequest> {
        settings.validate()?;
        let mut options = RunOptions::default();
        if threads > 0 {
            options.threads = threads;
        }
        Ok(QuantsimRequest {
            data: data.to_path_buf(),
            calibration_size,
            seed,
            settings: settings.clone(),
            options,
            metric: Default::default(),
        })
    }
}

pub struct QuantsimOutcome {
    pub sim: SimModel,
    pub report: EvalReport,
    pub activation_points: usize,
    pub calibration_seconds: f64,
}

/// What every simulation of one model on one calibration set shares: where the quantizers
/// sit and the activation histograms (one pass), so several settings cost no further pass.
pub struct Prepared {
    pub layers: Vec<Layer>,
    pub points: Vec<QuantPoint>,
    pub weights: Vec<WeightQuantizer>,
    /// Per layer (same order), the activation point ending its group.
    pub layer_outputs: Vec<Option<String>>,
    /// Activation histograms by value; empty when prepared without calibration.
    pub histograms: BTreeMap<String, Histogram>,
    pub calibration_seconds: f64,
}

/// Place the quantizers and, when `calibrate` is set, run the calibration pass.
pub fn prepare(
    model: &Model,
    req: &QuantsimRequest,
    calibrate: bool,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<Prepared> {
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
    let layer_outputs = layer_output_points(model, &layers, &points);
    check_overrides(&req.settings, &layers)?;
    let start = Instant::now();
    let histograms = if calibrate {
        let options = CalibrationOptions {
            // The request's batch: tract runs these small models fastest one sample a call.
            run: req.options,
            ..CalibrationOptions::default()
        };
        collect_histograms(model, &points, &calibration, options, cancel, &|d, t| {
            progress("calibration", d, t)
        })?
    } else {
        BTreeMap::new()
    };
    Ok(Prepared {
        layers,
        points,
        weights,
        layer_outputs,
        histograms,
        calibration_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Every override names a layer of the model, once, with valid bitwidths.
fn check_overrides(settings: &QuantsimSettings, layers: &[Layer]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for o in &settings.overrides {
        if !layers.iter().any(|l| l.name == o.layer) {
            let names: Vec<&str> = layers.iter().take(8).map(|l| l.name.as_str()).collect();
            return Err(Error::input(format!(
                "per-layer override: the model has no layer named '{}' (layers: {}{})",
                o.layer,
                names.join(", "),
                if layers.len() > 8 { ", …" } else { "" }
            )));
        }
        if !seen.insert(o.layer.as_str()) {
            return Err(Error::input(format!(
                "per-layer override: layer '{}' is named twice",
                o.layer
            )));
        }
        settings.weight_spec(&o.layer)?;
        settings.activation_spec(Some(&o.layer))?;
    }
    Ok(())
}

/// The simulated model for `settings` from prepared quantizers and histograms.
pub fn simulate(
    model: &Model,
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<SimModel> {
    let activations = if settings.mode.activations() {
        activation_encodings_for(prepared, settings)?
    } else {
        BTreeMap::new()
    };
    let mut weights = Vec::new();
    for q in &prepared.weights {
        if let Some(spec) = settings.weight_spec(&q.layer)? {
            let config = WeightConfig {
                spec,
                scheme: settings.scheme,
                per_channel: settings.per_channel,
            };
            weights.push((q.clone(), config));
        }
    }
    build_quantsim_with(
        model,
        &weights,
        &activations,
        settings.mode,
        ActivationOps::Auto,
    )
}

/// An encoding per calibrated activation point, with the bitwidth of the layer owning it;
/// points of layers left FP32 are dropped.
pub(crate) fn activation_encodings_for(
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<BTreeMap<String, Encoding>> {
    if prepared.histograms.is_empty() && !prepared.points.is_empty() {
        return Err(Error::runtime(
            "activation quantizers need the calibration pass (prepared without it)",
        ));
    }
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (layer, out) in prepared.layers.iter().zip(&prepared.layer_outputs) {
        if let Some(v) = out {
            owner.insert(v.as_str(), layer.name.as_str());
        }
    }
    let mut encodings = BTreeMap::new();
    for (value, histogram) in &prepared.histograms {
        let Some(spec) = settings.activation_spec(owner.get(value.as_str()).copied())? else {
            continue;
        };
        let e = calibrate(histogram, settings.scheme, spec)
            .map_err(|e| Error::input(format!("activation '{value}': {e}")))?;
        encodings.insert(value.clone(), e);
    }
    Ok(encodings)
}

/// Calibrate, simulate and evaluate. `progress(stage, done, total)`.
pub fn quantsim(
    model: &Model,
    req: &QuantsimRequest,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<QuantsimOutcome> {
    let prepared = prepare(
        model,
        req,
        req.settings.mode.activations(),
        cancel,
        progress,
    )?;
    let sim = simulate(model, &prepared, &req.settings)?;
    cancel.check()?;
    let report = evaluate_sim(model, &sim, req, cancel, progress)?;
    Ok(QuantsimOutcome {
        activation_points: prepared.points.len(),
        sim,
        report,
        calibration_seconds: prepared.calibration_seconds,
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
    let mut eval = EvalRequest {
        model: PathBuf::from(model.source()),
        data: req.data.clone(),
        subset: Subset::Evaluation,
        reference: None,
        options: req.options,
        calibration_size: req.calibration_size,
        seed: req.seed,
        metric: req.metric.clone(),
    };
    let report = evaluate(&eval, &sim.model, cancel, &|d, t| {
        progress("evaluation", d, t)
    })?;
    // Without a score from labels (or the user's command), the score is fidelity to the
    // FP32 model (when it is a file to load).
    if !crate::metrics::needs_reference(&req.metric, &report.score) || !eval.model.is_file() {
        return Ok(report);
    }
    eval.reference = Some(eval.model.clone());
    evaluate(&eval, &sim.model, cancel, &|d, t| {
        progress("evaluation", d, t)
    })
}

/// The encodings in AIMET's 1.0.0 JSON layout (activations and parameters); other layouts:
/// [`super::encodings_file::encodings_document`].
pub fn encodings_json(sim: &SimModel) -> Result<Value> {
    encodings_document(&sim.weights, &sim.activations, EncodingsVersion::V1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::points::tests::sample_model;
    use std::path::Path;

    /// The sample digits data with the CLI's split defaults (200 calibration samples, seed 0).
    pub fn request(settings: QuantsimSettings) -> QuantsimRequest {
        QuantsimRequest {
            data: Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits"),
            calibration_size: 200,
            seed: 0,
            settings,
            options: RunOptions::default(),
            metric: Default::default(),
        }
    }

    #[test]
    fn overrides_skip_a_layer_and_change_bitwidths() {
        let model = sample_model("mbv2_digits.onnx");
        let cancel = CancelToken::new();
        let prepared = prepare(
            &model,
            &request(QuantsimSettings::default()),
            true,
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        let first = prepared.layers[0].name.clone();
        let second = prepared.layers[1].name.clone();
        let settings = QuantsimSettings {
            w_bits: 4,
            overrides: vec![
                LayerOverride {
                    layer: first.clone(),
                    skip: true,
                    ..Default::default()
                },
                LayerOverride {
                    layer: second.clone(),
                    w_bits: Some(8),
                    a_bits: Some(16),
                    ..Default::default()
                },
            ],
            ..QuantsimSettings::default()
        };
        let sim = simulate(&model, &prepared, &settings).unwrap();
        // The skipped layer keeps its FP32 weight and loses its output quantizer.
        let w0 = &prepared.weights[0].weight;
        assert_eq!(sim.model.weight(w0), model.weight(w0));
        assert!(sim.weights.iter().all(|w| w.layer != first));
        let out0 = prepared.layer_outputs[0].as_ref().unwrap();
        assert!(!sim.activations.contains_key(out0));
        // The second layer: 8-bit weights and a 16-bit output among 4-bit / 8-bit others.
        let w1 = sim.weights.iter().find(|w| w.layer == second).unwrap();
        assert!(w1.encodings.iter().all(|e| e.bitwidth == 8));
        assert!(sim
            .weights
            .iter()
            .filter(|w| w.layer != second)
            .all(|w| w.encodings[0].bitwidth == 4));
        let out1 = prepared.layer_outputs[1].as_ref().unwrap();
        assert_eq!(sim.activations[out1].bitwidth, 16);
        assert_eq!(
            sim.activations
                .values()
                .filter(|e| e.bitwidth == 16)
                .count(),
            1
        );
        let step = settings.step();
        assert!(step.contains(&format!("fp32:[{first}]")), "{step}");
        assert!(step.contains(&format!("w_bits:{{{second}:8}}")), "{step}");
    }

    #[test]
    fn override_of_an_unknown_layer_is_an_input_error_naming_it() {
        let model = sample_model("mbv2_digits.onnx");
        let settings = QuantsimSettings {
            overrides: vec![LayerOverride {
                layer: "no_such_conv".into(),
                skip: true,
                ..Default::default()
            }],
            ..QuantsimSettings::default()
        };
        let err = prepare(
            &model,
            &request(settings),
            false,
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Input(_)));
        assert!(err.to_string().contains("no_such_conv"), "{err}");
    }

    #[test]
    fn every_mbv2_layer_has_an_output_point() {
        let model = sample_model("mbv2_digits.onnx");
        let prepared = prepare(
            &model,
            &request(QuantsimSettings::default()),
            false,
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        assert_eq!(prepared.layer_outputs.len(), prepared.layers.len());
        assert!(prepared.layer_outputs.iter().all(Option::is_some));
    }
}
