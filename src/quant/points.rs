//! Where quantizers sit on the ONNX graph: activation quantizer points and per-layer weight
//! quantizers.
//!
//! ## Activation points
//!
//! A point is a value whose fake-quant models what an integer runtime stores. The rules:
//!
//! - **Graph inputs** (float, fed by the user) are points. Integer and bool inputs (token ids,
//!   masks, a sample rate) and the values computed from them are never quantized; a float
//!   value made from them and stored weights (an embedding `Gather`, a `Cast` to float) is
//!   dynamic and gets a point, even from a pass-through op.
//! - Every node whose output is a *dynamic float* value (float, and computed from a graph
//!   input rather than from constants only) puts a point on that output, **except**:
//!   - **pass-through ops**, whose output values are values of their input (so already on the
//!     input's grid): the shape-only ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
//!     Identity, …), the selectors (Slice, Split, Gather, …), a Pad that adds reflected, edge
//!     or zero values (ONNX Runtime's QDQ quantizer keeps its input's scale too) and, by
//!     choice, **MaxPool and a standalone Relu**. A max of grid values, or `max(0, ·)` of them, is still on the grid
//!     (0 always is), so a runtime keeps the input's encoding; a second quantizer with a
//!     different range would only add noise;
//!   - **members of a group that is not its last op**. A group is a head followed by ops a
//!     runtime fuses into it, each value in between having that single consumer and not being
//!     a graph output: Conv / ConvTranspose / Gemm / MatMul, then an optional
//!     BatchNormalization, then an optional activation (Relu, Clip, LeakyRelu, PRelu,
//!     HardSwish, HardSigmoid); any other head (Add, Mul, Concat, pooling, …) may be followed
//!     by one activation (Add + Relu). The point goes after the last op of the group;
//!   - **members of a chain a runtime fuses** ([`super::fused_groups`]): a layer's constant
//!     `Mul`/`Add` (scale, bias), the ops of a decomposed LayerNormalization, and a
//!     HardSwish / HardSigmoid / SiLU written out with Add/Clip/Mul/Div/Sigmoid together with
//!     the op it reads from (Conv, its BatchNormalization, a bias Add) when only the activation
//!     reads it. The point goes after the chain's last op (and its activation, if one follows).
//!
//! So Conv/Gemm/MatMul/Add/Mul/Concat/AveragePool/GlobalAveragePool and every other
//! computing op (Sigmoid, Softmax, Resize, a standalone Clip or BatchNormalization …) get a
//! quantizer on their output, like AIMET's default configuration.
//!
//! ## Weight quantizers
//!
//! One per [`Layer`] (Conv, ConvTranspose, Gemm, MatMul with a constant operand), on its weight
//! value, with the output-channel axis from [`WeightLayout`]. Biases stay FP32.

use std::collections::HashSet;

use serde::Serialize;
use tract_onnx::pb::tensor_proto::DataType;

use super::fused_groups::{fused_chain_ends, fused_members};
use super::per_channel::WeightLayout;
use crate::model::graph::Producer;
use crate::model::{attrs, Layer, LayerKind, Model};
use crate::Result;

/// An activation quantizer: after `value`, which `producer_op` computes (`"Input"` for a graph
/// input). `node` is the producing node's index in `graph.node`, `None` for a graph input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuantPoint {
    pub value: String,
    pub producer_op: String,
    pub node: Option<usize>,
}

/// A weight quantizer of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightQuantizer {
    /// The layer's name (its node's label).
    pub layer: String,
    pub node: usize,
    /// The weight value (an initializer or Constant node output).
    pub weight: String,
    pub shape: Vec<usize>,
    /// Output-channel axis for per-channel quantization; `None` when the weight is the left
    /// operand of a MatMul/Gemm, which is quantized per tensor.
    pub axis: Option<usize>,
}

/// Ops whose output values are input values: no quantizer of their own.
const PASS_THROUGH: &[&str] = &[
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "Slice",
    "Split",
    "Gather",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxPool",
    "GlobalMaxPool",
    "Relu",
];

/// Whether `op`'s output values are values of its input (no quantizer of its own).
pub fn is_pass_through(op: &str) -> bool {
    PASS_THROUGH.contains(&op)
}

/// Ops that produce no float activations (indices, shapes, booleans).
const NON_FLOAT: &[&str] = &[
    "Shape",
    "Size",
    "ArgMax",
    "ArgMin",
    "NonZero",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
    "Constant",
    "ConstantOfShape",
    "Range",
];

pub(crate) const COMPUTE_HEADS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// Whether `node`'s output values are values of its input (no quantizer of its own): the
/// [`PASS_THROUGH`] ops, and a Pad that adds input values (reflect, edge) or zeros (on every
/// grid), which ONNX Runtime's QDQ quantizer also leaves on its input's scale.
pub(crate) fn passes_through(model: &Model, node: &tract_onnx::pb::NodeProto) -> bool {
    let op = node.op_type.as_str();
    if PASS_THROUGH.contains(&op) {
        return true;
    }
    if op != "Pad" {
        return false;
    }
    let mode = attrs::string(node, "mode").unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return true;
    }
    // Opset < 11: a `value` attribute; later: an optional third input.
    let attr_zero = attrs::float(node, "value").unwrap_or(0.0) == 0.0;
    let input_zero = match node.input.get(2).filter(|v| !v.is_empty()) {
        None => true,
        Some(v) => model.weight(v).is_some_and(|w| w.iter().all(|&x| x == 0.0)),
    };
    attr_zero && input_zero
}

const ACTIVATIONS: &[&str] = &[
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "HardSwish",
    "HardSigmoid",
];

/// Whether `op` is an activation a runtime fuses into the op before it.
pub(crate) fn is_activation(op: &str) -> bool {
    ACTIVATIONS.contains(&op)
}

/// The only reader of a value that is not a graph output (`None` for a graph output or a value
/// read by several nodes or none): the chain links of a group.
pub(crate) fn single_consumer_in(model: &Model) -> impl Fn(&str) -> Option<usize> + '_ {
    let outputs: HashSet<String> = model.output_names().into_iter().collect();
    move |value: &str| match model.index().consumers(value) {
        [(node, _)] if !outputs.contains(value) => Some(*node),
        _ => None,
    }
}

/// The activation quantizer points of `model`, in topological order of their producers (graph
/// inputs first). See the module docs for the rules.
pub fn activation_points(model: &Model) -> Result<Vec<QuantPoint>> {
    let graph = model.graph();
    let index = model.index();
    let float_inputs: Vec<String> = model
        .inputs()
        .iter()
        .filter(|i| is_float_input(i))
        .map(|i| i.name.clone())
        .collect();

    // Dynamic values: computed from a graph input. Float ones get points; the others (token
    // ids, masks, a sample rate fed as int64 / bool, and what is computed from them) never do.
    // Shapes of float values are not tracked: they stay out of both sets, as constants.
    let mut dynamic: HashSet<String> = float_inputs.iter().cloned().collect();
    let mut not_float: HashSet<String> = model
        .inputs()
        .iter()
        .filter(|i| !is_float_input(i))
        .map(|i| i.name.clone())
        .collect();
    // Float values a pass-through op makes from stored weights (an embedding Gather by
    // token ids): on no activation grid yet, so they get their own point.
    let mut fresh: HashSet<String> = HashSet::new();
    let float_weight = |v: &String| model.weight(v).is_some();
    for &i in index.order() {
        let node = &graph.node[i];
        let from_float = node.input.iter().any(|v| dynamic.contains(v));
        let from_other = node.input.iter().any(|v| not_float.contains(v));
        let first_out = node.output.first().filter(|o| !o.is_empty());
        if NON_FLOAT.contains(&node.op_type.as_str()) {
            if from_other {
                not_float.extend(node.output.iter().cloned());
            }
            continue;
        }
        if node.op_type == "Cast" {
            let to_float = attrs::int(node, "to") == Some(DataType::Float as i64);
            match (to_float, from_float || from_other, first_out) {
                (true, true, Some(out)) => {
                    dynamic.insert(out.clone());
                }
                (false, true, Some(out)) if from_other => {
                    not_float.insert(out.clone());
                }
                _ => {}
            }
            continue;
        }
        // Only float values are in `dynamic`, so shape and index inputs never count.
        // MaxPool's indices, TopK's indices, Dropout's mask (later slots): not float.
        let Some(out) = first_out else { continue };
        if from_float {
            dynamic.insert(out.clone());
            // Every output of a Split is a float part of its input (only slot 0 of the
            // other multi-output ops is: indices, masks).
            if node.op_type == "Split" {
                dynamic.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
            }
        } else if from_other {
            if node.input.iter().any(float_weight) {
                dynamic.insert(out.clone());
                fresh.insert(out.clone());
            } else {
                not_float.insert(out.clone());
            }
        }
    }

    let outputs: HashSet<String> = model.output_names().into_iter().collect();
    let single_consumer = single_consumer_in(model);

    // Group members that are not the group's last op: first the chains a runtime fuses
    // (a constant affine after a layer, a decomposed LayerNorm, a written-out activation and
    // the op it reads from), then head + activation.
    let mut inside: HashSet<usize> = fused_members(model, &single_consumer);
    for &i in index.order() {
        let node = &graph.node[i];
        let op = node.op_type.as_str();
        if inside.contains(&i) || passes_through(model, node) || ACTIVATIONS.contains(&op) {
            continue;
        }
        let Some(out) = node.output.first() else {
            continue;
        };
        if !dynamic.contains(out) {
            continue;
        }
        let mut member = i;
        let mut value = out.clone();
        let mut members = Vec::new();
        if COMPUTE_HEADS.contains(&op) {
            if let Some(next) = single_consumer(&value) {
                let n = &graph.node[next];
                if n.op_type == "BatchNormalization" && n.input.first() == Some(&value) {
                    members.push(member);
                    member = next;
                    value = n.output.first().cloned().unwrap_or_default();
                }
            }
        }
        if let Some(next) = single_consumer(&value) {
            let n = &graph.node[next];
            if ACTIVATIONS.contains(&n.op_type.as_str()) && n.input.first() == Some(&value) {
                members.push(member);
            }
        }
        inside.extend(members);
    }

    let mut points: Vec<QuantPoint> = float_inputs
        .into_iter()
        .map(|value| QuantPoint {
            value,
            producer_op: "Input".into(),
            node: None,
        })
        .collect();
    for &i in index.order() {
        let node = &graph.node[i];
        let op = node.op_type.as_str();
        if inside.contains(&i) {
            continue;
        }
        // A standalone Relu is pass-through; Relu ending a group is the group's point.
        let ends_group = ACTIVATIONS.contains(&op) && ends_a_group(model, i, &inside);
        let Some(out) = node.output.first() else {
            continue;
        };
        if passes_through(model, node) && !ends_group && !fresh.contains(out) {
            continue;
        }
        if dynamic.contains(out) && (outputs.contains(out) || !index.consumers(out).is_empty()) {
            points.push(QuantPoint {
                value: out.clone(),
                producer_op: node.op_type.clone(),
                node: Some(i),
            });
        }
    }
    Ok(points)
}

/// Whether node `i`'s data input comes from a group member (so `i` is the group's last op).
fn ends_a_group(model: &Model, i: usize, inside: &HashSet<usize>) -> bool {
    let node = &model.graph().node[i];
    match node.input.first().and_then(|v| model.index().producer(v)) {
        Some(Producer::Node { node: p, .. }) => inside.contains(&p),
        _ => false,
    }
}

fn is_float_input(input: &tract_onnx::pb::ValueInfoProto) -> bool {
    use tract_onnx::pb::type_proto::Value;
    match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => {
            t.elem_type == DataType::Float as i32 || t.elem_type == DataType::Undefined as i32
        }
        // Untyped inputs are fed float by the dataset loader.
        _ => true,
    }
}

/// One weight quantizer per layer, in the layers' order. A weight shared by several layers
/// appears once (for the first of them).
pub fn weight_quantizers(model: &Model, layers: &[Layer]) -> Result<Vec<WeightQuantizer>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for layer in layers {
        if !seen.insert(layer.weight.clone()) {
            continue;
        }
        let node = &model.graph().node[layer.node];
        let rank = layer.weight_shape.len();
        let layout = match layer.kind {
            LayerKind::Conv | LayerKind::GroupedConv | LayerKind::DepthwiseConv => {
                Some(WeightLayout::Conv)
            }
            LayerKind::ConvTranspose => Some(WeightLayout::ConvTranspose),
            LayerKind::Gemm | LayerKind::MatMul if !weight_is_right_operand(model, layer) => None,
            LayerKind::Gemm => Some(WeightLayout::Gemm {
                trans_b: attrs::int(node, "transB").unwrap_or(0) != 0,
            }),
            LayerKind::MatMul => Some(WeightLayout::MatMul),
        };
        let axis = layout.map(|l| l.output_axis(rank)).transpose()?;
        out.push(WeightQuantizer {
            layer: layer.name.clone(),
            node: layer.node,
            weight: layer.weight.clone(),
            shape: layer.weight_shape.clone(),
            axis,
        });
    }
    Ok(out)
}

/// For each layer, the activation point that ends its group (Conv → BatchNormalization →
/// activation): the value a runtime stores for it. `None` when the group's output carries no
/// quantizer (e.g. a graph output of a non-float type).
pub fn layer_output_points(
    model: &Model,
    layers: &[Layer],
    points: &[QuantPoint],
) -> Vec<Option<String>> {
    let graph = model.graph();
    let index = model.index();
    let is_point: HashSet<&str> = points.iter().map(|p| p.value.as_str()).collect();
    let chain_ends = fused_chain_ends(model, &single_consumer_in(model));
    layers
        .iter()
        .map(|layer| {
            let mut value = graph.node[layer.node].output.first()?.clone();
            // Head, then at most a BatchNormalization, a constant Mul and Add (a fused
            // affine) and an activation; or a fused chain, to its last op.
            for _ in 0..5 {
                if is_point.contains(value.as_str()) {
                    return Some(value);
                }
                if let Some(Producer::Node { node, slot: 0 }) = index.producer(&value) {
                    if let Some(&end) = chain_ends.get(&node) {
                        value = graph.node[end].output.first()?.clone();
                        continue;
                    }
                }
                let [(next, _)] = index.consumers(&value) else {
                    return None;
                };
                let n = &graph.node[*next];
                let op = n.op_type.as_str();
                let through = match op {
                    "BatchNormalization" => n.input.first() == Some(&value),
                    "Mul" | "Add" => true,
                    _ => ACTIVATIONS.contains(&op) && n.input.first() == Some(&value),
                };
                if !through {
                    return None;
                }
                value = n.output.first()?.clone();
            }
            None
        })
        .collect()
}

/// The activation point whose encoding `value` carries: `value` itself, or the point it comes
/// from through pass-through ops (a MaxPool or Flatten of grid values stays on the grid).
pub fn point_feeding<'a>(
    model: &Model,
    points: &'a [QuantPoint],
    value: &str,
) -> Option<&'a QuantPoint> {
    let graph = model.graph();
    let mut current = value.to_string();
    for _ in 0..64 {
        if let Some(p) = points.iter().find(|p| p.value == current) {
            return Some(p);
        }
        match model.index().producer(&current) {
            Some(Producer::Node { node, slot: 0 }) => {
                let n = &graph.node[node];
                if !passes_through(model, n) {
                    return None;
                }
                current = n.input.first()?.clone();
            }
            _ => return None,
        }
    }
    None
}

/// Whether a Gemm/MatMul layer's weight is its right operand (B), seen through Identity nodes.
fn weight_is_right_operand(model: &Model, layer: &Layer) -> bool {
    let graph = model.graph();
    let node = &graph.node[layer.node];
    let Some(mut current) = node.input.get(1).cloned() else {
        return false;
    };
    for _ in 0..8 {
        if current == layer.weight {
            return true;
        }
        match model.index().producer(&current) {
            Some(Producer::Node { node, .. }) if graph.node[node].op_type == "Identity" => {
                current = graph.node[node].input.first().cloned().unwrap_or_default();
            }
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn every_output_of_a_split_is_dynamic_and_quantized_downstream() {
        use crate::model::builder::{attr_int, ProtoBuilder};
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[4, 16])
            .node(
                "Split",
                "split",
                &["x"],
                &["a", "b"],
                vec![attr_int("axis", 1)],
            )
            .node("Sigmoid", "sa", &["a"], &["pa"], vec![])
            .node("Sigmoid", "sb", &["b"], &["pb"], vec![])
            .output("pa")
            .output("pb");
        let model = b.model("split").unwrap();
        let points = super::activation_points(&model).unwrap();
        let values: Vec<&str> = points.iter().map(|p| p.value.as_str()).collect();
        assert!(
            values.contains(&"pa") && values.contains(&"pb"),
            "{values:?}"
        );
    }

    use super::*;
    use std::path::Path;

    pub fn sample_model(name: &str) -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sample-models")
            .join(name);
        Model::load(&path).unwrap()
    }

    fn values(points: &[QuantPoint]) -> Vec<&str> {
        points.iter().map(|p| p.value.as_str()).collect()
    }

    #[test]
    fn mbv2_points_sit_after_groups_adds_pool_input_and_logits() {
        let model = sample_model("mbv2_digits.onnx");
        let points = activation_points(&model).unwrap();
        let v = values(&points);
        assert_eq!(v.first(), Some(&"input"));
        assert_eq!(v.last(), Some(&"logits"));
        assert!(v.contains(&"pool.out"));
        let g = model.graph();
        for node in &g.node {
            let out = node.output[0].as_str();
            match node.op_type.as_str() {
                // One after each Clip and each Add.
                "Clip" | "Add" => assert!(v.contains(&out), "{out} should be a point"),
                // Nothing between Conv, BN and Clip; Flatten passes through.
                "Conv" | "Flatten" => assert!(!v.contains(&out), "{out} is inside a group"),
                // A BN followed by Clip is inside the group; a projection BN (no activation)
                // ends its group.
                "BatchNormalization" => {
                    let consumer = &model.index().consumers(out);
                    let feeds_clip = consumer.len() == 1 && g.node[consumer[0].0].op_type == "Clip";
                    assert_eq!(v.contains(&out), !feeds_clip, "{out}");
                }
                _ => {}
            }
        }
        // Topological order, no duplicates.
        let set: HashSet<&str> = v.iter().copied().collect();
        assert_eq!(set.len(), v.len());
        let order = model.index().order();
        let pos: Vec<usize> = points
            .iter()
            .filter_map(|p| p.node)
            .map(|n| order.iter().position(|&o| o == n).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]));
        let clips = g.node.iter().filter(|n| n.op_type == "Clip").count();
        let adds = g.node.iter().filter(|n| n.op_type == "Add").count();
        // The projection BNs (no activation) end their Conv+BN group.
        let lone_bns = g
            .node
            .iter()
            .filter(|n| n.op_type == "BatchNormalization" && n.output[0].contains("project"))
            .count();
        assert_eq!(lone_bns, 5);
        assert_eq!(points.len(), 1 + clips + adds + lone_bns + 1 + 1);
    }

    #[test]
    fn resnet_add_relu_is_one_group() {
        let model = sample_model("resnet_digits.onnx");
        let v: Vec<String> = activation_points(&model)
            .unwrap()
            .into_iter()
            .map(|p| p.value)
            .collect();
        assert!(v.contains(&"layer1.relu2.out".to_string()));
        assert!(!v.contains(&"layer1.add.out".to_string()));
        // Conv+BN without an activation ends at the BN, which feeds the Add.
        assert!(v.contains(&"layer1.bn2.out".to_string()));
        assert!(v.contains(&"layer1.relu1.out".to_string()));
        assert!(!v.contains(&"stem.bn.out".to_string()));
    }

    #[test]
    fn pad_of_reflected_edge_or_zero_values_keeps_its_input_grid() {
        use crate::model::builder::{attr_float, attr_ints, ProtoBuilder};
        use tract_onnx::pb::attribute_proto::AttributeType;
        use tract_onnx::pb::AttributeProto;
        let mode = |m: &str| AttributeProto {
            name: "mode".into(),
            r#type: AttributeType::String as i32,
            s: m.as_bytes().to_vec(),
            ..Default::default()
        };
        let pads = || attr_ints("pads", &[0, 0, 2, 0, 0, 2]);
        let mut b = ProtoBuilder::new(10);
        b.input("x", &[2, 8])
            .node(
                "Pad",
                "reflect",
                &["x"],
                &["pr"],
                vec![pads(), mode("reflect")],
            )
            .node("Pad", "edge", &["pr"], &["pe"], vec![pads(), mode("edge")])
            .node("Pad", "zeros", &["pe"], &["pz"], vec![pads()])
            .node(
                "Pad",
                "ones",
                &["pz"],
                &["po"],
                vec![pads(), attr_float("value", 1.0)],
            )
            .node("Sigmoid", "prob", &["po"], &["out"], vec![])
            .output("out");
        let model = b.model("pads").unwrap();
        let points = activation_points(&model).unwrap();
        // A pad value of 1 is off the input's grid: that Pad needs its own quantizer.
        assert_eq!(values(&points), ["x", "po", "out"]);
        assert_eq!(
            point_feeding(&model, &points, "pz").map(|p| p.value.as_str()),
            Some("x")
        );
    }

    #[test]
    fn weight_quantizers_use_output_axes() {
        let model = sample_model("mbv2_digits.onnx");
        let shapes = model.shapes(None).unwrap();
        let layers = model.layers(&shapes).unwrap();
        let wq = weight_quantizers(&model, &layers).unwrap();
        assert_eq!(wq.len(), layers.len());
        for q in &wq {
            let expected = if q.weight == "fc.weight" {
                let trans_b = attrs::int(&model.graph().node[q.node], "transB").unwrap_or(0);
                if trans_b != 0 {
                    0
                } else {
                    1
                }
            } else {
                0
            };
            assert_eq!(q.axis, Some(expected), "{}", q.weight);
        }
    }
}
