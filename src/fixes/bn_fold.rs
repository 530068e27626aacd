//! BatchNormalization folding (DESIGN.md §3 "BN folding"). A BN whose input comes straight
//! from a Conv, ConvTranspose or Gemm (its only reader, not a graph output) is an affine
//! map per output channel, y = a·x + (β − a·μ) with a = γ / √(σ² + ε); it is folded into
//! the layer: weights scaled along their output channels, bias a·b + β − a·μ (a bias is
//! added when the layer has none), the BN node removed and the layer writes the BN's
//! output value. The BN's β and |γ| are kept as the layer's output statistics.

use super::bn_stats::{BnStats, ChannelStats};
use super::edit::{
    add_initializer, drop_stale_value_info, not_float32, private_constant, prune_unused, set_attr,
    set_input,
};
use super::layout::Layout;
use crate::model::builder::attr_float;
use crate::model::graph::{node_label, Producer};
use crate::model::{attrs, Model};
use crate::quant::qdq::Names;
use crate::Result;
use ndarray::{Array1, ArrayD};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// One BN folded into its layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldedBn {
    pub bn: String,
    pub layer: String,
    /// The layer's op type (Conv, ConvTranspose, Gemm).
    pub op: String,
    /// The layer had no bias of its own (or shared one) and got a new one.
    pub bias_added: bool,
}

/// A BN left in the model, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedBn {
    pub bn: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FoldReport {
    pub folded: Vec<FoldedBn>,
    pub skipped: Vec<SkippedBn>,
}

/// The folded model, what was done, and the statistics of the folded layers.
#[derive(Debug, Clone)]
pub struct FoldOutcome {
    pub model: Model,
    pub report: FoldReport,
    pub stats: BnStats,
}

/// A fold decided on: weights already computed, structure still to change.
struct Plan {
    bn: usize,
    layer: usize,
    /// A bias to attach as a new initializer (the layer had none, or shared it).
    new_bias: Option<ArrayD<f32>>,
    /// Gemm: the folded bias already holds `beta`, so `beta` becomes 1.
    reset_beta: bool,
}

/// Fold every foldable BatchNormalization; the others are listed with the reason.
pub fn fold_batchnorms(model: &Model) -> Result<FoldOutcome> {
    let graph = model.graph();
    let mut edited = model.clone();
    let mut report = FoldReport::default();
    let mut stats = BnStats::default();
    let mut plans = Vec::new();
    for &i in model.index().order() {
        if graph.node[i].op_type != "BatchNormalization" {
            continue;
        }
        let bn = node_label(graph, i);
        match plan_fold(model, &mut edited, i) {
            Ok((plan, folded, channel_stats)) => {
                stats.layers.insert(folded.layer.clone(), channel_stats);
                report.folded.push(folded);
                plans.push(plan);
            }
            Err(reason) => report.skipped.push(SkippedBn { bn, reason }),
        }
    }
    if plans.is_empty() {
        return Ok(FoldOutcome {
            model: edited,
            report,
            stats,
        });
    }
    let source = model.source().to_string();
    let mut proto = edited.into_proto();
    let g = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(g);
    let mut removed = HashSet::new();
    let mut unused = HashSet::new();
    for p in &plans {
        let bn_node = g.node[p.bn].clone();
        let layer_label = node_label(g, p.layer);
        if let Some(bias) = &p.new_bias {
            let name = add_initializer(g, &mut names, &format!("{layer_label}.bias"), bias);
            if let Some(old) = g.node[p.layer].input.get(2).filter(|b| !b.is_empty()) {
                unused.insert(old.clone());
            }
            set_input(&mut g.node[p.layer], 2, &name);
        }
        if p.reset_beta {
            set_attr(&mut g.node[p.layer], attr_float("beta", 1.0));
        }
        // The layer now writes what the BN wrote, so readers and graph outputs are unchanged.
        g.node[p.layer].output[0] = bn_node.output[0].clone();
        unused.extend(bn_node.input.iter().skip(1).cloned());
        removed.insert(p.bn);
    }
    let mut k = 0;
    g.node.retain(|_| {
        k += 1;
        !removed.contains(&(k - 1))
    });
    prune_unused(g, &unused);
    drop_stale_value_info(g);
    Ok(FoldOutcome {
        model: Model::from_proto(proto, &source)?,
        report,
        stats,
    })
}

/// A constant per-channel BN parameter.
fn bn_param(
    model: &Model,
    bn: usize,
    slot: usize,
    what: &str,
) -> std::result::Result<Vec<f32>, String> {
    let node = &model.graph().node[bn];
    let name = node.input.get(slot).filter(|s| !s.is_empty());
    let constant = name.and_then(|n| super::edit::constant_behind(model, n));
    match constant.and_then(|c| model.weight(&c)) {
        Some(a) => Ok(a.iter().copied().collect()),
        None => Err(format!("its {what} is not a constant")),
    }
}

/// Decide whether BN node `bn` folds, and if so write the layer's new weight (and bias,
/// when the layer owns one) into `edited`. `Err` is the reason it stays.
fn plan_fold(
    model: &Model,
    edited: &mut Model,
    bn: usize,
) -> std::result::Result<(Plan, FoldedBn, ChannelStats), String> {
    let graph = model.graph();
    let node = &graph.node[bn];
    if attrs::int(node, "training_mode").unwrap_or(0) != 0 {
        return Err("it runs in training mode".into());
    }
    if attrs::int(node, "spatial").unwrap_or(1) == 0 {
        return Err("it is a non-spatial BatchNormalization (spatial=0)".into());
    }
    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err("its running statistics outputs are used".into());
    }
    let x = node.input.first().cloned().unwrap_or_default();
    let layer = match model.index().producer(&x) {
        Some(Producer::Node { node: p, slot: 0 }) => p,
        Some(Producer::Node { node: p, .. }) => {
            return Err(format!(
                "its input '{x}' is a secondary output of {} '{}'",
                graph.node[p].op_type,
                node_label(graph, p)
            ))
        }
        _ => return Err(format!("its input '{x}' is not computed by a layer")),
    };
    let lnode = &graph.node[layer];
    let op = lnode.op_type.as_str();
    if !matches!(op, "Conv" | "ConvTranspose" | "Gemm") {
        return Err(format!(
            "its input comes from {op} '{}', not from a Conv, ConvTranspose or Gemm",
            node_label(graph, layer)
        ));
    }
    let readers = model.index().consumers(&x).len();
    if readers > 1 {
        return Err(format!(
            "its input '{x}' is also read by {} other node(s)",
            readers - 1
        ));
    }
    if graph.output.iter().any(|o| o.name == x) {
        return Err(format!("its input '{x}' is also a graph output"));
    }
    let layer_name = node_label(graph, layer);
    let weight = private_constant(model, layer, 1)
        .ok_or_else(|| format!("the weight of '{layer_name}' is not a constant it alone reads"))?;
    if let Some(reason) = not_float32(model, &weight) {
        return Err(reason);
    }
    let w = model
        .weight(&weight)
        .expect("constant_behind checks the weight");
    let groups = attrs::int(lnode, "group").unwrap_or(1).max(1) as usize;
    let layout = match op {
        "Conv" => Layout::conv(w.shape(), groups, &layer_name),
        "ConvTranspose" => Layout::conv_transpose(w.shape(), groups, &layer_name),
        _ => Layout::gemm(
            w.shape(),
            attrs::int(lnode, "transB").unwrap_or(0) != 0,
            &layer_name,
        ),
    }
    .map_err(|e| e.to_string())?;
    let channels = layout.out_channels();
    let gamma = bn_param(model, bn, 1, "scale")?;
    let beta = bn_param(model, bn, 2, "bias")?;
    let mean = bn_param(model, bn, 3, "mean")?;
    let var = bn_param(model, bn, 4, "variance")?;
    if [&gamma, &beta, &mean, &var]
        .iter()
        .any(|p| p.len() != channels)
    {
        return Err(format!(
            "its parameters do not have one value per output channel of '{layer_name}' ({channels})"
        ));
    }
    let eps = attrs::float(node, "epsilon").unwrap_or(1e-5);
    let mut a = Vec::with_capacity(channels);
    for c in 0..channels {
        let d = var[c] + eps;
        if d.is_nan() || d <= 0.0 || d.is_infinite() {
            return Err(format!("variance + epsilon is {d} in channel {c}"));
        }
        a.push(gamma[c] / d.sqrt());
    }
    let shift: Vec<f32> = (0..channels).map(|c| beta[c] - a[c] * mean[c]).collect();

    // The old bias, per channel, and whether this layer may rewrite it in place.
    let bias_slot = lnode.input.get(2).filter(|b| !b.is_empty());
    let gemm_beta = if op == "Gemm" {
        attrs::float(lnode, "beta").unwrap_or(1.0)
    } else {
        1.0
    };
    let (old_bias, own_bias) = match bias_slot {
        None => (vec![0.0; channels], None),
        Some(b) => {
            let constant = super::edit::constant_behind(model, b)
                .ok_or_else(|| format!("the bias of '{layer_name}' is computed, not a constant"))?;
            let arr = model.weight(&constant).expect("constant");
            let per_channel = match arr.len() {
                n if n == channels && arr.shape().iter().rev().skip(1).all(|&d| d == 1) => {
                    arr.iter().copied().collect()
                }
                1 => vec![arr.iter().copied().next().unwrap_or(0.0); channels],
                _ => {
                    return Err(format!(
                    "the bias of '{layer_name}' has shape {:?}, not one value per output channel",
                    arr.shape()
                ))
                }
            };
            let own = private_constant(model, layer, 2).filter(|_| arr.len() == channels);
            (per_channel, own)
        }
    };
    let new_bias: Vec<f32> = (0..channels)
        .map(|c| a[c] * gemm_beta * old_bias[c] + shift[c])
        .collect();

    let mut w_new = w.as_standard_layout().into_owned();
    layout.scale_out(w_new.as_slice_mut().expect("standard layout"), &a);
    let new_bias = Array1::from(new_bias).into_dyn();
    // Everything is computed before anything is written: a refusal leaves `edited` as it was.
    let bias_added = own_bias.is_none();
    let plan_bias = match &own_bias {
        Some(b) => {
            let shape = model.weight(b).expect("constant").shape().to_vec();
            let reshaped = new_bias
                .into_shape_with_order(shape)
                .map_err(|e| e.to_string())?;
            edited.set_weight(b, reshaped).map_err(|e| e.to_string())?;
            None
        }
        None => Some(new_bias),
    };
    edited
        .set_weight(&weight, w_new)
        .map_err(|e| e.to_string())?;
    // An unnamed layer is known by its output, which becomes the BN's.
    let label = if lnode.name.is_empty() {
        node.output[0].clone()
    } else {
        lnode.name.clone()
    };
    let bn_label = node_label(graph, bn);
    Ok((
        Plan {
            bn,
            layer,
            new_bias: plan_bias,
            reset_beta: op == "Gemm" && gemm_beta != 1.0,
        },
        FoldedBn {
            bn: bn_label.clone(),
            layer: label,
            op: op.to_string(),
            bias_added,
        },
        ChannelStats {
            bn: bn_label,
            mean: beta,
            std: gamma.iter().map(|g| g.abs()).collect(),
        },
    ))
}
