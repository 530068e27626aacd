//! Where CLE can act: the chains of Conv/Gemm layers linked through at most one
//! positively homogeneous activation (f(s·x) = s·f(x) for s > 0: Relu, LeakyRelu, PRelu,
//! Clip(0, ∞), or none), each value read by its next layer alone. A chain is cut into the
//! sets CLE scales together, as AIMET does: pairs, and a triple where a depthwise conv sits
//! between two layers. Every layer no set continues from is listed with the reason.

use super::cle::ChainEnd;
use super::edit::{constant_behind, not_float32, private_constant};
use super::layout::Layout;
use crate::model::graph::node_label;
use crate::model::{attrs, Model};
use std::collections::{HashMap, HashSet};

/// A layer CLE may scale: a Conv or a Gemm (`transA=0`) owning its constant weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) node: usize,
    pub(crate) name: String,
    pub(crate) op: String,
    pub(crate) weight: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) bias: Option<String>,
    pub(crate) layout: Layout,
}

/// What sits between two layers of a chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Between {
    Nothing,
    /// Relu, LeakyRelu, PRelu, Clip(0, ∞).
    Homogeneous {
        node: usize,
        relu_like: bool,
    },
    /// Clip(0, max), to become Relu.
    Bounded {
        node: usize,
        max: f32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) to: usize,
    pub(crate) between: Between,
}

fn member(model: &Model, node: usize) -> std::result::Result<Member, String> {
    let n = &model.graph().node[node];
    let name = node_label(model.graph(), node);
    let op = n.op_type.clone();
    if op == "Gemm" && attrs::int(n, "transA").unwrap_or(0) != 0 {
        return Err("a Gemm with transA=1 is not equalized".into());
    }
    let weight = private_constant(model, node, 1)
        .ok_or_else(|| "its weight is not a constant it alone reads".to_string())?;
    if let Some(reason) = not_float32(model, &weight) {
        return Err(reason);
    }
    let w = model
        .weight(&weight)
        .expect("private_constant finds a weight");
    let layout = match op.as_str() {
        "Conv" => {
            let groups = attrs::int(n, "group").unwrap_or(1).max(1) as usize;
            Layout::conv(w.shape(), groups, &name)
        }
        _ => Layout::gemm(w.shape(), attrs::int(n, "transB").unwrap_or(0) != 0, &name),
    }
    .map_err(|e| e.to_string())?;
    let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        None => None,
        Some(_) => {
            let b = private_constant(model, node, 2)
                .ok_or_else(|| "its bias is shared or computed".to_string())?;
            if model.weight(&b).map(|a| a.len()) != Some(layout.out_channels()) {
                return Err("its bias is not one value per output channel".into());
            }
            Some(b)
        }
    };
    Ok(Member {
        node,
        name,
        op,
        weight,
        shape: w.shape().to_vec(),
        bias,
        layout,
    })
}

/// The Clip bounds, from attributes (opset < 11) or constant inputs.
pub(crate) fn clip_bounds(model: &Model, node: usize) -> Option<(f32, f32)> {
    let n = &model.graph().node[node];
    let input = |slot: usize| -> Option<Option<f32>> {
        match n.input.get(slot).filter(|s| !s.is_empty()) {
            None => Some(None),
            Some(v) => {
                let c = constant_behind(model, v)?;
                model.weight(&c)?.iter().next().map(|x| Some(*x))
            }
        }
    };
    let lo = input(1)?
        .or(attrs::float(n, "min"))
        .unwrap_or(f32::NEG_INFINITY);
    let hi = input(2)?
        .or(attrs::float(n, "max"))
        .unwrap_or(f32::INFINITY);
    Some((lo, hi))
}

/// Activations where f(s·x) ≠ s·f(x): scaling cannot pass them.
const NOT_HOMOGENEOUS: &[&str] = &[
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "ThresholdedRelu",
];

fn classify(model: &Model, node: usize) -> std::result::Result<Between, String> {
    let n = &model.graph().node[node];
    let label = node_label(model.graph(), node);
    match n.op_type.as_str() {
        "Relu" => Ok(Between::Homogeneous {
            node,
            relu_like: true,
        }),
        "LeakyRelu" | "PRelu" => Ok(Between::Homogeneous {
            node,
            relu_like: false,
        }),
        "Clip" => match clip_bounds(model, node) {
            Some((lo, hi)) if lo == 0.0 && hi == f32::INFINITY => Ok(Between::Homogeneous {
                node,
                relu_like: true,
            }),
            Some((lo, hi)) if lo == 0.0 && hi > 0.0 => Ok(Between::Bounded { node, max: hi }),
            Some((lo, hi)) => Err(format!(
                "followed by Clip({lo}, {hi}) '{label}', which does not commute with scaling"
            )),
            None => Err(format!("followed by Clip '{label}' with computed bounds")),
        },
        op if NOT_HOMOGENEOUS.contains(&op) => Err(format!(
            "followed by {op} '{label}', which does not commute with scaling"
        )),
        op => Err(format!("followed by {op} '{label}', which ends a chain")),
    }
}

/// The single reader of `value` (node, slot), or why there is none.
fn only_reader(model: &Model, value: &str) -> std::result::Result<(usize, usize), String> {
    if model.graph().output.iter().any(|o| o.name == value) {
        return Err(format!("its output '{value}' is a graph output"));
    }
    match model.index().consumers(value) {
        [one] => Ok(*one),
        [] => Err(format!("nothing reads its output '{value}'")),
        many => Err(format!(
            "its output '{value}' is read by {} nodes (e.g. a residual Add)",
            many.len()
        )),
    }
}

fn next_link(
    model: &Model,
    members: &HashMap<usize, Member>,
    refused: &HashMap<usize, String>,
    from: &Member,
    relu6_to_relu: bool,
) -> std::result::Result<Link, String> {
    let graph = model.graph();
    let out = &graph.node[from.node].output[0];
    let (mut next, mut slot) = only_reader(model, out)?;
    let mut between = Between::Nothing;
    if !members.contains_key(&next) && !refused.contains_key(&next) {
        between = classify(model, next)?;
        (next, slot) = only_reader(model, &graph.node[next].output[0])?;
    }
    let label = node_label(graph, next);
    if let Some(reason) = refused.get(&next) {
        return Err(format!(
            "the next layer '{label}' is not equalized: {reason}"
        ));
    }
    let Some(to) = members.get(&next) else {
        return Err(format!(
            "then comes {} '{label}', not a Conv or Gemm",
            graph.node[next].op_type
        ));
    };
    if slot != 0 {
        return Err(format!("it feeds '{label}' as a weight, not as its input"));
    }
    if to.layout.in_channels() != from.layout.out_channels() {
        return Err(format!(
            "its {} output channels do not match the {} input channels of '{label}'",
            from.layout.out_channels(),
            to.layout.in_channels()
        ));
    }
    // Asked last, so the reason names the Clip only when it is the one obstacle.
    if let Between::Bounded { node, max } = between {
        if !relu6_to_relu {
            return Err(format!(
                "followed by Clip(0, {max}) '{}': equalizing through it needs relu6_to_relu \
                 (it becomes Relu, which changes the function)",
                node_label(graph, node)
            ));
        }
    }
    Ok(Link { to: next, between })
}

/// The sets of a model, as member node indices, with the links between them.
pub(crate) struct Plan {
    pub(crate) members: HashMap<usize, Member>,
    /// Per chain (a maximal sequence of linked layers), its sets in order. Chains share no
    /// layer, so each is equalized on its own.
    pub(crate) chains: Vec<Vec<Vec<usize>>>,
    pub(crate) links: HashMap<usize, Link>,
    pub(crate) ends: Vec<ChainEnd>,
}

pub(crate) fn plan(model: &Model, relu6_to_relu: bool) -> Plan {
    let graph = model.graph();
    let mut members = HashMap::new();
    let mut refused = HashMap::new();
    let mut ends = Vec::new();
    for &i in model.index().order() {
        match graph.node[i].op_type.as_str() {
            "Conv" | "Gemm" => match member(model, i) {
                Ok(m) => {
                    members.insert(i, m);
                }
                Err(reason) => {
                    refused.insert(i, reason);
                }
            },
            "ConvTranspose" => {
                refused.insert(i, "ConvTranspose is not equalized".into());
            }
            _ => {}
        }
    }
    let mut links = HashMap::new();
    for &i in model.index().order() {
        if let Some(reason) = refused.get(&i) {
            ends.push(ChainEnd {
                layer: node_label(graph, i),
                reason: reason.clone(),
            });
        }
        let Some(m) = members.get(&i) else { continue };
        match next_link(model, &members, &refused, m, relu6_to_relu) {
            Ok(link) => {
                links.insert(i, link);
            }
            Err(reason) => ends.push(ChainEnd {
                layer: m.name.clone(),
                reason,
            }),
        }
    }
    let targets: HashSet<usize> = links.values().map(|l| l.to).collect();
    let mut chains = Vec::new();
    for &i in model.index().order() {
        if !links.contains_key(&i) || targets.contains(&i) {
            continue;
        }
        let mut sets = Vec::new();
        let mut seq = vec![i];
        while let Some(l) = links.get(seq.last().expect("non-empty")) {
            seq.push(l.to);
        }
        // AIMET's split: a depthwise layer with a successor makes a triple.
        let mut k = 0;
        while k + 1 < seq.len() {
            if k + 2 < seq.len() && members[&seq[k + 1]].layout.is_depthwise() {
                sets.push(seq[k..k + 3].to_vec());
                k += 2;
            } else {
                sets.push(seq[k..k + 2].to_vec());
                k += 1;
            }
        }
        chains.push(sets);
    }
    Plan {
        members,
        chains,
        links,
        ends,
    }
}
