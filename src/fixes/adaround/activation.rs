//! The activation that directly follows a layer (AIMET's `get_module_act_func_pair`): AdaRound
//! compares the rounded and the FP32 outputs after it, so errors the activation removes (a
//! Relu's negative side, a Relu6's saturation) cost nothing. Applied to one output position
//! at a time: a row holds that position's channels (Softmax normalises over them, as
//! torch's `Softmax()` does over dim 1).

use crate::model::{Layer, Model};

#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// Clip with its own bounds (AIMET maps every Clip to Relu6).
    Clip(f32, f32),
    Sigmoid,
    Tanh,
    Softmax,
    /// PRelu with one slope or one per channel.
    PRelu(Vec<f32>),
}

impl Activation {
    /// The activation that alone consumes the layer's output, else identity.
    pub fn following(model: &Model, layer: &Layer) -> Activation {
        let output = layer.output.as_str();
        let rank = layer.output_shape.as_ref().map_or(0, |s| s.len());
        let consumers = model.index().consumers(output);
        let is_graph_output = model.graph().output.iter().any(|o| o.name == output);
        let [(node, 0)] = consumers else {
            return Activation::Identity;
        };
        if is_graph_output {
            return Activation::Identity;
        }
        let n = &model.graph().node[*node];
        match n.op_type.as_str() {
            "Relu" => Activation::Relu,
            "Clip" => match crate::fixes::chains::clip_bounds(model, *node) {
                Some((lo, hi)) => Activation::Clip(lo, hi),
                None => Activation::Identity,
            },
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            // Softmax over the channel axis only (opset ≥ 13 default is the last axis).
            "Softmax" if softmax_on_channels(n, rank) => Activation::Softmax,
            "PRelu" => n
                .input
                .get(1)
                .and_then(|s| model.weight(s))
                .map(|s| Activation::PRelu(s.iter().copied().collect()))
                .unwrap_or(Activation::Identity),
            _ => Activation::Identity,
        }
    }

    /// `out = f(z)` for one row (one position's channels).
    pub fn forward(&self, z: &[f32], out: &mut [f32]) {
        match self {
            Activation::Softmax => {
                let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (o, &v) in out.iter_mut().zip(z) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                out.iter_mut().for_each(|o| *o /= sum);
            }
            _ => {
                for (c, (o, &v)) in out.iter_mut().zip(z).enumerate() {
                    *o = self.scalar(v, c);
                }
            }
        }
    }

    /// Overwrites the pre-activations `z` (rows of `channels`) with `f'(z)ᵀ (f(z) − t)`, the
    /// loss gradient up to the factor 2/n, in one pass; returns `Σ (f(z) − t)²` when
    /// `with_loss`. The common activations get their own loop: this runs on every output
    /// element of every iteration.
    pub fn error_in_place(
        &self,
        z: &mut [f32],
        t: &[f32],
        channels: usize,
        with_loss: bool,
    ) -> f64 {
        let mut loss = 0f64;
        let mut add = |e: f32| {
            if with_loss {
                loss += (e as f64) * (e as f64);
            }
        };
        match self {
            Activation::Identity => {
                for (z, &t) in z.iter_mut().zip(t) {
                    *z -= t;
                    add(*z);
                }
            }
            Activation::Relu => {
                for (z, &t) in z.iter_mut().zip(t) {
                    let e = z.max(0.0) - t;
                    add(e);
                    *z = if *z > 0.0 { e } else { 0.0 };
                }
            }
            Activation::Clip(lo, hi) => {
                for (z, &t) in z.iter_mut().zip(t) {
                    let e = z.clamp(*lo, *hi) - t;
                    add(e);
                    *z = if *z > *lo && *z < *hi { e } else { 0.0 };
                }
            }
            Activation::Softmax => {
                let mut a = vec![0f32; channels];
                let mut e = vec![0f32; channels];
                for (zr, tr) in z.chunks_exact_mut(channels).zip(t.chunks_exact(channels)) {
                    self.forward(zr, &mut a);
                    for ((e, &a), &t) in e.iter_mut().zip(&a).zip(tr) {
                        *e = a - t;
                        add(*e);
                    }
                    let dot: f32 = a.iter().zip(&e).map(|(a, d)| a * d).sum();
                    for ((z, &a), &d) in zr.iter_mut().zip(&a).zip(&e) {
                        *z = a * (d - dot);
                    }
                }
            }
            _ => {
                for (i, (z, &t)) in z.iter_mut().zip(t).enumerate() {
                    let c = i % channels.max(1);
                    let a = self.scalar(*z, c);
                    let e = a - t;
                    add(e);
                    *z = e * self.slope(*z, a, c);
                }
            }
        }
        loss
    }

    fn scalar(&self, v: f32, channel: usize) -> f32 {
        match self {
            Activation::Identity | Activation::Softmax => v,
            Activation::Relu => v.max(0.0),
            Activation::Clip(lo, hi) => v.clamp(*lo, *hi),
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::Tanh => v.tanh(),
            Activation::PRelu(s) => {
                if v >= 0.0 {
                    v
                } else {
                    v * prelu_slope(s, channel)
                }
            }
        }
    }

    fn slope(&self, z: f32, a: f32, channel: usize) -> f32 {
        match self {
            Activation::Identity | Activation::Softmax => 1.0,
            Activation::Relu => (z > 0.0) as u8 as f32,
            Activation::Clip(lo, hi) => (z > *lo && z < *hi) as u8 as f32,
            Activation::Sigmoid => a * (1.0 - a),
            Activation::Tanh => 1.0 - a * a,
            Activation::PRelu(s) => {
                if z >= 0.0 {
                    1.0
                } else {
                    prelu_slope(s, channel)
                }
            }
        }
    }

    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Identity => "none",
            Activation::Relu => "Relu",
            Activation::Clip(..) => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Softmax => "Softmax",
            Activation::PRelu(_) => "PRelu",
        }
    }
}

fn prelu_slope(s: &[f32], channel: usize) -> f32 {
    match s.len() {
        0 => 0.0,
        1 => s[0],
        n => s[channel % n],
    }
}

/// Softmax over axis 1 (the channels) of a layer output of rank `rank`.
fn softmax_on_channels(node: &tract_onnx::pb::NodeProto, rank: usize) -> bool {
    match crate::model::attrs::int(node, "axis") {
        Some(a) => a == 1 || (rank == 2 && a == -1),
        // Opset < 13 flattens from axis 1, ≥ 13 takes the last: both are the channels at rank 2.
        None => rank == 2,
    }
}
