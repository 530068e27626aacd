//! The compute layers of a model — the nodes with weights that quantization and
//! compression act on — with their geometry, parameter count and MACs.
//!
//! MACs per sample: Conv = output elements × (Cin / groups) × kh × kw;
//! ConvTranspose = input elements × (Cout / groups) × kh × kw;
//! Gemm / MatMul = output elements × K.

use super::shapes::{per_sample_elements, Shape};
use super::{attrs, graph::Producer, Model, ModelShapes};
use crate::Result;
use serde::Serialize;
use tract_onnx::pb::NodeProto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Conv,
    GroupedConv,
    DepthwiseConv,
    ConvTranspose,
    Gemm,
    MatMul,
}

impl LayerKind {
    pub fn label(self) -> &'static str {
        match self {
            LayerKind::Conv => "Conv",
            LayerKind::GroupedConv => "GConv",
            LayerKind::DepthwiseConv => "DWConv",
            LayerKind::ConvTranspose => "ConvT",
            LayerKind::Gemm => "Gemm",
            LayerKind::MatMul => "MatMul",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    /// Index of the node in the graph.
    pub node: usize,
    pub kind: LayerKind,
    /// Value name of the weight tensor.
    pub weight: String,
    pub bias: Option<String>,
    pub weight_shape: Vec<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: Vec<usize>,
    pub groups: usize,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Value names of the activation input and the output.
    pub input: String,
    pub output: String,
    pub input_shape: Option<Shape>,
    pub output_shape: Option<Shape>,
    pub params: u64,
    /// MACs per sample; `None` if a non-batch dim stayed symbolic.
    pub macs: Option<u64>,
}

fn usizes(v: Option<Vec<i64>>, len: usize, default: usize) -> Vec<usize> {
    match v {
        Some(v) if !v.is_empty() => v.into_iter().map(|x| x.max(0) as usize).collect(),
        _ => vec![default; len],
    }
}

/// The constant weight behind value `name`, seen through Identity nodes.
fn constant_name(model: &Model, name: &str) -> Option<String> {
    let mut current = name.to_string();
    for _ in 0..8 {
        if model.weight(&current).is_some() {
            return Some(current);
        }
        match model.index().producer(&current)? {
            Producer::Node { node, .. } => {
                let n = &model.graph().node[node];
                if n.op_type != "Identity" || n.input.is_empty() {
                    return None;
                }
                current = n.input[0].clone();
            }
            _ => return None,
        }
    }
    None
}

pub fn find_layers(model: &Model, shapes: &ModelShapes) -> Result<Vec<Layer>> {
    let graph = model.graph();
    let mut layers = Vec::new();
    for &i in model.index().order() {
        let node = &graph.node[i];
        let layer = match node.op_type.as_str() {
            "Conv" | "ConvTranspose" => conv_layer(model, shapes, i, node),
            "Gemm" | "MatMul" => matmul_layer(model, shapes, i, node),
            _ => None,
        };
        layers.extend(layer);
    }
    Ok(layers)
}

fn name_of(model: &Model, i: usize) -> String {
    super::graph::node_label(model.graph(), i)
}

fn conv_layer(model: &Model, shapes: &ModelShapes, i: usize, node: &NodeProto) -> Option<Layer> {
    let input = node.input.first()?.clone();
    let weight = constant_name(model, node.input.get(1)?)?;
    let w = model.weight(&weight)?;
    let ws = w.shape().to_vec();
    if ws.len() < 3 {
        return None;
    }
    let spatial = ws.len() - 2;
    let groups = attrs::int(node, "group").unwrap_or(1).max(1) as usize;
    let transpose = node.op_type == "ConvTranspose";
    let (in_channels, out_channels) = if transpose {
        (ws[0], ws[1].checked_mul(groups)?)
    } else {
        (ws[1].checked_mul(groups)?, ws[0])
    };
    let kernel = ws[2..].to_vec();
    let bias = node
        .input
        .get(2)
        .filter(|b| !b.is_empty())
        .and_then(|b| constant_name(model, b));
    let bias_params = bias
        .as_ref()
        .and_then(|b| model.weight(b))
        .map_or(0, |b| b.len() as u64);
    let output = node.output.first()?.clone();
    let input_shape = shapes.get(&input).cloned();
    let output_shape = shapes.get(&output).cloned();
    // a weight with a zero dim holds no data whatever its other dims say: count with care
    let kernel_elems = kernel
        .iter()
        .try_fold(1u64, |acc, &k| acc.checked_mul(k as u64))?;
    let macs = if transpose {
        input_shape
            .as_deref()
            .and_then(|s| per_sample_elements(s, shapes.fixed_batch))
            .and_then(|e| e.checked_mul((out_channels / groups) as u64))
            .and_then(|e| e.checked_mul(kernel_elems))
    } else {
        output_shape
            .as_deref()
            .and_then(|s| per_sample_elements(s, shapes.fixed_batch))
            .and_then(|e| e.checked_mul((in_channels / groups) as u64))
            .and_then(|e| e.checked_mul(kernel_elems))
    };
    let kind = if transpose {
        LayerKind::ConvTranspose
    } else if groups == 1 {
        LayerKind::Conv
    } else if groups == in_channels {
        LayerKind::DepthwiseConv
    } else {
        LayerKind::GroupedConv
    };
    Some(Layer {
        name: name_of(model, i),
        node: i,
        kind,
        weight,
        bias,
        params: w.len() as u64 + bias_params,
        weight_shape: ws,
        in_channels,
        out_channels,
        kernel,
        groups,
        strides: usizes(attrs::ints(node, "strides"), spatial, 1),
        pads: usizes(attrs::ints(node, "pads"), 2 * spatial, 0),
        dilations: usizes(attrs::ints(node, "dilations"), spatial, 1),
        input,
        output,
        input_shape,
        output_shape,
        macs,
    })
}

fn matmul_layer(model: &Model, shapes: &ModelShapes, i: usize, node: &NodeProto) -> Option<Layer> {
    let a = node.input.first()?;
    let b = node.input.get(1)?;
    let gemm = node.op_type == "Gemm";
    let trans_a = gemm && attrs::int(node, "transA").unwrap_or(0) != 0;
    let trans_b = gemm && attrs::int(node, "transB").unwrap_or(0) != 0;
    // The weight is the constant operand; the other one is the activation.
    let (weight, input, weight_is_b) = match (constant_name(model, a), constant_name(model, b)) {
        (_, Some(w)) => (w, a.clone(), true),
        (Some(w), None) => (w, b.clone(), false),
        (None, None) => return None,
    };
    let w = model.weight(&weight)?;
    let ws = w.shape().to_vec();
    if ws.len() < 2 {
        return None;
    }
    let r = ws.len();
    // K is the contracted dim of the weight, N (or M) its other dim.
    let (k, n) = if weight_is_b {
        if trans_b {
            (ws[r - 1], ws[r - 2])
        } else {
            (ws[r - 2], ws[r - 1])
        }
    } else if trans_a {
        (ws[r - 2], ws[r - 1])
    } else {
        (ws[r - 1], ws[r - 2])
    };
    let bias = if gemm {
        node.input
            .get(2)
            .filter(|c| !c.is_empty())
            .and_then(|c| constant_name(model, c))
    } else {
        None
    };
    let bias_params = bias
        .as_ref()
        .and_then(|c| model.weight(c))
        .map_or(0, |c| c.len() as u64);
    let output = node.output.first()?.clone();
    let input_shape = shapes.get(&input).cloned();
    let output_shape = shapes.get(&output).cloned();
    let macs = output_shape
        .as_deref()
        .and_then(|s| per_sample_elements(s, shapes.fixed_batch))
        .and_then(|e| e.checked_mul(k as u64));
    Some(Layer {
        name: name_of(model, i),
        node: i,
        kind: if gemm {
            LayerKind::Gemm
        } else {
            LayerKind::MatMul
        },
        weight,
        bias,
        params: w.len() as u64 + bias_params,
        weight_shape: ws,
        in_channels: k,
        out_channels: n,
        kernel: vec![],
        groups: 1,
        strides: vec![],
        pads: vec![],
        dilations: vec![],
        input,
        output,
        input_shape,
        output_shape,
        macs,
    })
}
