//! One op per fake-quant point when tract runs a simulated model. The simulation writes each
//! activation quantizer as standard ONNX, `Div(scale) → Round → Clip(qmin, qmax) →
//! Mul(scale)` (see `quant::qdq`), which other runtimes read; tract would run it as two or
//! three passes over the tensor (its Round, then a fused Max+Min+Mul chain, the division
//! turned into a multiplication by 1/scale). Before tract parses the model, each such chain
//! becomes one `QsteerFakeQuant` node (a private op registered with tract-onnx) doing the
//! same float operations in the same order in one pass, so the results are bit-identical.
//!
//! Only what nothing else reads is fused: the intermediate values must have one consumer
//! each and be neither graph outputs nor values the caller captures.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto};
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_hir::ops::element_wise::ElementWiseIntoHir;

use crate::model::tensor::to_array_f32;

/// The op type of a fused point (not an ONNX op: it only exists between this module and
/// tract; files never contain it).
pub const OP_TYPE: &str = "QsteerFakeQuant";

/// `clamp(round_half_even(x · (1/scale)), lo, hi) · scale`, evaluated as tract evaluates the
/// ONNX chain: the reciprocal in f32, then Round, Max, Min and Mul in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    pub scale: f32,
    pub lo: f32,
    pub hi: f32,
}

// tract compares ops for equality; the fields are never NaN (checked when fusing).
impl Eq for FakeQuant {}

/// 1.5 · 2^23: adding and subtracting it rounds |v| < 2^22 half-to-even (the FPU's mode).
/// After the clamp |v| ≤ 2^16, so it always applies.
const ROUNDER: f32 = 12_582_912.0;
/// Grid bounds must be whole numbers below this (16 bits are far below).
const BOUND_LIMIT: f32 = 4_194_304.0;

impl FakeQuant {
    /// One value. The clamp comes before the rounding: with whole-number bounds that is the
    /// same value as ONNX's Round then Clip (rounding is monotonic and keeps whole numbers),
    /// keeps the rounding trick in range, and is what the vector loop below does.
    #[inline]
    pub fn apply(&self, inv: f32, x: f32) -> f32 {
        let v = (x * inv).max(self.lo).min(self.hi);
        ((v + ROUNDER) - ROUNDER).copysign(v) * self.scale
    }

    /// Every value of `xs` in place.
    fn apply_all(&self, xs: &mut [f32]) {
        let inv = 1.0f32 / self.scale;
        let mut chunks = xs.chunks_exact_mut(4);
        #[cfg(target_arch = "x86_64")]
        for c in &mut chunks {
            // SAFETY: SSE2 is part of x86_64; loads and stores are unaligned, 4 in bounds.
            unsafe { self.apply4(inv, c) };
        }
        for x in chunks.into_remainder() {
            *x = self.apply(inv, *x);
        }
    }

    /// `apply` on 4 values with SSE2, in the same order and with the same IEEE operations
    /// (max/min return the bound for NaN, as `f32::max` does); explicit because qsteer's own
    /// code is built at opt-level 1 in dev builds, where loops are not vectorized.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn apply4(&self, inv: f32, c: &mut [f32]) {
        use std::arch::x86_64::*;
        unsafe {
            let x = _mm_loadu_ps(c.as_ptr());
            let v = _mm_mul_ps(x, _mm_set1_ps(inv));
            let v = _mm_min_ps(_mm_max_ps(v, _mm_set1_ps(self.lo)), _mm_set1_ps(self.hi));
            let rounder = _mm_set1_ps(ROUNDER);
            let r = _mm_sub_ps(_mm_add_ps(v, rounder), rounder);
            // copysign: the rounded value carries v's sign (a zero from -0.3 is -0.0)
            let r = _mm_or_ps(r, _mm_and_ps(v, _mm_set1_ps(-0.0)));
            _mm_storeu_ps(c.as_mut_ptr(), _mm_mul_ps(r, _mm_set1_ps(self.scale)));
        }
    }
}

impl ElementWiseMiniOp for FakeQuant {
    fn name(&self) -> String {
        "FakeQuant".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, _out_dt: Option<DatumType>) -> TractResult<()> {
        if t.datum_type() != f32::datum_type() {
            bail!(
                "fake-quant of a {:?} tensor (float32 expected)",
                t.datum_type()
            );
        }
        let mut plain = t.try_as_plain_ram_mut()?;
        self.apply_all(plain.as_slice_mut::<f32>()?);
        Ok(())
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale {} grid {}..={}",
            self.scale, self.lo, self.hi
        )])
    }
}

fn float_attr(node: &NodeProto, name: &str) -> TractResult<f32> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.f)
        .with_context(|| format!("{OP_TYPE} '{}' without attribute '{name}'", node.name))
}

/// tract-onnx's builder for [`OP_TYPE`] nodes.
pub fn build(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(
    Box<dyn tract_onnx::tract_hir::infer::InferenceOp>,
    Vec<String>,
)> {
    let op = FakeQuant {
        scale: float_attr(node, "scale")?,
        lo: float_attr(node, "lo")?,
        hi: float_attr(node, "hi")?,
    };
    Ok((ElementWiseOp(Box::new(op), None).into_hir(), vec![]))
}

/// The scalar float32 initializer called `name`, if it is one.
fn scalar(initializers: &HashMap<&str, &tract_onnx::pb::TensorProto>, name: &str) -> Option<f32> {
    let t = initializers.get(name)?;
    let a = to_array_f32(t, name).ok()??;
    (a.len() == 1).then(|| a.iter().copied().next()).flatten()
}

/// A copy of `proto` with every fusable fake-quant chain replaced by one [`OP_TYPE`] node,
/// or `None` when there is none. `keep` lists values that must stay visible (captures).
pub fn fuse(proto: &ModelProto, keep: &[String]) -> Option<ModelProto> {
    let graph = proto.graph.as_ref()?;
    let replaced = fused_nodes(graph, keep)?;
    let mut out = proto.clone();
    if let Some(g) = out.graph.as_mut() {
        g.node = replaced;
    }
    Some(out)
}

fn fused_nodes(graph: &GraphProto, keep: &[String]) -> Option<Vec<NodeProto>> {
    let initializers: HashMap<&str, &tract_onnx::pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // Values read by anything but one node: graph outputs, captures, several consumers.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    let mut pinned: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    pinned.extend(keep.iter().map(String::as_str));
    let private = |v: &str| uses.get(v) == Some(&1) && !pinned.contains(v);
    let consumer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(k, n)| n.input.iter().map(move |i| (i.as_str(), k)))
        .collect();
    let next = |k: usize, op: &str| -> Option<usize> {
        let out = graph.node[k].output.first()?;
        if graph.node[k].output.len() != 1 || !private(out) {
            return None;
        }
        let c = *consumer.get(out.as_str())?;
        (graph.node[c].op_type == op && graph.node[c].input.first() == Some(out)).then_some(c)
    };
    let mut drop = vec![false; graph.node.len()];
    let mut fused: HashMap<usize, NodeProto> = HashMap::new();
    for (k, div) in graph.node.iter().enumerate() {
        if div.op_type != "Div" || div.input.len() != 2 || !div.domain.is_empty() {
            continue;
        }
        let Some(scale) = scalar(&initializers, &div.input[1]) else {
            continue;
        };
        let Some(round) = next(k, "Round") else {
            continue;
        };
        let Some(clip) = next(round, "Clip") else {
            continue;
        };
        let Some(mul) = next(clip, "Mul") else {
            continue;
        };
        let c = &graph.node[clip];
        let m = &graph.node[mul];
        let bounds = (c.input.len() == 3)
            .then(|| {
                Some((
                    scalar(&initializers, &c.input[1])?,
                    scalar(&initializers, &c.input[2])?,
                ))
            })
            .flatten();
        let Some((lo, hi)) = bounds else {
            continue;
        };
        // Grid bounds are whole numbers well inside f32's exact integers (`apply` relies on it).
        let whole = |v: f32| v.fract() == 0.0 && v.abs() < BOUND_LIMIT;
        let same_scale = m.input.len() == 2 && scalar(&initializers, &m.input[1]) == Some(scale);
        if !whole(lo)
            || !whole(hi)
            || lo > hi
            || !same_scale
            || scale.is_nan()
            || scale <= 0.0
            || drop[k]
        {
            continue;
        }
        let attr = |name: &str, f: f32| AttributeProto {
            name: name.into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
            f,
            ..Default::default()
        };
        fused.insert(
            k,
            NodeProto {
                name: format!("{}.fused", div.name),
                op_type: OP_TYPE.into(),
                input: vec![div.input[0].clone()],
                output: m.output.clone(),
                attribute: vec![attr("scale", scale), attr("lo", lo), attr("hi", hi)],
                ..Default::default()
            },
        );
        for d in [k, round, clip, mul] {
            drop[d] = true;
        }
    }
    if fused.is_empty() {
        return None;
    }
    Some(
        graph
            .node
            .iter()
            .enumerate()
            .filter_map(|(k, n)| match fused.remove(&k) {
                Some(f) => Some(f),
                None if drop[k] => None,
                None => Some(n.clone()),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;
    use crate::data::load_dataset;
    use crate::quant::points::tests::sample_model;
    use crate::quant::simulate::tests::request;
    use crate::quant::simulate::{prepare, simulate, QuantsimSettings};
    use crate::runtime::CompiledModel;
    use std::path::Path;

    #[test]
    fn rounding_is_half_to_even_with_the_sign_of_zero() {
        let q = FakeQuant {
            scale: 1.0,
            lo: -128.0,
            hi: 127.0,
        };
        for (x, want) in [
            (0.5f32, 0.0f32),
            (1.5, 2.0),
            (2.5, 2.0),
            (-2.5, -2.0),
            (-0.3, -0.0),
            (126.7, 127.0),
            (300.0, 127.0),
            (-1e30, -128.0),
            (f32::INFINITY, 127.0),
            (f32::NAN, -128.0),
        ] {
            let got = q.apply(1.0, x);
            let mut four = [x; 5];
            q.apply_all(&mut four);
            assert!(
                four.iter().all(|v| v.to_bits() == got.to_bits()),
                "{x}: {four:?}"
            );
            assert_eq!(got.to_bits(), want.to_bits(), "{x} → {got}, want {want}");
            let chain = tract_onnx::tract_core::ops::math::round_ties_to_even(x)
                .max(q.lo)
                .min(q.hi);
            assert_eq!(got, chain, "{x}");
        }
    }

    /// The sample MobileNetV2 simulated at W8A8: every activation quantizer is one op in
    /// tract's plan, and the outputs are bit-identical to the plan of the unfused chains
    /// (kept apart by capturing their intermediate values).
    #[test]
    fn simulated_mbv2_runs_one_op_per_point_with_identical_outputs() {
        let model = sample_model("mbv2_digits.onnx");
        let req = request(QuantsimSettings::default());
        let prepared = prepare(&model, &req, true, &CancelToken::new(), &|_, _, _| {}).unwrap();
        let sim = simulate(&model, &prepared, &req.settings).unwrap();
        let points = sim.activations.len();
        let graph = sim.model.proto().graph.as_ref().unwrap();
        let fused = fuse(sim.model.proto(), &[]).expect("fusable chains");
        let count = |g: &GraphProto, op: &str| g.node.iter().filter(|n| n.op_type == op).count();
        let fused_graph = fused.graph.as_ref().unwrap();
        assert_eq!(count(fused_graph, OP_TYPE), points);
        assert_eq!(count(fused_graph, "Round"), 0);
        assert_eq!(fused_graph.node.len(), graph.node.len() - 3 * points);

        let data = load_dataset(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits/evaluation"),
        )
        .unwrap();
        let shapes = vec![data.sample_shape(0).to_vec()];
        let one_op = CompiledModel::compile(&sim.model, &shapes, 4, &[]).unwrap();
        let ops = one_op.plan_op_names();
        assert_eq!(
            ops.iter().filter(|o| *o == "FakeQuant").count(),
            points,
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| o.contains("Round")), "{ops:?}");
        let scaled: Vec<String> = graph
            .node
            .iter()
            .filter(|n| n.op_type == "Round")
            .map(|n| n.input[0].clone())
            .collect();
        let chains = CompiledModel::compile(&sim.model, &shapes, 4, &scaled).unwrap();
        assert!(chains.plan_op_names().iter().any(|o| o.contains("Round")));
        let inputs = data.gather(&[0, 1, 2, 3]).unwrap();
        let a = one_op.run(&[inputs[0].view()]).unwrap().remove(0);
        let b = chains.run(&[inputs[0].view()]).unwrap().remove(0);
        assert_eq!(a.shape(), b.shape());
        let differ = a
            .iter()
            .zip(b.iter())
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(differ, 0, "{differ} of {} outputs differ", a.len());
    }
}
