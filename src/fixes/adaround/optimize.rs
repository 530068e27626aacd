//! One layer's AdaRound optimisation with analytic gradients.
//!
//! Soft weight: `W̃ = s · clamp(⌊W/s⌋ + h(V), offset, offset + 2^b − 1)` with the rectified
//! sigmoid `h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1)`. Loss (AIMET's `AdaroundLoss`): the
//! reconstruction `Σ_channels (W̃x − Wx)²` averaged over samples and positions, plus after the
//! warm start `λ · Σ (1 − |2h − 1|^β)` with β annealed by a cosine from `beta_start` to
//! `beta_end`. By linearity `W̃x − Wx = (W̃ − W)x`, so one product per group gives the
//! residual against the FP32 op's exact output. Adam on V (torch's defaults but `lr`).

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Zip};

use super::linear::LinearOp;
use crate::cancel::CancelToken;
use crate::quant::Encoding;
use crate::Result;

pub const ZETA: f32 = 1.1;
pub const GAMMA: f32 = -0.1;

/// AIMET's AdaRound hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub iterations: usize,
    pub reg: f32,
    pub beta_start: f32,
    pub beta_end: f32,
    /// Fraction of the iterations without the regulariser.
    pub warm_start: f32,
    pub lr: f32,
    /// Cached samples per iteration.
    pub batch_size: usize,
}

impl Hyper {
    /// AIMET's defaults: 10k iterations (15k below 8-bit weights), λ 0.01, β 20 → 2, warm
    /// start 0.2, Adam lr 1e-3, batches of 32.
    pub fn aimet(w_bits: u8) -> Hyper {
        Hyper {
            iterations: if w_bits < 8 { 15_000 } else { 10_000 },
            reg: 0.01,
            beta_start: 20.0,
            beta_end: 2.0,
            warm_start: 0.2,
            lr: 1e-3,
            batch_size: 32,
        }
    }

    /// β at iteration `t`, `None` during the warm start (no regularisation).
    pub fn beta(&self, t: usize) -> Option<f32> {
        let warm = (self.warm_start * self.iterations as f32) as usize;
        if t < warm {
            return None;
        }
        let rel = (t - warm) as f32 / (self.iterations - warm).max(1) as f32;
        Some(
            self.beta_end
                + 0.5
                    * (self.beta_start - self.beta_end)
                    * (1.0 + (rel * std::f32::consts::PI).cos()),
        )
    }
}

/// The integer grid of each weight row (output channel): `x ↦ s · clamp(x, lo, hi)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGrid {
    pub scale: Vec<f32>,
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
}

impl RowGrid {
    /// One encoding per row, or one for all `rows`.
    pub fn new(encodings: &[Encoding], rows: usize) -> RowGrid {
        let pick = |r: usize| &encodings[if encodings.len() == rows { r } else { 0 }];
        let (mut scale, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rows {
            let e = pick(r);
            scale.push(e.scale);
            lo.push(e.offset as f32);
            hi.push(e.offset as f32 + e.num_steps() as f32);
        }
        RowGrid { scale, lo, hi }
    }
}

/// A layer to round: its op, FP32 weight `[out, K]`, grid, and cached input columns
/// (per group `[samples · positions, K]`, sample-major).
pub struct Problem<'a> {
    pub op: &'a LinearOp,
    pub weight: &'a Array2<f32>,
    pub grid: &'a RowGrid,
    pub cols: &'a [Array2<f32>],
    pub positions: usize,
    pub samples: usize,
}

pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

pub fn rectified_sigmoid(v: f32) -> f32 {
    (sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

fn floor_of(p: &Problem) -> Array2<f32> {
    let mut f = p.weight.clone();
    for (r, mut row) in f.rows_mut().into_iter().enumerate() {
        let s = p.grid.scale[r];
        row.mapv_inplace(|w| (w / s).floor());
    }
    f
}

/// AIMET's initialisation: `h(V) = frac(W/s)`.
pub fn init_v(p: &Problem) -> Array2<f32> {
    let mut v = p.weight.clone();
    for (r, mut row) in v.rows_mut().into_iter().enumerate() {
        let s = p.grid.scale[r];
        row.mapv_inplace(|w| {
            let x = w / s;
            let frac = x - x.floor();
            let sig = ((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1.0 - 1e-6);
            -((1.0 / sig) - 1.0).ln()
        });
    }
    v
}

/// The weight for rounding offsets `b` (in [0, 1]) added to `⌊W/s⌋`, on the grid.
fn weight_with(p: &Problem, floor: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    let mut w = floor + b;
    for (r, mut row) in w.rows_mut().into_iter().enumerate() {
        let (s, lo, hi) = (p.grid.scale[r], p.grid.lo[r], p.grid.hi[r]);
        row.mapv_inplace(|q| q.clamp(lo, hi) * s);
    }
    w
}

/// Hard rounding: up where `h(V) ≥ 0.5`. Every value is on the grid.
pub fn hard_weight(p: &Problem, v: &Array2<f32>) -> Array2<f32> {
    let up = v.mapv(|v| {
        if rectified_sigmoid(v) >= 0.5 {
            1.0
        } else {
            0.0
        }
    });
    weight_with(p, &floor_of(p), &up)
}

/// Round-to-nearest on the same grid (ties to even, as the simulation rounds).
pub fn nearest_weight(p: &Problem) -> Array2<f32> {
    let mut w = p.weight.clone();
    for (r, mut row) in w.rows_mut().into_iter().enumerate() {
        let (s, lo, hi) = (p.grid.scale[r], p.grid.lo[r], p.grid.hi[r]);
        row.mapv_inplace(|x| (x / s).round_ties_even().clamp(lo, hi) * s);
    }
    w
}

/// Copies the columns of the samples `batch` into `out` (per group
/// `[|batch| · positions, K]`, allocated on first use): each sample is one contiguous block.
pub fn gather_into(p: &Problem, batch: &[usize], out: &mut Vec<Array2<f32>>) {
    let n = p.positions;
    if out.len() != p.cols.len() || out.first().map(|o| o.nrows()) != Some(batch.len() * n) {
        *out = p
            .cols
            .iter()
            .map(|c| Array2::zeros((batch.len() * n, c.ncols())))
            .collect();
    }
    for (c, o) in p.cols.iter().zip(out.iter_mut()) {
        let block = n * c.ncols();
        match (c.as_slice(), o.as_slice_mut()) {
            (Some(src), Some(dst)) => {
                for (i, &sample) in batch.iter().enumerate() {
                    dst[i * block..(i + 1) * block]
                        .copy_from_slice(&src[sample * block..(sample + 1) * block]);
                }
            }
            _ => {
                for (i, &sample) in batch.iter().enumerate() {
                    o.slice_mut(s![i * n..(i + 1) * n, ..])
                        .assign(&c.slice(s![sample * n..(sample + 1) * n, ..]));
                }
            }
        }
    }
}

/// Columns of the samples `batch` (per group `[|batch| · positions, K]`).
pub fn gather(p: &Problem, batch: &[usize]) -> Vec<Array2<f32>> {
    let mut out = Vec::new();
    gather_into(p, batch, &mut out);
    out
}

/// Loss and dLoss/dV on columns `cols` (from [`gather`]); `beta` `None`: no regulariser.
pub fn loss_and_grad(
    p: &Problem,
    floor: &Array2<f32>,
    v: &Array2<f32>,
    cols: &[Array2<f32>],
    beta: Option<f32>,
    reg: f32,
) -> (f64, Array2<f32>) {
    let (loss, grad) = objective(p, floor, v, cols, beta, reg, true);
    (loss.unwrap_or(0.0), grad)
}

/// dLoss/dV, and the loss when `with_loss` (the optimisation needs only the gradient).
fn objective(
    p: &Problem,
    floor: &Array2<f32>,
    v: &Array2<f32>,
    cols: &[Array2<f32>],
    beta: Option<f32>,
    reg: f32,
    with_loss: bool,
) -> (Option<f64>, Array2<f32>) {
    let h = v.mapv(rectified_sigmoid);
    let soft = weight_with(p, floor, &h);
    let delta = &soft - p.weight;
    let columns = cols.first().map_or(0, |c| c.nrows()).max(1) as f32;
    let per = p.op.out_channels() / p.op.groups();
    let mut loss = 0f64;
    // dLoss/dW̃, group by group: residualᵀ = x · ΔWᵀ, grad = 2/n · residual · x.
    let mut grad = Array2::<f32>::zeros(delta.raw_dim());
    for (g, x) in cols.iter().enumerate() {
        let rows = s![g * per..(g + 1) * per, ..];
        let residual = x.dot(&delta.slice(rows).t());
        if with_loss {
            loss += residual
                .iter()
                .map(|&r| (r as f64) * (r as f64))
                .sum::<f64>();
        }
        general_mat_mul(
            2.0 / columns,
            &residual.t(),
            x,
            0.0,
            &mut grad.slice_mut(rows),
        );
    }
    loss /= columns as f64;
    // Chain through the clamp and the rectified sigmoid; add the regulariser.
    let floor_h = floor + &h;
    for (r, (mut gr, (vr, qr))) in grad
        .rows_mut()
        .into_iter()
        .zip(v.rows().into_iter().zip(floor_h.rows()))
        .enumerate()
    {
        let (s, lo, hi) = (p.grid.scale[r], p.grid.lo[r], p.grid.hi[r]);
        Zip::from(&mut gr).and(&vr).and(&qr).for_each(|g, &v, &q| {
            let sig = sigmoid(v);
            let raw = sig * (ZETA - GAMMA) + GAMMA;
            let h = raw.clamp(0.0, 1.0);
            let mut dh = if (lo..=hi).contains(&q) { *g * s } else { 0.0 };
            if let Some(beta) = beta {
                let t = 2.0 * h - 1.0;
                dh += -reg * beta * t.abs().powf(beta - 1.0) * t.signum() * 2.0;
            }
            *g = if raw > 0.0 && raw < 1.0 {
                dh * (ZETA - GAMMA) * sig * (1.0 - sig)
            } else {
                0.0
            };
        });
    }
    if let (Some(beta), true) = (beta, with_loss) {
        let r: f64 = h
            .iter()
            .map(|&h| 1.0 - ((2.0 * h - 1.0).abs() as f64).powf(beta as f64))
            .sum();
        loss += reg as f64 * r;
    }
    (with_loss.then_some(loss), grad)
}

/// Mean squared error of the layer output (all cached samples, every output element)
/// with weight `w` against the FP32 weight.
pub fn output_mse(p: &Problem, w: &Array2<f32>) -> f64 {
    let delta = w - p.weight;
    let per = p.op.out_channels() / p.op.groups();
    let mut sum = 0f64;
    let mut count = 0usize;
    for (g, x) in p.cols.iter().enumerate() {
        let r = x.dot(&delta.slice(s![g * per..(g + 1) * per, ..]).t());
        sum += r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        count += r.len();
    }
    sum / count.max(1) as f64
}

/// A small deterministic generator (SplitMix64) for the batch draws.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `k` distinct indices below `n` (a partial Fisher–Yates shuffle of `pool`).
    fn sample(&mut self, pool: &mut [usize], k: usize) -> Vec<usize> {
        let n = pool.len();
        for i in 0..k.min(n) {
            let j = i + (self.next_u64() % (n - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool[..k.min(n)].to_vec()
    }
}

/// Optimise V for `hyper.iterations` steps; returns V. Checks `cancel` and reports
/// `progress(done)` every 100 iterations.
pub fn optimize(
    p: &Problem,
    hyper: &Hyper,
    seed: u64,
    cancel: &CancelToken,
    progress: &dyn Fn(usize),
) -> Result<Array2<f32>> {
    let floor = floor_of(p);
    let mut v = init_v(p);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut m = Array2::<f32>::zeros(v.raw_dim());
    let mut second = Array2::<f32>::zeros(v.raw_dim());
    let mut rng = SplitMix::new(seed);
    let mut pool: Vec<usize> = (0..p.samples).collect();
    let batch = hyper.batch_size.max(1);
    let mut cols = Vec::new();
    for t in 0..hyper.iterations {
        if t % 100 == 0 {
            cancel.check()?;
            progress(t);
        }
        let picked = rng.sample(&mut pool, batch);
        gather_into(p, &picked, &mut cols);
        let (_, g) = objective(p, &floor, &v, &cols, hyper.beta(t), hyper.reg, false);
        let step = (t + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
        Zip::from(&mut v)
            .and(&mut m)
            .and(&mut second)
            .and(&g)
            .for_each(|v, m, s2, &g| {
                *m = b1 * *m + (1.0 - b1) * g;
                *s2 = b2 * *s2 + (1.0 - b2) * g * g;
                *v -= hyper.lr * (*m / c1) / ((*s2 / c2).sqrt() + eps);
            });
    }
    // A layer cancelled in its last stretch is not finished: nothing may checkpoint it.
    cancel.check()?;
    progress(hyper.iterations);
    Ok(v)
}
