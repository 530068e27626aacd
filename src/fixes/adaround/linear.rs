//! The linear op of one layer as AdaRound sees it: `y = W · cols(x)ᵀ` per group, where
//! `cols` is im2col for a convolution (one row per output position, columns
//! `c·kh·kw + i·kw + j`) and the feature vectors for Gemm / MatMul. A row per position keeps
//! each sample's columns contiguous, so drawing a batch of samples is a copy of whole blocks. The weight is held as a matrix
//! `[out, K]` whose rows are output channels, so per-channel encodings index rows.
//! No bias: AdaRound's residual `W̃x − Wx` does not depend on it.

use ndarray::{s, Array2, ArrayD, ArrayViewD, Axis, IxDyn};

use crate::model::{attrs, Dim, Layer, LayerKind, Model};
use crate::{Error, Result};

/// Geometry of a 2-D convolution (1-D ones run as height 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    /// Input height and width.
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
}

impl ConvGeometry {
    pub fn output(&self) -> [usize; 2] {
        let dim = |a: usize| {
            let span = self.dilations[a] * (self.kernel[a] - 1) + 1;
            let padded = self.input[a] + self.pads[a] + self.pads[a + 2];
            if padded < span {
                0
            } else {
                (padded - span) / self.strides[a] + 1
            }
        };
        [dim(0), dim(1)]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LinearOp {
    Conv(ConvGeometry),
    /// `x [.., K] · Wᵀ` with the weight as `[out, K]`; `transposed` when the stored
    /// tensor is `[K, out]` (Gemm without transB, MatMul).
    Dense {
        in_features: usize,
        out_features: usize,
        transposed: bool,
    },
}

impl LinearOp {
    /// The op of `layer`, or why AdaRound leaves it to round-to-nearest.
    pub fn of(model: &Model, layer: &Layer) -> std::result::Result<LinearOp, String> {
        let node = &model.graph().node[layer.node];
        let w = &layer.weight_shape;
        match layer.kind {
            LayerKind::Conv | LayerKind::GroupedConv | LayerKind::DepthwiseConv => {
                conv_geometry(node, layer).map(LinearOp::Conv)
            }
            LayerKind::ConvTranspose => Err("ConvTranspose is not supported".into()),
            LayerKind::Gemm => {
                if node.input.get(1) != Some(&layer.weight) {
                    return Err("the weight is Gemm's left operand".into());
                }
                if attrs::int(node, "transA").unwrap_or(0) != 0 {
                    return Err("Gemm with transA".into());
                }
                if attrs::float(node, "alpha").unwrap_or(1.0) != 1.0 {
                    return Err("Gemm with alpha ≠ 1".into());
                }
                if w.len() != 2 {
                    return Err(format!("Gemm weight of rank {}", w.len()));
                }
                let trans_b = attrs::int(node, "transB").unwrap_or(0) != 0;
                let (out_features, in_features) = if trans_b { (w[0], w[1]) } else { (w[1], w[0]) };
                Ok(LinearOp::Dense {
                    in_features,
                    out_features,
                    transposed: !trans_b,
                })
            }
            LayerKind::MatMul => {
                if node.input.get(1) != Some(&layer.weight) {
                    return Err("the weight is MatMul's left operand".into());
                }
                if w.len() != 2 {
                    return Err(format!("MatMul weight of rank {}", w.len()));
                }
                Ok(LinearOp::Dense {
                    in_features: w[0],
                    out_features: w[1],
                    transposed: true,
                })
            }
        }
    }

    pub fn groups(&self) -> usize {
        match self {
            LinearOp::Conv(g) => g.groups,
            LinearOp::Dense { .. } => 1,
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            LinearOp::Conv(g) => g.out_channels,
            LinearOp::Dense { out_features, .. } => *out_features,
        }
    }

    /// Columns of one group's column matrix (the inner dimension of the product).
    pub fn k(&self) -> usize {
        match self {
            LinearOp::Conv(g) => g.in_channels / g.groups * g.kernel[0] * g.kernel[1],
            LinearOp::Dense { in_features, .. } => *in_features,
        }
    }

    /// Rows (output positions) per sample of an input with per-sample shape `sample`.
    pub fn positions(&self, sample: &[usize]) -> usize {
        match self {
            LinearOp::Conv(g) => {
                let [h, w] = g.output();
                h * w
            }
            LinearOp::Dense { .. } => sample[..sample.len().saturating_sub(1)]
                .iter()
                .product::<usize>()
                .max(1),
        }
    }

    /// Checks one sample's shape (without the batch axis) against the op.
    pub fn check_sample(&self, sample: &[usize]) -> Result<()> {
        let ok = match self {
            LinearOp::Conv(g) => {
                let (c, hw) = match sample {
                    [c, w] => (*c, [1, *w]),
                    [c, h, w] => (*c, [*h, *w]),
                    _ => (0, [0, 0]),
                };
                c == g.in_channels && hw == g.input
            }
            LinearOp::Dense { in_features, .. } => sample.last() == Some(in_features),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::runtime(format!(
                "input sample of shape {sample:?} does not fit {self:?}"
            )))
        }
    }

    /// The stored weight tensor as `[out, K]` (rows: output channels).
    pub fn weight_matrix(&self, w: &ArrayD<f32>) -> Result<Array2<f32>> {
        let (out, k) = (self.out_channels(), self.k());
        let bad = || {
            Error::runtime(format!(
                "weight of shape {:?} does not fit {out} outputs × {k}",
                w.shape()
            ))
        };
        if w.len() != out * k {
            return Err(bad());
        }
        let values: Vec<f32> = w.iter().copied().collect();
        match self {
            LinearOp::Dense {
                transposed: true, ..
            } => Ok(Array2::from_shape_vec((k, out), values)
                .map_err(|_| bad())?
                .reversed_axes()
                .as_standard_layout()
                .into_owned()),
            _ => Array2::from_shape_vec((out, k), values).map_err(|_| bad()),
        }
    }

    /// The inverse of [`LinearOp::weight_matrix`] for a tensor of `shape`.
    pub fn weight_tensor(&self, m: &Array2<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
        let values: Vec<f32> = match self {
            LinearOp::Dense {
                transposed: true, ..
            } => m.t().iter().copied().collect(),
            _ => m.iter().copied().collect(),
        };
        ArrayD::from_shape_vec(IxDyn(shape), values)
            .map_err(|e| Error::runtime(format!("weight of shape {shape:?}: {e}")))
    }

    /// Writes the columns of one sample (per-sample shape, no batch axis) into
    /// `cols[g][at..at + positions, ..]` for every group `g`.
    pub fn fill_columns(
        &self,
        sample: ArrayViewD<f32>,
        cols: &mut [Array2<f32>],
        at: usize,
    ) -> Result<()> {
        self.check_sample(sample.shape())?;
        match self {
            LinearOp::Conv(g) => {
                let x = sample
                    .to_shape((g.in_channels, g.input[0], g.input[1]))
                    .map_err(|e| Error::runtime(format!("conv input: {e}")))?;
                let cg = g.in_channels / g.groups;
                let [oh, ow] = g.output();
                let [kh, kw] = g.kernel;
                for (group, m) in cols.iter_mut().enumerate() {
                    for c in 0..cg {
                        let plane = x.index_axis(Axis(0), group * cg + c);
                        for i in 0..kh {
                            for j in 0..kw {
                                let col = (c * kh + i) * kw + j;
                                let mut out = m.column_mut(col);
                                for oy in 0..oh {
                                    let iy = (oy * g.strides[0] + i * g.dilations[0]) as isize
                                        - g.pads[0] as isize;
                                    for ox in 0..ow {
                                        let ix = (ox * g.strides[1] + j * g.dilations[1]) as isize
                                            - g.pads[1] as isize;
                                        let inside = iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < g.input[0]
                                            && (ix as usize) < g.input[1];
                                        out[at + oy * ow + ox] = if inside {
                                            plane[[iy as usize, ix as usize]]
                                        } else {
                                            0.0
                                        };
                                    }
                                }
                            }
                        }
                    }
                }
            }
            LinearOp::Dense { in_features, .. } => {
                let rows = sample.len() / in_features;
                let x = sample
                    .to_shape((rows, *in_features))
                    .map_err(|e| Error::runtime(format!("dense input: {e}")))?;
                cols[0].slice_mut(s![at..at + rows, ..]).assign(&x);
            }
        }
        Ok(())
    }

    /// The columns of a batch `x` (batch on axis 0), one matrix per group.
    pub fn columns(&self, x: ArrayViewD<f32>) -> Result<Vec<Array2<f32>>> {
        let n = x.shape().first().copied().unwrap_or(0);
        let p = self.positions(&x.shape()[1.min(x.ndim())..]);
        let mut cols = vec![Array2::zeros((n * p, self.k())); self.groups()];
        for (s, sample) in x.axis_iter(Axis(0)).enumerate() {
            self.fill_columns(sample, &mut cols, s * p)?;
        }
        Ok(cols)
    }

    /// `W · colsᵀ` per group, stacked as `[out, positions]`.
    pub fn apply(&self, w: &Array2<f32>, cols: &[Array2<f32>]) -> Array2<f32> {
        let per = self.out_channels() / self.groups();
        let n = cols.first().map_or(0, |c| c.nrows());
        let mut y = Array2::zeros((self.out_channels(), n));
        for (g, c) in cols.iter().enumerate() {
            let wg = w.slice(s![g * per..(g + 1) * per, ..]);
            y.slice_mut(s![g * per..(g + 1) * per, ..])
                .assign(&wg.dot(&c.t()));
        }
        y
    }

    /// The layer's output (without bias) for a batch `x`, in the ONNX layout:
    /// `[N, out, oh, ow]` for a 2-D conv, `[N, out, ow]` for 1-D, `[.., out]` for dense.
    pub fn forward(&self, x: ArrayViewD<f32>, w: &Array2<f32>) -> Result<ArrayD<f32>> {
        let n = x.shape().first().copied().unwrap_or(0);
        let y = self.apply(w, &self.columns(x.view())?);
        let out = self.out_channels();
        match self {
            LinearOp::Conv(g) => {
                let [oh, ow] = g.output();
                let mut shape = vec![n, out];
                if x.ndim() == 4 {
                    shape.extend([oh, ow]);
                } else {
                    shape.push(ow);
                }
                // y is [out, n·p]: bring the batch first.
                let y = y
                    .into_shape_with_order((out, n, oh * ow))
                    .map_err(|e| Error::runtime(format!("conv output: {e}")))?
                    .permuted_axes([1, 0, 2])
                    .as_standard_layout()
                    .into_owned();
                y.into_shape_with_order(IxDyn(&shape))
                    .map_err(|e| Error::runtime(format!("conv output: {e}")))
            }
            LinearOp::Dense { .. } => {
                let mut shape = x.shape().to_vec();
                if let Some(last) = shape.last_mut() {
                    *last = out;
                }
                y.t()
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))
                    .map_err(|e| Error::runtime(format!("dense output: {e}")))
            }
        }
    }
}

fn conv_geometry(
    node: &tract_onnx::pb::NodeProto,
    layer: &Layer,
) -> std::result::Result<ConvGeometry, String> {
    let spatial = layer.kernel.len();
    if !(1..=2).contains(&spatial) {
        return Err(format!("{spatial}-D convolution is not supported"));
    }
    // Per-sample dims must be known; the batch may stay symbolic.
    let input: Vec<usize> = layer
        .input_shape
        .as_ref()
        .and_then(|s| {
            s.iter()
                .skip(1)
                .map(|d| match d {
                    Dim::Known(v) => Some(*v),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or("the input shape is not known")?;
    if input.len() != spatial + 1 {
        return Err(format!(
            "input of rank {} for a {spatial}-D conv",
            input.len() + 1
        ));
    }
    // 1-D convs run as 2-D with height 1.
    let two = |v: &[usize], fill: usize| -> [usize; 2] {
        if v.len() == 1 {
            [fill, v[0]]
        } else {
            [v[0], v[1]]
        }
    };
    let in_hw = two(&input[1..], 1);
    let kernel = two(&layer.kernel, 1);
    let strides = two(&layer.strides, 1);
    let dilations = two(&layer.dilations, 1);
    let pads = match attrs::string(node, "auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => {
            let p = &layer.pads;
            if spatial == 1 {
                [0, p[0], 0, p[1]]
            } else {
                [p[0], p[1], p[2], p[3]]
            }
        }
        Some("VALID") => [0; 4],
        Some(same @ ("SAME_UPPER" | "SAME_LOWER")) => {
            let mut pads = [0; 4];
            for a in 0..2 {
                let out = in_hw[a].div_ceil(strides[a]);
                let span = dilations[a] * (kernel[a] - 1) + 1;
                let total = ((out - 1) * strides[a] + span).saturating_sub(in_hw[a]);
                let small = total / 2;
                let (begin, end) = if same == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[a] = begin;
                pads[a + 2] = end;
            }
            pads
        }
        Some(other) => return Err(format!("auto_pad {other}")),
    };
    let groups = layer.groups.max(1);
    if !input[0].is_multiple_of(groups) || !layer.out_channels.is_multiple_of(groups) {
        return Err(format!(
            "{} input / {} output channels do not split into {groups} groups",
            input[0], layer.out_channels
        ));
    }
    Ok(ConvGeometry {
        in_channels: input[0],
        out_channels: layer.out_channels,
        groups,
        input: in_hw,
        kernel,
        strides,
        dilations,
        pads,
    })
}
