//! 16-bit activation quantizers as `com.microsoft` `QuantizeLinear → DequantizeLinear`
//! (`uint16`), which ONNX Runtime runs at opset 13; the standard ops need opset 21 for 16-bit
//! types. The simulation writes them as float ops (`Div → Round → Clip → Mul`, see
//! [`super::qdq`]); this rewrites those chains in place. Same math: Q computes
//! `clamp(round_half_even(x / scale) + zp, 0, 65535)` with `zp = −offset`, DQ `(q − zp) · scale`.
//!
//! Not 4 bit: ONNX Runtime 1.32 runs a `uint4` contrib pair on its own, but its default
//! session fails to initialise when such a QuantizeLinear follows a Clip (the Clip/Q fusion
//! does not know the type), so 4-bit activations keep the float-op form.

use std::collections::BTreeMap;

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

use super::encoding::Encoding;
use super::qdq::Names;
use crate::{Error, Result};

/// The domain of ONNX Runtime's contrib ops.
pub const CONTRIB_DOMAIN: &str = "com.microsoft";

/// Activation bitwidths exported as `com.microsoft` Q/DQ.
pub fn contrib_activation_bits(bits: u8) -> bool {
    bits == 16
}

/// Rewrite the float-op quantizer of every 16-bit activation; returns their names.
/// The quantizers must already be in the graph (`insert_activation_quantizers`).
pub fn use_contrib_qdq(
    proto: &mut ModelProto,
    activations: &BTreeMap<String, Encoding>,
) -> Result<Vec<String>> {
    let graph = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(graph);
    let mut done = Vec::new();
    for (value, e) in activations {
        if !contrib_activation_bits(e.bitwidth) {
            continue;
        }
        let i = find_chain(graph, value).ok_or_else(|| {
            Error::runtime(format!(
                "activation '{value}': its {}-bit float-op quantizer was not found",
                e.bitwidth
            ))
        })?;
        replace_chain(graph, &mut names, i, value, e);
        done.push(value.clone());
    }
    Ok(done)
}

/// Index of the `Div` of the contiguous `Div → Round → Clip → Mul` quantizing `value`: its
/// `Mul` writes `value` (a node output) or its `Div` reads it (a graph input).
fn find_chain(graph: &GraphProto, value: &str) -> Option<usize> {
    const OPS: [&str; 4] = ["Div", "Round", "Clip", "Mul"];
    let out = |n: &NodeProto| n.output.first().cloned().unwrap_or_default();
    let input = |n: &NodeProto, k: usize| n.input.get(k).cloned().unwrap_or_default();
    graph.node.windows(4).position(|w| {
        w.iter().zip(OPS).all(|(n, op)| n.op_type == op)
            && (1..4).all(|k| input(&w[k], 0) == out(&w[k - 1]))
            && input(&w[3], 1) == input(&w[0], 1)
            && (out(&w[3]) == value || input(&w[0], 0) == value)
    })
}

fn replace_chain(graph: &mut GraphProto, names: &mut Names, i: usize, value: &str, e: &Encoding) {
    let source = graph.node[i].input[0].clone();
    let scale = graph.node[i].input[1].clone();
    let target = graph.node[i + 3].output[0].clone();
    let bounds: Vec<String> = graph.node[i + 2].input[1..].to_vec();
    let zp = names.fresh(&format!("{value}_zero_point"));
    let q = names.fresh(&format!("{value}_quantized"));
    graph.initializer.push(zero_point(&zp, e));
    let node = |names: &mut Names, op: &str, input: Vec<String>, output: String| NodeProto {
        name: names.fresh(&format!("{value}_{}", op.to_ascii_lowercase())),
        op_type: op.into(),
        domain: CONTRIB_DOMAIN.into(),
        input,
        output: vec![output],
        ..Default::default()
    };
    let pair = [
        node(
            names,
            "QuantizeLinear",
            vec![source, scale.clone(), zp.clone()],
            q.clone(),
        ),
        node(names, "DequantizeLinear", vec![q, scale, zp], target),
    ];
    graph.node.splice(i..i + 4, pair);
    // The Clip bounds were the chain's own initializers.
    let still_read = |name: &String| graph.node.iter().any(|n| n.input.contains(name));
    let unused: Vec<String> = bounds.into_iter().filter(|b| !still_read(b)).collect();
    graph.initializer.retain(|t| !unused.contains(&t.name));
}

/// Scalar `uint16` zero point `-offset`, little-endian.
fn zero_point(name: &str, e: &Encoding) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: DataType::Uint16 as i32,
        dims: vec![],
        raw_data: (e.onnx_zero_point() as u16).to_le_bytes().to_vec(),
        ..Default::default()
    }
}
