//! The probe model of the per-layer analysis: the FP32 model plus, for every layer, two
//! side copies of its group (head → BatchNormalization → activation) that read the FP32
//! value of the layer's input:
//!
//! - **isolated W+A**: input fake-quantized with the encoding it carries in the simulation,
//!   quantized weights, output fake-quantized: the layer's own noise with every other layer
//!   exact;
//! - **isolated W**: FP32 input, quantized weights, no output quantizer: the weights' share.
//!
//! One pass of the probe gives every layer's isolated noise at once (it costs about three
//! FP32 passes), where quantizing one layer at a time would cost a pass per layer.
//! Fake-quant in the copies uses the float-op form (any bitwidth; the same math as QDQ).

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb::NodeProto;

use super::points::point_feeding;
use super::qdq::{quantizer_nodes, Form, Names, SimModel};
use super::simulate::Prepared;
use crate::model::graph::Producer;
use crate::model::tensor::tensor_from_array;
use crate::model::Model;
use crate::{Error, Result};

/// The values to capture for one layer: its output in the FP32 path and in its copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeValues {
    pub reference: String,
    pub isolated: String,
    pub isolated_weights: String,
}

pub struct Probe {
    pub model: Model,
    /// Per layer (in `Prepared::layers` order); `None` for a layer without quantized weights
    /// in the simulation or without an output point.
    pub values: Vec<Option<ProbeValues>>,
}

/// Build the probe of `model` for the simulation `sim` (its weights are read from
/// `sim.model`, already fake-quantized; its activation encodings give the copies' input and
/// output quantizers).
pub fn build_probe(model: &Model, prepared: &Prepared, sim: &SimModel) -> Result<Probe> {
    let mut proto = model.proto().clone();
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(graph);
    let mut after: BTreeMap<usize, Vec<NodeProto>> = BTreeMap::new();
    let mut values = Vec::with_capacity(prepared.layers.len());
    for (layer, output) in prepared.layers.iter().zip(&prepared.layer_outputs) {
        let quantized = sim.weights.iter().any(|w| w.layer == layer.name);
        let (Some(output), true) = (output, quantized) else {
            values.push(None);
            continue;
        };
        let Some(members) = group_members(model, layer.node, output) else {
            values.push(None);
            continue;
        };
        let head = &model.graph().node[layer.node];
        let weight_slot = weight_slot(model, head, &layer.weight).ok_or_else(|| {
            Error::runtime(format!(
                "layer '{}': weight '{}' is not an input of its node",
                layer.name, layer.weight
            ))
        })?;
        let Some((data_slot, data)) = head
            .input
            .iter()
            .enumerate()
            .take(2)
            .find(|(slot, v)| *slot != weight_slot && !v.is_empty())
        else {
            values.push(None);
            continue;
        };
        let quantized_weight = sim.model.weight(&layer.weight).ok_or_else(|| {
            Error::runtime(format!(
                "layer '{}': the simulation has no weight '{}'",
                layer.name, layer.weight
            ))
        })?;
        let w_name = names.fresh(&format!("{}__probe_w", layer.weight));
        graph
            .initializer
            .push(tensor_from_array(&w_name, quantized_weight));

        let label = format!("{}__iso", layer.name);
        let mut nodes = Vec::new();
        // Isolated W+A: quantized input (if the simulation quantizes it), weights, output.
        let input_encoding = point_feeding(model, &prepared.points, data)
            .and_then(|p| sim.activations.get(&p.value));
        let iso_input = match input_encoding {
            Some(e) => {
                let q = names.fresh(&format!("{label}_in"));
                nodes.extend(quantizer_nodes(
                    graph,
                    &mut names,
                    &format!("{label}_in"),
                    e,
                    Form::FloatOps,
                    data,
                    &q,
                ));
                q
            }
            None => data.clone(),
        };
        let (copy, copy_out) = copy_group(
            model,
            &members,
            (data_slot, &iso_input),
            (weight_slot, &w_name),
            &mut names,
            &label,
        );
        nodes.extend(copy);
        let isolated = match sim.activations.get(output) {
            Some(e) => {
                let q = names.fresh(&format!("{label}_out"));
                nodes.extend(quantizer_nodes(
                    graph,
                    &mut names,
                    &format!("{label}_out"),
                    e,
                    Form::FloatOps,
                    &copy_out,
                    &q,
                ));
                q
            }
            None => copy_out,
        };
        // Isolated W: FP32 input, quantized weights.
        let label_w = format!("{}__iso_w", layer.name);
        let (copy, isolated_weights) = copy_group(
            model,
            &members,
            (data_slot, data),
            (weight_slot, &w_name),
            &mut names,
            &label_w,
        );
        nodes.extend(copy);
        let last = *members.last().expect("a group has its head");
        after.entry(last).or_default().extend(nodes);
        values.push(Some(ProbeValues {
            reference: output.clone(),
            isolated,
            isolated_weights,
        }));
    }
    let old = std::mem::take(&mut graph.node);
    for (i, node) in old.into_iter().enumerate() {
        graph.node.push(node);
        graph.node.extend(after.remove(&i).unwrap_or_default());
    }
    let model = Model::from_proto(proto, &format!("{} (analysis probe)", model.source()))?;
    Ok(Probe { model, values })
}

/// The most nodes a layer's group spans: head, BatchNormalization, a constant affine and a
/// written-out HardSwish (`Add 3 → Clip → Mul x → Div 6`) are nine.
const MAX_GROUP_NODES: usize = 16;

/// The nodes of the layer's group, from the head to the node producing `output`, in graph
/// order: every node on a path between them. A group is a DAG, not a chain (a written-out
/// HardSwish's `Mul` reads both the `Clip` and the value before the `Add 3`). `None` when
/// `output` is not reached within [`MAX_GROUP_NODES`] nodes: no isolated copy then, rather
/// than a copy of part of the group compared against the whole group's output.
fn group_members(model: &Model, head: usize, output: &str) -> Option<Vec<usize>> {
    let graph = model.graph();
    let produces = |n: usize| graph.node[n].output.iter().any(|o| o == output);
    if produces(head) {
        return Some(vec![head]);
    }
    // Forward from the head, bounded: the candidates.
    let mut reached = vec![head];
    let mut k = 0;
    while k < reached.len() && reached.len() <= MAX_GROUP_NODES {
        let n = reached[k];
        k += 1;
        if produces(n) {
            continue;
        }
        for value in &graph.node[n].output {
            for &(consumer, _) in model.index().consumers(value) {
                if !reached.contains(&consumer) {
                    reached.push(consumer);
                }
            }
        }
    }
    let end = *reached.iter().find(|&&n| produces(n))?;
    // Backward from the end within the candidates: the nodes on a path head → end.
    let mut members = vec![end];
    let mut k = 0;
    while k < members.len() {
        let n = members[k];
        k += 1;
        if n == head {
            continue;
        }
        for input in &graph.node[n].input {
            if let Some(Producer::Node { node, .. }) = model.index().producer(input) {
                if reached.contains(&node) && !members.contains(&node) {
                    members.push(node);
                }
            }
        }
    }
    if !members.contains(&head) {
        return None;
    }
    members.sort_unstable();
    Some(members)
}

/// The input slot of `node` holding `weight`, directly or through Identity nodes.
fn weight_slot(model: &Model, node: &NodeProto, weight: &str) -> Option<usize> {
    node.input.iter().position(|input| {
        let mut current = input.clone();
        for _ in 0..8 {
            if current == weight {
                return true;
            }
            match model.index().producer(&current) {
                Some(Producer::Node { node, .. })
                    if model.graph().node[node].op_type == "Identity" =>
                {
                    current = model.graph().node[node]
                        .input
                        .first()
                        .cloned()
                        .unwrap_or_default();
                }
                _ => return false,
            }
        }
        false
    })
}

/// Copies of the group's nodes (in graph order, head first) with the head's data and
/// weight inputs replaced and fresh output names, every member reading the copies of the
/// members it reads; returns the nodes and the copy's output value (the last member's).
fn copy_group(
    model: &Model,
    members: &[usize],
    data: (usize, &str),
    weight: (usize, &str),
    names: &mut Names,
    label: &str,
) -> (Vec<NodeProto>, String) {
    let graph = model.graph();
    let mut nodes = Vec::with_capacity(members.len());
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut out = String::new();
    for (k, &m) in members.iter().enumerate() {
        let mut node = graph.node[m].clone();
        node.name = names.fresh(&format!("{label}_{}", node.op_type.to_ascii_lowercase()));
        if k == 0 {
            node.input[data.0] = data.1.to_string();
            node.input[weight.0] = weight.1.to_string();
        } else {
            for input in node.input.iter_mut() {
                if let Some(to) = renamed.get(input.as_str()) {
                    *input = to.clone();
                }
            }
        }
        let original = node.output.first().cloned().unwrap_or_default();
        out = names.fresh(&format!("{label}_{k}"));
        // Extra outputs (BatchNormalization's training outputs) are dropped.
        node.output = vec![out.clone()];
        renamed.insert(original, out.clone());
        nodes.push(node);
    }
    (nodes, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builder::ProtoBuilder;
    use ndarray::{arr0, Array2};

    #[test]
    fn a_group_is_every_node_between_the_head_and_the_output_in_graph_order() {
        // Conv-less stand-in: MatMul → Mul → Add → Add 3 → Clip → Mul(x) → Div 6 → Relu.
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[2, 4])
            .initializer("w", &Array2::<f32>::eye(4).into_dyn())
            .initializer("k", &arr0(2.0f32).into_dyn())
            .initializer("three", &arr0(3.0f32).into_dyn())
            .initializer("zero", &arr0(0.0f32).into_dyn())
            .initializer("six", &arr0(6.0f32).into_dyn())
            .node("MatMul", "mm", &["x", "w"], &["h"], vec![])
            .node("Mul", "scale", &["h", "k"], &["hs"], vec![])
            .node("Add", "bias", &["hs", "k"], &["hb"], vec![])
            .node("Add", "plus3", &["hb", "three"], &["s"], vec![])
            .node("Clip", "clip", &["s", "zero", "six"], &["r"], vec![])
            .node("Mul", "times_x", &["hb", "r"], &["p"], vec![])
            .node("Div", "by6", &["p", "six"], &["a"], vec![])
            .node("Relu", "after", &["a"], &["y"], vec![])
            .output("y");
        let model = b.model("group").unwrap();
        let names = |m: Option<Vec<usize>>| {
            m.map(|m| {
                m.iter()
                    .map(|&n| model.graph().node[n].name.clone())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            names(group_members(&model, 0, "a")).unwrap(),
            ["mm", "scale", "bias", "plus3", "clip", "times_x", "by6"]
        );
        assert_eq!(names(group_members(&model, 0, "h")).unwrap(), ["mm"]);
        // A value the head does not reach: no group, so no isolated copy.
        assert_eq!(names(group_members(&model, 1, "h")), None);
    }
}
