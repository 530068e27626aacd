//! Winnowing: when a layer drops input channels, the nodes upstream that only feed it drop
//! the matching channels too, up to the Conv / Gemm that produces them, which loses those
//! output channels. The walk passes per-channel nodes (BatchNormalization, elementwise
//! activations, pooling, depthwise convs) and stops with a reason at anything where a
//! channel cannot simply disappear: a residual Add or Concat, a value other nodes also
//! read, a graph input or output, a shared weight.

use crate::fixes::edit::{drop_stale_value_info, not_float32, private_constant};
use crate::model::builder::attr_int;
use crate::model::graph::{node_label, Producer};
use crate::model::{attrs, Layer, LayerKind, Model};
use crate::{Error, Result};
use ndarray::{ArrayD, Axis};
use std::collections::HashSet;

/// Elementwise ops a channel passes unchanged in structure.
const ELEMENTWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Identity",
];
const POOLS: &[&str] = &[
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
];

/// A node the walk passes, and what it must drop.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Elementwise activation or pooling: nothing stored per channel.
    PassThrough { node: usize },
    /// BatchNormalization: its four per-channel parameters.
    BatchNorm { node: usize, params: Vec<String> },
    /// Depthwise conv: weight rows, bias, and its group count.
    Depthwise {
        node: usize,
        weight: String,
        bias: Option<String>,
    },
}

/// The Conv / Gemm / MatMul whose output channels are removed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerEdit {
    pub node: usize,
    pub name: String,
    pub weight: String,
    /// Axis of the stored weight that indexes output channels.
    pub axis: usize,
    pub bias: Option<String>,
}

/// Everything upstream of a pruned layer that loses its channels.
#[derive(Debug, Clone, PartialEq)]
pub struct WinnowPath {
    pub steps: Vec<Step>,
    pub producer: ProducerEdit,
}

impl WinnowPath {
    /// Names of the nodes whose parameters change (BN, depthwise convs, the producer).
    pub fn winnowed(&self, model: &Model) -> Vec<String> {
        let g = model.graph();
        let mut names: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::PassThrough { .. } => None,
                Step::BatchNorm { node, .. } | Step::Depthwise { node, .. } => {
                    Some(node_label(g, *node))
                }
            })
            .collect();
        names.push(self.producer.name.clone());
        names
    }
}

/// Axis of `layer`'s stored weight that indexes its input channels, or why it has none
/// that pruning can cut.
pub fn input_axis(model: &Model, layer: &Layer) -> std::result::Result<usize, String> {
    let node = &model.graph().node[layer.node];
    match layer.kind {
        LayerKind::Conv => Ok(1),
        LayerKind::DepthwiseConv => Err("depthwise: winnowed, not pruned".into()),
        LayerKind::GroupedConv => Err(format!(
            "grouped conv ({} groups): not pruned",
            layer.groups
        )),
        LayerKind::ConvTranspose => Err("ConvTranspose is not pruned".into()),
        LayerKind::Gemm | LayerKind::MatMul => {
            if layer.weight_shape.len() != 2 || node.input.get(1) != Some(&layer.weight) {
                return Err("the weight is not a 2-D right operand".into());
            }
            if layer.input_shape.as_ref().is_some_and(|s| s.len() != 2) {
                return Err("the input is not [batch, features]".into());
            }
            let trans_b = attrs::int(node, "transB").unwrap_or(0) != 0;
            Ok(if layer.kind == LayerKind::Gemm && trans_b {
                1
            } else {
                0
            })
        }
    }
}

/// Output-channel axis of a producer's stored weight, or why it cannot be winnowed.
fn output_axis(model: &Model, layer: &Layer) -> std::result::Result<usize, String> {
    let node = &model.graph().node[layer.node];
    match layer.kind {
        LayerKind::Conv => Ok(0),
        LayerKind::Gemm | LayerKind::MatMul => {
            if layer.weight_shape.len() != 2 || node.input.get(1) != Some(&layer.weight) {
                return Err(format!(
                    "the producer '{}' has no 2-D right weight",
                    layer.name
                ));
            }
            if attrs::int(node, "transA").unwrap_or(0) != 0 {
                return Err(format!(
                    "the producer '{}' is a Gemm with transA",
                    layer.name
                ));
            }
            let trans_b = attrs::int(node, "transB").unwrap_or(0) != 0;
            Ok(if layer.kind == LayerKind::Gemm && trans_b {
                0
            } else {
                1
            })
        }
        _ => Err(format!(
            "the producer '{}' is a {} layer",
            layer.name,
            layer.kind.label()
        )),
    }
}

/// The stored constant at input `slot` of `node`, if only this node reads it and it is
/// float32; otherwise why it cannot be cut.
fn own_constant(model: &Model, node: usize, slot: usize) -> std::result::Result<String, String> {
    let label = node_label(model.graph(), node);
    let name = private_constant(model, node, slot)
        .ok_or_else(|| format!("'{label}' shares or computes its input #{slot}"))?;
    match not_float32(model, &name) {
        Some(why) => Err(why),
        None => Ok(name),
    }
}

/// The bias of a layer, if it has one that can be cut (1-D, one value per output).
fn own_bias(model: &Model, layer: &Layer) -> std::result::Result<Option<String>, String> {
    if layer.bias.is_none() {
        return Ok(None);
    }
    let name = own_constant(model, layer.node, 2)?;
    let len = model.weight(&name).map_or(0, |b| b.len());
    if len != layer.out_channels {
        return Err(format!(
            "the bias of '{}' has {len} values for {} outputs",
            layer.name, layer.out_channels
        ));
    }
    Ok(Some(name))
}

/// Walk upstream from `layer`'s input to the layer producing its channels.
pub fn winnow_path(
    model: &Model,
    layer: &Layer,
    layers: &[Layer],
) -> std::result::Result<WinnowPath, String> {
    let g = model.graph();
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut value = layer.input.clone();
    let mut steps = Vec::new();
    loop {
        if outputs.contains(value.as_str()) {
            return Err(format!(
                "its input channels reach the graph output '{value}'"
            ));
        }
        let readers = model.index().consumers(&value);
        if readers.len() != 1 {
            let others: Vec<String> = readers.iter().map(|(n, _)| node_label(g, *n)).collect();
            return Err(format!(
                "'{value}' is read by {} nodes ({}); not all of them can drop a channel",
                readers.len(),
                others.join(", ")
            ));
        }
        let node = match model.index().producer(&value) {
            Some(Producer::Node { node, slot: 0 }) => node,
            Some(Producer::Input) => {
                return Err(format!("its input is the graph input '{value}'"));
            }
            _ => return Err(format!("'{value}' is not a node's first output")),
        };
        let n = &g.node[node];
        let label = node_label(g, node);
        let op = n.op_type.as_str();
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(format!("'{label}' ({op}) has more than one output"));
        }
        let layer_here = layers.iter().find(|l| l.node == node);
        match (op, layer_here) {
            ("BatchNormalization", _) => {
                let params = (1..=4)
                    .map(|slot| own_constant(model, node, slot))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                steps.push(Step::BatchNorm { node, params });
            }
            ("Clip", _) => {
                let scalar = |slot: usize| {
                    n.input
                        .get(slot)
                        .filter(|s| !s.is_empty())
                        .is_none_or(|s| model.weight(s).is_some_and(|w| w.len() == 1))
                };
                if !(scalar(1) && scalar(2)) {
                    return Err(format!("the Clip '{label}' has non-scalar bounds"));
                }
                steps.push(Step::PassThrough { node });
            }
            (op, _) if ELEMENTWISE.contains(&op) => steps.push(Step::PassThrough { node }),
            (op, _) if POOLS.contains(&op) => steps.push(Step::PassThrough { node }),
            (_, Some(l))
                if l.kind == LayerKind::DepthwiseConv && l.in_channels == l.out_channels =>
            {
                let weight = own_constant(model, node, 1)?;
                let bias = own_bias(model, l)?;
                steps.push(Step::Depthwise { node, weight, bias });
            }
            (_, Some(l)) => {
                let axis = output_axis(model, l)?;
                let weight = own_constant(model, node, 1)?;
                let bias = own_bias(model, l)?;
                return Ok(WinnowPath {
                    steps,
                    producer: ProducerEdit {
                        node,
                        name: l.name.clone(),
                        weight,
                        axis,
                        bias,
                    },
                });
            }
            ("Add" | "Sum" | "Sub" | "Mul", _) => {
                return Err(format!(
                    "its input comes through the residual {op} '{label}'"
                ));
            }
            ("Concat", _) => return Err(format!("its input comes through the Concat '{label}'")),
            (op, None) => {
                return Err(format!(
                    "its input comes through '{label}' ({op}), which winnowing cannot pass"
                ))
            }
        }
        value = n.input.first().cloned().unwrap_or_default();
    }
}

fn keep(model: &Model, name: &str, axis: usize, kept: &[usize]) -> Result<ArrayD<f32>> {
    let w = model
        .weight(name)
        .ok_or_else(|| Error::runtime(format!("no stored weight '{name}'")))?;
    if axis >= w.ndim() || kept.iter().any(|&c| c >= w.shape()[axis]) {
        return Err(Error::runtime(format!(
            "'{name}' of shape {:?} has no channels {kept:?} on axis {axis}",
            w.shape()
        )));
    }
    Ok(w.select(Axis(axis), kept))
}

/// `model` with `layer` keeping only input channels `kept` and `path` winnowed to match.
/// Shapes recorded in `value_info` for the changed values are dropped (tract re-infers them).
pub fn cut(model: &Model, layer: &Layer, path: &WinnowPath, kept: &[usize]) -> Result<Model> {
    let axis = input_axis(model, layer).map_err(Error::input)?;
    let mut edited = model.clone();
    edited.set_weight(&layer.weight, keep(model, &layer.weight, axis, kept)?)?;
    let mut regrouped = Vec::new();
    let mut touched = vec![path.producer.node];
    for step in &path.steps {
        match step {
            Step::PassThrough { node } => touched.push(*node),
            Step::BatchNorm { node, params } => {
                touched.push(*node);
                for p in params {
                    edited.set_weight(p, keep(model, p, 0, kept)?)?;
                }
            }
            Step::Depthwise { node, weight, bias } => {
                touched.push(*node);
                regrouped.push(*node);
                edited.set_weight(weight, keep(model, weight, 0, kept)?)?;
                if let Some(b) = bias {
                    edited.set_weight(b, keep(model, b, 0, kept)?)?;
                }
            }
        }
    }
    let p = &path.producer;
    edited.set_weight(&p.weight, keep(model, &p.weight, p.axis, kept)?)?;
    if let Some(b) = &p.bias {
        edited.set_weight(b, keep(model, b, 0, kept)?)?;
    }
    let source = edited.source().to_string();
    let mut proto = edited.into_proto();
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let changed: HashSet<String> = touched
        .iter()
        .flat_map(|&n| graph.node[n].output.clone())
        .collect();
    for &n in &regrouped {
        crate::fixes::edit::set_attr(&mut graph.node[n], attr_int("group", kept.len() as i64));
    }
    graph.value_info.retain(|v| !changed.contains(&v.name));
    drop_stale_value_info(graph);
    Model::from_proto(proto, &source)
}
