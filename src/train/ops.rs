//! The forward pass of each op the interpreter supports, on burn tensors (autodiff or
//! not: the same code records a tape on an autodiff device). Shapes are checked here,
//! before burn sees them, so a bad graph is an error naming the node, never a panic.

use super::value::{broadcast, physical, Value, MAX_RANK};
use crate::{Error, Result};
use burn_tensor::activation;
use burn_tensor::module;
use burn_tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn_tensor::Tensor;

/// How a Conv or pool pads: explicit pads, or ONNX's `auto_pad` rule applied to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// (begin, end) per spatial axis.
    Explicit([(usize, usize); 2]),
    SameUpper,
    SameLower,
}

/// Window geometry shared by Conv and the pools (2-D only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub padding: Padding,
    pub ceil_mode: bool,
}

impl Window {
    /// The (begin, end) pads for spatial input size `input`, checked to give an output.
    fn pads(&self, input: [usize; 2], what: &str) -> Result<[(usize, usize); 2]> {
        let mut pads = [(0, 0); 2];
        for i in 0..2 {
            let span = self.dilation[i] * (self.kernel[i] - 1) + 1;
            pads[i] = match self.padding {
                Padding::Explicit(p) => p[i],
                Padding::SameUpper | Padding::SameLower => {
                    let out = input[i].div_ceil(self.stride[i]);
                    let total = ((out - 1) * self.stride[i] + span).saturating_sub(input[i]);
                    let small = total / 2;
                    if self.padding == Padding::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                }
            };
            if input[i] + pads[i].0 + pads[i].1 < span {
                return Err(Error::input(format!(
                    "{what}: a window of {span} does not fit the padded input of {}",
                    input[i] + pads[i].0 + pads[i].1
                )));
            }
        }
        Ok(pads)
    }
}

fn spatial(x: &Value, what: &str) -> Result<[usize; 2]> {
    if x.rank() != 4 {
        return Err(Error::input(format!(
            "{what}: input of shape {:?}; the training interpreter handles 2-D (NCHW) only",
            x.shape
        )));
    }
    Ok([x.shape[2], x.shape[3]])
}

fn from_dims(t: Tensor<4>) -> Value {
    let shape = t.dims().to_vec();
    Value::new(t, shape)
}

pub fn conv(
    x: &Value,
    w: &Value,
    b: Option<&Value>,
    win: &Window,
    group: usize,
    what: &str,
) -> Result<Value> {
    let input = spatial(x, what)?;
    if w.rank() != 4 {
        return Err(Error::input(format!(
            "{what}: weight of shape {:?}, expected [M, C/group, kH, kW]",
            w.shape
        )));
    }
    let (c, m) = (x.shape[1], w.shape[0]);
    if group == 0 || !c.is_multiple_of(group) || !m.is_multiple_of(group) || w.shape[1] * group != c
    {
        return Err(Error::input(format!(
            "{what}: input of {c} channels, weight {:?}, group {group} do not agree",
            w.shape
        )));
    }
    if [w.shape[2], w.shape[3]] != win.kernel {
        return Err(Error::input(format!(
            "{what}: kernel_shape {:?} but weight {:?}",
            win.kernel, w.shape
        )));
    }
    if let Some(b) = b {
        if b.shape != [m] {
            return Err(Error::input(format!(
                "{what}: bias of shape {:?}, expected [{m}]",
                b.shape
            )));
        }
    }
    let pads = win.pads(input, what)?;
    let options = ConvOptions::new_with_padding(win.stride, pads, win.dilation, group);
    let bias = b.map(|b| b.t.clone().reshape([m]));
    Ok(from_dims(module::conv2d(
        x.t.clone(),
        w.t.clone(),
        bias,
        options,
    )))
}

pub fn max_pool(x: &Value, win: &Window, what: &str) -> Result<Value> {
    let pads = win.pads(spatial(x, what)?, what)?;
    let options = MaxPoolOptions::new(win.kernel)
        .with_stride(win.stride)
        .with_padding_pairs(pads)
        .with_dilation(win.dilation)
        .with_ceil_mode(win.ceil_mode);
    Ok(from_dims(module::max_pool2d(x.t.clone(), options)))
}

pub fn average_pool(x: &Value, win: &Window, count_include_pad: bool, what: &str) -> Result<Value> {
    let pads = win.pads(spatial(x, what)?, what)?;
    let options = AvgPoolOptions::new(win.kernel)
        .with_stride(win.stride)
        .with_padding_pairs(pads)
        .with_count_include_pad(count_include_pad)
        .with_ceil_mode(win.ceil_mode);
    Ok(from_dims(module::avg_pool2d(x.t.clone(), options)))
}

pub fn global_average_pool(x: &Value, what: &str) -> Result<Value> {
    spatial(x, what)?;
    Ok(from_dims(x.t.clone().mean_dim(2).mean_dim(3)))
}

/// `a @ b` for operands of rank 2 or more whose batch dims broadcast (ONNX MatMul; rank-1
/// operands are promoted and the added axis removed, as numpy does).
pub fn matmul(a: &Value, b: &Value, what: &str) -> Result<Value> {
    let a2 = if a.rank() == 1 {
        a.clone().reshaped(vec![1, a.shape[0]])
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        b.clone().reshaped(vec![b.shape[0], 1])
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.rank(), b2.rank());
    let (m, k) = (a2.shape[ra - 2], a2.shape[ra - 1]);
    let (k2, n) = (b2.shape[rb - 2], b2.shape[rb - 1]);
    let batch = broadcast(&a2.shape[..ra - 2], &b2.shape[..rb - 2]);
    let Some(mut shape) = batch.filter(|_| k == k2) else {
        return Err(Error::input(format!(
            "{what}: cannot multiply shapes {:?} and {:?}",
            a.shape, b.shape
        )));
    };
    if shape.len() + 2 > MAX_RANK {
        return Err(Error::input(format!(
            "{what}: result rank above {MAX_RANK}"
        )));
    }
    // burn broadcasts batch dims of 1; expand so both sides agree exactly.
    let full: Vec<usize> = shape.clone();
    let expand = |v: &Value, rows: usize, cols: usize| -> Tensor<4> {
        let mut s = full.clone();
        s.extend([rows, cols]);
        v.t.clone().expand(physical(&s))
    };
    let t = expand(&a2, m, k).matmul(expand(&b2, k, n));
    shape.extend([m, n]);
    let mut out = Value::new(t, shape);
    if b.rank() == 1 {
        let mut s = out.shape.clone();
        s.pop();
        out = out.reshaped(s);
    }
    if a.rank() == 1 {
        let mut s = out.shape.clone();
        let last = s.pop();
        s.pop();
        s.extend(last);
        out = out.reshaped(s);
    }
    Ok(out)
}

/// ONNX Gemm: `alpha · A' · B' + beta · C` with A', B' optionally transposed, C broadcast.
pub fn gemm(
    a: &Value,
    b: &Value,
    c: Option<&Value>,
    trans: (bool, bool),
    alpha: f64,
    beta: f64,
    what: &str,
) -> Result<Value> {
    if a.rank() != 2 || b.rank() != 2 {
        return Err(Error::input(format!(
            "{what}: Gemm takes 2-D operands, got {:?} and {:?}",
            a.shape, b.shape
        )));
    }
    let flip = |v: &Value, t: bool| -> Value {
        if t {
            Value::new(v.t.clone().transpose(), vec![v.shape[1], v.shape[0]])
        } else {
            v.clone()
        }
    };
    let mut y = matmul(&flip(a, trans.0), &flip(b, trans.1), what)?;
    if alpha != 1.0 {
        y.t = y.t.mul_scalar(alpha);
    }
    if let Some(c) = c {
        let c = if beta != 1.0 {
            Value::new(c.t.clone().mul_scalar(beta), c.shape.clone())
        } else {
            c.clone()
        };
        y = binary(&y, &c, Binary::Add, what)?;
        if y.rank() != 2 {
            return Err(Error::input(format!(
                "{what}: C of shape {:?} does not broadcast to the product",
                c.shape
            )));
        }
    }
    Ok(y)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// Elementwise with numpy broadcasting.
pub fn binary(a: &Value, b: &Value, op: Binary, what: &str) -> Result<Value> {
    let Some(shape) = broadcast(&a.shape, &b.shape) else {
        return Err(Error::input(format!(
            "{what}: shapes {:?} and {:?} do not broadcast",
            a.shape, b.shape
        )));
    };
    let (x, y) = (a.t.clone(), b.t.clone());
    let t = match op {
        Binary::Add => x.add(y),
        Binary::Sub => x.sub(y),
        Binary::Mul => x.mul(y),
        Binary::Div => x.div(y),
    };
    Ok(Value::new(t, shape))
}

/// Inference-mode BatchNormalization: the stored running statistics normalise; scale and
/// bias are the trainable part.
pub fn batch_norm(
    x: &Value,
    scale: &Value,
    bias: &Value,
    mean: &Value,
    var: &Value,
    eps: f64,
    what: &str,
) -> Result<Value> {
    if x.rank() < 2 {
        return Err(Error::input(format!(
            "{what}: input of shape {:?} has no channel axis",
            x.shape
        )));
    }
    let c = x.shape[1];
    // Per-channel vectors as [C, 1, …] so they broadcast along axis 1.
    let mut per_channel = vec![c];
    per_channel.resize(x.rank() - 1, 1);
    let mut vs = Vec::with_capacity(4);
    for (name, v) in [
        ("scale", scale),
        ("bias", bias),
        ("mean", mean),
        ("var", var),
    ] {
        if v.shape != [c] {
            return Err(Error::input(format!(
                "{what}: {name} of shape {:?}, expected [{c}]",
                v.shape
            )));
        }
        vs.push(v.t.clone().reshape(physical(&per_channel)));
    }
    let [scale, bias, mean, var]: [Tensor<4>; 4] = vs.try_into().expect("four vectors");
    let factor = scale.mul(var.add_scalar(eps).sqrt().recip());
    let t = x.t.clone().sub(mean).mul(factor).add(bias);
    Ok(Value::new(t, x.shape.clone()))
}

pub fn relu(x: &Value) -> Value {
    Value::new(activation::relu(x.t.clone()), x.shape.clone())
}

pub fn clip(x: &Value, min: Option<f64>, max: Option<f64>) -> Value {
    let t = match (min, max) {
        (Some(lo), Some(hi)) => x.t.clone().clamp(lo, hi),
        (Some(lo), None) => x.t.clone().clamp_min(lo),
        (None, Some(hi)) => x.t.clone().clamp_max(hi),
        (None, None) => x.t.clone(),
    };
    Value::new(t, x.shape.clone())
}

pub fn sigmoid(x: &Value) -> Value {
    Value::new(activation::sigmoid(x.t.clone()), x.shape.clone())
}

/// `max(0, min(1, alpha·x + beta))`.
pub fn hard_sigmoid(x: &Value, alpha: f64, beta: f64) -> Value {
    let t =
        x.t.clone()
            .mul_scalar(alpha)
            .add_scalar(beta)
            .clamp(0.0, 1.0);
    Value::new(t, x.shape.clone())
}

/// `x · HardSigmoid(x; 1/6, 1/2)`.
pub fn hard_swish(x: &Value) -> Value {
    let gate = hard_sigmoid(x, 1.0 / 6.0, 0.5);
    Value::new(x.t.clone().mul(gate.t), x.shape.clone())
}

pub fn concat(values: &[&Value], axis: i64, what: &str) -> Result<Value> {
    let first = values
        .first()
        .ok_or_else(|| Error::input(format!("{what}: Concat of no inputs")))?;
    let logical = first.axis(axis, what)? - (MAX_RANK - first.rank());
    let mut shape = first.shape.clone();
    shape[logical] = 0;
    for v in values {
        let same = v.rank() == first.rank()
            && v.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(i, (a, b))| i == logical || a == b);
        if !same {
            return Err(Error::input(format!(
                "{what}: cannot concatenate shapes {:?} and {:?} on axis {axis}",
                first.shape, v.shape
            )));
        }
        shape[logical] += v.shape[logical];
    }
    let phys = first.axis(axis, what)?;
    let t = Tensor::cat(values.iter().map(|v| v.t.clone()).collect(), phys);
    Ok(Value::new(t, shape))
}

pub fn flatten(x: &Value, axis: i64, what: &str) -> Result<Value> {
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(Error::input(format!(
            "{what}: axis {axis} out of range for shape {:?}",
            x.shape
        )));
    }
    let a = a as usize;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a..].iter().product();
    Ok(x.clone().reshaped(vec![outer, inner]))
}

/// ONNX Reshape: 0 copies the input's dim (unless `allowzero`), one -1 is inferred.
pub fn reshape(x: &Value, target: &[i64], allowzero: bool, what: &str) -> Result<Value> {
    let total: usize = x.shape.iter().product();
    let bad = || {
        Error::input(format!(
            "{what}: cannot reshape {:?} to {target:?}",
            x.shape
        ))
    };
    if target.len() > MAX_RANK {
        return Err(Error::input(format!(
            "{what}: target rank {} above {MAX_RANK}",
            target.len()
        )));
    }
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 if !allowzero => shape.push(*x.shape.get(i).ok_or_else(bad)?),
            d if d >= 0 => shape.push(d as usize),
            _ => return Err(bad()),
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad());
        }
        shape[i] = total / known;
    } else if known != total {
        return Err(bad());
    }
    Ok(x.clone().reshaped(shape))
}

/// Softmax along `axis`; `legacy` (opset < 13) flattens to 2-D at `axis` first.
pub fn softmax(x: &Value, axis: i64, legacy: bool, what: &str) -> Result<Value> {
    if legacy {
        let flat = flatten(x, axis, what)?;
        let t = activation::softmax(flat.t, MAX_RANK - 1);
        return Ok(Value::new(t, flat.shape).reshaped(x.shape.clone()));
    }
    let phys = x.axis(axis, what)?;
    Ok(Value::new(
        activation::softmax(x.t.clone(), phys),
        x.shape.clone(),
    ))
}
