//! Spatial SVD (DESIGN.md §3): a 2-D Conv W (m, n, kh, kw) is read as the matrix
//! [n·kh, m·kw] (row (c, i), column (o, j)), factored by truncated SVD, and becomes a
//! vertical Conv (r, n, kh, 1) with the original vertical stride, pads and dilation, then
//! a horizontal Conv (m, r, 1, kw) with the horizontal ones. The first conv keeps the full
//! input width (no horizontal stride or padding), so its output is (r, H_out, W_in); zero
//! columns it would read as padding are zeros of its output too (it has no bias), so the
//! second conv's horizontal padding is exact.
//!
//! The SVD is weighted by the gain of the BatchNormalization that follows, when one does
//! (see `bn_scale`): the truncation error then lands where the BN shrinks it.
//!
//! A kernel one column wide (1×1, k×1) makes the second conv 1×1: then the horizontal
//! stride and pads move to the first conv too, which computes only the kept columns. A 1×1
//! conv so becomes weight SVD (two 1×1 convs), as AIMET's spatial SVD also offers it: a
//! strided 1×1 downsample shortcut is often the cheapest place to take MACs from.

use super::bn_scale::bn_output_gains;
use super::factor::factorize_weighted;
use super::rank::SplitCost;
use super::split::{self, Half, Split, Splitter};
use super::svd::plain_conv;
use super::{CompressOutcome, Eligibility, LayerCompressor, LayerRatios, Method};
use crate::cancel::CancelToken;
use crate::fixes::adaround::linear::{ConvGeometry, LinearOp};
use crate::model::builder::{attr_int, attr_ints};
use crate::model::{Layer, Model};
use crate::{Error, Result};
use ndarray::{Array2, ArrayD, IxDyn};

/// Spatial SVD of 2-D Conv layers (groups 1, any kernel); see the module comment.
#[derive(Debug, Clone)]
pub struct SpatialSvd {
    sample_shapes: Option<Vec<Vec<usize>>>,
}

split::compressor!(SpatialSvd, Method::SpatialSvd);

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// The attributes of one half: kernel, strides, dilations ([h, w]), pads (t, l, b, r).
fn conv_attributes(
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
) -> Vec<tract_onnx::pb::AttributeProto> {
    vec![
        attr_ints("kernel_shape", &ints(&kernel)),
        attr_ints("strides", &ints(&strides)),
        attr_ints("dilations", &ints(&dilations)),
        attr_ints("pads", &ints(&pads)),
        attr_int("group", 1),
    ]
}

/// Whether the kernel is one column wide, so the second conv is 1×1 (see the module comment).
fn one_column(g: &ConvGeometry) -> bool {
    g.kernel[1] == 1
}

impl Splitter for SpatialSvd {
    /// The geometry with `auto_pad` resolved into explicit pads.
    type Plan = ConvGeometry;

    fn method(&self) -> Method {
        Method::SpatialSvd
    }

    fn check(&self, model: &Model, layer: &Layer) -> std::result::Result<ConvGeometry, String> {
        plain_conv(layer)?;
        if layer.kernel.len() != 2 {
            return Err(format!(
                "a {}-D convolution (spatial SVD splits 2-D kernels)",
                layer.kernel.len()
            ));
        }
        match LinearOp::of(model, layer)? {
            LinearOp::Conv(g) => Ok(g),
            LinearOp::Dense { .. } => Err("not a convolution".into()),
        }
    }

    fn cost(&self, layer: &Layer, g: &ConvGeometry) -> SplitCost {
        let (m, n) = (g.out_channels, g.in_channels);
        let [kh, kw] = g.kernel;
        let [ho, wo] = g.output();
        // The first conv's output width: the input's, or the output's when it strides.
        let w_first = if one_column(g) { wo } else { g.input[1] };
        SplitCost {
            // (r, Ho, W_first) outputs of n·kh MACs, then (m, Ho, Wo) outputs of r·kw.
            macs_per_rank: (ho * w_first * n * kh + m * ho * wo * kw) as u64,
            params_per_rank: (n * kh + m * kw) as u64,
            bias_params: layer.params - (m * n * kh * kw) as u64,
            full_rank: (n * kh).min(m * kw),
        }
    }

    fn split(&self, model: &Model, layer: &Layer, g: &ConvGeometry, rank: usize) -> Result<Split> {
        let what = format!("{}: layer '{}'", model.source(), layer.name);
        let w = model
            .weight(&layer.weight)
            .ok_or_else(|| Error::input(format!("{what}: no weight '{}'", layer.weight)))?;
        let (m, n) = (g.out_channels, g.in_channels);
        let [kh, kw] = g.kernel;
        let w = w
            .to_shape((m, n, kh, kw))
            .map_err(|e| Error::runtime(format!("{what}: weight {:?}: {e}", w.shape())))?;
        let matrix = Array2::from_shape_fn((n * kh, m * kw), |(ci, oj)| {
            w[[oj / kw, ci / kh, ci % kh, oj % kw]]
        });
        // Column (o, j) carries output channel o: weighted by the BN gain that follows.
        let gains = bn_output_gains(model, layer);
        let cols: Option<Vec<f32>> = gains.map(|g| (0..m * kw).map(|oj| g[oj / kw]).collect());
        let f = factorize_weighted(&matrix, None, cols.as_deref(), rank, &what)?;
        let vertical = ArrayD::from_shape_fn(IxDyn(&[rank, n, kh, 1]), |ix| {
            f.left[(ix[1] * kh + ix[2], ix[0])]
        });
        let horizontal = ArrayD::from_shape_fn(IxDyn(&[m, rank, 1, kw]), |ix| {
            f.right[(ix[1], ix[0] * kw + ix[3])]
        });
        let [top, left, bottom, right] = g.pads;
        let (s, d) = (g.strides, g.dilations);
        if one_column(g) {
            // Every horizontal step in the first conv; the second is a plain 1×1.
            return Ok(Split {
                first: Half {
                    op: "Conv",
                    attributes: conv_attributes([kh, 1], s, [d[0], 1], g.pads),
                    weight: vertical,
                },
                second: Half {
                    op: "Conv",
                    attributes: conv_attributes([1, 1], [1, 1], [1, 1], [0; 4]),
                    weight: horizontal,
                },
            });
        }
        Ok(Split {
            first: Half {
                op: "Conv",
                attributes: conv_attributes([kh, 1], [s[0], 1], [d[0], 1], [top, 0, bottom, 0]),
                weight: vertical,
            },
            second: Half {
                op: "Conv",
                attributes: conv_attributes([1, kw], [1, s[1]], [1, d[1]], [0, left, 0, right]),
                weight: horizontal,
            },
        })
    }
}
