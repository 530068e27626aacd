//! The quantsim job: calibrate on the calibration samples, build the simulated model and
//! score it on the evaluation samples. Shared by the CLI (and, next, the app) so both make
//! the same variant with the same numbers.

use super::analysis::WIDE_RANGE_RATIO;
use super::batch_pdf::BatchPdf;
use super::calibrate::calibrate;
use super::calibration::{
    collect_calibration, CalibrationOptions, CalibrationStatistics, ChannelStats,
};
use super::encodings_file::{encodings_document_with_biases, EncodingsVersion};
use super::float_ops::float_op_points;
use super::mixed_range::{kept_fp32, output_concats, KeptFp32, MixedConcat, DEFAULT_FACTOR};
use super::points::{
    activation_points, layer_output_points, point_feeding, weight_quantizers, QuantPoint,
    WeightQuantizer,
};
use super::qdq::{build_quantsim_with, ActivationOps, QuantMode, SimModel, WeightConfig};
use super::weight_scheme::WeightScheme;
use super::{Encoding, Histogram, QuantSpec, Scheme};
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{
    check_fits, evaluate, sample_shapes, select_samples, EvalReport, EvalRequest, Subset,
};
use crate::model::graph::node_label;
use crate::model::{Layer, Model};
use crate::runtime::RunOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantsimSettings {
    pub w_bits: u8,
    pub a_bits: u8,
    pub per_channel: bool,
    pub symmetric: bool,
    pub scheme: Scheme,
    /// The weights' own scheme ([`super::weight_scheme`]); `same` (the activations'
    /// `scheme`) in records made before this field, as they meant.
    #[serde(
        default = "WeightScheme::same",
        skip_serializing_if = "WeightScheme::is_same"
    )]
    pub weight_scheme: WeightScheme,
    pub mode: QuantMode,
    /// Per-layer exceptions (leave FP32, other bitwidths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<LayerOverride>,
    /// Op types computed in float: no quantizer on their inputs, their outputs, or what
    /// follows them in float up to the next layer ([`super::float_ops`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fp32_ops: Vec<String>,
    /// The mixed-range Concat rule's factor ([`super::mixed_range`]); `None`: off.
    #[serde(default = "default_mixed_range")]
    pub mixed_range_factor: Option<f64>,
    /// 16-bit activations on the tensors the diagnosis flags as wide-range (channels or
    /// Concat inputs whose ranges differ more than [`WIDE_RANGE_RATIO`] times); `false` in
    /// records made before this field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub a16_flagged: bool,
    /// Which model the activation statistics come from ([`CalibrateOn`]); `fp32` (the
    /// default) in records made before this field, as they meant.
    #[serde(default)]
    pub calibrate_on: CalibrateOn,
}

/// The model the activation encodings are calibrated on. AIMET computes them in a forward
/// pass of its QuantSim with the weight quantizers active, so each activation's grid fits
/// the values the quantized model produces; calibrating on the FP32 model fits values the
/// simulation never sees. Activations-only runs keep FP32 weights and so calibrate on FP32.
/// FP32 stays the default: on the two sample models at W4A8 the quantized-weights order
/// scored the same in total over the 14 cells of the peers table (5374 of 5600 samples either way,
/// sample-models/README.md) at twice the calibration time, so it is the AIMET-exact option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrateOn {
    /// The FP32 model.
    #[default]
    Fp32,
    /// The model with its weights already quantized (one pass per weight setting).
    QuantizedWeights,
}

impl fmt::Display for CalibrateOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CalibrateOn::QuantizedWeights => "quantized_weights",
            CalibrateOn::Fp32 => "fp32",
        })
    }
}

impl FromStr for CalibrateOn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "quantized_weights" | "quantized" | "qw" => Ok(CalibrateOn::QuantizedWeights),
            "fp32" | "float" => Ok(CalibrateOn::Fp32),
            _ => Err(Error::input(format!(
                "unknown calibration model '{s}' (expected quantized-weights or fp32)"
            ))),
        }
    }
}

fn default_mixed_range() -> Option<f64> {
    Some(DEFAULT_FACTOR)
}

/// AIMET's defaults (W8A8 asymmetric per tensor, `tf_enhanced`, weights and activations),
/// but the weights calibrated by [`WeightScheme::Auto`] (measured; see
/// [`super::weight_scheme`]).
impl Default for QuantsimSettings {
    fn default() -> Self {
        QuantsimSettings {
            w_bits: 8,
            a_bits: 8,
            per_channel: false,
            symmetric: false,
            scheme: Scheme::TfEnhanced,
            weight_scheme: WeightScheme::Auto,
            mode: QuantMode::WeightsAndActivations,
            overrides: Vec::new(),
            fp32_ops: Vec::new(),
            mixed_range_factor: default_mixed_range(),
            a16_flagged: false,
            calibrate_on: CalibrateOn::Fp32,
        }
    }
}

/// A per-layer exception to the quantsim settings. `layer` is the layer's name; an override
/// that only keeps something FP32 (`skip`, no bitwidths) may also name any node or value
/// carrying a quantizer: a node's output quantizer, an activation value's quantizer, or a
/// weight value's quantizer is then removed, and nothing else ([`QuantsimSettings::keeps_fp32`]).
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
        if !self.weight_scheme.is_same() {
            step.push_str(&format!(",weight_scheme:{}", self.weight_scheme));
        }
        let skipped: Vec<&str> = self
            .overrides
            .iter()
            .filter(|o| o.skip)
            .map(|o| o.layer.as_str())
            .collect();
        if !skipped.is_empty() {
            step.push_str(&format!(",fp32:[{}]", skipped.join(",")));
        }
        if !self.fp32_ops.is_empty() {
            step.push_str(&format!(",fp32_ops:[{}]", self.fp32_ops.join(",")));
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
        // Only a departure from the default rule is written: older steps read the same.
        match self.mixed_range_factor {
            None => step.push_str(",mixed_range:off"),
            Some(f) if f != DEFAULT_FACTOR => step.push_str(&format!(",mixed_range:{f}")),
            Some(_) => {}
        }
        if self.a16_flagged {
            step.push_str(",a16:flagged");
        }
        // Only the departure from the default is written, where it applies: older steps read
        // the same.
        if self.calibrate_on == CalibrateOn::QuantizedWeights
            && self.mode == QuantMode::WeightsAndActivations
        {
            step.push_str(",calibrate_on:quantized_weights");
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
        if let Some(f) = self.mixed_range_factor {
            if !(f.is_finite() && f >= 1.0) {
                return Err(Error::input(format!(
                    "mixed-range factor {f}: expected a number of at least 1 (or off)"
                )));
            }
        }
        self.weight_scheme
            .validate()
            .map_err(|e| Error::input(format!("weight scheme: {e}")))?;
        self.scheme.validate()
    }

    /// The scheme a weight on the grid `spec` is calibrated with
    /// ([`WeightScheme::resolve`]).
    pub fn weight_scheme_for(&self, spec: QuantSpec) -> Scheme {
        self.weight_scheme
            .resolve(self.scheme, spec.bitwidth(), self.per_channel)
    }

    /// Whether an override keeps the node or value called `name` FP32 (a `skip` override,
    /// whatever it names).
    pub fn keeps_fp32(&self, name: &str) -> bool {
        self.overrides.iter().any(|o| o.skip && o.layer == name)
    }

    /// The grid of the weight `weight` of `layer`: `None` when the layer or the weight value
    /// is kept FP32.
    pub(crate) fn weight_spec_of(&self, layer: &str, weight: &str) -> Result<Option<QuantSpec>> {
        if layer != weight && self.keeps_fp32(weight) {
            return Ok(None);
        }
        self.weight_spec(layer)
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
    /// The activation points `fp32_ops` left unquantized.
    pub fp32_op_points: Vec<String>,
    pub calibration_seconds: f64,
    /// Quantizers the mixed-range rule removed, with the reason.
    pub kept_fp32: Vec<KeptFp32>,
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
    /// AIMET's per-batch activation densities by value, which `tf_enhanced` uses.
    pub pdfs: BTreeMap<String, BatchPdf>,
    /// Per activation point, the label of the node producing it (absent for graph inputs).
    pub point_nodes: BTreeMap<String, String>,
    /// Per-channel ranges of the activation points (from the calibration pass).
    pub channel_stats: BTreeMap<String, ChannelStats>,
    /// The Concats at the outputs with their measured input ranges (the mixed-range rule's
    /// candidates; the settings' factor decides).
    pub output_concats: Vec<MixedConcat>,
    pub calibration_seconds: f64,
    /// The request's float op types, and the points they remove ([`float_op_points`]).
    pub fp32_ops: Vec<String>,
    pub fp32_op_points: BTreeSet<String>,
    /// The calibration samples and run options (absent when prepared without calibration),
    /// for the passes over weight-quantized models.
    calibration: Option<CalibrationSource>,
    /// Activation statistics of the model with its weights quantized, by weight setting
    /// ([`weights_key`]): one pass per setting, shared by sweeps and analyses.
    quantized_weight_stats: Mutex<BTreeMap<String, QuantizedWeightStats>>,
}

struct CalibrationSource {
    data: Dataset,
    options: CalibrationOptions,
    cancel: CancelToken,
}

#[derive(Clone)]
struct QuantizedWeightStats {
    stats: Arc<CalibrationStatistics>,
    seconds: f64,
}

/// What the weight-quantized model depends on: each quantized weight and its grid, scheme
/// and granularity (bitwidths, per-channel, weight scheme and FP32 overrides all end here).
fn weights_key(weights: &[(WeightQuantizer, WeightConfig)]) -> String {
    weights
        .iter()
        .map(|(q, c)| format!("{}={:?}", q.weight, c))
        .collect::<Vec<_>>()
        .join(";")
}

impl Prepared {
    /// The activation statistics `settings` calibrate from: the FP32 pass's, or (weights and
    /// activations quantized, [`CalibrateOn::QuantizedWeights`]) those of `model` with
    /// `weights` applied, computed once per weight setting. `None`: the FP32 ones.
    fn statistics_for(
        &self,
        model: &Model,
        weights: &[(WeightQuantizer, WeightConfig)],
        settings: &QuantsimSettings,
    ) -> Result<Option<Arc<CalibrationStatistics>>> {
        if settings.calibrate_on == CalibrateOn::Fp32
            || settings.mode != QuantMode::WeightsAndActivations
            || weights.is_empty()
        {
            return Ok(None);
        }
        let Some(source) = &self.calibration else {
            return Ok(None); // no calibration at all: the caller reports it
        };
        let key = weights_key(weights);
        let mut cache = self
            .quantized_weight_stats
            .lock()
            .map_err(|_| Error::runtime("calibration cache poisoned by a failed pass"))?;
        if let Some(s) = cache.get(&key) {
            return Ok(Some(s.stats.clone()));
        }
        let start = Instant::now();
        let quantized = build_quantsim_with(
            model,
            weights,
            &BTreeMap::new(),
            QuantMode::WeightsOnly,
            ActivationOps::Auto,
        )?
        .model;
        let stats = Arc::new(collect_calibration(
            &quantized,
            &self.points,
            &source.data,
            source.options,
            &source.cancel,
            &|_, _| {},
        )?);
        let seconds = start.elapsed().as_secs_f64();
        cache.insert(
            key,
            QuantizedWeightStats {
                stats: stats.clone(),
                seconds,
            },
        );
        Ok(Some(stats))
    }

    /// Seconds spent calibrating: the FP32 pass and every weight-quantized pass so far.
    pub fn calibration_seconds_total(&self) -> f64 {
        let extra: f64 = self
            .quantized_weight_stats
            .lock()
            .map(|c| c.values().map(|s| s.seconds).sum())
            .unwrap_or(0.0);
        self.calibration_seconds + extra
    }

    /// The quantizers the mixed-range rule removes under `settings`.
    pub fn kept_fp32(&self, settings: &QuantsimSettings) -> Vec<KeptFp32> {
        if !settings.mode.activations() {
            return Vec::new();
        }
        kept_fp32(&self.output_concats, settings.mixed_range_factor)
    }
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
    let shapes = model.shapes(Some(&sample_shapes(model, &calibration)?))?;
    let layers = model.layers(&shapes)?;
    let points = activation_points(model)?;
    let weights = weight_quantizers(model, &layers)?;
    let layer_outputs = layer_output_points(model, &layers, &points);
    check_overrides(model, &req.settings, &layers, &points, &weights)?;
    let fp32_op_points = float_op_points(model, &points, &req.settings.fp32_ops)?;
    let point_nodes = points
        .iter()
        .filter_map(|p| Some((p.value.clone(), node_label(model.graph(), p.node?))))
        .collect();
    let start = Instant::now();
    let options = CalibrationOptions {
        // The request's batch: tract runs these small models fastest one sample a call.
        run: req.options,
        ..CalibrationOptions::default()
    };
    let (histograms, mut channel_stats, pdfs) = if calibrate {
        let s = collect_calibration(model, &points, &calibration, options, cancel, &|d, t| {
            progress("calibration", d, t)
        })?;
        (s.histograms, s.channel_stats, s.pdfs)
    } else {
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new())
    };
    let calibration = calibrate.then(|| CalibrationSource {
        data: calibration,
        options,
        cancel: cancel.clone(),
    });
    fill_concat_inputs(model, &shapes, &points, &mut channel_stats);
    let output_concats = output_concats(model, &points, &histograms);
    Ok(Prepared {
        layers,
        points,
        weights,
        layer_outputs,
        histograms,
        pdfs,
        point_nodes,
        channel_stats,
        output_concats,
        calibration_seconds: start.elapsed().as_secs_f64(),
        fp32_ops: req.settings.fp32_ops.clone(),
        fp32_op_points,
        calibration,
        quantized_weight_stats: Mutex::new(BTreeMap::new()),
    })
}

/// Each Concat point's input extents along its axis, from the shapes (left out when any is
/// unknown).
fn fill_concat_inputs(
    model: &Model,
    shapes: &crate::model::ModelShapes,
    points: &[QuantPoint],
    stats: &mut BTreeMap<String, ChannelStats>,
) {
    use crate::model::shapes::Dim;
    for p in points {
        let Some(node) = p.node.map(|n| &model.graph().node[n]) else {
            continue;
        };
        let Some(s) = stats.get_mut(&p.value) else {
            continue;
        };
        if node.op_type != "Concat" {
            continue;
        }
        let Some(rank) = shapes.get(&p.value).map(|s| s.len() as i64) else {
            continue;
        };
        let axis = crate::model::attrs::int(node, "axis").unwrap_or(0);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 1 || axis >= rank {
            continue;
        }
        let inputs: Option<Vec<(String, usize)>> = node
            .input
            .iter()
            .map(|v| match shapes.get(v).and_then(|s| s.get(axis as usize)) {
                Some(Dim::Known(n)) => Some((v.clone(), *n)),
                _ => None,
            })
            .collect();
        if let Some(inputs) = inputs {
            s.concat = Some((axis as usize, inputs));
        }
    }
}

/// Every override names a layer of the model once, with valid bitwidths; a keep-FP32
/// override (skip, no bitwidths) may instead name a node or value that carries a quantizer.
fn check_overrides(
    model: &Model,
    settings: &QuantsimSettings,
    layers: &[Layer],
    points: &[QuantPoint],
    weights: &[WeightQuantizer],
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for o in &settings.overrides {
        if !seen.insert(o.layer.as_str()) {
            return Err(Error::input(format!(
                "per-layer override: layer '{}' is named twice",
                o.layer
            )));
        }
        if layers.iter().any(|l| l.name == o.layer) {
            settings.weight_spec(&o.layer)?;
            settings.activation_spec(Some(&o.layer))?;
            continue;
        }
        let only_fp32 = o.skip && o.w_bits.is_none() && o.a_bits.is_none();
        match fp32_target(model, points, weights, &o.layer) {
            Ok(()) if only_fp32 => {}
            Ok(()) => {
                return Err(Error::input(format!(
                    "per-layer override: '{}' is not a layer; a node or value can only be kept \
                     FP32 (--fp32), other bitwidths are per layer",
                    o.layer
                )))
            }
            Err(why) => {
                let names: Vec<&str> = layers.iter().take(8).map(|l| l.name.as_str()).collect();
                return Err(Error::input(format!(
                    "per-layer override: {why} (layers: {}{}; --fp32 also takes any node or \
                     value name that carries a quantizer)",
                    names.join(", "),
                    if layers.len() > 8 { ", …" } else { "" }
                )));
            }
        }
    }
    Ok(())
}

/// Whether `name` (not a layer) names something a keep-FP32 override can act on: an
/// activation point's value, the node producing one, or a quantized weight value. The error
/// says why not, naming the quantizer to use instead where there is one.
fn fp32_target(
    model: &Model,
    points: &[QuantPoint],
    weights: &[WeightQuantizer],
    name: &str,
) -> std::result::Result<(), String> {
    let graph = model.graph();
    if points.iter().any(|p| p.value == name) || weights.iter().any(|w| w.weight == name) {
        return Ok(());
    }
    let node = (0..graph.node.len()).find(|&i| node_label(graph, i) == name);
    if let Some(i) = node {
        if points.iter().any(|p| p.node == Some(i)) {
            return Ok(());
        }
        let op = &graph.node[i].op_type;
        let out = graph.node[i].output.first();
        let on_input_grid = out.and_then(|v| point_feeding(model, points, v));
        let feeding = out.and_then(|v| downstream_point(model, points, v));
        let at = |p: &QuantPoint| {
            format!(
                "'{}'{}",
                p.value,
                p.node
                    .map(|n| format!(" (node '{}')", node_label(graph, n)))
                    .unwrap_or_default()
            )
        };
        if let Some(p) = on_input_grid {
            return Err(format!(
                "node '{name}' ({op}) has no quantizer of its own: its output keeps the grid \
                 of the quantizer on {}; keep that FP32 instead",
                at(p)
            ));
        }
        return Err(match feeding {
            Some(p) => format!(
                "node '{name}' ({op}) has no quantizer of its own; the quantizer after it sits \
                 on '{}'{}: keep that FP32 instead",
                p.value,
                p.node
                    .map(|n| format!(" (node '{}')", node_label(graph, n)))
                    .unwrap_or_default()
            ),
            None => format!(
                "node '{name}' ({op}) carries no quantizer (its output keeps the grid of its \
                 input, or is not a float activation)"
            ),
        });
    }
    if model.index().producer(name).is_some() {
        return Err(format!("value '{name}' carries no quantizer"));
    }
    Err(format!(
        "the model has no layer, node or value named '{name}'"
    ))
}

/// The activation point a group member's output ends in (following single consumers through
/// at most three ops: BatchNormalization and an activation).
fn downstream_point<'a>(
    model: &Model,
    points: &'a [QuantPoint],
    value: &str,
) -> Option<&'a QuantPoint> {
    let mut current = value.to_string();
    // A member of a fused chain (a Conv and its BN before a written-out HardSwish): its
    // quantizer is the one after the chain's last op.
    let chain_ends = crate::quant::fused_groups::fused_chain_ends(
        model,
        &crate::quant::points::single_consumer_in(model),
    );
    if let Some(crate::model::graph::Producer::Node { node, .. }) = model.index().producer(value) {
        if let Some(&end) = chain_ends.get(&node) {
            current = model.graph().node[end].output.first()?.clone();
        }
    }
    for _ in 0..3 {
        if let Some(p) = points.iter().find(|p| p.value == current) {
            return Some(p);
        }
        let [(next, 0)] = model.index().consumers(&current) else {
            return None;
        };
        current = model.graph().node[*next].output.first()?.clone();
    }
    points.iter().find(|p| p.value == current)
}

/// The simulated model for `settings` from prepared quantizers and histograms.
pub fn simulate(
    model: &Model,
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<SimModel> {
    let weights = weight_configs(prepared, settings)?;
    let activations = if settings.mode.activations() {
        match prepared.statistics_for(model, &weights, settings)? {
            Some(s) => activation_encodings_from(prepared, &s.histograms, &s.pdfs, settings)?,
            None => activation_encodings_for(prepared, settings)?,
        }
    } else {
        BTreeMap::new()
    };
    build_quantsim_with(
        model,
        &weights,
        &activations,
        settings.mode,
        ActivationOps::Auto,
    )
}

/// Each quantized weight with its grid, scheme and granularity under `settings`.
fn weight_configs(
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<Vec<(WeightQuantizer, WeightConfig)>> {
    let mut weights = Vec::new();
    for q in &prepared.weights {
        if let Some(spec) = settings.weight_spec_of(&q.layer, &q.weight)? {
            let config = WeightConfig {
                spec,
                scheme: settings.weight_scheme_for(spec),
                per_channel: settings.per_channel,
            };
            weights.push((q.clone(), config));
        }
    }
    Ok(weights)
}

/// An encoding per calibrated activation point, with the bitwidth of the layer owning it;
/// points of layers left FP32 are dropped.
/// From the FP32 calibration pass (a model whose weights are already on their grid, as
/// AdaRound's rounded one, needs no other).
pub(crate) fn activation_encodings_for(
    prepared: &Prepared,
    settings: &QuantsimSettings,
) -> Result<BTreeMap<String, Encoding>> {
    activation_encodings_from(prepared, &prepared.histograms, &prepared.pdfs, settings)
}

/// [`activation_encodings_for`] from the given statistics (keyed as `prepared`'s points).
fn activation_encodings_from(
    prepared: &Prepared,
    histograms: &BTreeMap<String, Histogram>,
    pdfs: &BTreeMap<String, BatchPdf>,
    settings: &QuantsimSettings,
) -> Result<BTreeMap<String, Encoding>> {
    if histograms.is_empty() && !prepared.points.is_empty() {
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
    if settings.fp32_ops != prepared.fp32_ops {
        return Err(Error::runtime(format!(
            "float op types {:?} differ from the ones the quantizers were placed for ({:?})",
            settings.fp32_ops, prepared.fp32_ops
        )));
    }
    let mixed: Vec<String> = prepared
        .kept_fp32(settings)
        .into_iter()
        .map(|k| k.value)
        .collect();
    let mut encodings = BTreeMap::new();
    for (value, histogram) in histograms {
        let node = prepared.point_nodes.get(value);
        if settings.keeps_fp32(value)
            || node.is_some_and(|n| settings.keeps_fp32(n))
            || prepared.fp32_op_points.contains(value)
            || mixed.contains(value)
        {
            continue;
        }
        let Some(mut spec) = settings.activation_spec(owner.get(value.as_str()).copied())? else {
            continue;
        };
        if settings.a16_flagged && spec.bitwidth() < 16 && wide_range(prepared, value) {
            spec = QuantSpec::new(16, settings.symmetric)?;
        }
        let e = activation_encoding(histogram, pdfs.get(value), settings.scheme, spec)
            .map_err(|e| Error::input(format!("activation '{value}': {e}")))?;
        encodings.insert(value.clone(), e);
    }
    Ok(encodings)
}

/// Whether the diagnosis flags `value` as wide-range: its channels (or a Concat's inputs)
/// span ranges more than [`WIDE_RANGE_RATIO`] times apart.
fn wide_range(prepared: &Prepared, value: &str) -> bool {
    prepared
        .channel_stats
        .get(value)
        .and_then(|s| s.spread())
        .is_some_and(|s| s.ratio > WIDE_RANGE_RATIO)
}

/// One activation's encoding: `tf_enhanced` from AIMET's per-batch density when there is
/// one (so the grid is AIMET's on the same batches), every other scheme (and an activation
/// without a density) from the streaming histogram, which also reports non-finite values.
fn activation_encoding(
    histogram: &Histogram,
    pdf: Option<&BatchPdf>,
    scheme: Scheme,
    spec: QuantSpec,
) -> Result<Encoding> {
    match pdf {
        Some(pdf) if scheme == Scheme::TfEnhanced && histogram.non_finite() == 0 => {
            match pdf.tf_enhanced(spec) {
                Some(e) => Ok(e),
                None => calibrate(histogram, scheme, spec),
            }
        }
        _ => calibrate(histogram, scheme, spec),
    }
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
        kept_fp32: prepared.kept_fp32(&req.settings),
        activation_points: prepared.points.len(),
        fp32_op_points: prepared.fp32_op_points.iter().cloned().collect(),
        sim,
        report,
        calibration_seconds: prepared.calibration_seconds_total(),
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
    // Without a score from labels (or the user's command), the score is fidelity to the
    // FP32 model (when it is a file to load). Decided before running where the metric and
    // the labels tell, so the simulation runs once beside the reference, not twice.
    let can_compare = eval.model.is_file();
    if can_compare && fidelity_known_needed(&eval)? == Some(true) {
        eval.reference = Some(eval.model.clone());
    }
    let report = evaluate(&eval, &sim.model, cancel, &|d, t| {
        progress("evaluation", d, t)
    })?;
    if eval.reference.is_some()
        || !can_compare
        || !crate::metrics::needs_reference(&req.metric, &report.score)
    {
        return Ok(report);
    }
    eval.reference = Some(eval.model.clone());
    evaluate(&eval, &sim.model, cancel, &|d, t| {
        progress("evaluation", d, t)
    })
}

/// Whether the request's metric scores fidelity to a reference, where that is known
/// before running: a named fidelity metric, or `auto` on evaluation samples without
/// labels. `None` for `auto` with labels (it depends on the output's shape; see
/// [`crate::metrics::needs_reference`]).
fn fidelity_known_needed(eval: &EvalRequest) -> Result<Option<bool>> {
    use crate::metrics::MetricChoice;
    Ok(match eval.metric.choice {
        MetricChoice::External => Some(false),
        MetricChoice::Auto => {
            let selected =
                select_samples(&eval.data, eval.subset, eval.calibration_size, eval.seed)?;
            selected.data.labels.is_none().then_some(true)
        }
        _ => Some(true),
    })
}

/// The encodings in AIMET's 1.0.0 JSON layout (activations and parameters); other layouts:
/// [`super::encodings_file::encodings_document`].
pub fn encodings_json(sim: &SimModel) -> Result<Value> {
    encodings_document_with_biases(
        &sim.weights,
        &sim.activations,
        &sim.biases,
        EncodingsVersion::V1,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn keeping_a_member_of_a_written_activation_fp32_names_the_groups_quantizer() {
        let model = crate::quant::fused_groups::tests::written_activations();
        let points = activation_points(&model).unwrap();
        let err = super::fp32_target(&model, &points, &[], "bn").unwrap_err();
        assert!(err.contains("'hs.out'"), "{err}");
    }

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

    /// AIMET's `tf_enhanced` activation grids on the BN-folded mbv2 whose weights are already
    /// on their 4-bit `tf_enhanced` grids (AIMET's, bit for bit): AIMET collects activation
    /// statistics on the model with its weights quantized, in batches of 32. aimet-onnx 2.42.0,
    /// `QuantizationSimModel(quant_scheme="tf_enhanced")`, `compute_encodings` on the 200
    /// calibration samples in batches of 32, `sim.export` (tests/peers, row
    /// `tf_enhanced_folded`). The exact streaming histogram gave another grid for each.
    #[test]
    fn tf_enhanced_activations_are_aimets_on_the_weight_quantized_model() {
        let folded = crate::fixes::bn_fold::fold_batchnorms(&sample_model("mbv2_digits.onnx"))
            .unwrap()
            .model;
        let cancel = CancelToken::new();
        let weights = QuantsimSettings {
            w_bits: 4,
            mode: QuantMode::WeightsOnly,
            ..Default::default()
        };
        let prepared = prepare(
            &folded,
            &request(weights.clone()),
            false,
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        let quantized = simulate(&folded, &prepared, &weights).unwrap().model;
        let activations = QuantsimSettings {
            mode: QuantMode::ActivationsOnly,
            ..Default::default()
        };
        let prepared = prepare(
            &quantized,
            &request(activations.clone()),
            true,
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        let encodings = activation_encodings_for(&prepared, &activations).unwrap();
        for (name, aimet_scale, aimet_offset) in [
            ("stem.relu6.out", 0.019364820793271065, 0),
            ("block1.dw.relu6.out", 0.0235294122248888, 0),
            ("block1.add.out", 0.04652147740125656, -93),
            ("block3.add.out", 0.054799649864435196, -127),
            ("block4.expand.relu6.out", 0.019996197894215584, 0),
            ("block5.add.out", 0.04583398625254631, -124),
            ("pool.out", 0.016519242897629738, 0),
            ("logits", 0.08328182250261307, -123),
        ] {
            let e = encodings[name];
            assert_eq!(e.offset, aimet_offset, "{name}: {e:?}");
            assert!(
                (e.scale as f64 - aimet_scale).abs() <= 1e-6 * aimet_scale,
                "{name}: {} vs AIMET {aimet_scale}",
                e.scale
            );
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

    fn keep(names: &[&str]) -> QuantsimSettings {
        QuantsimSettings {
            overrides: names
                .iter()
                .map(|n| LayerOverride {
                    layer: n.to_string(),
                    skip: true,
                    ..Default::default()
                })
                .collect(),
            ..QuantsimSettings::default()
        }
    }

    #[test]
    fn any_node_or_value_can_be_kept_fp32_and_only_its_quantizer_goes() {
        let model = sample_model("mbv2_digits.onnx");
        let cancel = CancelToken::new();
        let base = request(QuantsimSettings::default());
        let prepared = prepare(&model, &base, true, &cancel, &|_, _, _| {}).unwrap();
        let full = simulate(&model, &prepared, &base.settings).unwrap();
        let g = model.graph();
        // An Add (not a layer): named by node, or by its output value.
        let add = g.node.iter().position(|n| n.op_type == "Add").unwrap();
        let add_node = node_label(g, add);
        let add_value = g.node[add].output[0].clone();
        for name in [&add_node, &add_value] {
            let settings = keep(&[name]);
            let req = request(settings.clone());
            prepare(&model, &req, false, &cancel, &|_, _, _| {}).unwrap();
            let sim = simulate(&model, &prepared, &settings).unwrap();
            assert!(!sim.activations.contains_key(&add_value), "{name}");
            assert_eq!(sim.activations.len(), full.activations.len() - 1);
            assert_eq!(sim.weights, full.weights);
        }
        // A weight value: that weight stays FP32, the layer's output is still quantized.
        let fc = prepared.weights.last().unwrap().clone();
        let settings = keep(&[&fc.weight]);
        let sim = simulate(&model, &prepared, &settings).unwrap();
        assert_eq!(sim.model.weight(&fc.weight), model.weight(&fc.weight));
        assert_eq!(sim.weights.len(), full.weights.len() - 1);
        assert_eq!(sim.activations, full.activations);
        // A pass-through node and an unknown name are input errors saying what to name.
        let flatten = g.node.iter().position(|n| n.op_type == "Flatten").unwrap();
        let flatten = node_label(g, flatten);
        for (name, expected) in [
            (flatten.as_str(), "keeps the grid"),
            (
                "no_such_thing",
                "no layer, node or value named 'no_such_thing'",
            ),
        ] {
            let err = prepare(
                &model,
                &request(keep(&[name])),
                false,
                &cancel,
                &|_, _, _| {},
            )
            .err()
            .unwrap();
            assert!(matches!(err, Error::Input(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        // Other bitwidths stay per layer.
        let mut odd = keep(&[&add_node]);
        odd.overrides[0].w_bits = Some(4);
        let err = prepare(&model, &request(odd), false, &cancel, &|_, _, _| {})
            .err()
            .unwrap();
        assert!(err.to_string().contains("is not a layer"), "{err}");
    }

    /// Weights on their own scheme, activations on theirs; `None` (every older settings
    /// record) is the activations' scheme for both, as before.
    #[test]
    fn weights_and_activations_are_calibrated_by_their_own_schemes() {
        use crate::quant::per_channel::per_tensor_encoding;
        let model = sample_model("mbv2_digits.onnx");
        let base = request(QuantsimSettings::default());
        let prepared = prepare(&model, &base, true, &CancelToken::new(), &|_, _, _| {}).unwrap();
        let spec = QuantSpec::new(8, false).unwrap();
        let encoding_of = |i: usize, scheme: Scheme| {
            let w = model.weight(&prepared.weights[i].weight).unwrap();
            per_tensor_encoding(w.view(), spec, scheme).unwrap()
        };
        // A weight the two schemes grid differently.
        let i = (0..prepared.weights.len())
            .find(|&i| encoding_of(i, Scheme::Minmax) != encoding_of(i, Scheme::TfEnhanced))
            .expect("a weight tf_enhanced clips");
        let weight_encoding = |scheme: Scheme| encoding_of(i, scheme);
        let name = prepared.weights[i].weight.clone();
        let of = |sim: &SimModel| {
            sim.weights
                .iter()
                .find(|w| w.weight == name)
                .unwrap()
                .encodings
                .clone()
        };
        let (value, histogram) = prepared.histograms.iter().next().unwrap();
        let split = QuantsimSettings {
            scheme: Scheme::TfEnhanced,
            weight_scheme: WeightScheme::Fixed(Scheme::Minmax),
            ..QuantsimSettings::default()
        };
        let sim = simulate(&model, &prepared, &split).unwrap();
        assert_eq!(of(&sim), [weight_encoding(Scheme::Minmax)]);
        assert_eq!(
            sim.activations[value],
            activation_encoding(
                histogram,
                prepared.pdfs.get(value),
                Scheme::TfEnhanced,
                spec
            )
            .unwrap()
        );
        assert!(
            split.step().contains(",weight_scheme:minmax"),
            "{}",
            split.step()
        );
        // An older record has no weight scheme: both on `scheme`.
        let mut json = serde_json::to_value(&split).unwrap();
        json.as_object_mut().unwrap().remove("weight_scheme");
        let older: QuantsimSettings = serde_json::from_value(json).unwrap();
        assert_eq!(older.weight_scheme, WeightScheme::Same);
        let sim = simulate(&model, &prepared, &older).unwrap();
        assert_eq!(of(&sim), [weight_encoding(Scheme::TfEnhanced)]);
        assert!(!older.step().contains("weight_scheme"));
        // The default (auto): minmax weights at W8 per tensor, tf_enhanced activations.
        let sim = simulate(&model, &prepared, &QuantsimSettings::default()).unwrap();
        assert_eq!(of(&sim), [weight_encoding(Scheme::Minmax)]);
        assert_eq!(
            sim.activations[value],
            activation_encoding(
                histogram,
                prepared.pdfs.get(value),
                Scheme::TfEnhanced,
                spec
            )
            .unwrap()
        );
    }

    /// AIMET's order (#17): each activation encoding is calibrated on the model with its
    /// weights already fake-quantized. `simulate` gives exactly the encodings of an FP32
    /// calibration of that weight-quantized model, and not those of the FP32 model's.
    #[test]
    fn activations_are_calibrated_with_the_weights_quantized() {
        let model = sample_model("resnet_digits.onnx");
        let cancel = CancelToken::new();
        let settings = QuantsimSettings {
            w_bits: 4,
            calibrate_on: CalibrateOn::QuantizedWeights,
            ..Default::default()
        };
        let prepared = prepare(
            &model,
            &request(settings.clone()),
            true,
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        let sim = simulate(&model, &prepared, &settings).unwrap();
        // By hand: the weights alone quantized, then an FP32 calibration of that model.
        let weights_only = QuantsimSettings {
            mode: QuantMode::WeightsOnly,
            ..settings.clone()
        };
        let quantized = simulate(&model, &prepared, &weights_only).unwrap().model;
        let activations_only = QuantsimSettings {
            mode: QuantMode::ActivationsOnly,
            ..settings.clone()
        };
        let on_quantized = prepare(
            &quantized,
            &request(activations_only.clone()),
            true,
            &cancel,
            &|_, _, _| {},
        )
        .unwrap();
        let by_hand = activation_encodings_for(&on_quantized, &activations_only).unwrap();
        assert_eq!(sim.activations, by_hand);
        // The first layer's output: the quantized weights moved its grid.
        let first = prepared.layer_outputs[0].clone().unwrap();
        let fp32 = QuantsimSettings {
            calibrate_on: CalibrateOn::Fp32,
            ..settings.clone()
        };
        let on_fp32 = simulate(&model, &prepared, &fp32).unwrap();
        assert_ne!(
            sim.activations[&first], on_fp32.activations[&first],
            "{first}"
        );
        assert_eq!(
            on_fp32.activations,
            activation_encodings_for(&prepared, &fp32).unwrap()
        );
        assert!(!fp32.step().contains("calibrate_on"), "{}", fp32.step());
        assert!(
            settings
                .step()
                .ends_with(",calibrate_on:quantized_weights}"),
            "{}",
            settings.step()
        );
    }

    /// One weight-quantized pass per weight setting: other activation settings reuse it, a
    /// new weight setting (bits, granularity, an FP32 layer) gets its own; activations-only
    /// runs calibrate on FP32.
    #[test]
    fn the_weight_quantized_statistics_are_kept_per_weight_setting() {
        let model = sample_model("resnet_digits.onnx");
        let base = QuantsimSettings {
            w_bits: 4,
            calibrate_on: CalibrateOn::QuantizedWeights,
            ..Default::default()
        };
        let prepared = prepare(
            &model,
            &request(base.clone()),
            true,
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        let passes = || prepared.quantized_weight_stats.lock().unwrap().len();
        let a = simulate(&model, &prepared, &base).unwrap();
        assert_eq!(passes(), 1);
        let minmax = QuantsimSettings {
            scheme: Scheme::Minmax,
            weight_scheme: WeightScheme::Fixed(Scheme::TfEnhanced),
            a_bits: 6,
            ..base.clone()
        };
        simulate(&model, &prepared, &minmax).unwrap();
        assert_eq!(passes(), 1, "same weights, same pass");
        let again = simulate(&model, &prepared, &base).unwrap();
        assert_eq!(a.activations, again.activations);
        let first = prepared.layers[0].name.clone();
        for other in [
            QuantsimSettings {
                w_bits: 8,
                ..base.clone()
            },
            QuantsimSettings {
                per_channel: true,
                ..base.clone()
            },
            QuantsimSettings {
                overrides: vec![LayerOverride {
                    layer: first,
                    skip: true,
                    ..Default::default()
                }],
                ..base.clone()
            },
        ] {
            let before = passes();
            simulate(&model, &prepared, &other).unwrap();
            assert_eq!(passes(), before + 1, "{}", other.step());
        }
        let activations_only = QuantsimSettings {
            mode: QuantMode::ActivationsOnly,
            ..base.clone()
        };
        let before = passes();
        let sim = simulate(&model, &prepared, &activations_only).unwrap();
        assert_eq!(passes(), before);
        assert_eq!(
            sim.activations,
            activation_encodings_for(&prepared, &activations_only).unwrap()
        );
    }

    /// Settings recorded before the option meant FP32 calibration, the default, and their
    /// step reads as before.
    #[test]
    fn older_settings_records_calibrate_on_fp32() {
        let settings = QuantsimSettings {
            calibrate_on: CalibrateOn::QuantizedWeights,
            ..Default::default()
        };
        let mut json = serde_json::to_value(&settings).unwrap();
        assert_eq!(json["calibrate_on"], "quantized_weights");
        json.as_object_mut().unwrap().remove("calibrate_on");
        let older: QuantsimSettings = serde_json::from_value(json).unwrap();
        assert_eq!(older.calibrate_on, CalibrateOn::Fp32);
        assert_eq!(older.step(), QuantsimSettings::default().step());
        assert_eq!("fp32".parse::<CalibrateOn>().unwrap(), CalibrateOn::Fp32);
        assert_eq!(
            "quantized-weights".parse::<CalibrateOn>().unwrap(),
            CalibrateOn::QuantizedWeights
        );
        assert!("weights".parse::<CalibrateOn>().is_err());
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
