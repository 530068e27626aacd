//! Graph surgery shared by the fixes: which constants a node owns alone, attaching a new
//! bias, and removing what an edit left unused. Weight values are edited through
//! [`Model::set_weight`]; these helpers change the structure of the protobuf.

use crate::model::graph::Producer;
use crate::model::tensor::{data_type_name, tensor_from_array};
use crate::model::Model;
use crate::quant::qdq::Names;
use ndarray::ArrayD;
use std::collections::HashSet;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto};

/// The stored constant behind value `name`, looking through Identity nodes.
pub(crate) fn constant_behind(model: &Model, name: &str) -> Option<String> {
    let mut current = name.to_string();
    for _ in 0..8 {
        if model.weight(&current).is_some() {
            return Some(current);
        }
        let Producer::Node { node, .. } = model.index().producer(&current)? else {
            return None;
        };
        let n = &model.graph().node[node];
        if n.op_type != "Identity" || n.input.is_empty() {
            return None;
        }
        current = n.input[0].clone();
    }
    None
}

/// The constant read by input `slot` of node `node`, if this node alone reads it (directly
/// or through a chain of Identity nodes that nothing else reads): only then may an edit
/// change it in place.
pub(crate) fn private_constant(model: &Model, node: usize, slot: usize) -> Option<String> {
    let name = model.graph().node[node].input.get(slot)?;
    let constant = constant_behind(model, name)?;
    let outputs: HashSet<&str> = model
        .graph()
        .output
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let mut current = name.clone();
    loop {
        if model.index().consumers(&current).len() != 1 || outputs.contains(current.as_str()) {
            return None;
        }
        if current == constant {
            return Some(constant);
        }
        let Some(Producer::Node { node: p, .. }) = model.index().producer(&current) else {
            return None;
        };
        current = model.graph().node[p].input[0].clone();
    }
}

/// Why the stored constant `name` cannot be rewritten, if it cannot: edits write float32
/// (as [`Model::set_weight`] does), which would break a float16 or float64 model's types.
pub(crate) fn not_float32(model: &Model, name: &str) -> Option<String> {
    let g = model.graph();
    let data_type = match g.initializer.iter().find(|t| t.name == name) {
        Some(t) => t.data_type,
        None => g
            .node
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
            .and_then(|n| crate::model::attrs::tensor(n, "value"))
            .map_or(DataType::Float as i32, |t| t.data_type),
    };
    (data_type != DataType::Float as i32).then(|| {
        format!(
            "'{name}' is stored as {}; only float32 weights are rewritten",
            data_type_name(data_type)
        )
    })
}

/// Set input `slot` of `node` to `value`, padding skipped optional inputs with "".
pub(crate) fn set_input(node: &mut NodeProto, slot: usize, value: &str) {
    while node.input.len() <= slot {
        node.input.push(String::new());
    }
    node.input[slot] = value.to_string();
}

/// Replace or add an attribute.
pub(crate) fn set_attr(node: &mut NodeProto, attr: AttributeProto) {
    node.attribute.retain(|a| a.name != attr.name);
    node.attribute.push(attr);
}

/// Store `array` as a new initializer named after `base` (made unique); returns its name.
pub(crate) fn add_initializer(
    graph: &mut GraphProto,
    names: &mut Names,
    base: &str,
    array: &ArrayD<f32>,
) -> String {
    let name = names.fresh(base);
    graph.initializer.push(tensor_from_array(&name, array));
    name
}

/// Drop the values among `candidates` that nothing reads any more: their initializers
/// (and graph-input entries of old IR versions) and the Constant nodes making them. Only
/// the candidates are touched; a model's other unused values stay as they were.
pub(crate) fn prune_unused(graph: &mut GraphProto, candidates: &HashSet<String>) {
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let unused: HashSet<String> = candidates
        .iter()
        .filter(|c| !read.contains(c.as_str()))
        .cloned()
        .collect();
    if unused.is_empty() {
        return;
    }
    graph.initializer.retain(|t| !unused.contains(&t.name));
    graph.input.retain(|i| !unused.contains(&i.name));
    graph.node.retain(|n| {
        !(n.op_type == "Constant" && n.output.len() == 1 && unused.contains(&n.output[0]))
    });
}

/// Drop `value_info` entries of values no node produces any more.
pub(crate) fn drop_stale_value_info(graph: &mut GraphProto) {
    let produced: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .collect();
    graph.value_info.retain(|v| produced.contains(&v.name));
}
