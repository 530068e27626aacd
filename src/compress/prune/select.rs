//! Which input channels a pruned layer keeps. Channel `c` owns rows `c·kk..(c+1)·kk` of the
//! layer's `[out, K]` weight matrix and of its input columns (`kk` = kernel taps, 1 for a
//! dense layer).
//!
//! - Magnitude (AIMET): the channels with the largest Σ W² over their weights.
//! - Greedy (after He et al. 2017, with greedy forward selection in place of LASSO): each
//!   channel's contribution to the sampled outputs is `Z_c = W_c X_c`; channels are added
//!   one at a time, each time the one that most reduces `min_β ‖Y − Σ β_c Z_c‖²` over the
//!   chosen set. Only the Gram matrix of the contributions is kept, and the residual after
//!   each choice follows by a rank-one update of its Schur complement.

use ndarray::{s, Array1, Array2, ArrayView2};

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

/// Columns per chunk when accumulating the contribution Gram matrix.
const CHUNK: usize = 256;

/// Greedy selection on reconstruction error. `cols`: `[K, n]` sampled inputs (one group),
/// `residual`: `[out, n]` targets minus the bias, both at the same positions.
pub fn by_reconstruction(
    weight: ArrayView2<f32>,
    cols: ArrayView2<f32>,
    residual: ArrayView2<f32>,
    kk: usize,
    keep: usize,
) -> Vec<usize> {
    let kk = kk.max(1);
    let channels = weight.ncols() / kk;
    let out = weight.nrows();
    let n = cols.ncols();
    // gram[c][d] = ⟨Z_c, Z_d⟩, corr[c] = ⟨Z_c, Y⟩ over all outputs and positions.
    let mut gram = Array2::<f64>::zeros((channels, channels));
    let mut corr = Array1::<f64>::zeros(channels);
    for from in (0..n).step_by(CHUNK) {
        let to = (from + CHUNK).min(n);
        let m = to - from;
        let mut z = Array2::<f64>::zeros((channels, out * m));
        for c in 0..channels {
            let zc = weight
                .slice(s![.., c * kk..(c + 1) * kk])
                .dot(&cols.slice(s![c * kk..(c + 1) * kk, from..to]));
            for (dst, src) in z.row_mut(c).iter_mut().zip(zc.iter()) {
                *dst = f64::from(*src);
            }
        }
        let y: Array1<f64> = residual
            .slice(s![.., from..to])
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        gram += &z.dot(&z.t());
        corr += &z.dot(&y);
    }
    greedy_forward(gram, corr, keep)
}

/// Forward selection on a Gram matrix: `gram`/`corr` become the Schur complements given
/// the chosen set, so a candidate's gain is `corr_c² / gram_cc`.
fn greedy_forward(mut gram: Array2<f64>, mut corr: Array1<f64>, keep: usize) -> Vec<usize> {
    let channels = corr.len();
    let energy: Vec<f64> = gram.diag().to_vec();
    let mut chosen = vec![false; channels];
    let mut picked = Vec::with_capacity(keep);
    while picked.len() < keep.min(channels) {
        // A channel whose contribution lies in the span of the chosen ones adds nothing;
        // among those, prefer the larger contribution.
        let gain = |c: usize| {
            let d = gram[[c, c]];
            if d > 1e-12 * energy[c].max(f64::MIN_POSITIVE) {
                corr[c] * corr[c] / d
            } else {
                0.0
            }
        };
        let best = (0..channels)
            .filter(|&c| !chosen[c])
            .max_by(|&a, &b| {
                gain(a)
                    .total_cmp(&gain(b))
                    .then(energy[a].total_cmp(&energy[b]))
                    .then(b.cmp(&a))
            })
            .expect("fewer picked than channels");
        chosen[best] = true;
        picked.push(best);
        let d = gram[[best, best]];
        if d > 1e-12 * energy[best].max(f64::MIN_POSITIVE) {
            let col = gram.column(best).to_owned();
            let r = corr[best];
            for a in 0..channels {
                corr[a] -= col[a] * r / d;
                for b in 0..channels {
                    gram[[a, b]] -= col[a] * col[b] / d;
                }
            }
        }
    }
    picked.sort_unstable();
    picked
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
        assert_eq!(
            by_reconstruction(w.view(), cols.view(), y.view(), 1, 2),
            vec![1, 3]
        );
        assert_eq!(
            by_reconstruction(w.view(), cols.view(), y.view(), 1, 4),
            vec![0, 1, 2, 3]
        );
    }
}
