//! Weight SVD (DESIGN.md §3): a Conv (m, n, kh, kw) becomes a Conv (r, n, kh, kw) with the
//! original strides, pads and dilations, then a 1×1 Conv (m, r); a Gemm or a MatMul with a
//! constant 2-D right operand becomes a MatMul [K, r] then the original op with a [r, out]
//! weight. The weight matrix [out, n·kh·kw] (or [out, K]) is factored by truncated SVD,
//! weighted by the gain of a BatchNormalization that follows (see `bn_scale`).

use super::bn_scale::bn_output_gains;
use super::factor::factorize_weighted;
use super::rank::SplitCost;
use super::split::{self, Half, Split, Splitter};
use super::{CompressOutcome, Eligibility, LayerCompressor, LayerRatios, Method};
use crate::cancel::CancelToken;
use crate::fixes::adaround::linear::LinearOp;
use crate::fixes::edit::constant_behind;
use crate::model::builder::attr_ints;
use crate::model::{attrs, Layer, LayerKind, Model};
use crate::{Error, Result};
use ndarray::{Array2, ArrayD, IxDyn};

/// Weight SVD of Conv (groups 1), Gemm and MatMul layers; see the module comment.
#[derive(Debug, Clone)]
pub struct WeightSvd {
    sample_shapes: Option<Vec<Vec<usize>>>,
}

split::compressor!(WeightSvd, Method::WeightSvd);

/// How a layer's weight is read as a matrix [out, K].
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    Conv {
        out: usize,
        k: usize,
    },
    /// `transposed`: stored as [K, out] (Gemm without transB, MatMul).
    Dense {
        out: usize,
        k: usize,
        transposed: bool,
    },
}

fn dense(k: usize, out: usize, transposed: bool) -> LinearOp {
    LinearOp::Dense {
        in_features: k,
        out_features: out,
        transposed,
    }
}

/// The weight at input slot 1 (right operand), else why not.
fn right_operand(model: &Model, layer: &Layer) -> std::result::Result<(), String> {
    let node = &model.graph().node[layer.node];
    let op = &node.op_type;
    match node.input.get(1) {
        Some(b) if constant_behind(model, b).as_deref() == Some(layer.weight.as_str()) => Ok(()),
        _ => Err(format!("the weight is {op}'s left operand")),
    }
}

/// Conv kinds no SVD method splits, with the reason.
pub(crate) fn plain_conv(layer: &Layer) -> std::result::Result<(), String> {
    match layer.kind {
        LayerKind::Conv => Ok(()),
        LayerKind::DepthwiseConv => Err("depthwise convolution (one filter per channel)".into()),
        LayerKind::GroupedConv => Err(format!("grouped convolution (group {})", layer.groups)),
        LayerKind::ConvTranspose => Err("ConvTranspose is not supported".into()),
        LayerKind::Gemm | LayerKind::MatMul => {
            Err(format!("a {} is not a Conv", layer.kind.label()))
        }
    }
}

impl Splitter for WeightSvd {
    type Plan = Shape;

    fn method(&self) -> Method {
        Method::WeightSvd
    }

    fn check(&self, model: &Model, layer: &Layer) -> std::result::Result<Shape, String> {
        match layer.kind {
            LayerKind::Gemm | LayerKind::MatMul => {
                right_operand(model, layer)?;
                let node = &model.graph().node[layer.node];
                if attrs::int(node, "transA").unwrap_or(0) != 0 {
                    return Err("Gemm with transA = 1 (transposed activation)".into());
                }
                if layer.weight_shape.len() != 2 {
                    return Err(format!(
                        "a weight of rank {} (only 2-D weights are split)",
                        layer.weight_shape.len()
                    ));
                }
                let (k, out) = (layer.in_channels, layer.out_channels);
                let transposed =
                    layer.kind == LayerKind::MatMul || attrs::int(node, "transB").unwrap_or(0) == 0;
                Ok(Shape::Dense { out, k, transposed })
            }
            _ => {
                plain_conv(layer)?;
                let k = layer.weight_shape[1..].iter().product();
                Ok(Shape::Conv {
                    out: layer.out_channels,
                    k,
                })
            }
        }
    }

    fn cost(&self, layer: &Layer, plan: &Shape) -> SplitCost {
        let (&Shape::Conv { out, k } | &Shape::Dense { out, k, .. }) = plan;
        // Both layers run at every output position: r·K then out·r MACs.
        let positions = layer.macs.unwrap_or(0) / (out * k).max(1) as u64;
        let bias_params = layer.params - (out * k) as u64;
        SplitCost {
            macs_per_rank: positions * (k + out) as u64,
            params_per_rank: (k + out) as u64,
            bias_params,
            full_rank: out.min(k),
        }
    }

    fn split(&self, model: &Model, layer: &Layer, plan: &Shape, rank: usize) -> Result<Split> {
        let w = model.weight(&layer.weight).ok_or_else(|| {
            Error::input(format!("{}: no weight '{}'", model.source(), layer.weight))
        })?;
        let node = &model.graph().node[layer.node];
        let what = format!("{}: layer '{}'", model.source(), layer.name);
        // Rows are output channels: weighted by the BN gain that follows, if one does.
        let gains = bn_output_gains(model, layer);
        let factorize =
            |m: &Array2<f32>| factorize_weighted(m, gains.as_deref(), None, rank, &what);
        match plan {
            Shape::Conv { out, k } => {
                let m = Array2::from_shape_vec((*out, *k), w.iter().copied().collect())
                    .map_err(|e| Error::runtime(format!("{what}: {e}")))?;
                let f = factorize(&m)?;
                let mut first_shape = layer.weight_shape.clone();
                first_shape[0] = rank;
                let spatial = layer.weight_shape.len() - 2;
                let mut second_shape = vec![*out, rank];
                second_shape.extend(std::iter::repeat_n(1, spatial));
                // The first conv keeps every spatial attribute; the second is a 1×1.
                let first = node
                    .attribute
                    .iter()
                    .filter(|a| a.name != "group")
                    .cloned()
                    .collect();
                Ok(Split {
                    first: Half {
                        op: "Conv",
                        attributes: first,
                        weight: reshape(f.right, &first_shape, &what)?,
                    },
                    second: Half {
                        op: "Conv",
                        attributes: vec![attr_ints("kernel_shape", &vec![1; spatial])],
                        weight: reshape(f.left, &second_shape, &what)?,
                    },
                })
            }
            &Shape::Dense { out, k, transposed } => {
                let m = dense(k, out, transposed).weight_matrix(w)?;
                let f = factorize(&m)?;
                // First: x·Rᵀ, a MatMul with the [K, r] weight.
                let first = f.right.t().as_standard_layout().into_owned().into_dyn();
                // Second: the original op and orientation with an [out, r] matrix.
                let second_shape = if transposed {
                    vec![rank, out]
                } else {
                    vec![out, rank]
                };
                Ok(Split {
                    first: Half {
                        op: "MatMul",
                        attributes: vec![],
                        weight: first,
                    },
                    second: Half {
                        op: if layer.kind == LayerKind::Gemm {
                            "Gemm"
                        } else {
                            "MatMul"
                        },
                        attributes: node.attribute.clone(),
                        weight: dense(rank, out, transposed)
                            .weight_tensor(&f.left, &second_shape)?,
                    },
                })
            }
        }
    }
}

fn reshape(m: Array2<f32>, shape: &[usize], what: &str) -> Result<ArrayD<f32>> {
    let m = m.as_standard_layout().into_owned();
    m.into_shape_with_order(IxDyn(shape))
        .map_err(|e| Error::runtime(format!("{what}: factor of shape {shape:?}: {e}")))
}
