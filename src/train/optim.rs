//! SGD with momentum and Adam over the trainable tensors, with the update rules of
//! PyTorch's `SGD` and `Adam` (L2 weight decay added to the gradient), so settings carry
//! over. State is plain tensors, saved with the checkpoint.

use super::settings::Optimizer;
use super::value::Value;
use burn_tensor::Tensor;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Optimizer state: one or two moment tensors per parameter (created at the first step).
#[derive(Debug, Clone)]
pub struct OptimState {
    pub kind: Optimizer,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Steps taken (Adam's bias correction).
    pub t: u64,
    /// SGD velocity or Adam first moment, per parameter.
    pub m: Vec<Option<Tensor<4>>>,
    /// Adam second moment, per parameter.
    pub v: Vec<Option<Tensor<4>>>,
}

impl OptimState {
    pub fn new(kind: Optimizer, momentum: f64, weight_decay: f64, params: usize) -> OptimState {
        OptimState {
            kind,
            momentum,
            weight_decay,
            t: 0,
            m: vec![None; params],
            v: vec![None; params],
        }
    }

    /// One update of every parameter with its gradient (`None`: no gradient reached it).
    pub fn step(&mut self, params: &mut [Value], grads: Vec<Option<Tensor<4>>>, lr: f64) {
        self.t += 1;
        for (i, g) in grads.into_iter().enumerate() {
            let Some(mut g) = g else { continue };
            let p = params[i].t.clone();
            if self.weight_decay != 0.0 {
                g = g.add(p.clone().mul_scalar(self.weight_decay));
            }
            let update = match self.kind {
                Optimizer::Sgd => {
                    let v = match self.m[i].take() {
                        Some(v) if self.momentum != 0.0 => v.mul_scalar(self.momentum).add(g),
                        _ => g,
                    };
                    self.m[i] = Some(v.clone());
                    v.mul_scalar(lr)
                }
                Optimizer::Adam => {
                    let m = match self.m[i].take() {
                        Some(m) => m.mul_scalar(BETA1).add(g.clone().mul_scalar(1.0 - BETA1)),
                        None => g.clone().mul_scalar(1.0 - BETA1),
                    };
                    let g2 = g.clone().mul(g);
                    let v = match self.v[i].take() {
                        Some(v) => v.mul_scalar(BETA2).add(g2.mul_scalar(1.0 - BETA2)),
                        None => g2.mul_scalar(1.0 - BETA2),
                    };
                    let t = self.t as i32;
                    let m_hat = m.clone().div_scalar(1.0 - BETA1.powi(t));
                    let v_hat = v.clone().div_scalar(1.0 - BETA2.powi(t));
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                    m_hat.div(v_hat.sqrt().add_scalar(EPS)).mul_scalar(lr)
                }
            };
            params[i].t = p.sub(update);
        }
    }
}
