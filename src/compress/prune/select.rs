//! Which input channels a pruned layer keeps. Channel `c` owns rows `c·kk..(c+1)·kk` of the
//! layer's `[out, K]` weight matrix and of its input columns (`kk` = kernel taps, 1 for a
//! dense layer).
//!
//! - Magnitude (AIMET): the channels with the largest Σ W² over their weights.
//! - Greedy (after He et al. 2017, who select by LASSO on per-channel contributions): greedy
//!   forward selection on the very error the least-squares reconstruction then minimises,
//!   the sampled output error of the refitted layer.

use crate::compress::refit::RIDGE;
use ndarray::{s, Array2, ArrayView2, Axis};

/// Channels kept at `ratio` of `total`: `round(ratio × total)`, at least one.
pub fn keep_count(ratio: f64, total: usize) -> usize {
    ((ratio * total as f64).round() as usize).clamp(1, total.max(1))
}

/// The `keep` channels with the largest sum of squared weights, in channel order.
pub fn by_magnitude(weight: ArrayView2<f32>, kk: usize, keep: usize) -> Vec<usize> {
    let channels = weight.ncols() / kk.max(1);
    let energy: Vec<f64> = (0..channels)
        .map(|c| {
            weight
                .slice(s![.., c * kk..(c + 1) * kk])
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum()
        })
        .collect();
    largest(&energy, keep)
}

fn largest(score: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order.sort_unstable();
    order
}

/// Greedy selection on the refit's own objective. `cols`: `[K, n]` sampled inputs (one
/// group), `targets`: `[out, n]` the outputs to reproduce, at the same positions. Starting
/// from the bias alone, channels are added one at a time, each time the one whose rows
/// most reduce `min_{W,b} ‖Y − W X_S − b‖²`. With `G = A Aᵀ` and `R = A Yᵀ` (`A` = the
/// columns plus a row of ones), a block's gain is `tr(R̂_cᵀ Ĝ_cc⁻¹ R̂_c)` where `Ĝ`, `R̂`
/// are Schur complements given the chosen set, updated by one block elimination per pick.
pub fn by_reconstruction(
    cols: ArrayView2<f32>,
    targets: ArrayView2<f32>,
    kk: usize,
    keep: usize,
) -> Vec<usize> {
    let kk = kk.max(1);
    let (k, n) = cols.dim();
    let channels = k / kk;
    let x = cols.mapv(f64::from);
    let y = targets.mapv(f64::from);
    let mut gram = x.dot(&x.t());
    let mut corr = x.dot(&y.t());
    let ridge = (RIDGE * gram.diag().sum() / k.max(1) as f64).max(f64::MIN_POSITIVE.sqrt());
    gram.diag_mut().mapv_inplace(|d| d + ridge);
    // Condition on the bias (the ones row) first: it is always fitted.
    let sums = x.sum_axis(Axis(1));
    let ysums = y.sum_axis(Axis(1));
    let count = n.max(1) as f64;
    for a in 0..k {
        for b in 0..k {
            gram[[a, b]] -= sums[a] * sums[b] / count;
        }
        for o in 0..y.nrows() {
            corr[[a, o]] -= sums[a] * ysums[o] / count;
        }
    }
    let block = |c: usize| c * kk..(c + 1) * kk;
    let mut chosen = vec![false; channels];
    let mut picked = Vec::with_capacity(keep);
    while picked.len() < keep.min(channels) {
        let gain = |c: usize| -> f64 {
            let g = gram.slice(s![block(c), block(c)]).to_owned();
            let r = corr.slice(s![block(c), ..]).to_owned();
            solve_spd(&g, &r).map_or(0.0, |z| (&z * &r).sum())
        };
        let best = (0..channels)
            .filter(|&c| !chosen[c])
            .map(|c| (c, gain(c)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(c, _)| c)
            .expect("fewer picked than channels");
        chosen[best] = true;
        picked.push(best);
        let p = gram.slice(s![.., block(best)]).to_owned();
        let pp = gram.slice(s![block(best), block(best)]).to_owned();
        let rp = corr.slice(s![block(best), ..]).to_owned();
        if let (Some(m), Some(z)) = (solve_spd(&pp, &p.t().to_owned()), solve_spd(&pp, &rp)) {
            gram -= &p.dot(&m);
            corr -= &p.dot(&z);
        }
    }
    picked.sort_unstable();
    picked
}

/// `a⁻¹ b` for a symmetric positive definite `a`, `None` if it is not.
fn solve_spd(a: &Array2<f64>, b: &Array2<f64>) -> Option<Array2<f64>> {
    use faer::linalg::solvers::Solve;
    use faer_ext::IntoFaer;
    let llt = a.view().into_faer().llt(faer::Side::Lower).ok()?;
    let mut z = b.as_standard_layout().into_owned();
    llt.solve_in_place(z.view_mut().into_faer());
    Some(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitMix64;

    #[test]
    fn keep_count_rounds_and_keeps_one() {
        assert_eq!(keep_count(0.5, 16), 8);
        assert_eq!(keep_count(0.7, 16), 11);
        assert_eq!(keep_count(0.01, 16), 1);
        assert_eq!(keep_count(1.0, 16), 16);
        assert_eq!(keep_count(0.99, 16), 16);
    }

    #[test]
    fn magnitude_keeps_the_heaviest_channels_in_order() {
        // 3 channels × 2 taps; channel 1 is the lightest.
        let w = ndarray::arr2(&[
            [3.0f32, 0.0, 0.1, 0.1, 1.0, 1.0],
            [0.0, 1.0, 0.2, 0.0, 1.0, 0.0],
        ]);
        assert_eq!(by_magnitude(w.view(), 2, 2), vec![0, 2]);
        assert_eq!(by_magnitude(w.view(), 2, 3), vec![0, 1, 2]);
    }

    #[test]
    fn greedy_finds_the_channels_the_output_depends_on() {
        // Output = channels 1 and 3 only; channel 0 has large weights but the data cancels
        // it (its input is identical to channel 2's, weights opposite).
        let mut rng = SplitMix64(9);
        let (channels, n) = (4, 300);
        let mut cols = Array2::from_shape_fn((channels, n), |_| rng.symmetric());
        let row2 = cols.row(2).to_owned();
        cols.row_mut(0).assign(&row2);
        let w = ndarray::arr2(&[[5.0f32, 1.0, -5.0, 1.0], [5.0, -1.0, -5.0, 2.0]]);
        let y = w.dot(&cols);
        assert_eq!(by_magnitude(w.view(), 1, 2), vec![0, 2]);
        assert_eq!(by_reconstruction(cols.view(), y.view(), 1, 2), vec![1, 3]);
        assert_eq!(
            by_reconstruction(cols.view(), y.view(), 1, 4),
            vec![0, 1, 2, 3]
        );
    }
}
