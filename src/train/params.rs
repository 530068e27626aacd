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
    // Every layer with weights, in graph order, with its weight names.
    let mut all: Vec<(String, Vec<String>)> = Vec::new();
    for &i in model.index().order() {
        let node = &graph.node[i];
        let names: Vec<String> = weight_slots(&node.op_type)
            .iter()
            .filter_map(|&s| node.input.get(s).filter(|n| !n.is_empty()))
            .filter(|n| model.weight(n).is_some())
            .cloned()
            .collect();
        if !names.is_empty() {
            all.push((node_label(graph, i), names));
        }
    }
    let named = match layers {
        TrainLayers::Only(names) | TrainLayers::Except(names) => names.as_slice(),
        _ => &[],
    };
    if let Some(missing) = named.iter().find(|n| !all.iter().any(|(l, _)| l == *n)) {
        let labels: Vec<&str> = all.iter().map(|(l, _)| l.as_str()).collect();
        return Err(Error::input(format!(
            "{}: no layer named '{missing}' with trainable weights (layers: {})",
            model.source(),
            labels.join(", ")
        )));
    }
    let first_trained = match layers {
        TrainLayers::Last(n) => all.len().saturating_sub(*n),
        _ => 0,
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (at, (label, names)) in all.iter().enumerate() {
        let trains = match layers {
            TrainLayers::All => true,
            TrainLayers::Only(only) => only.contains(label),
            TrainLayers::Except(frozen) => !frozen.contains(label),
            TrainLayers::Last(_) => at >= first_trained,
        };
        if !trains {
            continue;
        }
        for name in names {
            if seen.insert(name.clone()) {
                out.push(ParamSpec {
                    name: name.clone(),
                    layer: label.clone(),
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn resnet() -> Model {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Model::load(&root.join("sample-models/resnet_digits.onnx")).expect("sample")
    }

    fn layers(specs: &[ParamSpec]) -> Vec<String> {
        let mut out: Vec<String> = specs.iter().map(|s| s.layer.clone()).collect();
        out.dedup();
        out
    }

    #[test]
    fn the_four_selections_pick_the_layers_they_name() {
        let model = resnet();
        let all = layers(&select(&model, &TrainLayers::All).unwrap());
        assert!(all.len() > 3, "{all:?}");
        let head = all.last().unwrap().clone();

        let last = layers(&select(&model, &TrainLayers::Last(1)).unwrap());
        assert_eq!(last, vec![head.clone()]);
        let last2 = layers(&select(&model, &TrainLayers::Last(2)).unwrap());
        assert_eq!(last2, all[all.len() - 2..].to_vec());
        // More than there are: every layer.
        let many = layers(&select(&model, &TrainLayers::Last(1000)).unwrap());
        assert_eq!(many, all);

        let only = layers(&select(&model, &TrainLayers::Only(vec![all[0].clone()])).unwrap());
        assert_eq!(only, vec![all[0].clone()]);
        let except =
            layers(&select(&model, &TrainLayers::Except(vec![all[0].clone(), head])).unwrap());
        assert_eq!(except, all[1..all.len() - 1].to_vec());
    }

    #[test]
    fn unknown_or_empty_selections_are_errors_that_name_the_layer() {
        let model = resnet();
        for layers in [
            TrainLayers::Only(vec!["nope".into()]),
            TrainLayers::Except(vec!["nope".into()]),
        ] {
            let err = select(&model, &layers).unwrap_err().to_string();
            assert!(err.contains("'nope'"), "{err}");
        }
        let err = select(&model, &TrainLayers::Last(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no trainable weights selected"), "{err}");
    }
}
