//! Truncated SVD of a weight matrix, the factorization both SVD methods share:
//! `M ≈ L · R` with `L = U_r √Σ_r` and `R = √Σ_r V_rᵀ`. Splitting √σ evenly keeps the two
//! factors at similar scales, which matters once they are quantized.

use crate::{Error, Result};
use faer_ext::IntoFaer;
use ndarray::Array2;

/// The two factors of a rank-`r` approximation.
#[derive(Debug, Clone)]
pub(crate) struct Factors {
    /// `[rows, r]`.
    pub left: Array2<f32>,
    /// `[r, cols]`.
    pub right: Array2<f32>,
}

/// Rank-`rank` factors of `m` (1 ≤ rank ≤ min(rows, cols)); `what` names the layer in errors.
pub(crate) fn factorize(m: &Array2<f32>, rank: usize, what: &str) -> Result<Factors> {
    let (rows, cols) = m.dim();
    if rank == 0 || rank > rows.min(cols) {
        return Err(Error::input(format!(
            "{what}: rank {rank} is outside 1..={}",
            rows.min(cols)
        )));
    }
    if m.iter().any(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "{what}: the weight holds NaN or infinite values"
        )));
    }
    let svd = m
        .view()
        .into_faer()
        .thin_svd()
        .map_err(|e| Error::runtime(format!("{what}: SVD failed: {e:?}")))?;
    let (u, v) = (svd.U(), svd.V());
    let s = svd.S().column_vector();
    let root: Vec<f32> = (0..rank).map(|k| s[k].max(0.0).sqrt()).collect();
    let left = Array2::from_shape_fn((rows, rank), |(i, k)| u[(i, k)] * root[k]);
    let right = Array2::from_shape_fn((rank, cols), |(k, j)| root[k] * v[(j, k)]);
    Ok(Factors { left, right })
}

/// Rank-`rank` factors that approximate `m` best in the weighted norm
/// ‖diag(rows) · (M − L·R) · diag(cols)‖: the weighted matrix is factored, then the weights
/// are divided back out of L's rows and R's columns. Weights must be positive and finite;
/// `None` is a weight of 1 on that side.
pub(crate) fn factorize_weighted(
    m: &Array2<f32>,
    rows: Option<&[f32]>,
    cols: Option<&[f32]>,
    rank: usize,
    what: &str,
) -> Result<Factors> {
    let (nr, nc) = m.dim();
    let ok = |w: Option<&[f32]>, n: usize| {
        w.is_none_or(|w| w.len() == n && w.iter().all(|v| v.is_finite() && *v > 0.0))
    };
    if !ok(rows, nr) || !ok(cols, nc) {
        return Err(Error::runtime(format!(
            "{what}: the factorization's weights do not match the {nr}×{nc} matrix"
        )));
    }
    let row = |i: usize| rows.map_or(1.0, |w| w[i]);
    let col = |j: usize| cols.map_or(1.0, |w| w[j]);
    let weighted = Array2::from_shape_fn((nr, nc), |(i, j)| m[(i, j)] * row(i) * col(j));
    let mut f = factorize(&weighted, rank, what)?;
    for ((i, _), v) in f.left.indexed_iter_mut() {
        *v /= row(i);
    }
    for ((_, j), v) in f.right.indexed_iter_mut() {
        *v /= col(j);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Array2<f32> {
        let mut rng = crate::data::SplitMix64(7);
        Array2::from_shape_fn((rows, cols), |_| rng.symmetric())
    }

    #[test]
    fn full_rank_reproduces_the_matrix_and_balances_the_factors() {
        for (rows, cols) in [(6, 9), (9, 6), (5, 5)] {
            let m = matrix(rows, cols);
            let f = factorize(&m, rows.min(cols), "test").unwrap();
            let err = (&f.left.dot(&f.right) - &m)
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()));
            assert!(err < 1e-5, "{rows}×{cols}: error {err}");
            // √σ on both sides: column k of L and row k of R have the same norm √σ_k.
            for k in 0..rows.min(cols) {
                let l = f.left.column(k).dot(&f.left.column(k)).sqrt();
                let r = f.right.row(k).dot(&f.right.row(k)).sqrt();
                assert!((l - r).abs() < 1e-4 * l.max(1.0), "k={k}: {l} vs {r}");
            }
        }
    }

    #[test]
    fn truncation_keeps_the_largest_singular_values() {
        // A rank-2 matrix is reproduced exactly by rank 2, not by rank 1.
        let a = matrix(8, 2);
        let b = matrix(2, 7);
        let m = a.dot(&b);
        let err = |r| {
            let f = factorize(&m, r, "test").unwrap();
            (&f.left.dot(&f.right) - &m)
                .iter()
                .fold(0f32, |x, v| x.max(v.abs()))
        };
        assert!(err(2) < 1e-5);
        assert!(err(1) > 1e-2);
    }

    /// Squared error of a rank-r approximation, with each column's error scaled by `cols`.
    fn weighted_error(m: &Array2<f32>, f: &Factors, cols: &[f32]) -> f32 {
        let d = &f.left.dot(&f.right) - m;
        d.indexed_iter()
            .map(|((_, j), v)| (v * cols[j]).powi(2))
            .sum()
    }

    #[test]
    fn weights_move_the_error_off_the_heavy_columns() {
        let m = matrix(8, 6);
        let cols = [30.0, 1.0, 1.0, 1.0, 1.0, 0.5];
        let plain = factorize(&m, 2, "t").unwrap();
        let weighted = factorize_weighted(&m, None, Some(&cols), 2, "t").unwrap();
        // Best in the weighted norm (Eckart–Young on the scaled matrix), so below the plain one.
        assert!(weighted_error(&m, &weighted, &cols) < 0.9 * weighted_error(&m, &plain, &cols));
        // Full rank still reproduces the matrix exactly.
        let full = factorize_weighted(&m, Some(&[2.0; 8]), Some(&cols), 6, "t").unwrap();
        let err = (&full.left.dot(&full.right) - &m)
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()));
        assert!(err < 1e-4, "{err}");
        // Weights of the wrong length or not positive are refused.
        assert!(factorize_weighted(&m, None, Some(&[1.0; 5]), 2, "t").is_err());
        assert!(factorize_weighted(&m, Some(&[0.0; 8]), None, 2, "t").is_err());
    }

    #[test]
    fn bad_rank_and_nan_are_errors() {
        let m = matrix(3, 4);
        assert!(factorize(&m, 0, "w").is_err());
        assert!(factorize(&m, 4, "w").is_err());
        let mut bad = m.clone();
        bad[(1, 1)] = f32::NAN;
        let e = factorize(&bad, 2, "layer x").unwrap_err().to_string();
        assert!(e.contains("layer x") && e.contains("NaN"), "{e}");
    }
}
