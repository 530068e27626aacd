//! Specialising a model on input values that never change: a graph-level `If` whose condition
//! reads only such inputs (Silero VAD's `If(sr == 16000)` around the whole network) is folded
//! and the chosen branch inlined, before tract sees the graph. tract analyses both branches
//! of an `If` whose condition it cannot evaluate, and a branch meant for other inputs (the
//! 8 kHz one on a 16 kHz frame) does not fit; the inlined graph is also what qsteer
//! quantizes and exports. The inputs stay declared (unused), so callers feed the same names.

use super::{graph, Model};
use crate::guard::guarded;
use crate::{Error, Result};
use ndarray::ArrayD;
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::{Tensor as TensorTypeProto, Value as TypeValue};
use tract_onnx::pb::{
    GraphProto, ModelProto, NodeProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::*;

/// Values of model inputs that are the same on every call (`--input-value sr=16000`, or what
/// every sample of the data holds), by input name.
pub type InputValues = BTreeMap<String, ArrayD<f64>>;

/// The metadata key of a specialised model (and of its export): what it was specialised on.
pub const METADATA_KEY: &str = "qsteer.specialised";

/// One `If` folded on fixed input values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Specialisation {
    /// The If node's name (or first output).
    pub node: String,
    /// `sr=16000`, one per input the condition reads.
    pub on: Vec<String>,
    /// `then` or `else`.
    pub branch: String,
}

impl Specialisation {
    /// `specialised If 'If_0' on sr=16000 (then branch)`.
    pub fn message(&self) -> String {
        format!(
            "specialised If '{}' on {} ({} branch inlined)",
            self.node,
            self.on.join(", "),
            self.branch
        )
    }
}

/// A graph-level `If` whose condition reads the values of graph inputs (not only their shapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueIf {
    /// Index in `graph.node`.
    pub index: usize,
    pub node: String,
    /// The graph inputs the condition reads, in the model's input order.
    pub inputs: Vec<String>,
}

/// The graph-level `If` nodes whose condition is a function of input values and constants
/// only. Conditions that read a shape (`Shape`, `Size`) or a subgraph are left to tract,
/// which folds them once the shapes are known.
pub fn value_ifs(graph: &GraphProto) -> Vec<ValueIf> {
    let producers = producers(graph);
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !inits.contains(n))
        .collect();
    let mut found = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type != "If" {
            continue;
        }
        let Some(cond) = node.input.first() else {
            continue;
        };
        if let Some(Cone { inputs: read, .. }) = cone(graph, &producers, cond) {
            if read.is_empty() {
                continue;
            }
            let mut read: Vec<String> = read.into_iter().collect();
            read.sort_by_key(|r| inputs.iter().position(|i| i == r));
            found.push(ValueIf {
                index,
                node: graph::node_label(graph, index),
                inputs: read,
            });
        }
    }
    found
}

/// Fold every graph-level `If` whose condition reads only inputs in `values` (and constants),
/// again on the graph the inlining made, until none is left. An `If` that reads an input
/// without a value is an error naming the node, the input and the flag.
pub fn specialise(model: Model, values: &InputValues) -> Result<(Model, Vec<Specialisation>)> {
    if value_ifs(model.graph()).is_empty() {
        return Ok((model, Vec::new()));
    }
    let source = model.source().to_string();
    let mut proto = model.into_proto();
    let mut done = Vec::new();
    loop {
        let graph = proto.graph.as_ref().expect("graph checked at load");
        let Some(target) = value_ifs(graph).into_iter().next() else {
            break;
        };
        let missing: Vec<&String> = target
            .inputs
            .iter()
            .filter(|i| !values.contains_key(*i))
            .collect();
        if !missing.is_empty() {
            return Err(missing_value_error(&source, &target, &missing));
        }
        let cond = evaluate_condition(&proto, &target, values, &source)?;
        let cond = cond.ok_or_else(|| {
            Error::input(format!(
                "{source}: the condition of If '{}' could not be evaluated",
                target.node
            ))
        })?;
        let on = target
            .inputs
            .iter()
            .map(|i| format!("{i}={}", value_text(&values[i])))
            .collect();
        let graph = proto.graph.as_mut().expect("graph checked at load");
        let branch = if cond { "then" } else { "else" };
        inline_branch(graph, target.index, &format!("{branch}_branch"), &source)?;
        done.push(Specialisation {
            node: target.node,
            on,
            branch: branch.into(),
        });
    }
    let graph = proto.graph.as_mut().expect("graph checked at load");
    remove_dead(graph);
    let note = done
        .iter()
        .map(|s| format!("If '{}' on {} ({})", s.node, s.on.join(", "), s.branch))
        .collect::<Vec<_>>()
        .join("; ");
    proto.metadata_props.retain(|p| p.key != METADATA_KEY);
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: METADATA_KEY.into(),
            value: note,
        });
    Ok((Model::from_proto(proto, &source)?, done))
}

/// The one-line error for an `If` whose condition reads inputs nobody gave a value.
pub fn missing_value_error(source: &str, target: &ValueIf, missing: &[&String]) -> Error {
    let names = missing
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let example = missing
        .iter()
        .map(|m| format!("--input-value {m}=VALUE"))
        .collect::<Vec<_>>()
        .join(" ");
    Error::input(format!(
        "{source}: If '{}' chooses its branch by the value of input {names}; pass {example} \
         (or --data whose samples all hold one value) so qsteer can inline that branch",
        target.node
    ))
}

/// `16000`, `0.5`, or `[1, 2]` for a vector.
pub fn value_text(v: &ArrayD<f64>) -> String {
    let one = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    if v.ndim() == 0 {
        v.iter().next().map_or(String::new(), |&x| one(x))
    } else {
        let items: Vec<String> = v.iter().map(|&x| one(x)).collect();
        format!("[{}]", items.join(","))
    }
}

fn producers(graph: &GraphProto) -> HashMap<&str, usize> {
    let mut p = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            p.insert(o.as_str(), i);
        }
    }
    p
}

/// The nodes and graph inputs a value is computed from.
struct Cone {
    nodes: Vec<usize>,
    inputs: HashSet<String>,
}

/// The cone of `value`, or `None` when it reads a shape or holds a subgraph (left to tract).
fn cone(graph: &GraphProto, producers: &HashMap<&str, usize>, value: &str) -> Option<Cone> {
    cone_through(graph, producers, value, false)
}

/// [`cone`]; with `shapes`, also through `Shape` / `Size` nodes (what they read joins it).
fn cone_through(
    graph: &GraphProto,
    producers: &HashMap<&str, usize>,
    value: &str,
    shapes: bool,
) -> Option<Cone> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let mut nodes = HashSet::new();
    let mut inputs = HashSet::new();
    let mut stack = vec![value.to_string()];
    while let Some(v) = stack.pop() {
        if v.is_empty() || inits.contains(v.as_str()) {
            continue;
        }
        if let Some(&n) = producers.get(v.as_str()) {
            if !nodes.insert(n) {
                continue;
            }
            let node = &graph.node[n];
            let subgraph = node
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty());
            if (!shapes && matches!(node.op_type.as_str(), "Shape" | "Size")) || subgraph {
                return None;
            }
            stack.extend(node.input.iter().cloned());
        } else if graph_inputs.contains(v.as_str()) {
            inputs.insert(v);
        } else {
            return None; // dangling: validation reports it
        }
    }
    let mut nodes: Vec<usize> = nodes.into_iter().collect();
    nodes.sort_unstable();
    Some(Cone { nodes, inputs })
}

/// Run the condition's cone in tract on the fixed values: true for the then branch.
fn evaluate_condition(
    proto: &ModelProto,
    target: &ValueIf,
    values: &InputValues,
    source: &str,
) -> Result<Option<bool>> {
    let graph = proto.graph.as_ref().expect("graph checked at load");
    let cond = graph.node[target.index].input[0].clone();
    let producers = producers(graph);
    let cone = cone(graph, &producers, &cond).expect("value_ifs checked the cone");
    run_condition(proto, target, &cone, values, source)
}

/// Run the cone `cone` of If `target`'s condition, its inputs fed `values` (full shapes).
fn run_condition(
    proto: &ModelProto,
    target: &ValueIf,
    cone: &Cone,
    values: &InputValues,
    source: &str,
) -> Result<Option<bool>> {
    let graph = proto.graph.as_ref().expect("graph checked at load");
    let cond = graph.node[target.index].input[0].clone();
    let mut sub = GraphProto {
        name: "condition".into(),
        node: cone.nodes.iter().map(|&i| graph.node[i].clone()).collect(),
        ..Default::default()
    };
    let used: HashSet<&String> = sub.node.iter().flat_map(|n| n.input.iter()).collect();
    sub.initializer = graph
        .initializer
        .iter()
        .filter(|t| used.contains(&t.name))
        .cloned()
        .collect();
    let mut feeds = TVec::new();
    let mut inputs: Vec<&String> = cone.inputs.iter().collect();
    inputs.sort();
    for name in inputs {
        let declared = graph.input.iter().find(|i| &i.name == name);
        let elem = declared
            .and_then(|i| match i.r#type.as_ref()?.value.as_ref()? {
                TypeValue::TensorType(t) => Some(t.elem_type),
            })
            .unwrap_or(DataType::Float as i32);
        let value = &values[name];
        let tensor = typed_tensor(value, elem).ok_or_else(|| {
            Error::input(format!(
                "{source}: input '{name}' of If '{}' has an element type qsteer cannot give a \
                 value ({elem})",
                target.node
            ))
        })?;
        sub.input.push(value_info(name, elem, Some(value.shape())));
        feeds.push(tensor.into_tvalue());
    }
    sub.output
        .push(value_info(&cond, DataType::Bool as i32, None));
    let cond_model = ModelProto {
        ir_version: proto.ir_version,
        opset_import: proto.opset_import.clone(),
        graph: Some(sub),
        ..Default::default()
    };
    let what = format!("{source}: the condition of If '{}'", target.node);
    let out = guarded(source, || {
        tract_onnx::onnx()
            .model_for_proto_model(&cond_model)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .and_then(|p| p.run(feeds))
            .map_err(|e| Error::input(format!("{what} could not be evaluated: {e}")))
    });
    let Ok(out) = out else {
        return Ok(None);
    };
    let t = out[0]
        .cast_to::<bool>()
        .map_err(|e| Error::input(format!("{what} is not a boolean: {e}")))?;
    let view = t
        .to_plain_array_view::<bool>()
        .map_err(|e| Error::input(format!("{what} is not a boolean: {e}")))?;
    if view.len() != 1 {
        return Err(Error::input(format!(
            "{what} has {} values; an If condition has one",
            view.len()
        )));
    }
    Ok(view.iter().next().copied())
}

/// After a value specialisation, the inlined branch's own `If`s on shapes (Silero's
/// `If(Shape(x)[-1] == 1)` → Squeeze, else Identity): tract analyses and types both
/// branches, and their outputs differ in rank, so each graph-level `If` whose condition
/// reads shapes (and fixed values) is folded at the data's per-sample shapes. It is folded
/// only when the condition is the same at batch 1 and batch 2 (a shape test on the batch
/// would change with the batch size). `sample_shapes` are in the model's input order.
pub fn fold_shape_ifs(
    model: Model,
    sample_shapes: &[Vec<usize>],
    values: &InputValues,
) -> Result<(Model, Vec<Specialisation>)> {
    let source = model.source().to_string();
    let names = model.input_names();
    let declared: Vec<Option<Vec<Option<usize>>>> = model
        .inputs()
        .iter()
        .map(|i| super::shapes::declared_dims(i))
        .collect();
    let mut proto = model.into_proto();
    let mut done = Vec::new();
    let mut skipped: HashSet<String> = HashSet::new();
    loop {
        let graph = proto.graph.as_ref().expect("graph checked at load");
        let producers = producers(graph);
        let mut next = None;
        for (index, node) in graph.node.iter().enumerate() {
            let label = graph::node_label(graph, index);
            if node.op_type != "If" || skipped.contains(&label) {
                continue;
            }
            let Some(cone) = cone_through(graph, &producers, &node.input[0], true) else {
                skipped.insert(label);
                continue;
            };
            next = Some((index, label, cone));
            break;
        }
        let Some((index, label, cone)) = next else {
            break;
        };
        let target = ValueIf {
            index,
            node: label.clone(),
            inputs: cone.inputs.iter().cloned().collect(),
        };
        let mut at = Vec::new();
        for batch in [1usize, 2] {
            let mut feeds = InputValues::new();
            for name in &cone.inputs {
                let k = names.iter().position(|n| n == name);
                let full = k
                    .and_then(|k| full_shape(declared[k].as_deref(), sample_shapes.get(k)?, batch));
                let value = match (values.get(name), full) {
                    (Some(v), _) => v.clone(),
                    (None, Some(shape)) => ArrayD::zeros(ndarray::IxDyn(&shape)),
                    (None, None) => break,
                };
                feeds.insert(name.clone(), value);
            }
            if feeds.len() != cone.inputs.len() {
                break;
            }
            at.push(run_condition(&proto, &target, &cone, &feeds, &source)?);
        }
        let cond = match at.as_slice() {
            [Some(a), Some(b)] if a == b => *a,
            _ => {
                skipped.insert(label);
                continue;
            }
        };
        let graph = proto.graph.as_mut().expect("graph checked at load");
        let branch = if cond { "then" } else { "else" };
        inline_branch(graph, index, &format!("{branch}_branch"), &source)?;
        done.push(Specialisation {
            node: label,
            on: vec!["the data's shapes".into()],
            branch: branch.into(),
        });
    }
    if !done.is_empty() {
        remove_dead(proto.graph.as_mut().expect("graph checked at load"));
    }
    Ok((Model::from_proto(proto, &source)?, done))
}

/// An input's full shape at `batch`: the samples go on axis 0, or on the open axis of a
/// state written `[layers, batch, …]`; a scalar input stays a scalar.
fn full_shape(
    declared: Option<&[Option<usize>]>,
    sample: &[usize],
    batch: usize,
) -> Option<Vec<usize>> {
    let declared = declared?;
    if declared.is_empty() {
        return Some(Vec::new());
    }
    if declared.len() != sample.len() + 1 {
        return None;
    }
    let axis = if declared[0].is_none() {
        0
    } else {
        declared.iter().position(|d| d.is_none())?
    };
    let mut full = sample.to_vec();
    full.insert(axis, batch);
    Some(full)
}

fn typed_tensor(v: &ArrayD<f64>, elem: i32) -> Option<Tensor> {
    Some(match DataType::try_from(elem).ok()? {
        DataType::Float | DataType::Undefined => v.mapv(|x| x as f32).into_tensor(),
        DataType::Double => v.clone().into_tensor(),
        DataType::Int64 => v.mapv(|x| x as i64).into_tensor(),
        DataType::Int32 => v.mapv(|x| x as i32).into_tensor(),
        DataType::Bool => v.mapv(|x| x != 0.0).into_tensor(),
        _ => return None,
    })
}

fn value_info(name: &str, elem: i32, dims: Option<&[usize]>) -> ValueInfoProto {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorTypeProto {
                elem_type: elem,
                shape: dims.map(|d| TensorShapeProto {
                    dim: d
                        .iter()
                        .map(|&v| Dimension {
                            value: Some(DimValue::DimValue(v as i64)),
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

/// Replace node `index` (an `If`) by the nodes of its branch `attr`: the branch's own names
/// that clash with the outer graph's are renamed, its outputs take the If's output names
/// (an Identity where a branch output is an outer value or listed twice), and its
/// initializers join the graph's. Outer-scope references need nothing: the branch reads
/// the outer graph's values by name, and they are now in the same scope.
fn inline_branch(graph: &mut GraphProto, index: usize, attr: &str, source: &str) -> Result<()> {
    let node = graph.node[index].clone();
    let label = graph::node_label(graph, index);
    let mut branch = node
        .attribute
        .iter()
        .find(|a| a.name == attr)
        .and_then(|a| a.g.clone())
        .ok_or_else(|| Error::input(format!("{source}: If '{label}' has no {attr} graph")))?;
    if branch.output.len() != node.output.len() {
        return Err(Error::input(format!(
            "{source}: If '{label}': its {attr} has {} outputs, the node {}",
            branch.output.len(),
            node.output.len()
        )));
    }
    // Every name the outer graph (without this If's branches) defines or reads.
    let mut taken = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        if i != index {
            collect_names(n, &mut taken);
        }
    }
    taken.extend(graph.input.iter().map(|v| v.name.clone()));
    taken.extend(graph.output.iter().map(|v| v.name.clone()));
    taken.extend(graph.initializer.iter().map(|t| t.name.clone()));
    let mut node_names: HashSet<String> = graph.node.iter().map(|n| n.name.clone()).collect();

    // The branch's own definitions: its nodes' outputs and its initializers.
    let mut defined: Vec<String> = branch
        .node
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    defined.extend(branch.initializer.iter().map(|t| t.name.clone()));
    let defined_set: HashSet<String> = defined.iter().cloned().collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    for name in &defined {
        if taken.contains(name) && !rename.contains_key(name) {
            let fresh = fresh_name(name, &taken, &defined_set);
            taken.insert(fresh.clone());
            rename.insert(name.clone(), fresh);
        }
    }
    // Branch outputs it computes itself take the If's output names.
    let mut identities = Vec::new();
    let mut seen = HashSet::new();
    for (out, b) in node.output.iter().zip(&branch.output) {
        let inner = rename.get(&b.name).unwrap_or(&b.name).clone();
        let own = defined_set.contains(&b.name) && seen.insert(b.name.clone());
        if out.is_empty() {
            continue;
        }
        if own && !branch.initializer.iter().any(|t| t.name == b.name) {
            rename.insert(b.name.clone(), out.clone());
        } else {
            identities.push(NodeProto {
                name: format!("{out}__specialised"),
                op_type: "Identity".into(),
                input: vec![inner],
                output: vec![out.clone()],
                ..Default::default()
            });
        }
    }
    apply_renames(&mut branch, &rename);
    for t in &mut branch.initializer {
        if let Some(r) = rename.get(&t.name) {
            t.name = r.clone();
        }
    }
    for n in branch.node.iter_mut().chain(identities.iter_mut()) {
        if !n.name.is_empty() && !node_names.insert(n.name.clone()) {
            let mut k = 1;
            while node_names.contains(&format!("{}__{k}", n.name)) {
                k += 1;
            }
            n.name = format!("{}__{k}", n.name);
            node_names.insert(n.name.clone());
        }
    }
    let mut inlined = branch.node;
    inlined.extend(identities);
    graph.node.splice(index..=index, inlined);
    graph.initializer.extend(branch.initializer);
    graph
        .value_info
        .extend(branch.value_info.into_iter().map(|mut v| {
            if let Some(r) = rename.get(&v.name) {
                v.name = r.clone();
            }
            v
        }));
    Ok(())
}

fn fresh_name(name: &str, taken: &HashSet<String>, defined: &HashSet<String>) -> String {
    let mut k = 1;
    loop {
        let candidate = format!("{name}__inl{k}");
        if !taken.contains(&candidate) && !defined.contains(&candidate) {
            return candidate;
        }
        k += 1;
    }
}

/// Names a node (and its subgraphs) defines or reads.
fn collect_names(node: &NodeProto, into: &mut HashSet<String>) {
    into.extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
    into.extend(node.output.iter().filter(|s| !s.is_empty()).cloned());
    for a in &node.attribute {
        for g in a.g.iter().chain(a.graphs.iter()) {
            into.extend(g.initializer.iter().map(|t| t.name.clone()));
            into.extend(g.input.iter().map(|v| v.name.clone()));
            for n in &g.node {
                collect_names(n, into);
            }
        }
    }
}

/// Rename values in a graph and, where they are read from outer scope, in its subgraphs.
fn apply_renames(graph: &mut GraphProto, rename: &HashMap<String, String>) {
    if rename.is_empty() {
        return;
    }
    let swap = |s: &mut String| {
        if let Some(r) = rename.get(s.as_str()) {
            *s = r.clone();
        }
    };
    for n in &mut graph.node {
        n.input.iter_mut().for_each(swap);
        n.output.iter_mut().for_each(swap);
        for a in &mut n.attribute {
            for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                // a subgraph that defines the name itself shadows it: leave that one alone
                let own: HashSet<String> = g
                    .node
                    .iter()
                    .flat_map(|n| n.output.iter().cloned())
                    .chain(g.initializer.iter().map(|t| t.name.clone()))
                    .chain(g.input.iter().map(|v| v.name.clone()))
                    .collect();
                let outer: HashMap<String, String> = rename
                    .iter()
                    .filter(|(k, _)| !own.contains(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                apply_renames(g, &outer);
                for o in &mut g.output {
                    if let Some(r) = outer.get(&o.name) {
                        o.name = r.clone();
                    }
                }
            }
        }
    }
    for o in &mut graph.output {
        swap(&mut o.name);
    }
}

/// Drop nodes whose outputs nothing reads (the folded conditions) and initializers nothing
/// reads (what only the dropped branch used). Nodes have no side effects in ONNX.
fn remove_dead(graph: &mut GraphProto) {
    loop {
        let mut read: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        for n in &graph.node {
            collect_reads(n, &mut read);
        }
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| !o.is_empty() && read.contains(o)));
        if graph.node.len() == before {
            graph.initializer.retain(|t| read.contains(&t.name));
            return;
        }
    }
}

fn collect_reads(node: &NodeProto, into: &mut HashSet<String>) {
    into.extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
    for a in &node.attribute {
        for g in a.g.iter().chain(a.graphs.iter()) {
            into.extend(g.output.iter().map(|o| o.name.clone()));
            for n in &g.node {
                collect_reads(n, into);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture() -> Model {
        Model::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/if_on_input.onnx"))
            .unwrap()
    }

    fn sr(v: f64) -> InputValues {
        [("sr".to_string(), ndarray::arr0(v).into_dyn())]
            .into_iter()
            .collect()
    }

    #[test]
    fn finds_the_if_on_the_scalar_input() {
        let m = fixture();
        let ifs = value_ifs(m.graph());
        assert_eq!(ifs.len(), 1);
        assert_eq!(ifs[0].node, "sr_switch");
        assert_eq!(ifs[0].inputs, ["sr"]);
    }

    #[test]
    fn without_a_value_the_error_names_the_node_the_input_and_the_flag() {
        let e = specialise(fixture(), &InputValues::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("If 'sr_switch'")
                && e.contains("input 'sr'")
                && e.contains("--input-value sr=VALUE")
                && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn the_value_picks_the_branch_and_the_inputs_stay_declared() {
        let (m, done) = specialise(fixture(), &sr(16000.0)).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].branch, "then");
        assert_eq!(done[0].on, ["sr=16000"]);
        let ops: Vec<&str> = m.graph().node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "Add", "Relu", "MatMul"]);
        assert_eq!(m.input_names(), ["x", "sr"]);
        // the branch's own bias is a weight of the graph now; the Equal's constant is gone
        assert!(m.weight("then.bias").is_some());
        assert!(m.graph().node.iter().all(|n| n.op_type != "Equal"));
        assert!(m
            .proto()
            .metadata_props
            .iter()
            .any(|p| p.key == METADATA_KEY && p.value.contains("sr=16000")));
        let (m, done) = specialise(fixture(), &sr(8000.0)).unwrap();
        assert_eq!(done[0].branch, "else");
        let ops: Vec<&str> = m.graph().node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Constant", "Squeeze", "MatMul"]);
        assert!(m.weight("then.bias").is_none());
    }
}
