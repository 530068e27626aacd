//! What tract cannot survive, checked before tract sees the model.
//!
//! Most malformed models make tract return an error, and the few that make it panic are
//! caught by `guard::guarded`. A handful reach `unsafe` code instead: tract's data-format
//! helpers (`BaseDataShape::c`, `hw_dims`, ... in tract-core's `ops/nn/data_formats.rs`)
//! read the channel and spatial dims with `get_unchecked`, and the inference rules of
//! BatchNormalization, Conv, ConvTranspose and the pools call them on the input's shape
//! before anything checks its rank. On a rank-0 or rank-1 input that is an
//! out-of-bounds read of the shape's inline storage: a garbage `TDim` is cloned and the
//! process dies of SIGSEGV (release) or aborts on the standard library's precondition
//! check (debug builds), with no panic to catch.
//!
//! So here, from the protobuf alone: the rank of every value that can be known without
//! tract (graph inputs, weights, and through the common ops), and for each op whose
//! rules index the input's layout, the ranks and the geometry attributes it assumes.
//! A value whose rank cannot be known statically is left to tract.

use super::graph::{node_label, GraphIndex};
use super::{attrs, tensor};
use crate::{Error, Result};
use std::collections::HashMap;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

/// Check the graph; `Err` names `source`, the node, its op and what is wrong.
pub fn validate(graph: &GraphProto, index: &GraphIndex, source: &str) -> Result<()> {
    let mut ranks: HashMap<&str, usize> = HashMap::new();
    let mut consts: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &graph.initializer {
        ranks.insert(&t.name, t.dims.len());
        consts.insert(&t.name, t);
    }
    for input in &graph.input {
        if ranks.contains_key(input.name.as_str()) {
            continue;
        }
        if let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            if let Some(shape) = &t.shape {
                ranks.insert(&input.name, shape.dim.len());
            }
        }
    }
    for &i in index.order() {
        let node = &graph.node[i];
        let at = Site {
            source,
            label: node_label(graph, i),
            node,
        };
        let rank_of = |slot: usize| -> Option<usize> {
            node.input
                .get(slot)
                .filter(|n| !n.is_empty())
                .and_then(|n| ranks.get(n.as_str()).copied())
        };
        check_node(&at, &rank_of)?;
        let out_ranks = output_ranks(node, &rank_of, &consts);
        for (slot, out) in node.output.iter().enumerate() {
            if out.is_empty() {
                continue;
            }
            if let Some(r) = out_ranks.get(slot).copied().flatten() {
                ranks.insert(out, r);
            }
        }
        if node.op_type == "Constant" {
            if let (Some(out), Some(t)) = (node.output.first(), attrs::tensor(node, "value")) {
                consts.insert(out, t);
            }
        }
    }
    Ok(())
}

struct Site<'a> {
    source: &'a str,
    label: String,
    node: &'a NodeProto,
}

impl Site<'_> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::input(format!(
            "{}: node '{}' ({}): {what}",
            self.source, self.label, self.node.op_type
        ))
    }

    fn input_name(&self, slot: usize) -> &str {
        self.node.input.get(slot).map(String::as_str).unwrap_or("")
    }
}

/// The ONNX names of an op's inputs, for messages.
fn slot_name(op: &str, slot: usize) -> String {
    let names: &[&str] = match op {
        "BatchNormalization" => &["X", "scale", "B", "input_mean", "input_var"],
        "Conv" | "ConvTranspose" => &["X", "W", "B"],
        _ => &["X"],
    };
    names
        .get(slot)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("#{slot}"))
}

/// An op whose inference rules read the input's channel/spatial layout unchecked.
fn layout_op(op: &str) -> Option<usize> {
    // the least rank tract needs: N, C, then at least one spatial axis for conv and pools
    match op {
        "BatchNormalization" => Some(2),
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" => Some(3),
        _ => None,
    }
}

fn check_node(at: &Site, rank_of: &dyn Fn(usize) -> Option<usize>) -> Result<()> {
    let op = at.node.op_type.as_str();
    let Some(min_rank) = layout_op(op) else {
        return Ok(());
    };
    let needs_rank = |slot: usize, min: usize| -> Result<()> {
        match rank_of(slot) {
            Some(r) if r < min => Err(at.err(format_args!(
                "input {} '{}' has rank {r}; {op} needs rank ≥ {min}",
                slot_name(op, slot),
                at.input_name(slot)
            ))),
            _ => Ok(()),
        }
    };
    needs_rank(0, min_rank)?;
    if op == "BatchNormalization" {
        return Ok(());
    }
    let mut spatial = rank_of(0).map(|r| r - 2);
    if op == "Conv" || op == "ConvTranspose" {
        needs_rank(1, min_rank)?;
        if let (Some(x), Some(w)) = (rank_of(0), rank_of(1)) {
            if x != w {
                return Err(at.err(format_args!(
                    "input X '{}' has rank {x} but weight W '{}' has rank {w}; {op} needs equal ranks",
                    at.input_name(0),
                    at.input_name(1)
                )));
            }
        }
        spatial = spatial.or(rank_of(1).map(|r| r - 2));
    }
    check_geometry(at, spatial)
}

/// Geometry attributes: positive sizes, non-negative pads, one entry per spatial axis.
fn check_geometry(at: &Site, spatial: Option<usize>) -> Result<()> {
    let node = at.node;
    let kernel = attrs::ints(node, "kernel_shape");
    if kernel.is_none() && matches!(node.op_type.as_str(), "MaxPool" | "AveragePool" | "LpPool") {
        return Err(at.err("attribute kernel_shape is missing"));
    }
    // the spatial rank: from the input, else from kernel_shape
    let spatial = spatial.or(kernel.as_ref().map(Vec::len));
    for (name, min, per_axis) in [
        ("kernel_shape", 1, 1),
        ("strides", 1, 1),
        ("dilations", 1, 1),
        ("pads", 0, 2),
        ("output_padding", 0, 1),
    ] {
        let Some(values) = attrs::ints(node, name) else {
            continue;
        };
        if let Some(v) = values.iter().find(|&&v| v < min) {
            return Err(at.err(format_args!(
                "attribute {name} {values:?} holds {v}; each must be ≥ {min}"
            )));
        }
        if let Some(s) = spatial {
            if values.len() != per_axis * s {
                let what = if per_axis == 2 {
                    format!("{} values (begin and end", 2 * s)
                } else {
                    format!("{s} value{} (one", if s == 1 { "" } else { "s" })
                };
                return Err(at.err(format_args!(
                    "attribute {name} {values:?} has {} values; the input has {s} spatial \
                     axes, so it needs {what} per spatial axis)",
                    values.len()
                )));
            }
        }
    }
    if let Some(g) = attrs::int(node, "group").filter(|_| has_attr(node, "group")) {
        if g < 1 {
            return Err(at.err(format_args!("attribute group is {g}; it must be ≥ 1")));
        }
    }
    Ok(())
}

fn has_attr(node: &NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name)
}

/// A constant integer input (Reshape's shape, Unsqueeze's axes at opset 13+, ...).
fn const_ints(
    node: &NodeProto,
    slot: usize,
    consts: &HashMap<&str, &TensorProto>,
) -> Option<Vec<i64>> {
    let name = node.input.get(slot).filter(|n| !n.is_empty())?;
    let t = consts.get(name.as_str())?;
    tensor::to_i64_vec(t, name).ok().flatten()
}

/// Ranks of a node's outputs where the op and its known input ranks determine them.
fn output_ranks(
    node: &NodeProto,
    rank_of: &dyn Fn(usize) -> Option<usize>,
    consts: &HashMap<&str, &TensorProto>,
) -> Vec<Option<usize>> {
    let same = rank_of(0);
    let n = node.output.len().max(1);
    let all = |r: Option<usize>| vec![r; n];
    let inputs = || (0..node.input.len()).map(rank_of);
    // the axes a Reduce/Squeeze/Unsqueeze names: the attribute, or (newer opsets) input 1
    let axes = || attrs::ints(node, "axes").or_else(|| const_ints(node, 1, consts));
    let keepdims = attrs::int(node, "keepdims")
        .filter(|_| has_attr(node, "keepdims"))
        .unwrap_or(1);
    match node.op_type.as_str() {
        "Relu"
        | "LeakyRelu"
        | "PRelu"
        | "Sigmoid"
        | "Tanh"
        | "HardSigmoid"
        | "HardSwish"
        | "Clip"
        | "Abs"
        | "Neg"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Reciprocal"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Sign"
        | "Erf"
        | "Softplus"
        | "Softsign"
        | "Elu"
        | "Selu"
        | "Celu"
        | "Gelu"
        | "Mish"
        | "Identity"
        | "Dropout"
        | "Cast"
        | "CastLike"
        | "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "Not"
        | "Sin"
        | "Cos"
        | "BatchNormalization"
        | "InstanceNormalization"
        | "LayerNormalization"
        | "LRN"
        | "Conv"
        | "ConvTranspose"
        | "MaxPool"
        | "AveragePool"
        | "LpPool"
        | "GlobalAveragePool"
        | "GlobalMaxPool"
        | "GlobalLpPool"
        | "Transpose"
        | "Pad"
        | "Slice"
        | "Resize"
        | "Upsample"
        | "DepthToSpace"
        | "SpaceToDepth"
        | "CumSum"
        | "Tile"
        | "QuantizeLinear"
        | "DequantizeLinear"
        | "LpNormalization"
        | "Split"
        | "TopK" => all(same),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Equal"
        | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor"
        | "Where" | "Mod" => {
            let r: Option<Vec<usize>> = inputs().collect();
            all(r.and_then(|r| r.into_iter().max()))
        }
        "Concat" => all(inputs().flatten().next()),
        "Gemm" | "Flatten" | "NonZero" => all(Some(2)),
        "Shape" | "Range" => all(Some(1)),
        "Size" => all(Some(0)),
        "MatMul" => all(match (rank_of(0), rank_of(1)) {
            (Some(1), Some(1)) => Some(0),
            (Some(1), Some(b)) => b.checked_sub(1),
            (Some(a), Some(1)) => a.checked_sub(1),
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        }),
        "Reshape" => all(const_ints(node, 1, consts).map(|s| s.len())),
        "Unsqueeze" => all(same.zip(axes()).map(|(r, a)| r + a.len())),
        "Squeeze" => all(same.zip(axes()).and_then(|(r, a)| r.checked_sub(a.len()))),
        "Gather" => all(same
            .zip(rank_of(1))
            .and_then(|(r, q)| (r + q).checked_sub(1))),
        "ArgMax" | "ArgMin" => all(if keepdims == 1 {
            same
        } else {
            same.and_then(|r| r.checked_sub(1))
        }),
        op if op.starts_with("Reduce") => all(if keepdims == 1 {
            same
        } else {
            match axes() {
                Some(a) if !a.is_empty() => same.and_then(|r| r.checked_sub(a.len())),
                _ => None,
            }
        }),
        "Constant" => all(if let Some(t) = attrs::tensor(node, "value") {
            Some(t.dims.len())
        } else if has_attr(node, "value_floats") || has_attr(node, "value_ints") {
            Some(1)
        } else if has_attr(node, "value_float") || has_attr(node, "value_int") {
            Some(0)
        } else {
            None
        }),
        _ => vec![None; n],
    }
}
