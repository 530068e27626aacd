//! Which weights train: the weights and biases of Conv, Gemm and MatMul and the scale and
//! bias of BatchNormalization (never its running statistics), optionally only for the
//! layers named. Values live as plain (non-autodiff) tensors between steps.

use super::settings::TrainLayers;
use super::value::Value;
use crate::model::graph::node_label;
use crate::model::Model;
use crate::{Error, Result};
use burn_tensor::{DType, Device};
use std::collections::BTreeSet;

/// A trainable weight and the layer (node label) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub layer: String,
}

/// Input slots holding trainable weights, per op type.
fn weight_slots(op: &str) -> &'static [usize] {
    match op {
        "Conv" | "Gemm" | "BatchNormalization" => &[1, 2],
        "MatMul" => &[0, 1],
        _ => &[],
    }
}

/// The trainable weights of `model` for `layers`, in graph order, each once.
pub fn select(model: &Model, layers: &TrainLayers) -> Result<Vec<ParamSpec>> {
    let graph = model.graph();
    let mut seen = BTreeSet::new();
    let mut found_layers = BTreeSet::new();
    let mut out = Vec::new();
    for &i in model.index().order() {
        let node = &graph.node[i];
        let slots = weight_slots(&node.op_type);
        if slots.is_empty() {
            continue;
        }
        let label = node_label(graph, i);
        found_layers.insert(label.clone());
        if let TrainLayers::Only(names) = layers {
            if !names.contains(&label) {
                continue;
            }
        }
        for &s in slots {
            let Some(name) = node.input.get(s).filter(|n| !n.is_empty()) else {
                continue;
            };
            if model.weight(name).is_some() && seen.insert(name.clone()) {
                out.push(ParamSpec {
                    name: name.clone(),
                    layer: label.clone(),
                });
            }
        }
    }
    if let TrainLayers::Only(names) = layers {
        if let Some(missing) = names.iter().find(|n| !found_layers.contains(*n)) {
            return Err(Error::input(format!(
                "{}: no layer named '{missing}' with trainable weights (layers: {})",
                model.source(),
                found_layers.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::input(format!(
            "{}: no trainable weights selected (Conv, Gemm, MatMul and BatchNormalization weights)",
            model.source()
        )));
    }
    Ok(out)
}

/// The current values of `specs` from `model`, as tensors on `device`.
pub fn load_values(
    model: &Model,
    specs: &[ParamSpec],
    device: &Device,
    dtype: DType,
) -> Result<Vec<Value>> {
    specs
        .iter()
        .map(|p| {
            let a = model.weight(&p.name).ok_or_else(|| {
                Error::input(format!("{}: no weight '{}'", model.source(), p.name))
            })?;
            Value::from_array(
                a,
                device,
                dtype,
                &format!("{}: weight '{}'", model.source(), p.name),
            )
        })
        .collect()
}

/// A copy of `model` with the trained values written into the same initializers (same
/// names, same graph).
pub fn write_back(model: &Model, specs: &[ParamSpec], values: &[Value]) -> Result<Model> {
    let mut out = model.clone();
    for (p, v) in specs.iter().zip(values) {
        out.set_weight(&p.name, v.to_array())?;
    }
    Ok(out)
}

/// Number of trainable elements.
pub fn count(values: &[Value]) -> usize {
    values
        .iter()
        .map(|v| v.shape.iter().product::<usize>())
        .sum()
}
