//! High-bias absorption (Nagel et al. 2019, §4.1; DESIGN.md §3 "CLE"). After CLE a channel
//! whose bias grew keeps a wide activation range. If L1's output channel is ≈ N(β, γ²)
//! (the folded BN's statistics), then through a Relu it is ≥ c = max(0, β − 3|γ|) almost
//! always, and relu(x) = relu(x − c) + c there. So c moves out of L1 (b1 −= c) and into L2
//! (b2 += Σ W2·c over inputs and kernel taps): the same function wherever x ≥ c, with the
//! activation range lowered by c.
//!
//! Zero padding: a Conv L2 that pads its input sees the padded border as 0, not c, so its
//! border outputs get only part of the absorbed bias. AIMET absorbs anyway. Here such an L2
//! is skipped by default (the function stays exact up to the 3σ assumption) and absorbed
//! into only with `padded = true`; the sample-models README has the measured effect.
//!
//! The 3σ assumption is statistical: real inputs can take a channel below c (a text
//! classifier's probabilities moved by 0.128). Given the per-channel minimum of each
//! pre-activation over calibration samples ([`pre_activation_minimums`]), only
//! c' = min(c, max(0, observed minimum)) is moved, which is exact on those samples.

use super::bn_stats::BnStats;
use super::edit::{add_initializer, private_constant, set_input};
use super::layout::Layout;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::sample_shapes;
use crate::model::graph::node_label;
use crate::model::{attrs, Model};
use crate::quant::qdq::Names;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use ndarray::{Array1, ArrayD, Axis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Two layers with a Relu between them, by node label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HbaLink {
    pub layer: String,
    pub next: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Absorbed {
    pub layer: String,
    pub into: String,
    /// Channels with c > 0.
    pub channels: usize,
    /// The largest c moved.
    pub max: f32,
    /// Channels whose c the calibration samples lowered (they went below β − 3|γ|).
    #[serde(default)]
    pub reduced: usize,
    /// With samples: the largest c the BN statistics alone would have moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_from_statistics: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotAbsorbed {
    pub layer: String,
    pub into: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HbaReport {
    pub absorbed: Vec<Absorbed>,
    pub skipped: Vec<NotAbsorbed>,
    /// Whether layers that zero-pad their input were absorbed into.
    pub padded: bool,
    /// Calibration samples the absorption was limited to (exact on them); `None`: from the
    /// BN statistics alone, which may change outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_on: Option<usize>,
}

/// Per-channel minimum over `data` of each link's pre-activation (the output of
/// `link.layer`, channel axis 1), by layer label.
pub fn pre_activation_minimums(
    model: &Model,
    links: &[HbaLink],
    data: &Dataset,
    options: RunOptions,
    cancel: &CancelToken,
) -> Result<HashMap<String, Vec<f32>>> {
    let graph = model.graph();
    let outputs: HashMap<String, String> = (0..graph.node.len())
        .filter_map(|i| {
            let label = node_label(graph, i);
            let out = graph.node[i].output.first()?.clone();
            links
                .iter()
                .any(|l| l.layer == label)
                .then_some((label, out))
        })
        .collect();
    if outputs.is_empty() {
        return Ok(HashMap::new());
    }
    let capture: Vec<String> = outputs.values().cloned().collect();
    let compiled = CompiledModel::compile(
        model,
        &sample_shapes(model, data)?,
        options.batch_size,
        &capture,
    )?;
    let slots: Vec<(String, usize)> = outputs
        .iter()
        .filter_map(|(label, value)| {
            let slot = compiled.output_names().iter().position(|n| n == value)?;
            Some((label.clone(), slot))
        })
        .collect();
    let mut mins: HashMap<String, Vec<f32>> = HashMap::new();
    compiled.run_dataset_streaming(data, options, cancel, &|_, _| {}, &mut |_, outs| {
        for (label, slot) in &slots {
            let out = &outs[*slot];
            if out.ndim() < 2 {
                return Err(Error::runtime(format!(
                    "{}: output of '{label}' has rank {}, no channel axis",
                    model.source(),
                    out.ndim()
                )));
            }
            let batch: Vec<f32> = out
                .axis_iter(Axis(1))
                .map(|c| c.iter().fold(f32::INFINITY, |m, &v| m.min(v)))
                .collect();
            let entry = mins
                .entry(label.clone())
                .or_insert_with(|| vec![f32::INFINITY; batch.len()]);
            entry
                .iter_mut()
                .zip(&batch)
                .for_each(|(m, v)| *m = m.min(*v));
        }
        Ok(())
    })?;
    Ok(mins)
}

/// Does the Conv pad its input with zeros?
fn pads_input(node: &tract_onnx::pb::NodeProto) -> bool {
    if node.op_type != "Conv" {
        return false;
    }
    let auto = attrs::string(node, "auto_pad").unwrap_or_default();
    matches!(auto.as_str(), "SAME_UPPER" | "SAME_LOWER")
        || attrs::ints(node, "pads").is_some_and(|p| p.iter().any(|&v| v != 0))
}

fn layout_of(model: &Model, node: usize, weight: &ArrayD<f32>) -> Result<Layout> {
    let n = &model.graph().node[node];
    let label = node_label(model.graph(), node);
    match n.op_type.as_str() {
        "Conv" => Layout::conv(
            weight.shape(),
            attrs::int(n, "group").unwrap_or(1).max(1) as usize,
            &label,
        ),
        "Gemm" => Layout::gemm(
            weight.shape(),
            attrs::int(n, "transB").unwrap_or(0) != 0,
            &label,
        ),
        op => Err(Error::input(format!(
            "{}: '{label}' is a {op}, not a Conv or Gemm",
            model.source()
        ))),
    }
}

/// Gemm multiplies its bias by `beta`; a bias change d is written as d / beta.
fn bias_factor(model: &Model, node: usize) -> f32 {
    let n = &model.graph().node[node];
    if n.op_type == "Gemm" {
        1.0 / attrs::float(n, "beta").unwrap_or(1.0)
    } else {
        1.0
    }
}

/// Absorb the high biases across `links`, updating `stats` (L1's output mean drops by c).
pub fn absorb_high_bias(
    model: &Model,
    links: &[HbaLink],
    stats: &mut BnStats,
    padded: bool,
) -> Result<(Model, HbaReport)> {
    absorb(model.clone(), links, stats, padded, None)
}

/// [`absorb_high_bias`] editing `model` itself (CLE hands over the model it made). With
/// `observed` (per-channel pre-activation minimums over `samples` calibration samples, see
/// [`pre_activation_minimums`]) each c is lowered to what the samples allow.
pub(crate) fn absorb(
    mut model: Model,
    links: &[HbaLink],
    stats: &mut BnStats,
    padded: bool,
    observed: Option<(&HashMap<String, Vec<f32>>, usize)>,
) -> Result<(Model, HbaReport)> {
    let by_label: HashMap<String, usize> = (0..model.graph().node.len())
        .map(|i| (node_label(model.graph(), i), i))
        .collect();
    let mut report = HbaReport {
        padded,
        checked_on: observed.map(|(_, n)| n),
        ..Default::default()
    };
    // Layers that had no bias of their own: the bias they get, attached at the end.
    let mut new_biases: HashMap<usize, Vec<f32>> = HashMap::new();
    for link in links {
        let skip = |reason: String| NotAbsorbed {
            layer: link.layer.clone(),
            into: link.next.clone(),
            reason,
        };
        let (Some(&l1), Some(&l2)) = (by_label.get(&link.layer), by_label.get(&link.next)) else {
            return Err(Error::input(format!(
                "{}: no layers '{}' and '{}' to absorb between",
                model.source(),
                link.layer,
                link.next
            )));
        };
        let Some(s) = stats.get(&link.layer) else {
            report.skipped.push(skip(
                "no BN statistics for this layer (its BN was not folded by qsteer)".into(),
            ));
            continue;
        };
        let statistical: Vec<f32> = s
            .mean
            .iter()
            .zip(&s.std)
            .map(|(m, d)| (m - 3.0 * d).max(0.0))
            .collect();
        let (c, reduced) = match observed {
            None => (statistical.clone(), 0),
            Some((mins, _)) => {
                let Some(min) = mins
                    .get(&link.layer)
                    .filter(|m| m.len() == statistical.len())
                else {
                    report.skipped.push(skip(
                        "its pre-activation was not measured on the samples".into(),
                    ));
                    continue;
                };
                let c: Vec<f32> = statistical
                    .iter()
                    .zip(min)
                    .map(|(&c, &m)| c.min(m.max(0.0)))
                    .collect();
                let reduced = c.iter().zip(&statistical).filter(|(a, b)| a < b).count();
                (c, reduced)
            }
        };
        let moved = c.iter().filter(|&&v| v > 0.0).count();
        if moved == 0 {
            report.skipped.push(skip(if reduced > 0 {
                format!(
                    "nothing to absorb exactly: the calibration samples go below \
                     max(0, β − 3|γ|) in all {reduced} channel(s) where it is > 0"
                )
            } else {
                "nothing to absorb: β − 3|γ| ≤ 0 in every channel".into()
            }));
            continue;
        }
        if !padded && pads_input(&model.graph().node[l2]) {
            report.skipped.push(skip(format!(
                "'{}' zero-pads its input: its border outputs would get only part of the bias \
                 (hba_padded absorbs anyway, as AIMET does)",
                link.next
            )));
            continue;
        }
        let Some(b1) = private_constant(&model, l1, 2) else {
            report
                .skipped
                .push(skip("the layer has no bias of its own to lower".into()));
            continue;
        };
        let w2_name = private_constant(&model, l2, 1).ok_or_else(|| {
            Error::input(format!(
                "{}: weight of '{}' not found",
                model.source(),
                link.next
            ))
        })?;
        let w2 = model
            .weight(&w2_name)
            .expect("weight")
            .as_standard_layout()
            .into_owned();
        let layout2 = layout_of(&model, l2, &w2)?;
        if c.len() != layout2.in_channels() || model.weight(&b1).map(|b| b.len()) != Some(c.len()) {
            report.skipped.push(skip(format!(
                "{} statistics channels do not match the layers",
                c.len()
            )));
            continue;
        }
        // L2's bias: its own (changed in place) or a new one; a shared one refuses the pair.
        let own2 = private_constant(&model, l2, 2)
            .filter(|b| model.weight(b).map(|a| a.len()) == Some(layout2.out_channels()));
        let has_bias2 = model.graph().node[l2]
            .input
            .get(2)
            .is_some_and(|b| !b.is_empty());
        if own2.is_none() && has_bias2 {
            report.skipped.push(skip(format!(
                "'{}' shares its bias with another node",
                link.next
            )));
            continue;
        }
        let added = layout2.weighted_in_sum(w2.as_slice().expect("standard layout"), &c);

        // L1: b1 −= c.
        let f1 = bias_factor(&model, l1);
        let mut bias1 = model.weight(&b1).expect("bias").clone();
        bias1.iter_mut().zip(&c).for_each(|(b, v)| *b -= v * f1);
        model.set_weight(&b1, bias1)?;
        // L2: b2 += W2·c.
        let f2 = bias_factor(&model, l2);
        match own2 {
            Some(b2) => {
                let mut bias2 = model.weight(&b2).expect("bias").clone();
                bias2.iter_mut().zip(&added).for_each(|(b, v)| *b += v * f2);
                model.set_weight(&b2, bias2)?;
            }
            None => {
                let entry = new_biases
                    .entry(l2)
                    .or_insert_with(|| vec![0.0; added.len()]);
                entry.iter_mut().zip(&added).for_each(|(b, v)| *b += v * f2);
            }
        }
        stats.shift_down(&link.layer, &c);
        report.absorbed.push(Absorbed {
            layer: link.layer.clone(),
            into: link.next.clone(),
            channels: moved,
            max: c.iter().fold(0.0f32, |m, &v| m.max(v)),
            reduced,
            max_from_statistics: observed
                .map(|_| statistical.iter().fold(0.0f32, |m, &v| m.max(v))),
        });
    }
    if new_biases.is_empty() {
        return Ok((model, report));
    }
    let source = model.source().to_string();
    let mut proto = model.into_proto();
    let g = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(g);
    let mut order: Vec<usize> = new_biases.keys().copied().collect();
    order.sort_unstable();
    for l2 in order {
        let values = Array1::from(new_biases.remove(&l2).unwrap_or_default()).into_dyn();
        let label = node_label(g, l2);
        let name = add_initializer(g, &mut names, &format!("{label}.bias"), &values);
        set_input(&mut g.node[l2], 2, &name);
    }
    Ok((Model::from_proto(proto, &source)?, report))
}
