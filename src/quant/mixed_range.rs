//! The mixed-range Concat rule. A detector's head often ends in one Concat joining its
//! boxes (pixels, 0–320) and its class scores (0–1) into the output tensor. Under one 8-bit
//! encoding the scores keep one or two grid steps (every score becomes 0 or ~1.24): the
//! detector finds nothing, while the output's SQNR still looks fine.
//!
//! The rule, on by default: a Concat activation point whose joined value reaches the graph's
//! outputs through pass-through ops only (Reshape, Transpose, Slice, Split …: nothing
//! computes on it inside the model) and whose inputs' ranges differ by more than a factor
//! (widest over narrowest; [`DEFAULT_FACTOR`], the diagnosis's wide-range flag) gets no
//! quantizer. Each input keeps the encoding it already has (every input must be on a
//! quantizer's grid or a constant), so an integer runtime still computes everything before
//! the Concat in integers and only the final join is a float copy: the exported Q/DQ graph
//! dequantizes each input and concatenates in float, which ONNX Runtime runs.
//!
//! A Concat inside the network (feeding a Conv) is not touched: a runtime needs one scale
//! there. The diagnosis flags it and `--fp32 NAME` keeps it FP32 by hand.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::analysis::WIDE_RANGE_RATIO;
use super::histogram::Histogram;
use super::points::{is_pass_through, point_feeding, QuantPoint};
use crate::model::graph::node_label;
use crate::model::Model;

/// Inputs whose ranges differ by more than this keep their own encodings: at 8 bits the
/// narrowest would keep fewer than 256 / 16 = 16 grid steps (under 4 bits' worth) under a
/// joined encoding. YOLOv8n's head joins 0–320 and 0–1 (ratio ~320); the channel Concats
/// inside the zoo's detectors measure below 16 and are inside the network anyway.
pub const DEFAULT_FACTOR: f64 = WIDE_RANGE_RATIO;

/// A Concat activation point the rule may leave unquantized, with its measured spread.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedConcat {
    /// The joined value (the activation point).
    pub value: String,
    /// The Concat node's label.
    pub node: String,
    /// Widest input range over the narrowest.
    pub ratio: f64,
    /// `[min, max]` of each input, in input order.
    pub inputs: Vec<(String, [f32; 2])>,
}

/// A quantizer the rule removed, as the quantsim JSON and the diagnosis report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptFp32 {
    pub value: String,
    pub node: String,
    pub reason: String,
}

/// The Concat points at the model's outputs whose inputs each sit on a quantizer's grid (or
/// are constants), with the calibrated range of each input's quantizer, whatever their
/// spread; [`kept_fp32`] applies the factor. The ranges come from the inputs' own
/// histograms, so the Concat's shapes need not be known (YOLOv8's anchor-grid branch
/// leaves its extent symbolic).
pub fn output_concats(
    model: &Model,
    points: &[QuantPoint],
    histograms: &BTreeMap<String, Histogram>,
) -> Vec<MixedConcat> {
    let graph = model.graph();
    let outputs: HashSet<String> = model.output_names().into_iter().collect();
    points
        .iter()
        .filter(|p| p.producer_op == "Concat")
        .filter_map(|p| {
            let node = p.node?;
            let mut inputs = Vec::new();
            for v in &graph.node[node].input {
                if model.weight(v).is_some() {
                    continue;
                }
                let feeding = point_feeding(model, points, v)?;
                let (lo, hi) = histograms.get(&feeding.value)?.range()?;
                inputs.push((v.clone(), [lo, hi]));
            }
            // The width an encoding spans: the range widened to contain 0.
            let widths: Vec<f64> = inputs
                .iter()
                .map(|(_, r)| (r[1].max(0.0) - r[0].min(0.0)) as f64)
                .collect();
            let widest = widths.iter().copied().fold(0.0, f64::max);
            let narrowest = widths.iter().copied().fold(f64::INFINITY, f64::min);
            let usable = inputs.len() >= 2 && narrowest > 0.0 && widest.is_finite();
            (usable && reaches_outputs_only(model, &outputs, &p.value)).then(|| MixedConcat {
                value: p.value.clone(),
                node: node_label(graph, node),
                ratio: widest / narrowest,
                inputs,
            })
        })
        .collect()
}

/// Whether every use of `value` is a graph output, directly or through pass-through ops.
fn reaches_outputs_only(model: &Model, outputs: &HashSet<String>, value: &str) -> bool {
    let graph = model.graph();
    let mut stack = vec![value.to_string()];
    let mut seen = HashSet::new();
    let mut reaches = false;
    while let Some(v) = stack.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        if outputs.contains(&v) {
            reaches = true;
        }
        for (node, _) in model.index().consumers(&v) {
            let n = &graph.node[*node];
            if !is_pass_through(&n.op_type) {
                return false;
            }
            stack.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    reaches
}

/// The Concats whose inputs' ranges differ by more than `factor` (`None`: the rule is off).
pub fn kept_fp32(concats: &[MixedConcat], factor: Option<f64>) -> Vec<KeptFp32> {
    let Some(factor) = factor else {
        return Vec::new();
    };
    concats
        .iter()
        .filter(|c| c.ratio > factor)
        .map(|c| {
            let parts: Vec<String> = c
                .inputs
                .iter()
                .map(|(n, r)| format!("'{n}' [{:.3}, {:.3}]", r[0], r[1]))
                .collect();
            KeptFp32 {
                value: c.value.clone(),
                node: c.node.clone(),
                reason: format!(
                    "mixed-range Concat at the output: its inputs' ranges differ {:.0}× (over \
                     {factor:.0}×): {}; each keeps its own encoding, the join is not quantized \
                     (--mixed-range off to quantize it)",
                    c.ratio,
                    parts.join(", ")
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::points::activation_points;

    /// The boxes-and-scores head with `tail` after the Concat.
    fn head(tail: &str) -> Model {
        let mut b = crate::model::fixtures::boxes_and_scores_head();
        match tail {
            "transpose" => {
                b.node("Transpose", "t", &["det"], &["out"], vec![]);
            }
            _ => {
                b.node("Sigmoid", "s", &["det"], &["out"], vec![]);
            }
        }
        b.output("out");
        b.model("head").unwrap()
    }

    /// Histograms of the two inputs with the given ranges.
    fn ranges(boxes: [f32; 2], scores: [f32; 2]) -> BTreeMap<String, Histogram> {
        [("boxes", boxes), ("scores", scores)]
            .into_iter()
            .map(|(v, r)| {
                let mut h = Histogram::new(64);
                h.add(&r);
                (v.to_string(), h)
            })
            .collect()
    }

    fn boxes_and_scores() -> BTreeMap<String, Histogram> {
        ranges([0.0, 320.0], [0.0, 1.0])
    }

    #[test]
    fn an_output_concat_of_boxes_and_scores_is_kept_fp32_with_its_reason() {
        let model = head("transpose");
        let points = activation_points(&model).unwrap();
        let concats = output_concats(&model, &points, &boxes_and_scores());
        assert_eq!(concats.len(), 1, "{concats:?}");
        assert!((concats[0].ratio - 320.0).abs() < 1e-6);
        let kept = kept_fp32(&concats, Some(DEFAULT_FACTOR));
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].value.as_str(), kept[0].node.as_str()),
            ("det", "detect")
        );
        assert!(kept[0].reason.contains("320×"), "{}", kept[0].reason);
        assert!(kept_fp32(&concats, None).is_empty(), "the rule is off");
        assert!(
            kept_fp32(&concats, Some(400.0)).is_empty(),
            "under the factor"
        );
    }

    #[test]
    fn similar_ranges_or_a_concat_feeding_compute_stay_quantized() {
        let model = head("transpose");
        let points = activation_points(&model).unwrap();
        let similar = ranges([-1.0, 4.0], [0.0, 1.0]);
        let concats = output_concats(&model, &points, &similar);
        assert!(kept_fp32(&concats, Some(DEFAULT_FACTOR)).is_empty());
        let inner = head("sigmoid");
        let points = activation_points(&inner).unwrap();
        assert!(output_concats(&inner, &points, &boxes_and_scores()).is_empty());
    }
}
