//! Scoring a candidate on the part of the model it changes. Compressing one layer leaves
//! every value upstream of it as it was, so the parent is run once per layer up to the
//! values the changed part reads (the *cut*), and each candidate of that layer runs only its
//! changed part (the *suffix*) from those values; outputs the suffix does not reach are the
//! parent's. Same nodes, same inputs: the scores are the whole-model scores, for a fraction
//! of the compiling and running.
//!
//! Only float32 values with the batch on axis 0 cross the cut (they are stacked per sample
//! and fed back batch by batch exactly as they were computed); anything else the suffix
//! reads (shape computations, constants) is recomputed inside it. Where no such cut exists
//! the caller scores the whole model.

use crate::model::graph::Producer;
use crate::model::shapes::{batch_symbol, typed_model, InputType};
use crate::model::Dim;
use crate::model::Model;
use crate::Result;
use ndarray::ArrayD;
use std::collections::{BTreeSet, HashMap, HashSet};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value as TypeValue};
use tract_onnx::pb::{TensorShapeProto, TypeProto, ValueInfoProto};
use tract_onnx::prelude::*;

/// The parent's values that may cross a cut: float32 with the batch (the batch symbol, or
/// the file's fixed batch) on axis 0 and every other dim known.
pub struct CutValues {
    names: HashSet<String>,
    /// The file's fixed batch, if any (then axis 0 of a cut value is declared as it).
    fixed_batch: Option<usize>,
    batch_name: String,
}

impl CutValues {
    /// From one analysis of `parent` at the samples' shapes; `None` when the batch could
    /// not be analysed as a symbol (then no value is known to be per sample).
    pub fn of(parent: &Model, sample_shapes: &[Vec<usize>]) -> Result<Option<CutValues>> {
        let typed = typed_model(parent, Some(sample_shapes), None, None)?;
        if typed.batch_fallback {
            return Ok(None);
        }
        let batch_name = batch_symbol(parent);
        let tm = &typed.model;
        let batch = tm.symbols.sym(&batch_name);
        let per_sample = |fact: &TypedFact| {
            let dims = fact.shape.dims();
            fact.datum_type == f32::datum_type()
                && !dims.is_empty()
                && match typed.fixed_batch {
                    Some(b) => dims[0].as_i64() == Some(b as i64),
                    None => dims[0] == TDim::Sym(batch.clone()),
                }
                && dims[1..].iter().all(|d| d.as_i64().is_some())
        };
        let mut names: HashSet<String> = tm
            .outlet_labels
            .iter()
            .filter(|(outlet, _)| tm.outlet_fact(**outlet).is_ok_and(per_sample))
            .map(|(_, label)| label.clone())
            .collect();
        for spec in &typed.inputs {
            let batched = match (spec.shape.first(), typed.fixed_batch) {
                (Some(Dim::Known(d)), Some(b)) => *d == b,
                (Some(Dim::Batch), None) => true,
                _ => false,
            };
            if spec.elem == InputType::Float32
                && batched
                && spec.shape[1..].iter().all(|d| matches!(d, Dim::Known(_)))
            {
                names.insert(spec.name.clone());
            }
        }
        Ok(Some(CutValues {
            names,
            fixed_batch: typed.fixed_batch,
            batch_name,
        }))
    }
}

/// What a candidate changed, as the parts of the child model to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// Nodes of the child to run, indices into its graph, in graph order.
    pub nodes: Vec<usize>,
    /// The parent's values the suffix reads (its inputs).
    pub inputs: Vec<String>,
    /// The graph outputs the suffix computes; the others are the parent's.
    pub outputs: Vec<String>,
}

/// The cut of `child` (the parent with some layers compressed) against `parent`; `None`
/// when nothing changed, a subgraph attribute hides what a node reads, or the suffix would
/// need a value that cannot cross (a non-float graph input).
pub fn cut(parent: &Model, child: &Model, values: &CutValues) -> Option<Cut> {
    let (pg, cg) = (parent.graph(), child.graph());
    if cg
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
    {
        return None;
    }
    let parent_init: HashMap<&str, _> = pg
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let child_init: HashMap<&str, _> = cg
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let same_node = |i: usize| {
        let node = &cg.node[i];
        let Some(first) = node.output.first() else {
            return false;
        };
        let Some(Producer::Node { node: p, slot: 0 }) = parent.index().producer(first) else {
            return false;
        };
        pg.node[p] == *node
            && node.input.iter().all(|v| match child_init.get(v.as_str()) {
                Some(t) => parent_init.get(v.as_str()) == Some(t),
                None => !parent_init.contains_key(v.as_str()),
            })
    };
    let order = child.index().order();
    let mut affected: BTreeSet<usize> = BTreeSet::new();
    let mut changed_values: HashSet<&str> = HashSet::new();
    for &i in order {
        let node = &cg.node[i];
        if !same_node(i)
            || node
                .input
                .iter()
                .any(|v| changed_values.contains(v.as_str()))
        {
            affected.insert(i);
            changed_values.extend(node.output.iter().map(String::as_str));
        }
    }
    if affected.is_empty() {
        return None;
    }
    // What the suffix reads from outside: cut values, or else their producers join it.
    let mut inputs: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<usize> = affected.iter().copied().collect();
    while let Some(i) = pending.pop() {
        for v in &cg.node[i].input {
            if v.is_empty() || child_init.contains_key(v.as_str()) || inputs.contains(v) {
                continue;
            }
            let producer = child.index().producer(v);
            if let Some(Producer::Node { node, .. }) = producer {
                if affected.contains(&node) {
                    continue;
                }
            }
            let in_parent = matches!(
                parent.index().producer(v),
                Some(Producer::Node { .. } | Producer::Input)
            );
            if values.names.contains(v) && in_parent {
                inputs.insert(v.clone());
            } else if let Some(Producer::Node { node, .. }) = producer {
                affected.insert(node);
                pending.push(node);
            } else {
                return None;
            }
        }
    }
    let made: HashSet<&str> = affected
        .iter()
        .flat_map(|&i| cg.node[i].output.iter().map(String::as_str))
        .collect();
    let outputs: Vec<String> = child
        .output_names()
        .into_iter()
        .filter(|o| made.contains(o.as_str()))
        .collect();
    if outputs.is_empty() {
        return None;
    }
    Some(Cut {
        nodes: affected.into_iter().collect(),
        inputs: inputs.into_iter().collect(),
        outputs,
    })
}

fn float_info(name: &str, dims: Option<Vec<DimValue>>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: dims.map(|d| TensorShapeProto {
                    dim: d
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The parent with `values` as its outputs: what it computes up to them.
pub fn prefix_model(parent: &Model, values: &[String]) -> Result<Model> {
    let mut proto = parent.proto().clone();
    let graph = proto.graph.as_mut().expect("graph checked at load");
    graph.output = values.iter().map(|v| float_info(v, None)).collect();
    Model::from_proto(proto, &format!("{} (up to a layer)", parent.source()))
}

/// The child's `cut` as a model of its own, fed the cut values; `sample_shapes` are their
/// per-sample shapes (after axis 0), in `cut.inputs` order.
pub fn suffix_model(
    child: &Model,
    cut: &Cut,
    values: &CutValues,
    sample_shapes: &[Vec<usize>],
) -> Result<Model> {
    let mut proto = child.proto().clone();
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let keep: HashSet<usize> = cut.nodes.iter().copied().collect();
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, n)| n)
        .collect();
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let made: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let initializers = std::mem::take(&mut graph.initializer);
    graph.initializer = initializers
        .into_iter()
        .filter(|t| read.contains(t.name.as_str()))
        .collect();
    let value_info = std::mem::take(&mut graph.value_info);
    graph.value_info = value_info
        .into_iter()
        .filter(|v| made.contains(v.name.as_str()))
        .collect();
    graph.output.retain(|o| cut.outputs.contains(&o.name));
    graph.input = cut
        .inputs
        .iter()
        .zip(sample_shapes)
        .map(|(name, shape)| {
            let batch = match values.fixed_batch {
                Some(b) => DimValue::DimValue(b as i64),
                None => DimValue::DimParam(values.batch_name.clone()),
            };
            let dims = std::iter::once(batch)
                .chain(shape.iter().map(|&d| DimValue::DimValue(d as i64)))
                .collect();
            float_info(name, Some(dims))
        })
        .collect();
    Model::from_proto(proto, &format!("{} (changed part)", child.source()))
}

/// The child's outputs in the parent's order: the suffix's where it computes them, the
/// parent's elsewhere.
pub fn assemble(
    parent_outputs: &[(String, ArrayD<f32>)],
    suffix_outputs: Vec<(String, ArrayD<f32>)>,
) -> Vec<(String, ArrayD<f32>)> {
    let mut computed: HashMap<String, ArrayD<f32>> = suffix_outputs.into_iter().collect();
    parent_outputs
        .iter()
        .map(|(name, parent)| {
            let value = computed.remove(name).unwrap_or_else(|| parent.clone());
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::testing::conv;
    use crate::data::SplitMix64;
    use crate::model::builder::ProtoBuilder;

    /// x → c1 → r1 → c2 → r2 → (+ r1) → c3 → y: a skip around c2.
    fn skip_model() -> Model {
        let mut rng = SplitMix64(3);
        let mut b = ProtoBuilder::new(17);
        b.input("x", &[2, 5, 5]).output("y");
        conv(&mut b, &mut rng, "c1", ["x", "c1.out"], [4, 2, 3, 3], 1);
        b.node("Relu", "r1", &["c1.out"], &["r1.out"], vec![]);
        conv(
            &mut b,
            &mut rng,
            "c2",
            ["r1.out", "c2.out"],
            [4, 4, 3, 3],
            1,
        );
        b.node("Relu", "r2", &["c2.out"], &["r2.out"], vec![]);
        b.node("Add", "add", &["r2.out", "r1.out"], &["sum"], vec![]);
        conv(&mut b, &mut rng, "c3", ["sum", "y"], [3, 4, 3, 3], 1);
        b.model("skip").unwrap()
    }

    /// Changing c2's weight cuts above c2: the suffix reads r1's output (c2's input and the
    /// skip) and runs c2, r2, add and c3; nothing changed is no cut.
    #[test]
    fn the_cut_starts_at_the_changed_layer_and_takes_the_skip() {
        let parent = skip_model();
        let values = CutValues::of(&parent, &[vec![2, 5, 5]]).unwrap().unwrap();
        assert!(values.names.contains("r1.out") && values.names.contains("x"));
        assert_eq!(cut(&parent, &parent, &values), None);
        let mut child = parent.clone();
        let w = parent.weight("c2.w").unwrap().mapv(|v| v * 0.5);
        child.set_weight("c2.w", w).unwrap();
        let c = cut(&parent, &child, &values).unwrap();
        assert_eq!(c.inputs, vec!["r1.out".to_string()]);
        assert_eq!(c.outputs, vec!["y".to_string()]);
        let names: Vec<&str> = c
            .nodes
            .iter()
            .map(|&i| child.graph().node[i].name.as_str())
            .collect();
        assert_eq!(names, ["c2", "r2", "add", "c3"]);
        let suffix = suffix_model(&child, &c, &values, &[vec![4, 5, 5]]).unwrap();
        assert_eq!(suffix.input_names(), ["r1.out"]);
        assert_eq!(suffix.graph().node.len(), 4);
        assert!(
            suffix.weight("c1.w").is_none(),
            "c1's weight is not carried"
        );
    }
}
