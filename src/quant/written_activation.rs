//! Activations written out with elementwise ops, recognized so that they carry one quantizer
//! (see [`super::fused_groups`]). The forms exporters write:
//!
//! - HardSwish: `Div(Mul(x, Clip(Add(x, c), 0, h)), h)` (paddle2onnx; PyTorch's
//!   `x * relu6(x + 3) / 6`), `Mul(x, Div(Clip(Add(x, c), 0, h), h))` (the other association),
//!   either with `Mul(·, 1/h)` for the division, and `Mul(x, HardSigmoid(x))`;
//! - HardSigmoid: `Div(Clip(Add(x, c), 0, h), h)` or `Mul(·, 1/h)`, which is ONNX's
//!   `HardSigmoid(α = 1/h, β = c/h)`;
//! - SiLU (Swish): `Mul(x, Sigmoid(x))`.
//!
//! The constants must be scalars, the Clip's lower bound 0 and the divisor its upper bound
//! (so the chain is exactly one HardSigmoid / HardSwish); every intermediate value has the
//! chain's next op as its only reader.

use crate::model::graph::Producer;
use crate::model::{attrs, Model};

use super::fused_groups::constant;

/// Which activation a chain writes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenKind {
    HardSwish,
    HardSigmoid,
    Silu,
}

/// A written-out activation: the value it reads and its nodes, in order; the last one
/// computes the activation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenActivation {
    pub kind: WrittenKind,
    pub input: String,
    pub members: Vec<usize>,
}

impl WrittenActivation {
    /// The node that computes the activation's result.
    pub fn end(&self) -> usize {
        *self.members.last().expect("a chain has members")
    }
}

/// Every written-out activation of `model`, in topological order of their ends; a HardSigmoid
/// inside a HardSwish is part of the HardSwish, not listed on its own.
pub fn written_activations(
    model: &Model,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> Vec<WrittenActivation> {
    let all: Vec<WrittenActivation> = model
        .index()
        .order()
        .iter()
        .filter_map(|&i| written_activation(model, i, single_consumer))
        .collect();
    let inner: std::collections::HashSet<usize> = all
        .iter()
        .flat_map(|a| a.members[..a.members.len() - 1].iter().copied())
        .collect();
    all.into_iter()
        .filter(|a| !inner.contains(&a.end()))
        .collect()
}

/// The written-out activation whose result node `end` computes, if it ends one.
/// `single_consumer(value)` is the only reader of a value that is not a graph output.
pub fn written_activation(
    model: &Model,
    end: usize,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> Option<WrittenActivation> {
    let m = Matcher {
        model,
        single_consumer,
    };
    let node = &model.graph().node[end];
    if node.input.len() != 2 || node.output.is_empty() {
        return None;
    }
    // A division by the Clip's upper bound (Div by h or Mul by 1/h) ends a HardSigmoid, or a
    // HardSwish whose Mul by x came first.
    if let Some((operand, divisor)) = m.scaling(end) {
        if let Some((x, core, _)) = m.hard_sigmoid_core(operand, end, Some(divisor)) {
            return Some(WrittenActivation {
                kind: WrittenKind::HardSigmoid,
                input: x,
                members: [core, vec![end]].concat(),
            });
        }
        let product = m.only_reader_is(operand, end, "Mul")?;
        let p = &model.graph().node[product];
        for (gate, x) in [(&p.input[0], &p.input[1]), (&p.input[1], &p.input[0])] {
            if let Some((input, core, _)) = m.hard_sigmoid_core(gate, product, Some(divisor)) {
                if &input == x {
                    return Some(WrittenActivation {
                        kind: WrittenKind::HardSwish,
                        input,
                        members: [core, vec![product, end]].concat(),
                    });
                }
            }
        }
        return None;
    }
    if node.op_type != "Mul" {
        return None;
    }
    // x · gate(x): Sigmoid (SiLU), HardSigmoid or a written-out HardSigmoid (HardSwish).
    for (gate, x) in [
        (&node.input[0], &node.input[1]),
        (&node.input[1], &node.input[0]),
    ] {
        for (op, kind) in [
            ("Sigmoid", WrittenKind::Silu),
            ("HardSigmoid", WrittenKind::HardSwish),
        ] {
            if let Some(g) = m.only_reader_is(gate, end, op) {
                if model.graph().node[g].input.first() == Some(x) {
                    return Some(WrittenActivation {
                        kind,
                        input: x.clone(),
                        members: vec![g, end],
                    });
                }
            }
        }
        let Some(scale) = m.producer_read_only_by(gate, end) else {
            continue;
        };
        let Some((operand, divisor)) = m.scaling(scale) else {
            continue;
        };
        if let Some((input, core, _)) = m.hard_sigmoid_core(operand, scale, Some(divisor)) {
            if &input == x {
                return Some(WrittenActivation {
                    kind: WrittenKind::HardSwish,
                    input,
                    members: [core, vec![scale, end]].concat(),
                });
            }
        }
    }
    None
}

struct Matcher<'a> {
    model: &'a Model,
    single_consumer: &'a dyn Fn(&str) -> Option<usize>,
}

impl Matcher<'_> {
    /// The node computing `value` (output slot 0), when `reader` is its only reader.
    fn producer_read_only_by(&self, value: &str, reader: usize) -> Option<usize> {
        if (self.single_consumer)(value) != Some(reader) {
            return None;
        }
        match self.model.index().producer(value)? {
            Producer::Node { node, slot: 0 } => Some(node),
            _ => None,
        }
    }

    /// [`Self::producer_read_only_by`], of op type `op`.
    fn only_reader_is(&self, value: &str, reader: usize, op: &str) -> Option<usize> {
        let node = self.producer_read_only_by(value, reader)?;
        (self.model.graph().node[node].op_type == op).then_some(node)
    }

    /// A scalar constant behind `value`.
    fn scalar(&self, value: &str) -> Option<f32> {
        let c = constant(self.model, value)?;
        (c.len() == 1).then(|| *c.iter().next().expect("one value"))
    }

    /// `node` as a division by a scalar: `Div(v, k)` → `(v, k)`, `Mul(v, k)` or `Mul(k, v)` →
    /// `(v, 1/k)`.
    fn scaling(&self, node: usize) -> Option<(&str, f32)> {
        let n = &self.model.graph().node[node];
        if n.input.len() != 2 {
            return None;
        }
        match n.op_type.as_str() {
            "Div" => Some((n.input[0].as_str(), self.scalar(&n.input[1])?)),
            "Mul" => {
                let (k, v) = match self.scalar(&n.input[1]) {
                    Some(k) => (k, &n.input[0]),
                    None => (self.scalar(&n.input[0])?, &n.input[1]),
                };
                (k != 0.0).then(|| (v.as_str(), 1.0 / k))
            }
            _ => None,
        }
    }

    /// A Clip's constant bounds, from its inputs (opset ≥ 11) or attributes (before);
    /// `None` when a bound is computed.
    fn clip_bounds(&self, clip: usize) -> Option<(f32, f32)> {
        let n = &self.model.graph().node[clip];
        let bound = |slot: usize, attr: &str, default: f32| -> Option<f32> {
            match n.input.get(slot).filter(|v| !v.is_empty()) {
                Some(v) => self.scalar(v),
                None => Some(attrs::float(n, attr).unwrap_or(default)),
            }
        };
        Some((
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ))
    }

    /// `Clip(Add(x, c), 0, h)` computing `value`, read only by `reader`, with `h` equal to
    /// `divisor` when given: `(x, [Add, Clip], h)`.
    fn hard_sigmoid_core(
        &self,
        value: &str,
        reader: usize,
        divisor: Option<f32>,
    ) -> Option<(String, Vec<usize>, f32)> {
        let clip = self.only_reader_is(value, reader, "Clip")?;
        let (lo, hi) = self.clip_bounds(clip)?;
        if lo != 0.0 || !hi.is_finite() || hi <= 0.0 {
            return None;
        }
        if let Some(d) = divisor {
            if (d - hi).abs() > 1e-4 * hi.max(1.0) {
                return None;
            }
        }
        let shifted = self.model.graph().node[clip].input.first()?;
        let add = self.only_reader_is(shifted, clip, "Add")?;
        let a = &self.model.graph().node[add];
        let x = match (self.scalar(&a.input[0]), self.scalar(&a.input[1])) {
            (None, Some(_)) => a.input[0].clone(),
            (Some(_), None) => a.input[1].clone(),
            _ => return None,
        };
        Some((x, vec![add, clip], hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::builder::ProtoBuilder;
    use ndarray::arr0;

    fn single_consumer(model: &Model) -> impl Fn(&str) -> Option<usize> + '_ {
        let outputs = model.output_names();
        move |v: &str| match model.index().consumers(v) {
            [(n, _)] if !outputs.iter().any(|o| o == v) => Some(*n),
            _ => None,
        }
    }

    fn found(model: &Model) -> Vec<(WrittenKind, String, Vec<String>)> {
        let sc = single_consumer(model);
        written_activations(model, &sc)
            .into_iter()
            .map(|a| {
                let names = a
                    .members
                    .iter()
                    .map(|&m| model.graph().node[m].name.clone())
                    .collect();
                (a.kind, a.input, names)
            })
            .collect()
    }

    fn scalars(b: &mut ProtoBuilder) -> &mut ProtoBuilder {
        b.initializer("three", &arr0(3.0f32).into_dyn())
            .initializer("zero", &arr0(0.0f32).into_dyn())
            .initializer("six", &arr0(6.0f32).into_dyn())
            .initializer("sixth", &arr0(1.0f32 / 6.0).into_dyn())
    }

    #[test]
    fn every_association_of_a_written_hardswish_is_one_activation() {
        // x·clip(x+3)/6 (paddle2onnx's order), x·(clip(x+3)/6) and x·clip(x+3)·(1/6).
        let mut b = ProtoBuilder::new(13);
        scalars(b.input("x", &[4]))
            .node("Add", "a1", &["x", "three"], &["s1"], vec![])
            .node("Clip", "c1", &["s1", "zero", "six"], &["r1"], vec![])
            .node("Mul", "m1", &["x", "r1"], &["p1"], vec![])
            .node("Div", "d1", &["p1", "six"], &["y1"], vec![])
            .node("Add", "a2", &["three", "y1"], &["s2"], vec![])
            .node("Clip", "c2", &["s2", "zero", "six"], &["r2"], vec![])
            .node("Div", "d2", &["r2", "six"], &["h2"], vec![])
            .node("Mul", "m2", &["y1", "h2"], &["y2"], vec![])
            .node("Add", "a3", &["y2", "three"], &["s3"], vec![])
            .node("Clip", "c3", &["s3", "zero", "six"], &["r3"], vec![])
            .node("Mul", "m3", &["r3", "y2"], &["p3"], vec![])
            .node("Mul", "k3", &["sixth", "p3"], &["y3"], vec![])
            .output("y3");
        let model = b.model("hswish_forms").unwrap();
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            found(&model),
            vec![
                (
                    WrittenKind::HardSwish,
                    "x".into(),
                    strs(&["a1", "c1", "m1", "d1"])
                ),
                (
                    WrittenKind::HardSwish,
                    "y1".into(),
                    strs(&["a2", "c2", "d2", "m2"])
                ),
                (
                    WrittenKind::HardSwish,
                    "y2".into(),
                    strs(&["a3", "c3", "m3", "k3"])
                ),
            ]
        );
    }

    #[test]
    fn hardsigmoid_silu_and_gated_hardsigmoid_are_found_and_lookalikes_are_not() {
        let mut b = ProtoBuilder::new(13);
        scalars(b.input("x", &[4]).input("z", &[4]))
            .initializer("five", &arr0(5.0f32).into_dyn())
            // HardSigmoid written out, gating another tensor (an SE block): not a HardSwish.
            .node("Add", "a1", &["x", "three"], &["s1"], vec![])
            .node("Clip", "c1", &["s1", "zero", "six"], &["r1"], vec![])
            .node("Mul", "k1", &["r1", "sixth"], &["g1"], vec![])
            .node("Mul", "gate", &["z", "g1"], &["y1"], vec![])
            // SiLU and x·HardSigmoid(x).
            .node("Sigmoid", "sg", &["y1"], &["e"], vec![])
            .node("Mul", "silu", &["e", "y1"], &["y2"], vec![])
            .node("HardSigmoid", "hs", &["y2"], &["h"], vec![])
            .node("Mul", "hswish", &["y2", "h"], &["y3"], vec![])
            // Divided by 5 where the Clip stops at 6: not a HardSigmoid.
            .node("Add", "a4", &["y3", "three"], &["s4"], vec![])
            .node("Clip", "c4", &["s4", "zero", "six"], &["r4"], vec![])
            .node("Div", "d4", &["r4", "five"], &["y4"], vec![])
            // x·Sigmoid(z): a gate on another tensor.
            .node("Sigmoid", "sz", &["z"], &["ez"], vec![])
            .node("Mul", "gz", &["y4", "ez"], &["y5"], vec![])
            .output("y5");
        let model = b.model("gates").unwrap();
        let kinds: Vec<(WrittenKind, String)> =
            found(&model).into_iter().map(|(k, x, _)| (k, x)).collect();
        assert_eq!(
            kinds,
            vec![
                (WrittenKind::HardSigmoid, "x".into()),
                (WrittenKind::Silu, "y1".into()),
                (WrittenKind::HardSwish, "y2".into()),
            ]
        );
    }
}
