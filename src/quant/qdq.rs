//! The simulated (QuantSim) model, built as a new [`Model`]:
//!
//! - **weights** of every layer fake-quantized in place (per output channel or per tensor),
//!   biases left FP32 — any bitwidth 2..=16, since only the float values change;
//! - **activations**: after each activation point a fake-quant inserted in the graph.
//!
//! ## Activation fake-quant ops
//!
//! - [`ActivationOps::Qdq`]: `QuantizeLinear → DequantizeLinear`, per tensor, with a `uint8`
//!   zero point (`-offset`; 128 for a signed symmetric encoding, the same grid as int8 with
//!   zero point 0: mixing int8 and uint8 pairs trips a tract optimisation). This is the form
//!   ONNX Runtime and target toolchains read. Only 8 bit: tract runs QuantizeLinear for 8-bit
//!   types only, and the 16-bit ONNX types need opset 21.
//! - [`ActivationOps::FloatOps`]: `Cast(f64) → Div(scale) → Cast(f32) → Round →
//!   Clip(offset, offset + 2^b − 1) → Mul(scale)`, the same math for any bitwidth (every grid
//!   index is an exact f32, and ONNX Round is half-to-even like [`Encoding::fake_quant`]),
//!   with exactly ONNX Runtime's division (below). Needs opset 11.
//! - [`ActivationOps::Auto`] (default): the same float ops with an f32 `Div`, which tract runs
//!   as a multiplication by 1/scale. tract runs float ops faster than a QDQ pair; the QDQ form
//!   is what `quant::export` writes for other runtimes (with the plain f32 `Div` where float
//!   ops are needed: those runtimes divide).
//!
//! ## Exactly ONNX Runtime's rounding
//!
//! ONNX `QuantizeLinear` divides (`round_half_even(x / scale)`), and ONNX Runtime does. tract
//! rewrites every float division, and its own QuantizeLinear, as a multiplication by the
//! reciprocal: `x · (1/scale)` is off by one ulp from `x / scale` for some inputs, and where
//! the quotient is a rounding tie (k + ½, common after average pooling, bilinear resizing or
//! two grid values added) or within an ulp of one, the value lands one grid step away, and the
//! step travels through the rest of the network. So the simulation divides in f64: `x / scale`
//! in f64 is within 2⁻⁵² (relative) of the exact quotient, a quotient of two f32 is never
//! closer than about 2⁻⁴⁸ to a point where rounding to f32 flips (it cannot be one: that
//! needs 25 significant bits), so the f64 quotient cast to f32 is the correctly rounded f32
//! quotient — ONNX Runtime's — and `Round` sees the same value. (tract's `QuantizeLinear`,
//! [`ActivationOps::Qdq`], keeps the reciprocal.)
//!
//! Measured (2026-12, tests/interop's ONNX Runtime 1.32 with `ORT_DISABLE_ALL` on the
//! simulated model vs qsteer's run of it): the exact division changes nothing measurable on
//! real models — sample MobileNetV2 W8A8 per channel: 0.85 % of the logits differ by one
//! output step with it, 0.80 % without; NudeNet 320n (YOLOv8, 1205 nodes): 4.02 % of the
//! outputs differ, by up to 12 output steps, with and without. What remains is tract's and
//! ONNX Runtime's FP32 ops differing in their last bits (convolution sums, the Sigmoid
//! approximation) and landing on the other side of a rounding boundary; a step travels
//! through the rest of the network. The exact form costs 1.6× the evaluation time on the
//! MobileNetV2 (2.4 s against 1.45 s for 600 samples, FP32 1.06 s) and 1.17× on NudeNet, so
//! the default keeps the reciprocal and `FloatOps` is there to take the division out of the
//! question.

//! ## Naming
//!
//! A quantized node output keeps its name for the *dequantized* value: the producer's output
//! is renamed `<value>_fp32` (made unique), the quantizer reads that and its last op writes
//! `<value>`. Consumers, graph outputs and value_info entries stay untouched, and captures by
//! name in the simulated model see the quantized values. A graph input cannot be renamed, so
//! its consumers are rewired to `<input>_dq`.
//!
//! ## Opset
//!
//! QDQ needs opset 10, the float ops 11, per-channel weights 13. A model at opset 11 or 12 is
//! converted to 13 where needed ([`crate::model::opset`]); one declaring less is bumped to 13
//! only if every op it uses has the same meaning from its opset to 13 (a short allow-list of
//! common ops, from opset 7 on); otherwise it is an error saying so.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use ndarray::arr0;
use serde::{Deserialize, Serialize};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, NodeProto, OperatorSetIdProto, TensorProto};

use super::calibrate::Scheme;
use super::encoding::{Encoding, QuantSpec};
use super::per_channel::{
    fake_quant_tensor, fake_quant_weight, per_channel_encodings, per_tensor_encoding,
};
use super::points::WeightQuantizer;
use crate::model::graph::Producer;
use crate::model::tensor::tensor_from_array;
use crate::model::Model;
use crate::{Error, Result};

/// Which quantizers a simulation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantMode {
    /// Weights and activations (`wa`).
    WeightsAndActivations,
    /// Weights only (`w`).
    WeightsOnly,
    /// Activations only (`a`).
    ActivationsOnly,
}

impl QuantMode {
    pub fn weights(self) -> bool {
        self != QuantMode::ActivationsOnly
    }

    pub fn activations(self) -> bool {
        self != QuantMode::WeightsOnly
    }
}

impl fmt::Display for QuantMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantMode::WeightsAndActivations => "wa",
            QuantMode::WeightsOnly => "w",
            QuantMode::ActivationsOnly => "a",
        })
    }
}

impl FromStr for QuantMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wa" | "aw" | "both" | "w+a" => Ok(QuantMode::WeightsAndActivations),
            "w" | "weights" | "weights_only" => Ok(QuantMode::WeightsOnly),
            "a" | "activations" | "activations_only" => Ok(QuantMode::ActivationsOnly),
            _ => Err(Error::input(format!(
                "unknown quantsim mode '{s}' (expected wa, w or a)"
            ))),
        }
    }
}

/// How activation fake-quant is written into the graph; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationOps {
    #[default]
    Auto,
    Qdq,
    FloatOps,
    /// What other runtimes read (the export): `QuantizeLinear → DequantizeLinear` at 8 bit,
    /// float ops at other bitwidths.
    QdqAt8,
}

/// Weight quantization settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightConfig {
    pub spec: QuantSpec,
    pub scheme: Scheme,
    pub per_channel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    pub mode: QuantMode,
    pub weights: WeightConfig,
    pub activation_ops: ActivationOps,
}

/// The encodings one weight was fake-quantized with: one per channel along `axis`, or one
/// for the tensor (`axis == None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightEncodings {
    pub layer: String,
    pub weight: String,
    pub axis: Option<usize>,
    pub encodings: Vec<Encoding>,
}

/// A simulated model and the encodings it was built with.
#[derive(Debug, Clone)]
pub struct SimModel {
    pub model: Model,
    pub weights: Vec<WeightEncodings>,
    /// Activation encodings by value name (empty in weights-only mode).
    pub activations: BTreeMap<String, Encoding>,
    /// The biases the simulation put on the int32 grid (see [`super::bias`]).
    pub biases: Vec<super::bias::BiasGrid>,
}

impl SimModel {
    /// Bytes of the model as an integer runtime stores it, from its float model's
    /// `float_bytes`: each quantized weight at its bitwidth (packed: 4-bit weights take half
    /// a byte) with one scale and zero point per encoding, instead of float32. (The
    /// simulation's own file is larger than the float model: it adds the fake-quant ops.)
    pub fn deployed_bytes(&self, float_bytes: u64) -> u64 {
        let (mut float, mut packed) = (0u64, 0u64);
        for w in &self.weights {
            let Some((_, weight)) = self.model.weights().find(|(name, _)| **name == w.weight)
            else {
                continue;
            };
            let elements = weight.array.len() as u64;
            let bits = w.encodings.first().map_or(32, |e| e.bitwidth) as u64;
            float += elements * 4;
            packed += (elements * bits).div_ceil(8) + 8 * w.encodings.len() as u64;
        }
        float_bytes.saturating_sub(float) + packed
    }
}

/// Build the simulated model. `weights` are the layers' weight quantizers
/// ([`super::points::weight_quantizers`]); `activations` maps each activation point's value to
/// its encoding (from calibration or a file) and is ignored in weights-only mode.
pub fn build_quantsim(
    model: &Model,
    weights: &[WeightQuantizer],
    activations: &BTreeMap<String, Encoding>,
    config: &SimConfig,
) -> Result<SimModel> {
    let weights: Vec<(WeightQuantizer, WeightConfig)> = weights
        .iter()
        .map(|q| (q.clone(), config.weights))
        .collect();
    build_quantsim_with(
        model,
        &weights,
        activations,
        config.mode,
        config.activation_ops,
    )
}

/// [`build_quantsim`] with a weight configuration per quantizer (per-layer bitwidths; a layer
/// left out keeps FP32 weights).
pub fn build_quantsim_with(
    model: &Model,
    weights: &[(WeightQuantizer, WeightConfig)],
    activations: &BTreeMap<String, Encoding>,
    mode: QuantMode,
    activation_ops: ActivationOps,
) -> Result<SimModel> {
    let mut sim = model.clone();
    let mut weight_encodings = Vec::new();
    if mode.weights() {
        for (q, config) in weights {
            let enc = quantize_weight(&mut sim, q, config)?;
            weight_encodings.push(enc);
        }
    }
    let activations = if mode.activations() {
        activations.clone()
    } else {
        BTreeMap::new()
    };
    if activations.is_empty() {
        return Ok(SimModel {
            model: sim,
            weights: weight_encodings,
            activations,
            biases: Vec::new(),
        });
    }
    let biases = super::bias::bias_grids(&sim, &weight_encodings, &activations);
    super::bias::put_on_grids(&mut sim, &biases)?;
    let mut proto = sim.proto().clone();
    insert_activation_quantizers(&sim, &mut proto, &activations, activation_ops)?;
    let model = Model::from_proto(proto, &format!("{} (quantsim)", model.source()))?;
    Ok(SimModel {
        model,
        weights: weight_encodings,
        activations,
        biases,
    })
}

fn quantize_weight(
    model: &mut Model,
    q: &WeightQuantizer,
    config: &WeightConfig,
) -> Result<WeightEncodings> {
    let mut w = model
        .weight(&q.weight)
        .ok_or_else(|| {
            Error::input(format!(
                "{}: layer '{}' has no float weight '{}'",
                model.source(),
                q.layer,
                q.weight
            ))
        })?
        .clone();
    let context = |e: Error| Error::input(format!("weight '{}' of '{}': {e}", q.weight, q.layer));
    let (axis, encodings) = match q.axis.filter(|_| config.per_channel) {
        Some(axis) => {
            let enc = per_channel_encodings(w.view(), axis, config.spec, config.scheme)
                .map_err(context)?;
            fake_quant_weight(&mut w, &enc, axis)?;
            (Some(axis), enc)
        }
        None => {
            let enc = per_tensor_encoding(w.view(), config.spec, config.scheme).map_err(context)?;
            fake_quant_tensor(&mut w, &enc);
            (None, vec![enc])
        }
    };
    model.set_weight(&q.weight, w)?;
    Ok(WeightEncodings {
        layer: q.layer.clone(),
        weight: q.weight.clone(),
        axis,
        encodings,
    })
}

/// Activation fake-quant form chosen for one encoding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Form {
    Qdq,
    /// `Div → Round → Clip → Mul` in f32: what other runtimes (which divide) read.
    FloatOps,
    /// The division done in f64 and rounded to f32 (`Cast → Div → Cast → Round → Clip →
    /// Mul`): what tract runs, since tract turns every f32 division into a multiplication by
    /// the reciprocal. See the module docs.
    ExactFloatOps,
}

pub(crate) fn form_for(ops: ActivationOps, e: &Encoding, value: &str) -> Result<Form> {
    match ops {
        ActivationOps::FloatOps => Ok(Form::ExactFloatOps),
        ActivationOps::Auto => Ok(Form::FloatOps),
        ActivationOps::QdqAt8 if e.bitwidth == 8 => Ok(Form::Qdq),
        ActivationOps::QdqAt8 => Ok(Form::FloatOps),
        ActivationOps::Qdq if e.bitwidth == 8 => Ok(Form::Qdq),
        ActivationOps::Qdq => Err(Error::input(format!(
            "activation '{value}': a {}-bit QuantizeLinear/DequantizeLinear pair cannot be \
             run here (8 bit only); use the float-ops form for other bitwidths",
            e.bitwidth
        ))),
    }
}

/// Fresh value/node names, unique in the graph.
pub(crate) struct Names(HashSet<String>);

impl Names {
    pub(crate) fn of(graph: &GraphProto) -> Names {
        let mut set = HashSet::new();
        set.extend(graph.input.iter().map(|v| v.name.clone()));
        set.extend(graph.output.iter().map(|v| v.name.clone()));
        set.extend(graph.initializer.iter().map(|t| t.name.clone()));
        set.extend(graph.value_info.iter().map(|v| v.name.clone()));
        for n in &graph.node {
            set.extend(n.output.iter().cloned());
            set.insert(n.name.clone());
        }
        Names(set)
    }

    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

pub(crate) fn insert_activation_quantizers(
    model: &Model,
    proto: &mut tract_onnx::pb::ModelProto,
    activations: &BTreeMap<String, Encoding>,
    ops: ActivationOps,
) -> Result<()> {
    let mut forms = BTreeMap::new();
    for (value, e) in activations {
        e.validate()
            .map_err(|err| Error::input(format!("activation '{value}': {err}")))?;
        forms.insert(value.clone(), form_for(ops, e, value)?);
    }
    let needed = if forms.values().any(|f| *f != Form::Qdq) {
        11
    } else {
        10
    };
    ensure_opset(model, proto, needed)?;

    let graph = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(graph);
    // Quantizer nodes to insert after node i (`None`: before every node).
    let mut after: BTreeMap<Option<usize>, Vec<NodeProto>> = BTreeMap::new();
    let mut input_renames: Vec<(String, String)> = Vec::new();
    for (value, e) in activations {
        let form = forms[value];
        let (source, target, anchor) = match model.index().producer(value) {
            Some(Producer::Input) => {
                let target = names.fresh(&format!("{value}_dq"));
                input_renames.push((value.clone(), target.clone()));
                (value.clone(), target, None)
            }
            Some(Producer::Node { node, slot }) => {
                let pre = names.fresh(&format!("{value}_fp32"));
                graph.node[node].output[slot] = pre.clone();
                (pre, value.clone(), Some(node))
            }
            Some(Producer::Initializer) | None => {
                return Err(Error::input(format!(
                    "{}: '{value}' is not an activation (no node or graph input produces it)",
                    model.source()
                )))
            }
        };
        let nodes = quantizer_nodes(graph, &mut names, value, e, form, &source, &target);
        after.entry(anchor).or_default().extend(nodes);
    }

    // Rewire consumers of quantized graph inputs (not the quantizers reading them).
    for node in graph.node.iter_mut() {
        for input in node.input.iter_mut() {
            if let Some((_, to)) = input_renames.iter().find(|(from, _)| from == input) {
                *input = to.clone();
            }
        }
    }
    let old = std::mem::take(&mut graph.node);
    let mut nodes = after.remove(&None).unwrap_or_default();
    for (i, node) in old.into_iter().enumerate() {
        nodes.push(node);
        nodes.extend(after.remove(&Some(i)).unwrap_or_default());
    }
    graph.node = nodes;
    Ok(())
}

/// The nodes computing `target = fake_quant(source)`, with their initializers added to
/// `graph`.
pub(crate) fn quantizer_nodes(
    graph: &mut GraphProto,
    names: &mut Names,
    value: &str,
    e: &Encoding,
    form: Form,
    source: &str,
    target: &str,
) -> Vec<NodeProto> {
    let scale = names.fresh(&format!("{value}_scale"));
    graph
        .initializer
        .push(tensor_from_array(&scale, &arr0(e.onnx_scale()).into_dyn()));
    let node = |names: &mut Names, op: &str, inputs: Vec<String>, output: String| NodeProto {
        name: names.fresh(&format!("{value}_{}", op.to_ascii_lowercase())),
        op_type: op.to_string(),
        input: inputs,
        output: vec![output],
        ..Default::default()
    };
    match form {
        Form::Qdq => {
            let zp = names.fresh(&format!("{value}_zero_point"));
            graph.initializer.push(zero_point_tensor(&zp, e));
            let q = names.fresh(&format!("{value}_quantized"));
            vec![
                node(
                    names,
                    "QuantizeLinear",
                    vec![source.into(), scale.clone(), zp.clone()],
                    q.clone(),
                ),
                node(
                    names,
                    "DequantizeLinear",
                    vec![q, scale, zp],
                    target.to_string(),
                ),
            ]
        }
        Form::FloatOps | Form::ExactFloatOps => {
            let lo = names.fresh(&format!("{value}_qmin"));
            let hi = names.fresh(&format!("{value}_qmax"));
            let (qmin, qmax) = (
                e.offset as f32,
                (e.offset as i64 + e.num_steps() as i64) as f32,
            );
            graph
                .initializer
                .push(tensor_from_array(&lo, &arr0(qmin).into_dyn()));
            graph
                .initializer
                .push(tensor_from_array(&hi, &arr0(qmax).into_dyn()));
            let scaled = names.fresh(&format!("{value}_scaled"));
            let rounded = names.fresh(&format!("{value}_rounded"));
            let clipped = names.fresh(&format!("{value}_clipped"));
            let mut nodes = Vec::new();
            if form == Form::ExactFloatOps {
                // x / scale in f64 is within 2^-52 of the exact quotient, and a quotient of
                // two f32 is never within 2^-48 of a point where f32 rounding flips, so the
                // f64 result rounded to f32 is exactly ONNX Runtime's f32 division.
                let wide = names.fresh(&format!("{value}_f64"));
                let wide_scale = names.fresh(&format!("{value}_scale_f64"));
                let wide_scaled = names.fresh(&format!("{value}_scaled_f64"));
                graph.initializer.push(TensorProto {
                    name: wide_scale.clone(),
                    data_type: DataType::Double as i32,
                    double_data: vec![e.onnx_scale() as f64],
                    ..Default::default()
                });
                let cast = |names: &mut Names, input: String, output: String, to: DataType| {
                    let mut n = node(names, "Cast", vec![input], output);
                    n.attribute.push(tract_onnx::pb::AttributeProto {
                        name: "to".into(),
                        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
                        i: to as i64,
                        ..Default::default()
                    });
                    n
                };
                nodes.push(cast(names, source.into(), wide.clone(), DataType::Double));
                nodes.push(node(
                    names,
                    "Div",
                    vec![wide, wide_scale],
                    wide_scaled.clone(),
                ));
                nodes.push(cast(names, wide_scaled, scaled.clone(), DataType::Float));
            } else {
                nodes.push(node(
                    names,
                    "Div",
                    vec![source.into(), scale.clone()],
                    scaled.clone(),
                ));
            }
            nodes.extend([
                node(names, "Round", vec![scaled], rounded.clone()),
                node(names, "Clip", vec![rounded, lo, hi], clipped.clone()),
                node(names, "Mul", vec![clipped, scale], target.to_string()),
            ]);
            nodes
        }
    }
}

/// The zero point of a per-tensor 8-bit QDQ pair: always uint8 `-offset` (a signed symmetric
/// encoding gets 128, the same grid as int8 with 0). Mixing int8 and uint8 pairs trips a tract
/// optimisation (a DQ → element-wise → Q chain of different signedness becomes a lookup table
/// of the wrong type), and uint8 holds every 8-bit encoding.
fn zero_point_tensor(name: &str, e: &Encoding) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: DataType::Uint8 as i32,
        dims: vec![],
        raw_data: vec![e.onnx_zero_point() as u8],
        ..Default::default()
    }
}

/// Ops whose meaning is the same at every opset from 7 to 13 (for a safe opset bump).
const STABLE_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Identity",
    "Constant",
];

pub(crate) fn ensure_opset(
    model: &Model,
    proto: &mut tract_onnx::pb::ModelProto,
    needed: i64,
) -> Result<()> {
    let current = crate::model::opset::default_opset(proto);
    if current >= needed {
        return Ok(());
    }
    // Opset 11 and 12: converted (the few ops whose meaning changes are rewritten).
    if current >= 11 {
        crate::model::opset::upgrade_to_13(proto, model.source())?;
        return Ok(());
    }
    let unstable: Vec<&str> = model
        .graph()
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .filter(|op| !STABLE_OPS.contains(op))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if current < 7 || !unstable.is_empty() {
        return Err(Error::input(format!(
            "{}: the model declares opset {current}; quantizers need opset {needed}, \
             and raising it could change the meaning of {} (opsets 11 and 12 are converted; \
             re-export the model at opset 11 or later)",
            model.source(),
            if unstable.is_empty() {
                "its ops".to_string()
            } else {
                format!("its {} nodes", unstable.join(", "))
            }
        )));
    }
    let default_domain = proto
        .opset_import
        .iter_mut()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx");
    match default_domain {
        Some(o) => o.version = 13,
        None => proto.opset_import.push(OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::data::Dataset;
    use crate::experiment::evaluate::{sample_shapes, Subset};
    use crate::metrics::top_k_accuracy;
    use crate::quant::calibration::tests::{digits, options};
    use crate::quant::calibration::{activation_encodings, collect_histograms};
    use crate::quant::histogram::Histogram;
    use crate::quant::points::{activation_points, tests::sample_model, weight_quantizers};
    use crate::runtime::{CompiledModel, RunOptions};
    use ndarray::{Array2, ArrayD, IxDyn};
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension, Dimension},
        type_proto, ModelProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    fn accuracy(model: &Model, data: &Dataset) -> f64 {
        let compiled =
            CompiledModel::compile(model, &sample_shapes(model, data).unwrap(), 50, &[]).unwrap();
        let run = compiled
            .run_dataset(
                data,
                RunOptions {
                    batch_size: 50,
                    threads: 2,
                },
                &CancelToken::new(),
                &|_, _| {},
            )
            .unwrap();
        let out = &run.outputs[0];
        let n = out.shape()[0];
        let rows = out.to_shape((n, out.len() / n)).unwrap().to_owned();
        top_k_accuracy(rows.view(), data.labels.as_deref().unwrap(), 1)
    }

    struct Setup {
        model: Model,
        weights: Vec<WeightQuantizer>,
        histograms: BTreeMap<String, Histogram>,
        eval: Dataset,
    }

    fn setup(name: &str) -> Setup {
        let model = sample_model(name);
        let points = activation_points(&model).unwrap();
        let layers = model.layers(&model.shapes(None).unwrap()).unwrap();
        let weights = weight_quantizers(&model, &layers).unwrap();
        let histograms = collect_histograms(
            &model,
            &points,
            &digits(Subset::Calibration),
            options(),
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
        Setup {
            model,
            weights,
            histograms,
            eval: digits(Subset::Evaluation),
        }
    }

    fn config(mode: &str, w_bits: u8, per_channel: bool, scheme: Scheme) -> SimConfig {
        SimConfig {
            mode: mode.parse().unwrap(),
            weights: WeightConfig {
                spec: QuantSpec::new(w_bits, false).unwrap(),
                scheme,
                per_channel,
            },
            activation_ops: ActivationOps::Auto,
        }
    }

    /// Accuracy of the simulated model, after a round trip through ONNX bytes.
    fn sim_accuracy(s: &Setup, config: &SimConfig, a_bits: u8, a_scheme: Scheme) -> f64 {
        let spec = QuantSpec::new(a_bits, false).unwrap();
        let act = activation_encodings(&s.histograms, a_scheme, spec).unwrap();
        let sim = build_quantsim(&s.model, &s.weights, &act, config).unwrap();
        let reloaded = Model::from_bytes(&sim.model.to_bytes(), "sim").unwrap();
        accuracy(&reloaded, &s.eval)
    }

    #[test]
    fn mbv2_w8a8_per_channel_tf_enhanced_stays_close_to_fp32() {
        let s = setup("mbv2_digits.onnx");
        let te = Scheme::TfEnhanced;
        let fp32 = accuracy(&s.model, &s.eval);
        assert_eq!(s.eval.len(), 400);
        let wa = sim_accuracy(&s, &config("wa", 8, true, te), 8, te);
        let w = sim_accuracy(&s, &config("w", 8, true, te), 8, te);
        let a = sim_accuracy(&s, &config("a", 8, true, te), 8, te);
        eprintln!("mbv2: fp32 {fp32:.4} w8a8 {wa:.4} w8 {w:.4} a8 {a:.4}");
        assert!((fp32 - 0.9925).abs() < 1e-9, "fp32 {fp32}");
        assert!(fp32 - wa <= 0.02, "w8a8 {wa} vs fp32 {fp32}");
        assert!(fp32 - w <= 0.02 && fp32 - a <= 0.02, "w {w} a {a}");
    }

    #[test]
    fn mbv2_w4_weights_only_per_tensor_is_worse_than_w8() {
        let s = setup("mbv2_digits.onnx");
        let mm = Scheme::Minmax;
        let w8 = sim_accuracy(&s, &config("w", 8, false, mm), 8, mm);
        let w4 = sim_accuracy(&s, &config("w", 4, false, mm), 8, mm);
        let w4pc = sim_accuracy(&s, &config("w", 4, true, mm), 8, mm);
        let w4a8 = sim_accuracy(
            &s,
            &config("wa", 4, true, Scheme::TfEnhanced),
            8,
            Scheme::TfEnhanced,
        );
        let a4 = sim_accuracy(&s, &config("a", 8, true, mm), 4, Scheme::TfEnhanced);
        eprintln!(
            "mbv2: w8 per-tensor minmax {w8:.4}, w4 per-tensor minmax {w4:.4}, \
             w4 per-channel minmax {w4pc:.4}, w4a8 per-channel tf_enhanced {w4a8:.4}, \
             a4 (float ops) tf_enhanced {a4:.4}"
        );
        assert!(
            w8 - w4 >= 0.02,
            "w4 {w4} should be measurably below w8 {w8}"
        );
    }

    #[test]
    fn resnet_w8a8_stays_close_to_fp32() {
        let s = setup("resnet_digits.onnx");
        let te = Scheme::TfEnhanced;
        let fp32 = accuracy(&s.model, &s.eval);
        let wa = sim_accuracy(&s, &config("wa", 8, true, te), 8, te);
        eprintln!("resnet: fp32 {fp32:.4} w8a8 {wa:.4}");
        assert!(fp32 - wa <= 0.02, "w8a8 {wa} vs fp32 {fp32}");
    }

    #[test]
    fn weights_only_leaves_graph_and_biases_alone() {
        let s = setup("mbv2_digits.onnx");
        let cfg = config("w", 4, true, Scheme::Minmax);
        let sim = build_quantsim(&s.model, &s.weights, &BTreeMap::new(), &cfg).unwrap();
        assert_eq!(sim.model.graph().node.len(), s.model.graph().node.len());
        assert_eq!(sim.model.weight("fc.bias"), s.model.weight("fc.bias"));
        let w = sim.model.weight("stem.conv.weight").unwrap();
        assert_ne!(Some(w), s.model.weight("stem.conv.weight"));
        let encs = &sim.weights[0];
        assert_eq!(encs.axis, Some(0));
        assert_eq!(encs.encodings.len(), w.shape()[0]);
        // At most 16 distinct values per output channel at 4 bit.
        for c in w.outer_iter() {
            let mut v: Vec<u32> = c.iter().map(|x| x.to_bits()).collect();
            v.sort();
            v.dedup();
            assert!(v.len() <= 16);
        }
    }

    /// `x` (N × 40) → Mul(x, 1) → `m` (a graph output).
    fn tiny_model(opset: i64) -> Model {
        let info = |name: &str| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            Dimension {
                                value: Some(dimension::Value::DimParam("N".into())),
                                ..Default::default()
                            },
                            Dimension {
                                value: Some(dimension::Value::DimValue(40)),
                                ..Default::default()
                            },
                        ],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let graph = GraphProto {
            name: "tiny".into(),
            node: vec![NodeProto {
                name: "mul".into(),
                op_type: "Mul".into(),
                input: vec!["x".into(), "one".into()],
                output: vec!["m".into()],
                ..Default::default()
            }],
            initializer: vec![tensor_from_array("one", &arr0(1.0f32).into_dyn())],
            input: vec![info("x")],
            output: vec![info("m")],
            ..Default::default()
        };
        let proto = ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(graph),
            ..Default::default()
        };
        Model::from_proto(proto, "tiny").unwrap()
    }

    fn run_tiny(model: &Model, x: &Array2<f32>) -> Vec<f32> {
        let compiled = CompiledModel::compile(model, &[vec![40]], x.nrows(), &[]).unwrap();
        let out = compiled.run(&[x.view().into_dyn()]).unwrap();
        out[0].iter().copied().collect()
    }

    /// Values across and beyond the grid, including exact ties (k + 1/2) × scale.
    fn probe(scale: f32) -> Array2<f32> {
        let v: Vec<f32> = (0..200)
            .map(|i| (i as f32 - 100.0) * 0.5 * scale * 1.37)
            .chain((0..40).map(|k| (k as f32 - 20.0 + 0.5) * scale * 7.0))
            .chain((0..40).map(|k| (k as f32 * 0.77).sin() * 300.0 * scale))
            .collect();
        Array2::from_shape_vec((7, 40), v).unwrap()
    }

    fn check_tiny(ea: Encoding, eb: Encoding, ops: ActivationOps, opset: i64) {
        let model = tiny_model(opset);
        let acts = BTreeMap::from([("x".to_string(), ea), ("m".to_string(), eb)]);
        let cfg = SimConfig {
            mode: QuantMode::ActivationsOnly,
            weights: WeightConfig {
                spec: QuantSpec::new(8, false).unwrap(),
                scheme: Scheme::Minmax,
                per_channel: false,
            },
            activation_ops: ops,
        };
        let sim = build_quantsim(&model, &[], &acts, &cfg).unwrap();
        assert_eq!(sim.model.output_names(), vec!["m".to_string()]);
        let sim = Model::from_bytes(&sim.model.to_bytes(), "tiny sim").unwrap();
        assert!(sim.opset() >= 11);
        let x = probe(ea.scale);
        let got = run_tiny(&sim, &x);
        let expected: Vec<f32> = x.iter().map(|&v| eb.fake_quant(ea.fake_quant(v))).collect();
        for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
            // Exact: the same f32 value (the float ops may give -0 where fake_quant gives 0).
            assert!(g == e, "{ops:?} #{k}: {g} vs {e}");
        }
    }

    #[test]
    fn tiny_qdq_and_float_ops_reproduce_fake_quant_exactly() {
        // Power-of-two scales: tract's multiply-by-reciprocal is exact.
        let asym = Encoding::from_scale_offset(8, false, 0.0625, -100).unwrap();
        let sym = Encoding::from_scale_offset(8, true, 0.125, -128).unwrap();
        check_tiny(asym, sym, ActivationOps::Qdq, 13);
        check_tiny(sym, asym, ActivationOps::Auto, 13);
        check_tiny(asym, sym, ActivationOps::FloatOps, 13);
        let a4 = Encoding::from_scale_offset(4, false, 0.25, -5).unwrap();
        let a16 = Encoding::from_scale_offset(16, true, 1.0 / 1024.0, -32768).unwrap();
        check_tiny(a4, a16, ActivationOps::Auto, 13);
        // Opset 9 with only stable ops is bumped.
        check_tiny(asym, a4, ActivationOps::Auto, 9);
    }

    /// Values next to rounding ties where `x · (1/scale)` (what tract computes for a division)
    /// and `x / scale` (ONNX QuantizeLinear, ONNX Runtime) round to different grid steps.
    fn reciprocal_disagreements(e: &Encoding) -> Vec<f32> {
        let recip = 1.0 / e.scale;
        let mut found = Vec::new();
        for k in 0..e.num_steps() as i32 + e.offset {
            let tie = (k as f32 + 0.5) * e.scale;
            for d in -8i32..=8 {
                let x = f32::from_bits((tie.to_bits() as i32 + d) as u32);
                if (x / e.scale).round_ties_even() != (x * recip).round_ties_even() {
                    found.push(x);
                }
            }
        }
        found
    }

    #[test]
    fn simulation_divides_like_onnx_runtime_where_the_reciprocal_rounds_the_other_way() {
        let e = QuantSpec::new(8, false).unwrap().encoding(-1.3, 2.9);
        let crafted = reciprocal_disagreements(&e);
        assert!(
            !crafted.is_empty(),
            "no disagreeing value for scale {}",
            e.scale
        );
        let model = tiny_model(13);
        let acts = BTreeMap::from([("x".to_string(), e)]);
        let cfg = SimConfig {
            mode: QuantMode::ActivationsOnly,
            weights: WeightConfig {
                spec: QuantSpec::new(8, false).unwrap(),
                scheme: Scheme::Minmax,
                per_channel: false,
            },
            activation_ops: ActivationOps::FloatOps,
        };
        let sim = build_quantsim(&model, &[], &acts, &cfg).unwrap();
        let sim = Model::from_bytes(&sim.model.to_bytes(), "tiny sim").unwrap();
        let rows = crafted.len().div_ceil(40);
        let x = Array2::from_shape_fn((rows, 40), |(r, c)| crafted[(r * 40 + c) % crafted.len()]);
        let got = run_tiny(&sim, &x);
        for (v, g) in x.iter().zip(&got) {
            // ONNX Runtime's QuantizeLinear: the f32 quotient, rounded half to even.
            let expected = e.fake_quant(*v);
            let by_reciprocal = e.dequantize(
                ((v * (1.0 / e.scale)).round_ties_even() as i32 - e.offset)
                    .clamp(0, e.num_steps() as i32),
            );
            assert_ne!(expected, by_reciprocal, "{v}: not a disagreeing value");
            assert!(
                *g == expected,
                "{v}: simulated {g}, ONNX Runtime {expected}"
            );
        }
    }

    #[test]
    fn tiny_qdq_with_any_scale_is_within_one_step_on_rare_ties() {
        let ea = QuantSpec::new(8, false).unwrap().encoding(-1.3, 2.9);
        let eb = Encoding::from_scale_offset(8, false, 0.03125, -128).unwrap();
        let model = tiny_model(13);
        let acts = BTreeMap::from([("x".to_string(), ea), ("m".to_string(), eb)]);
        let cfg = SimConfig {
            mode: QuantMode::ActivationsOnly,
            weights: WeightConfig {
                spec: QuantSpec::new(8, false).unwrap(),
                scheme: Scheme::Minmax,
                per_channel: false,
            },
            activation_ops: ActivationOps::Qdq,
        };
        let sim = build_quantsim(&model, &[], &acts, &cfg).unwrap();
        let x = probe(ea.scale);
        let got = run_tiny(&sim.model, &x);
        let mismatches = x
            .iter()
            .zip(&got)
            .filter(|(v, g)| {
                let e = ea.fake_quant(**v);
                let diff = (eb.fake_quant(e) - **g).abs();
                assert!(diff <= ea.scale + eb.scale, "{v}: {g}");
                diff > 0.0
            })
            .count();
        assert!(mismatches <= 2, "{mismatches} of {}", x.len());
    }

    #[test]
    fn qdq_rejects_other_bitwidths_and_unknown_values() {
        let model = tiny_model(13);
        let mut cfg = SimConfig {
            mode: QuantMode::ActivationsOnly,
            weights: WeightConfig {
                spec: QuantSpec::new(8, false).unwrap(),
                scheme: Scheme::Minmax,
                per_channel: false,
            },
            activation_ops: ActivationOps::Qdq,
        };
        let e4 = Encoding::from_scale_offset(4, false, 0.25, -5).unwrap();
        let acts = BTreeMap::from([("m".to_string(), e4)]);
        let err = build_quantsim(&model, &[], &acts, &cfg).unwrap_err();
        assert!(err.to_string().contains("4-bit"), "{err}");
        cfg.activation_ops = ActivationOps::Auto;
        let acts = BTreeMap::from([("one".to_string(), e4)]);
        let err = build_quantsim(&model, &[], &acts, &cfg).unwrap_err();
        assert!(err.to_string().contains("not an activation"), "{err}");
        let _ = ArrayD::<f32>::zeros(IxDyn(&[1]));
    }
}
