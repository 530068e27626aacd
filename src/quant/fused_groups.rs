//! Op chains a runtime computes as one op, so no quantizer sits inside them:
//!
//! - **a constant affine after a layer**: Conv / ConvTranspose / Gemm / MatMul followed by a
//!   `Mul` and/or `Add` by a constant that is a scalar or one value per output channel
//!   (PP-LCNetV3's learnable affine blocks, a MatMul's bias Add, a Conv's separate bias).
//!   ONNX Runtime folds these into the layer before quantizing (`ConvMulFusion`,
//!   `ConvAddFusion`, MatMul + Add → Gemm) and AIMET sees them as the layer's own bias or a
//!   folded scale, so the only quantizer is after the last of them;
//! - **a decomposed LayerNormalization** (`ReduceMean → Sub → Pow → ReduceMean → Add(ε) → Sqrt
//!   → Div`, then the optional `Mul(γ)` and `Add(β)`), as paddle2onnx and older PyTorch exports
//!   write it. ONNX Runtime fuses it into one LayerNormalization (and its static quantizer
//!   leaves ReduceMean, Sub, Pow, Sqrt and Div float); AIMET quantizes a LayerNorm module's
//!   output only. Eight-bit grids on the variance, its square root and the centred values in
//!   between are noise no runtime has.
//!
//! - **a written-out activation** ([`super::written_activation`]): HardSwish, HardSigmoid and
//!   SiLU spelled with elementwise ops, as exporters write them at opsets without the op
//!   (HardSwish is opset 14) or by choice — paddle2onnx's `Add(3) → Clip(0,6) → Mul(x) →
//!   Div(6)`, PyTorch's `x * relu6(x + 3) / 6` in either association, `Mul(x, HardSigmoid(x))`,
//!   SiLU's `Mul(x, Sigmoid(x))`. The op that computes the value the activation reads (a Conv,
//!   its unfolded BatchNormalization, a bias Add) joins the group when the activation is all
//!   that reads it. The rewriters runtimes apply before quantizing turn these into one op:
//!   onnxscript's `fuse_hardswish` rules (which ONNX Runtime's exporter-side optimizer uses:
//!   `Div(Clip(Add(x)))` → HardSigmoid, `Mul(HardSigmoid(x), x)` → HardSwish), then ONNX
//!   Runtime's `ConvActivationFusion` folds HardSigmoid / Sigmoid into a `FusedConv`; Qualcomm's
//!   runtimes and TFLite have a HardSwish kernel whose output is the only one quantized; AIMET
//!   quantizes the output of a `nn.Hardswish` / `nn.SiLU` module only (the module these exports
//!   come from), and its config's `supergroups` (Conv + Relu, Conv + Clip, …) put no quantizer
//!   between a layer and its activation;
//! - **an unfolded BatchNormalization after Conv / ConvTranspose / Gemm** (the grouping in
//!   [`super::points`]; here it only matters that a written-out activation after it takes the
//!   BN, and the BN takes its layer): ONNX Runtime's `ConvBNFusion` and AIMET's batch-norm
//!   folding fold it into the layer's weights, so no runtime stores the layer's output before
//!   the BN.
//!
//! [`fused_members`] gives the nodes of such chains that are not the chain's last op;
//! [`fused_chain_ends`] maps each of them to the chain's last op.

use std::collections::{HashMap, HashSet};

use super::written_activation::{written_activations, WrittenActivation};
use crate::model::graph::Producer;
use crate::model::Model;

const LAYER_HEADS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// The nodes inside a fused chain (every member but the last), whose outputs carry no
/// quantizer. `single_consumer(value)` is the only consumer of a value that is not a graph
/// output, as the caller's grouping defines it.
pub fn fused_members(
    model: &Model,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> HashSet<usize> {
    fused_chain_ends(model, single_consumer)
        .into_keys()
        .collect()
}

/// Each node inside a fused chain (not its last op), with the chain's last op: where the
/// quantizer that stands for its output sits.
pub fn fused_chain_ends(
    model: &Model,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> HashMap<usize, usize> {
    let mut ends = HashMap::new();
    let mut add = |members: &[usize]| {
        if let Some((&last, rest)) = members.split_last() {
            for &m in rest {
                ends.insert(m, last);
            }
        }
    };
    let graph = model.graph();
    for &i in model.index().order() {
        let op = graph.node[i].op_type.as_str();
        if LAYER_HEADS.contains(&op) {
            add(&affine_tail(model, i, single_consumer));
        } else if op == "Div" {
            if let Some(members) = layer_norm(model, i, single_consumer) {
                add(&members);
            }
        }
    }
    // Written-out activations, then the op each one reads from when nothing else reads it.
    let activations = written_activations(model, single_consumer);
    let activation_ends: HashSet<usize> = activations.iter().map(|a| a.end()).collect();
    for a in &activations {
        let mut members = Vec::with_capacity(a.members.len() + 1);
        if let Some(head) = reading_head(model, a, &activation_ends) {
            members.push(head);
        }
        members.extend(&a.members);
        add(&members);
    }
    // A head absorbed above may have been the last op of an affine tail or of a Conv → BN:
    // point its members at the activation's end too.
    let resolved: Vec<(usize, usize)> = ends
        .iter()
        .map(|(&m, &e)| {
            let mut end = e;
            for _ in 0..4 {
                match ends.get(&end) {
                    Some(&next) if next != end => end = next,
                    _ => break,
                }
            }
            (m, end)
        })
        .collect();
    ends.extend(resolved);
    ends
}

/// The node computing the value `activation` reads, when the activation's members are all that
/// read it and a runtime fuses an activation into it: a layer, a BatchNormalization, or any
/// other computing op (as Add + Relu is one group). Not a pass-through op (its output carries no
/// quantizer anyway), not an activation, not another written-out activation's end.
fn reading_head(
    model: &Model,
    activation: &WrittenActivation,
    activation_ends: &HashSet<usize>,
) -> Option<usize> {
    let graph = model.graph();
    let x = activation.input.as_str();
    let Producer::Node { node, slot: 0 } = model.index().producer(x)? else {
        return None;
    };
    let op = graph.node[node].op_type.as_str();
    if model.output_names().iter().any(|o| o == x)
        || crate::quant::points::passes_through(model, &graph.node[node])
        || crate::quant::points::is_activation(op)
        || activation_ends.contains(&node)
    {
        return None;
    }
    let readers = model.index().consumers(x);
    let all_inside = readers.iter().all(|(n, _)| activation.members.contains(n));
    all_inside.then_some(node)
}

/// The head and the constant `Mul`/`Add` nodes that follow it (at most one of each, in any
/// order), each the single consumer of the value before it.
fn affine_tail(
    model: &Model,
    head: usize,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> Vec<usize> {
    let graph = model.graph();
    let mut members = vec![head];
    let Some(axis) = channel_axis_from_right(model, head) else {
        return members;
    };
    let mut value = graph.node[head].output.first().cloned().unwrap_or_default();
    let mut seen_ops: Vec<&str> = Vec::new();
    for _ in 0..2 {
        let Some(next) = single_consumer(&value) else {
            break;
        };
        let n = &graph.node[next];
        let op = n.op_type.as_str();
        if !(op == "Mul" || op == "Add") || seen_ops.contains(&op) || n.input.len() != 2 {
            break;
        }
        let other = if n.input[0] == value {
            &n.input[1]
        } else {
            &n.input[0]
        };
        if !per_channel_constant(model, other, axis) {
            break;
        }
        seen_ops.push(op);
        members.push(next);
        value = n.output.first().cloned().unwrap_or_default();
    }
    members
}

/// Where a layer's output channels are, counted from the last axis: 0 for Gemm / MatMul,
/// rank − 2 for a Conv of that rank (NCHW: 2). `None` when the Conv's weight rank is unknown.
fn channel_axis_from_right(model: &Model, head: usize) -> Option<usize> {
    let node = &model.graph().node[head];
    match node.op_type.as_str() {
        "Gemm" | "MatMul" => Some(0),
        _ => {
            let w = node.input.get(1)?;
            let rank = constant(model, w)?.ndim();
            rank.checked_sub(2)
        }
    }
}

/// Whether `value` is a constant that broadcasts as a scalar or as one value per channel at
/// `axis_from_right` (so a runtime can fold it into the layer's weights and bias).
fn per_channel_constant(model: &Model, value: &str, axis_from_right: usize) -> bool {
    let Some(array) = constant(model, value) else {
        return false;
    };
    let shape = array.shape();
    shape
        .iter()
        .rev()
        .enumerate()
        .all(|(k, &d)| d == 1 || k == axis_from_right)
}

/// The constant array behind `value` (initializer or Constant node), seen through Identity.
pub(crate) fn constant<'a>(model: &'a Model, value: &str) -> Option<&'a ndarray::ArrayD<f32>> {
    let mut current = value.to_string();
    for _ in 0..8 {
        if let Some(w) = model.weight(&current) {
            return Some(w);
        }
        match model.index().producer(&current)? {
            Producer::Node { node, .. } if model.graph().node[node].op_type == "Identity" => {
                current = model.graph().node[node].input.first()?.clone();
            }
            _ => return None,
        }
    }
    None
}

/// The nodes of a decomposed LayerNormalization ending at Div node `div`, in order, with the
/// affine `Mul(γ)` / `Add(β)` that follow it; `None` when `div` does not end one.
fn layer_norm(
    model: &Model,
    div: usize,
    single_consumer: &dyn Fn(&str) -> Option<usize>,
) -> Option<Vec<usize>> {
    let graph = model.graph();
    let producer = |value: &str, op: &str| -> Option<usize> {
        match model.index().producer(value)? {
            Producer::Node { node, slot: 0 } if graph.node[node].op_type == op => Some(node),
            _ => None,
        }
    };
    let d = &graph.node[div];
    let (centred, deviation) = (d.input.first()?, d.input.get(1)?);
    let sub = producer(centred, "Sub")?;
    let (x, mean) = (
        graph.node[sub].input.first()?,
        graph.node[sub].input.get(1)?,
    );
    let mean_node = producer(mean, "ReduceMean")?;
    if graph.node[mean_node].input.first() != Some(x) {
        return None;
    }
    let sqrt = producer(deviation, "Sqrt")?;
    // Sqrt(ReduceMean(centred²) + ε); the ε Add may be missing.
    let mut var = graph.node[sqrt].input.first()?.clone();
    let mut eps = None;
    if let Some(add) = producer(&var, "Add") {
        let a = &graph.node[add];
        let other = a
            .input
            .iter()
            .find(|v| producer(v, "ReduceMean").is_none())?;
        constant(model, other)?;
        var = a.input.iter().find(|v| *v != other)?.clone();
        eps = Some(add);
    }
    let var_mean = producer(&var, "ReduceMean")?;
    let squared = graph.node[var_mean].input.first()?;
    let square = producer(squared, "Pow").or_else(|| producer(squared, "Mul"))?;
    let s = &graph.node[square];
    let squares_centred = match s.op_type.as_str() {
        "Pow" => s.input.first() == Some(centred),
        _ => s.input.iter().all(|v| v == centred),
    };
    if !squares_centred {
        return None;
    }
    // Every intermediate feeds only the next op of the chain (the centred values feed the
    // square and the Div).
    let intermediates = [mean, squared, &var, deviation];
    if intermediates.iter().any(|v| single_consumer(v).is_none()) {
        return None;
    }
    if let Some(add) = eps {
        single_consumer(&graph.node[add].output[0])?;
    }
    let centred_uses = model.index().consumers(centred);
    let is_output = model.output_names().iter().any(|o| o == centred);
    if is_output || centred_uses.iter().any(|(n, _)| *n != square && *n != div) {
        return None;
    }
    let mut members = vec![mean_node, sub, square, var_mean];
    members.extend(eps);
    members.extend([sqrt, div]);
    // The elementwise affine: Mul by γ, then Add β (each optional), constants over the last
    // axis.
    let mut value = d.output.first()?.clone();
    for op in ["Mul", "Add"] {
        let Some(next) = single_consumer(&value) else {
            break;
        };
        let n = &graph.node[next];
        if n.op_type != op || n.input.len() != 2 {
            continue;
        }
        let other = if n.input[0] == value {
            &n.input[1]
        } else {
            &n.input[0]
        };
        if !per_channel_constant(model, other, 0) {
            break;
        }
        members.push(next);
        value = n.output.first()?.clone();
    }
    Some(members)
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::model::builder::{attr_ints, ProtoBuilder};
    use crate::model::Model;
    use crate::quant::points::activation_points;
    use ndarray::{arr0, ArrayD, IxDyn};

    fn filled(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n = shape.iter().product::<usize>();
        let values = (0..n).map(|k| ((k as f32 + seed) * 0.37).sin()).collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
    }

    /// x → MatMul → Add(bias) → decomposed LayerNorm (with γ, β) → y.
    pub(crate) fn matmul_layer_norm() -> Model {
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[4, 8])
            .initializer("w", &filled(&[8, 8], 1.0))
            .initializer("bias", &filled(&[8], 2.0))
            .initializer("two", &arr0(2.0f32).into_dyn())
            .initializer("eps", &arr0(1e-5f32).into_dyn())
            .initializer("gamma", &filled(&[8], 3.0))
            .initializer("beta", &filled(&[8], 4.0))
            .node("MatMul", "mm", &["x", "w"], &["mm.out"], vec![])
            .node("Add", "bias_add", &["mm.out", "bias"], &["h"], vec![])
            .node(
                "ReduceMean",
                "mean",
                &["h"],
                &["mu"],
                vec![attr_ints("axes", &[-1])],
            )
            .node("Sub", "centre", &["h", "mu"], &["c"], vec![])
            .node("Pow", "square", &["c", "two"], &["sq"], vec![])
            .node(
                "ReduceMean",
                "var",
                &["sq"],
                &["v"],
                vec![attr_ints("axes", &[-1])],
            )
            .node("Add", "eps_add", &["v", "eps"], &["ve"], vec![])
            .node("Sqrt", "sd", &["ve"], &["s"], vec![])
            .node("Div", "normalize", &["c", "s"], &["n"], vec![])
            .node("Mul", "scale", &["n", "gamma"], &["g"], vec![])
            .node("Add", "shift", &["g", "beta"], &["y"], vec![])
            .output("y");
        b.model("matmul_layer_norm").unwrap()
    }

    /// x → Conv → Mul(scalar) → Add(per channel) → Relu, and a second Conv → Add(per
    /// column), which no runtime folds.
    fn conv_affine() -> Model {
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[2, 5, 5])
            .initializer("w", &filled(&[3, 2, 3, 3], 1.0))
            .initializer("s", &arr0(0.5f32).into_dyn())
            .initializer("cb", &filled(&[3, 1, 1], 2.0))
            .initializer("w2", &filled(&[3, 3, 1, 1], 3.0))
            .initializer("col", &filled(&[3], 4.0))
            .node("Conv", "conv", &["x", "w"], &["conv.out"], vec![])
            .node("Mul", "lab_scale", &["conv.out", "s"], &["scaled"], vec![])
            .node("Add", "lab_bias", &["scaled", "cb"], &["affine"], vec![])
            .node("Relu", "relu", &["affine"], &["r"], vec![])
            .node("Conv", "conv2", &["r", "w2"], &["conv2.out"], vec![])
            .node("Add", "col_add", &["conv2.out", "col"], &["y"], vec![])
            .output("y");
        b.model("conv_affine").unwrap()
    }

    fn point_values(model: &Model) -> Vec<String> {
        activation_points(model)
            .unwrap()
            .into_iter()
            .map(|p| p.value)
            .collect()
    }

    #[test]
    fn a_decomposed_layer_norm_and_a_matmul_bias_carry_one_quantizer_each() {
        let model = matmul_layer_norm();
        // The MatMul's bias Add ends its group; the LayerNorm's internals carry none.
        assert_eq!(point_values(&model), vec!["x", "h", "y"]);
    }

    #[test]
    fn a_constant_affine_after_a_conv_is_part_of_its_group() {
        let model = conv_affine();
        // Conv → Mul → Add → Relu is one group; a per-column Add cannot be folded into the
        // second Conv, so both its input and output keep their quantizers.
        assert_eq!(point_values(&model), vec!["x", "r", "conv2.out", "y"]);
    }

    #[test]
    fn a_layers_output_quantizer_is_the_one_after_its_affine_and_activation() {
        let model = conv_affine();
        let shapes = model.shapes(None).unwrap();
        let layers = model.layers(&shapes).unwrap();
        let points = activation_points(&model).unwrap();
        let outputs = crate::quant::points::layer_output_points(&model, &layers, &points);
        assert_eq!(
            outputs,
            vec![Some("r".to_string()), Some("conv2.out".to_string())]
        );
    }

    /// x → Conv → BatchNormalization → HardSwish written out (paddle2onnx's Add 3 → Clip 0..6 →
    /// Mul x → Div 6) → Conv → SiLU (`Mul(Sigmoid(c), c)`) → Conv → HardSigmoid written out
    /// gating the Conv's input (an SE block) → y.
    pub(crate) fn written_activations() -> Model {
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[2, 5, 5])
            .initializer("w", &filled(&[3, 2, 3, 3], 1.0))
            .initializer("bn.scale", &filled(&[3], 2.0).mapv(|v| 1.0 + v.abs()))
            .initializer("bn.bias", &filled(&[3], 3.0))
            .initializer("bn.mean", &filled(&[3], 4.0))
            .initializer("bn.var", &filled(&[3], 5.0).mapv(|v| 0.5 + v.abs()))
            .initializer("three", &arr0(3.0f32).into_dyn())
            .initializer("zero", &arr0(0.0f32).into_dyn())
            .initializer("six", &arr0(6.0f32).into_dyn())
            .initializer("sixth", &arr0(1.0f32 / 6.0).into_dyn())
            .initializer("w2", &filled(&[3, 3, 1, 1], 6.0))
            .initializer("w3", &filled(&[3, 3, 1, 1], 7.0))
            .node("Conv", "conv", &["x", "w"], &["conv.out"], vec![])
            .node(
                "BatchNormalization",
                "bn",
                &["conv.out", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
                &["bn.out"],
                vec![],
            )
            .node("Add", "hs.add", &["bn.out", "three"], &["hs.shift"], vec![])
            .node(
                "Clip",
                "hs.clip",
                &["hs.shift", "zero", "six"],
                &["hs.relu6"],
                vec![],
            )
            .node(
                "Mul",
                "hs.mul",
                &["bn.out", "hs.relu6"],
                &["hs.prod"],
                vec![],
            )
            .node("Div", "hs.div", &["hs.prod", "six"], &["hs.out"], vec![])
            .node("Conv", "conv2", &["hs.out", "w2"], &["conv2.out"], vec![])
            .node(
                "Sigmoid",
                "silu.sig",
                &["conv2.out"],
                &["silu.gate"],
                vec![],
            )
            .node(
                "Mul",
                "silu.mul",
                &["silu.gate", "conv2.out"],
                &["silu.out"],
                vec![],
            )
            .node("Conv", "conv3", &["silu.out", "w3"], &["conv3.out"], vec![])
            .node(
                "Add",
                "se.add",
                &["conv3.out", "three"],
                &["se.shift"],
                vec![],
            )
            .node(
                "Clip",
                "se.clip",
                &["se.shift", "zero", "six"],
                &["se.r"],
                vec![],
            )
            .node("Mul", "se.scale", &["se.r", "sixth"], &["se.gate"], vec![])
            .node("Mul", "se.mul", &["silu.out", "se.gate"], &["y"], vec![])
            .output("y");
        b.model("written_activations").unwrap()
    }

    #[test]
    fn a_written_out_activation_and_the_layer_before_it_carry_one_quantizer() {
        let model = written_activations();
        // Conv → BN → HardSwish: one point after the Div; Conv → SiLU: one after the Mul;
        // Conv → HardSigmoid: one after its scaling Mul; the SE gate's Mul is its own op.
        assert_eq!(
            point_values(&model),
            vec!["x", "hs.out", "silu.out", "se.gate", "y"]
        );
        let shapes = model.shapes(None).unwrap();
        let layers = model.layers(&shapes).unwrap();
        let points = activation_points(&model).unwrap();
        let outputs = crate::quant::points::layer_output_points(&model, &layers, &points);
        assert_eq!(
            outputs,
            vec![
                Some("hs.out".to_string()),
                Some("silu.out".to_string()),
                Some("se.gate".to_string())
            ]
        );
    }

    #[test]
    fn a_layer_whose_output_is_read_beside_its_activation_keeps_its_quantizer() {
        // The BN's output also feeds a graph output: it is stored, so it keeps its point; the
        // HardSwish's inner ops still carry none.
        let mut proto = written_activations().proto().clone();
        let graph = proto.graph.as_mut().unwrap();
        graph.output.push(graph.output[0].clone());
        graph.output[1].name = "bn.out".into();
        let model = Model::from_proto(proto, "bn_output").unwrap();
        let points = point_values(&model);
        assert_eq!(
            points,
            vec!["x", "bn.out", "hs.out", "silu.out", "se.gate", "y"]
        );
    }

    #[test]
    fn a_layer_norm_whose_centred_values_are_used_elsewhere_is_not_fused() {
        let mut proto = matmul_layer_norm().proto().clone();
        let graph = proto.graph.as_mut().unwrap();
        graph.output.push(graph.output[0].clone());
        graph.output[1].name = "c".into();
        let model = Model::from_proto(proto, "ln_c_output").unwrap();
        let points = point_values(&model);
        assert!(points.contains(&"c".to_string()), "{points:?}");
        assert!(points.contains(&"s".to_string()), "{points:?}");
    }
}
