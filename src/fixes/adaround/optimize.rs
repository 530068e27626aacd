//! One layer's AdaRound optimisation with analytic gradients.
//!
//! Soft weight: `W̃ = s · clamp(⌊W/s⌋ + h(V), offset, offset + 2^b − 1)` with the rectified
//! sigmoid `h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1)`. Loss (AIMET's `AdaroundLoss`): the
//! reconstruction `Σ_channels (f(W̃x̂ + b) − f(y))²` averaged over samples and positions, where
//! `x̂` is the layer's input in the simulation (earlier layers rounded), `y` the FP32 model's
//! output of the layer and `f` the activation that follows it; plus after the warm start
//! `λ · Σ (1 − |2h − 1|^β)` with β annealed by a cosine from `beta_start` to `beta_end`.
//! Adam on V (torch's defaults but `lr`).

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Zip};

use super::activation::Activation;
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

/// A layer to round: its op, FP32 weight `[out, K]`, bias, grid, cached input columns
/// (per group `[samples · positions, K]`, sample-major), the target and the activation.
pub struct Problem<'a> {
    pub op: &'a LinearOp,
    pub weight: &'a Array2<f32>,
    /// One per output channel (zeros without a bias).
    pub bias: &'a [f32],
    pub grid: &'a RowGrid,
    pub cols: &'a [Array2<f32>],
    /// `f(y)`: the FP32 model's output of the layer after the activation,
    /// `[samples · positions, out]`.
    pub target: &'a Array2<f32>,
    pub act: &'a Activation,
    pub positions: usize,
    pub samples: usize,
}

impl Problem<'_> {
    /// `f(x · Wᵀ + b)` for FP32 targets computed from the same columns (the layer alone).
    pub fn activated_output(
        op: &LinearOp,
        w: &Array2<f32>,
        bias: &[f32],
        act: &Activation,
        cols: &[Array2<f32>],
    ) -> Array2<f32> {
        let mut z = op
            .apply(w, cols)
            .reversed_axes()
            .as_standard_layout()
            .into_owned();
        let mut out = z.clone();
        for (mut zr, mut or) in z.rows_mut().into_iter().zip(out.rows_mut()) {
            zr.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            act.forward(
                zr.as_slice().expect("standard layout"),
                or.as_slice_mut().expect("standard layout"),
            );
        }
        out
    }
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

/// A batch drawn from the cache: columns per group `[|batch| · positions, K]` and targets
/// `[|batch| · positions, out]`, buffers reused across iterations.
#[derive(Default)]
pub struct Batch {
    pub cols: Vec<Array2<f32>>,
    pub target: Array2<f32>,
}

/// Copies rows `sample · n .. (sample + 1) · n` of `src` for each sample of `batch`: each
/// sample is one contiguous block.
fn copy_blocks(src: &Array2<f32>, n: usize, batch: &[usize], dst: &mut Array2<f32>) {
    if dst.dim() != (batch.len() * n, src.ncols()) {
        *dst = Array2::zeros((batch.len() * n, src.ncols()));
    }
    let block = n * src.ncols();
    match (src.as_slice(), dst.as_slice_mut()) {
        (Some(from), Some(to)) => {
            for (i, &sample) in batch.iter().enumerate() {
                to[i * block..(i + 1) * block]
                    .copy_from_slice(&from[sample * block..(sample + 1) * block]);
            }
        }
        _ => {
            for (i, &sample) in batch.iter().enumerate() {
                dst.slice_mut(s![i * n..(i + 1) * n, ..])
                    .assign(&src.slice(s![sample * n..(sample + 1) * n, ..]));
            }
        }
    }
}

/// Draws the samples `batch` into `out`.
pub fn gather_into(p: &Problem, batch: &[usize], out: &mut Batch) {
    let n = p.positions;
    out.cols.resize_with(p.cols.len(), Default::default);
    for (c, o) in p.cols.iter().zip(out.cols.iter_mut()) {
        copy_blocks(c, n, batch, o);
    }
    copy_blocks(p.target, n, batch, &mut out.target);
}

/// The samples `batch` of the cache.
pub fn gather(p: &Problem, batch: &[usize]) -> Batch {
    let mut out = Batch::default();
    gather_into(p, batch, &mut out);
    out
}

/// Loss and dLoss/dV on a drawn `batch`; `beta` `None`: no regulariser.
pub fn loss_and_grad(
    p: &Problem,
    floor: &Array2<f32>,
    v: &Array2<f32>,
    batch: &Batch,
    beta: Option<f32>,
    reg: f32,
) -> (f64, Array2<f32>) {
    let (loss, grad) = objective(p, floor, v, batch, beta, reg, true);
    (loss.unwrap_or(0.0), grad)
}

/// The pre-activation `x · Wᵀ + b` of a batch, `[columns, out]`: the bias rows copied in,
/// the products added on top.
fn pre_activation(p: &Problem, w: &Array2<f32>, cols: &[Array2<f32>]) -> Array2<f32> {
    let rows = cols.first().map_or(0, |c| c.nrows());
    let out = p.op.out_channels();
    let per = out / p.op.groups();
    let mut z = Array2::<f32>::zeros((rows, out));
    if let Some(flat) = z.as_slice_mut() {
        for row in flat.chunks_exact_mut(out.max(1)) {
            row.copy_from_slice(p.bias);
        }
    }
    for (g, x) in cols.iter().enumerate() {
        general_mat_mul(
            1.0,
            x,
            &w.slice(s![g * per..(g + 1) * per, ..]).t(),
            1.0,
            &mut z.slice_mut(s![.., g * per..(g + 1) * per]),
        );
    }
    z
}

/// `f(x · Wᵀ + b)` of a batch, `[columns, out]`.
fn forward(p: &Problem, w: &Array2<f32>, cols: &[Array2<f32>]) -> Array2<f32> {
    let z = pre_activation(p, w, cols);
    let mut a = z.clone();
    for (zr, mut ar) in z.rows().into_iter().zip(a.rows_mut()) {
        p.act.forward(
            zr.to_slice().expect("standard layout"),
            ar.as_slice_mut().expect("standard layout"),
        );
    }
    a
}

/// dLoss/dV, and the loss when `with_loss` (the optimisation needs only the gradient).
fn objective(
    p: &Problem,
    floor: &Array2<f32>,
    v: &Array2<f32>,
    batch: &Batch,
    beta: Option<f32>,
    reg: f32,
    with_loss: bool,
) -> (Option<f64>, Array2<f32>) {
    let h = v.mapv(rectified_sigmoid);
    let soft = weight_with(p, floor, &h);
    let mut dz = pre_activation(p, &soft, &batch.cols);
    let columns = dz.nrows().max(1) as f32;
    // dLoss/dz = 2/n · f'(z)ᵀ (f(z) − f(y)); the 2/n goes into the product below.
    let channels = dz.ncols();
    let mut loss = p.act.error_in_place(
        dz.as_slice_mut().expect("standard layout"),
        batch.target.as_slice().expect("standard layout"),
        channels,
        with_loss,
    );
    loss /= columns as f64;
    // dLoss/dW̃ per group: dzᵀ · x.
    let per = p.op.out_channels() / p.op.groups();
    let mut grad = Array2::<f32>::zeros(soft.raw_dim());
    for (g, x) in batch.cols.iter().enumerate() {
        general_mat_mul(
            2.0 / columns,
            &dz.slice(s![.., g * per..(g + 1) * per]).t(),
            x,
            0.0,
            &mut grad.slice_mut(s![g * per..(g + 1) * per, ..]),
        );
    }
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

/// Mean squared error of the activated layer output (all cached samples, every output
/// element) with weight `w` against the FP32 target.
pub fn output_mse(p: &Problem, w: &Array2<f32>) -> f64 {
    let a = forward(p, w, p.cols);
    let sum: f64 = a
        .iter()
        .zip(p.target.iter())
        .map(|(&a, &t)| ((a - t) as f64).powi(2))
        .sum();
    sum / a.len().max(1) as f64
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
    let mut drawn = Batch::default();
    for t in 0..hyper.iterations {
        if t % 100 == 0 {
            cancel.check()?;
            progress(t);
        }
        let picked = rng.sample(&mut pool, batch);
        gather_into(p, &picked, &mut drawn);
        let (_, g) = objective(p, &floor, &v, &drawn, hyper.beta(t), hyper.reg, false);
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
