//! Refuse a model that is already quantized. qsteer quantizes FP32 models; a graph with
//! integer kernels (ConvInteger, QLinearConv, onnxruntime's DynamicQuantizeLSTM…) or with
//! stored weights passed through QuantizeLinear/DequantizeLinear would be simulated on top
//! of its own quantization, or not run at all. Activation-only QDQ pairs are allowed: that
//! is the form of qsteer's own simulated variants (their weights are quantized in place).

use super::graph::node_label;
use crate::{Error, Result};
use std::collections::HashSet;
use tract_onnx::pb::GraphProto;

/// Ops that only exist in quantized graphs (default domain and onnxruntime's com.microsoft).
fn integer_op(op: &str) -> bool {
    matches!(
        op,
        "ConvInteger" | "MatMulInteger" | "DynamicQuantizeLinear" | "QLinearConv" | "QLinearMatMul"
    ) || op.starts_with("QLinear")
        || op.starts_with("DynamicQuantize")
        || op.starts_with("QGemm")
        || op.starts_with("QAttention")
        || op.starts_with("QOrdered")
        || op == "MatMulIntegerToFloat"
        || op == "MatMulNBits"
}

/// The first node (in file order) that shows the model is already quantized, with why.
pub fn first_quantized_node(graph: &GraphProto) -> Option<(usize, String)> {
    let mut stored: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for n in &graph.node {
        if n.op_type == "Constant" {
            stored.extend(n.output.iter().map(String::as_str));
        }
    }
    graph.node.iter().enumerate().find_map(|(i, n)| {
        if integer_op(&n.op_type) {
            return Some((i, format!("an integer op ({})", n.op_type)));
        }
        let qdq = matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear");
        let weight = n.input.first().filter(|x| stored.contains(x.as_str()))?;
        qdq.then(|| {
            (
                i,
                format!("a {} on the stored weight '{weight}'", n.op_type),
            )
        })
    })
}

/// An input error naming the first quantized node, or Ok for a float model.
pub fn refuse_quantized(graph: &GraphProto, source: &str) -> Result<()> {
    match first_quantized_node(graph) {
        None => Ok(()),
        Some((i, why)) => Err(Error::input(format!(
            "{source}: the model is already quantized (node '{}' is {why}); qsteer needs the \
             FP32 model to quantize: give it the float export",
            node_label(graph, i)
        ))),
    }
}
