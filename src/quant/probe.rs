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

use std::collections::BTreeMap;

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
        let members = group_members(model, layer.node, output);
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

/// The nodes from the layer's head to the node producing `output` (its group).
fn group_members(model: &Model, head: usize, output: &str) -> Vec<usize> {
    let graph = model.graph();
    let mut members = vec![head];
    let mut value = graph.node[head].output.first().cloned().unwrap_or_default();
    while value != output && members.len() < 3 {
        let Some(&(next, _)) = model.index().consumers(&value).first() else {
            break;
        };
        members.push(next);
        value = graph.node[next].output.first().cloned().unwrap_or_default();
    }
    members
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

/// Copies of the group's nodes with the head's data and weight inputs replaced and fresh
/// output names; returns the nodes and the copy's output value.
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
    let mut previous: Option<(String, String)> = None;
    for (k, &m) in members.iter().enumerate() {
        let mut node = graph.node[m].clone();
        node.name = names.fresh(&format!("{label}_{}", node.op_type.to_ascii_lowercase()));
        if k == 0 {
            node.input[data.0] = data.1.to_string();
            node.input[weight.0] = weight.1.to_string();
        } else if let Some((from, to)) = &previous {
            for input in node.input.iter_mut().filter(|i| *i == from) {
                *input = to.clone();
            }
        }
        let original = node.output.first().cloned().unwrap_or_default();
        let renamed = names.fresh(&format!("{label}_{k}"));
        // Extra outputs (BatchNormalization's training outputs) are dropped.
        node.output = vec![renamed.clone()];
        previous = Some((original, renamed));
        nodes.push(node);
    }
    let out = previous.map(|(_, to)| to).unwrap_or_default();
    (nodes, out)
}
