//! Encodings from a calibration histogram, by scheme (names as in AIMET):
//!
//! - `minmax` (AIMET `tf`): the exact observed `[min, max]`.
//! - `tf_enhanced` (AIMET's definition): a grid search over candidate (delta, offset) pairs
//!   minimising quantization noise + 3 × saturation (clipping) noise, on a histogram with every
//!   value at its bin's midpoint; a value saturates when its bin lies below (above) the bin
//!   holding the grid's first (last) value, at the distance between the two midpoints. The range
//!   is that of the occupied bins' left edges. Candidates: asymmetric, 17 deltas (1/16 … 17/16
//!   of the snapped min-max delta) × 21 offsets from `-(2^b-1)` to 0 (truncated toward zero),
//!   each clamped to the observed range and re-gridded (a candidate covering it on both sides is
//!   dropped), then the min-max grid; symmetric, the min-max grid then 101 deltas (1/100 …
//!   101/100 of `2·absmax/(2^b-1)`) at offset `-2^(b-1)` (unsigned symmetric: of `max/(2^b-1)`
//!   at offset 0). Activations use the streaming histogram; a weight (all values at hand) uses
//!   AIMET's: 1536 bins over 3× its span ([`tf_enhanced_values`]).
//! - `percentile(p)`: clip `(100 - p)`% of the values off *each* tail (AIMET's definition,
//!   `p` in 50..=100, interpolated inside a bin); a symmetric spec then takes the larger of the
//!   two clipped magnitudes. `percentile(100)` is `minmax`.
//! - `mse`: the clipping range `[lo, hi]` among histogram bin edges (and 0) whose encoding has
//!   the least expected squared fake-quant error — exhaustive on small histograms, a
//!   coarse-to-fine grid search on large ones; the min-max range is always a candidate.
//!
//! For `mse`, noise is evaluated exactly for data spread uniformly inside each bin (midpoints
//! misjudge bins wider than a quantization step, e.g. at 16 bit). Only the rounding pattern
//! differs from fake-quant: ties have measure zero.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::encoding::{Encoding, QuantSpec, MIN_SCALE};
use super::histogram::{Bin, Histogram};
use crate::{Error, Result};

/// AIMET's weight on saturation noise in `tf_enhanced`.
const TF_ENHANCED_GAMMA: f64 = 3.0;
/// Percentile used when the CLI says just `percentile`.
pub const DEFAULT_PERCENTILE: f64 = 99.99;
/// Candidates per side and round of the `mse` coarse-to-fine search.
const MSE_GRID: usize = 32;

/// A calibration scheme. Serialized snake_case (`"minmax"`, `"tf_enhanced"`, `"mse"`,
/// `{"percentile": 99.99}`); parsed from the CLI by [`FromStr`] (`tf` = `minmax`,
/// `percentile` = `percentile:99.99`, `percentile:99.9`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    #[serde(alias = "tf")]
    Minmax,
    TfEnhanced,
    Percentile(f64),
    Mse,
}

impl Scheme {
    /// Rejects a percentile outside 50..=100 (AIMET's bounds).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Scheme::Percentile(p) if !(50.0..=100.0).contains(&p) => Err(Error::input(format!(
                "percentile {p} is outside 50..=100 (it is the share of values kept on each side)"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Minmax => f.write_str("minmax"),
            Scheme::TfEnhanced => f.write_str("tf_enhanced"),
            Scheme::Percentile(p) => write!(f, "percentile:{p}"),
            Scheme::Mse => f.write_str("mse"),
        }
    }
}

impl FromStr for Scheme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        // `tf-enhanced` = `tf_enhanced`; the value is kept as given (`-5`, `9999e-2`).
        let (name, value) = match s.trim().split_once([':', '=']) {
            Some((name, value)) => (name, Some(value)),
            None => (s.trim(), None),
        };
        let name = name.to_ascii_lowercase().replace('-', "_");
        let scheme = match (name.as_str(), value) {
            ("minmax" | "tf", None) => Scheme::Minmax,
            ("tf_enhanced", None) => Scheme::TfEnhanced,
            ("mse", None) => Scheme::Mse,
            ("percentile", None) => Scheme::Percentile(DEFAULT_PERCENTILE),
            ("percentile", Some(v)) => Scheme::Percentile(v.trim().parse().map_err(|_| {
                Error::input(format!("percentile value '{v}' in '{s}' is not a number"))
            })?),
            _ => {
                return Err(Error::input(format!(
                    "unknown calibration scheme '{s}' (expected minmax, tf, tf_enhanced, \
                     percentile[:P] or mse)"
                )))
            }
        };
        scheme.validate()?;
        Ok(scheme)
    }
}

/// The encoding for the values a histogram saw. NaN or infinite values in the stream are an
/// input error (the caller adds the tensor's name); an empty histogram gives the tiny grid
/// around 0.
pub fn calibrate(h: &Histogram, scheme: Scheme, spec: QuantSpec) -> Result<Encoding> {
    scheme.validate()?;
    if h.non_finite() > 0 {
        return Err(Error::input(format!(
            "{} of {} values are NaN or infinite",
            h.non_finite(),
            h.non_finite() + h.count()
        )));
    }
    let Some((min, max)) = h.range() else {
        return Ok(spec.encoding(0.0, 0.0));
    };
    let (min, max) = (min as f64, max as f64);
    Ok(match scheme {
        Scheme::Minmax => spec.encoding_f64(min, max),
        Scheme::Percentile(p) if p >= 100.0 => spec.encoding_f64(min, max),
        Scheme::Percentile(p) => {
            let lo = h.quantile(1.0 - p / 100.0).unwrap_or(min);
            let hi = h.quantile(p / 100.0).unwrap_or(max);
            spec.encoding_f64(lo, hi)
        }
        Scheme::TfEnhanced => {
            // Bin widths are powers of two: start / width is the exact bin index.
            let (start, width, counts) = h.regular_bins();
            let weights: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
            tf_enhanced(start / width, width, &weights, None, spec)
        }
        Scheme::Mse => mse(&h.occupied().collect::<Vec<_>>(), min, max, spec),
    })
}

/// Expected squared fake-quant error per value over the histogram (data uniform inside each
/// bin); 0 for an empty histogram. For diagnostics and tests.
pub fn expected_sq_error(h: &Histogram, e: &Encoding) -> f64 {
    if h.count() == 0 {
        return 0.0;
    }
    noise(&h.occupied().collect::<Vec<_>>(), e, 1.0) / h.count() as f64
}

/// AIMET's histogram for a tensor seen whole (a weight), and for an activation's first
/// batch: its window is 3× the data span, centred on it, in this many bins, so the data
/// covers about a third of them.
pub const TF_ENHANCED_BINS: usize = 1536;

/// AIMET's `tf_enhanced` histogram window for data spanning `[min, max]` (finite, min < max):
/// 3× the span around its centre (computed in f32, as its C++ does), [`TF_ENHANCED_BINS`]
/// bins on the multiples of the bin width. Returns `(first, width)`: bin `i` holds
/// `[(first + i)·width, (first + i + 1)·width)`.
pub fn tf_enhanced_window(min: f32, max: f32) -> (f64, f64) {
    let center = (max + min) / 2.0;
    let (lo, hi) = (center - 3.0 * (center - min), center + 3.0 * (max - center));
    let width = (hi as f64 - lo as f64) / TF_ENHANCED_BINS as f64;
    ((lo as f64 / width).floor(), width)
}

/// The bin of `x` in a [`tf_enhanced_window`], `None` outside it (AIMET drops such values).
#[inline]
pub fn tf_enhanced_bin(x: f32, first: f64, width: f64) -> Option<usize> {
    let k = (x as f64 / width).floor() - first;
    (k >= 0.0 && k < TF_ENHANCED_BINS as f64).then_some(k as usize)
}

/// `tf_enhanced` for a tensor whose values are all at hand (a weight, or one channel of it),
/// on the histogram AIMET builds for it ([`tf_enhanced_window`], floor binning).
/// A constant tensor gets its min-max grid. Non-finite values are an input error.
pub fn tf_enhanced_values(values: &[f32], spec: QuantSpec) -> Result<Encoding> {
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in values {
        if !x.is_finite() {
            return Err(Error::input(format!("value {x} is not finite")));
        }
        min = min.min(x);
        max = max.max(x);
    }
    if values.is_empty() || min == max {
        return Ok(spec.encoding(min.min(0.0), max.max(0.0)));
    }
    let (first, width) = tf_enhanced_window(min, max);
    let mut counts = vec![0.0f64; TF_ENHANCED_BINS];
    for &x in values {
        if let Some(k) = tf_enhanced_bin(x, first, width) {
            counts[k] += 1.0;
        }
    }
    Ok(tf_enhanced(first, width, &counts, None, spec))
}

/// `tf_enhanced` on an AIMET activation density ([`super::batch_pdf::BatchPdf`]): bin `i`
/// holds `density[i]` on `[(first + i)·width, (first + i + 1)·width)`. As AIMET, a grid end
/// outside the window counts as the window's edge bin.
pub fn tf_enhanced_density(first: f64, width: f64, density: &[f64], spec: QuantSpec) -> Encoding {
    tf_enhanced(first, width, density, Some(density.len()), spec)
}

/// AIMET's `tf_enhanced` search on a regular histogram (`weights[i]`, a count or a density, on
/// `[(first + i)·width, (first + i + 1)·width)`). The range is that of the occupied bins' left
/// edges (widened to contain 0); every value counts at its bin's midpoint. `clamp_bins`: the
/// grid ends' bin indices are clamped to `0..bins` as AIMET does on its fixed window (the
/// streaming histogram's power-of-two window passes `None`: its index extends past the window).
fn tf_enhanced(
    first: f64,
    width: f64,
    weights: &[f64],
    clamp_bins: Option<usize>,
    spec: QuantSpec,
) -> Encoding {
    let occupied: Vec<(usize, f64)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0.0)
        .map(|(i, &c)| (i, c))
        .collect();
    let (Some(&(low_bin, _)), Some(&(high_bin, _))) = (occupied.first(), occupied.last()) else {
        return spec.encoding(0.0, 0.0);
    };
    let steps = spec.num_steps() as f64;
    // Edges as AIMET stores them ((first + i)·width), and its step between the first two.
    let edge = |i: usize| (first + i as f64) * width;
    let (start, step) = (edge(0), edge(1) - edge(0));
    let lo = edge(low_bin).min(0.0);
    let hi = edge(high_bin).max(0.0).max(lo + MIN_SCALE as f64 * steps);
    let scale = |d: f64| (d.max(MIN_SCALE as f64) as f32).max(MIN_SCALE);
    let mut candidates = Vec::new();
    if spec.symmetric() {
        // The min-max grid goes first so that ties (e.g. all-zero data) keep it.
        candidates.push(spec.encoding_f64(lo, hi));
        let (delta_max, offset) = if spec.uses_unsigned_grid(lo) {
            (hi / steps, 0)
        } else {
            (2.0 * hi.max(-lo) / steps, -(1i32 << (spec.bitwidth() - 1)))
        };
        for i in 1..=101 {
            candidates.push(spec.grid(scale(delta_max * i as f64 / 100.0), offset));
        }
    } else {
        asymmetric_candidates(lo as f32, hi as f32, spec, &mut candidates);
    }
    argmin(candidates, |e| {
        binned_noise(start, step, &occupied, clamp_bins, e)
    })
}

/// AIMET's asymmetric `tf_enhanced` candidates for the range `[lo, hi]`: the range snapped
/// to a grid, then 17 deltas (1/16 … 17/16 of its step) × 21 offsets from `-(2^b - 1)` to 0
/// (truncated toward zero); each candidate grid is clamped to the snapped range and
/// re-gridded, and one that covers it on both sides is skipped; the snapped grid itself is
/// the last candidate.
///
/// The arithmetic is AIMET's, in f32 where its C++ uses `float` (its `DTYPE`) and f64 where it
/// casts to `double`, with C's `round` (half away from zero). It matters: the candidates' ends
/// land on histogram bin edges, and which side of an edge an end falls on decides whether the
/// edge bin saturates. Computed in f64 the same search picked another grid for
/// `mbv2_digits`' `block1.dw.conv` at 4 bit (0.2462 instead of AIMET's 0.2409), which cost
/// 7.75 points on the BN-folded model.
fn asymmetric_candidates(lo: f32, hi: f32, spec: QuantSpec, out: &mut Vec<Encoding>) {
    let steps = spec.num_steps() as f32;
    let scale = |d: f32| {
        if d.is_finite() {
            d.max(MIN_SCALE)
        } else {
            MIN_SCALE
        }
    };
    let offset = |o: f32| o.clamp(-steps, 0.0) as i32;
    let observed_delta = ((hi as f64 - lo as f64) / steps as f64) as f32;
    let observed_offset = (lo / observed_delta).round();
    let observed_min = observed_delta * observed_offset;
    let observed_max = observed_delta * (observed_offset + steps);
    let mut f = 1.0f32 / 16.0;
    while f as f64 <= 1.0 + 1.0 / 16.0 {
        for i in 0..=20 {
            let delta = f * observed_delta;
            let test_offset = (-(steps as f64) + steps as f64 / 20.0 * i as f64) as i32;
            let test_min = delta * test_offset as f32;
            let test_max = delta * (test_offset as f32 + steps);
            if test_min < observed_min && test_max > observed_max {
                continue;
            }
            let (test_min, test_max) = (test_min.max(observed_min), test_max.min(observed_max));
            // AIMET skips only an empty range; a reversed one would be a negative step.
            if test_max <= test_min {
                continue;
            }
            let d = ((test_max as f64 - test_min as f64) / steps as f64) as f32;
            out.push(spec.grid(scale(d), offset((test_min / d).round())));
        }
        f += 1.0 / 16.0;
    }
    out.push(spec.grid(scale(observed_delta), offset(observed_offset)));
}

/// AIMET's `tf_enhanced` cost of an encoding on a regular histogram, every value at its bin's
/// midpoint: bins below the one holding the grid's first value (above the one holding its
/// last) saturate, at the squared distance between the two midpoints, weighted by
/// [`TF_ENHANCED_GAMMA`]; the others cost their rounding error.
fn binned_noise(
    start: f64,
    width: f64,
    occupied: &[(usize, f64)],
    clamp_bins: Option<usize>,
    e: &Encoding,
) -> f64 {
    // The grid's ends, the window start and the midpoints in f32 as AIMET computes them: grid
    // ends land on bin edges (the range is made of them), where the bin a grid end falls in
    // depends on that rounding.
    let d = e.scale;
    let grid_lo = e.offset as f32 * d;
    let grid_hi = (e.offset as f32 + e.num_steps() as f32) * d;
    let start32 = start as f32;
    // Bin indices on the histogram's grid extended past its window, so that a grid end
    // outside the window still saturates the values beyond it.
    let index = |x: f32| ((x - start32) as f64 / width).floor();
    let mid_f64 = |i: f64| start32 as f64 + i * width + width / 2.0;
    let mid = |i: f64| mid_f64(i) as f32 as f64;
    let clamp = |i: f64| match clamp_bins {
        Some(bins) => i.clamp(0.0, bins as f64 - 1.0),
        None => i,
    };
    let (lo_bin, hi_bin) = (clamp(index(grid_lo)), clamp(index(grid_hi)));
    let (lo_mid, hi_mid) = (mid(lo_bin), mid(hi_bin));
    let offset = e.offset as f32;
    let (mut saturation, mut rounding) = (0.0, 0.0);
    for &(i, c) in occupied {
        let i = i as f64;
        if i < lo_bin {
            saturation += c * (mid_f64(i) - lo_mid).powi(2);
        } else if i >= hi_bin {
            saturation += c * (mid_f64(i) - hi_mid).powi(2);
        } else {
            // Rounded and dequantized in f32, C's round, as AIMET does.
            let x = mid(i) as f32;
            let q = (x / d - offset).round();
            rounding += c * ((x - d * (q + offset)) as f64).powi(2);
        }
    }
    TF_ENHANCED_GAMMA * saturation + rounding
}

fn mse(bins: &[Bin], min: f64, max: f64, spec: QuantSpec) -> Encoding {
    let mut edges: Vec<f64> = bins.iter().flat_map(|b| [b.lo, b.hi]).collect();
    edges.push(0.0);
    let cost = |lo: f64, hi: f64| {
        let e = spec.encoding_f64(lo, hi);
        (noise(bins, &e, 1.0), e)
    };
    let minmax = cost(min, max);
    let best = if spec.symmetric() {
        // One threshold t: the grid depends on max(|lo|, |hi|) only.
        let mut t: Vec<f64> = if spec.uses_unsigned_grid(min) {
            edges.into_iter().filter(|&e| e > 0.0).collect()
        } else {
            edges
                .into_iter()
                .map(f64::abs)
                .filter(|&e| e > 0.0)
                .collect()
        };
        sort_dedup(&mut t);
        let unsigned = spec.uses_unsigned_grid(min);
        zoom_search(1, t.len(), minmax, |_, j| {
            cost(if unsigned { 0.0 } else { -t[j] }, t[j])
        })
    } else {
        let mut lows: Vec<f64> = edges.iter().copied().filter(|&e| e <= 0.0).collect();
        let mut highs: Vec<f64> = edges.into_iter().filter(|&e| e >= 0.0).collect();
        sort_dedup(&mut lows);
        sort_dedup(&mut highs);
        zoom_search(lows.len(), highs.len(), minmax, |i, j| {
            cost(lows[i], highs[j])
        })
    };
    best.1
}

fn sort_dedup(v: &mut Vec<f64>) {
    v.sort_by(f64::total_cmp);
    v.dedup();
}

/// Minimises `cost(i, j)` over `[0, ni) × [0, nj)`: exhaustively when both sides have at most
/// [`MSE_GRID`] candidates, else on a grid of that many per side, then again around the best
/// at a finer stride until the stride is 1. `start` wins ties.
fn zoom_search(
    ni: usize,
    nj: usize,
    start: (f64, Encoding),
    mut cost: impl FnMut(usize, usize) -> (f64, Encoding),
) -> (f64, Encoding) {
    let mut best = start;
    if ni == 0 || nj == 0 {
        return best;
    }
    let (mut wi, mut wj) = ((0, ni - 1), (0, nj - 1));
    let (mut bi, mut bj) = (0, nj - 1);
    loop {
        let si = (wi.1 - wi.0 + 1).div_ceil(MSE_GRID).max(1);
        let sj = (wj.1 - wj.0 + 1).div_ceil(MSE_GRID).max(1);
        for i in strided(wi, si) {
            for j in strided(wj, sj) {
                let c = cost(i, j);
                if c.0 < best.0 {
                    (best, bi, bj) = (c, i, j);
                }
            }
        }
        if si == 1 && sj == 1 {
            return best;
        }
        wi = (bi.saturating_sub(si), (bi + si).min(ni - 1));
        wj = (bj.saturating_sub(sj), (bj + sj).min(nj - 1));
    }
}

/// `lo, lo + step, …` and always `hi`.
fn strided((lo, hi): (usize, usize), step: usize) -> impl Iterator<Item = usize> {
    (lo..=hi)
        .step_by(step)
        .chain(((hi - lo) % step != 0).then_some(hi))
}

fn argmin(candidates: Vec<Encoding>, cost: impl Fn(&Encoding) -> f64) -> Encoding {
    let mut best = (f64::INFINITY, candidates[0]);
    for e in candidates {
        let c = cost(&e);
        if c < best.0 {
            best = (c, e);
        }
    }
    best.1
}

/// Total squared fake-quant error over the bins (count-weighted), values whose rounding falls
/// off the grid weighted by `gamma`.
fn noise(bins: &[Bin], e: &Encoding, gamma: f64) -> f64 {
    let d = e.scale as f64;
    let grid_lo = e.offset as f64 * d;
    let grid_hi = (e.offset as f64 + e.num_steps() as f64) * d;
    let g = Grid {
        d,
        grid_lo,
        grid_hi,
        clip_lo: grid_lo - d / 2.0,
        clip_hi: grid_hi + d / 2.0,
        gamma,
    };
    bins.iter()
        .map(|b| b.count as f64 * g.mean_sq(b.lo, b.hi))
        .sum()
}

struct Grid {
    d: f64,
    grid_lo: f64,
    grid_hi: f64,
    /// Below `clip_lo` (above `clip_hi`) rounding leaves the grid: saturation.
    clip_lo: f64,
    clip_hi: f64,
    gamma: f64,
}

impl Grid {
    /// Mean squared error of values uniform on `[a, b]` (a point when `a == b`).
    fn mean_sq(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            return self.point_sq(a);
        }
        let mut total = 0.0;
        if a < self.clip_lo {
            total += self.gamma * sq_integral(a, b.min(self.clip_lo), self.grid_lo);
        }
        let (u, v) = (a.max(self.clip_lo), b.min(self.clip_hi));
        if v > u {
            total += self.sawtooth_integral(u, v);
        }
        if b > self.clip_hi {
            total += self.gamma * sq_integral(a.max(self.clip_hi), b, self.grid_hi);
        }
        total / (b - a)
    }

    fn point_sq(&self, x: f64) -> f64 {
        if x < self.clip_lo {
            self.gamma * (x - self.grid_lo).powi(2)
        } else if x > self.clip_hi {
            self.gamma * (x - self.grid_hi).powi(2)
        } else {
            (x - self.d * (x / self.d).round()).powi(2)
        }
    }

    /// ∫ r(x)² over [u, v], r the rounding error to multiples of d. Per period of length d the
    /// integral is d³/12; inside a period it is ((x - m·d)³ + d³/8) / 3.
    fn sawtooth_integral(&self, u: f64, v: f64) -> f64 {
        let d = self.d;
        let (mu, mv) = ((u / d).round(), (v / d).round());
        let partial = |x: f64, m: f64| (x - m * d).powi(3) / 3.0;
        d.powi(3) / 12.0 * (mv - mu) + partial(v, mv) - partial(u, mu)
    }
}

/// ∫ (x - g)² over [u, v].
fn sq_integral(u: f64, v: f64, g: f64) -> f64 {
    ((v - g).powi(3) - (u - g).powi(3)) / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_data::{fake_quant_mse, Rng};

    fn spec(bits: u8, symmetric: bool) -> QuantSpec {
        QuantSpec::new(bits, symmetric).unwrap()
    }

    fn hist(data: &[f32]) -> Histogram {
        let mut h = Histogram::default();
        h.add(data);
        h
    }

    /// N(0, 1) activations plus a few huge outliers.
    fn gaussian_with_outliers(seed: u64, n: usize, outliers: &[f32]) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut data: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        data.extend(outliers);
        data
    }

    #[test]
    fn scheme_names_parse_and_print() {
        assert_eq!("minmax".parse::<Scheme>().unwrap(), Scheme::Minmax);
        assert_eq!("tf".parse::<Scheme>().unwrap(), Scheme::Minmax);
        assert_eq!("TF_Enhanced".parse::<Scheme>().unwrap(), Scheme::TfEnhanced);
        assert_eq!("tf-enhanced".parse::<Scheme>().unwrap(), Scheme::TfEnhanced);
        assert_eq!("mse".parse::<Scheme>().unwrap(), Scheme::Mse);
        assert_eq!(
            "percentile".parse::<Scheme>().unwrap(),
            Scheme::Percentile(99.99)
        );
        assert_eq!(
            "percentile:99.9".parse::<Scheme>().unwrap(),
            Scheme::Percentile(99.9)
        );
        assert_eq!(
            "percentile=95".parse::<Scheme>().unwrap(),
            Scheme::Percentile(95.0)
        );
        for bad in [
            "entropy",
            "percentile:abc",
            "percentile:101",
            "percentile:10",
            "mse:3",
        ] {
            let err = bad.parse::<Scheme>().unwrap_err();
            assert!(matches!(err, Error::Input(_)), "{bad}");
        }
        for s in [
            Scheme::Minmax,
            Scheme::TfEnhanced,
            Scheme::Mse,
            Scheme::Percentile(99.9),
        ] {
            assert_eq!(s.to_string().parse::<Scheme>().unwrap(), s);
        }
    }

    #[test]
    fn scheme_serde_is_snake_case() {
        let json = serde_json::to_string(&[
            Scheme::Minmax,
            Scheme::TfEnhanced,
            Scheme::Mse,
            Scheme::Percentile(99.5),
        ])
        .unwrap();
        assert_eq!(
            json,
            r#"["minmax","tf_enhanced","mse",{"percentile":99.5}]"#
        );
        let tf: Scheme = serde_json::from_str(r#""tf""#).unwrap();
        assert_eq!(tf, Scheme::Minmax);
    }

    #[test]
    fn minmax_uses_the_exact_range() {
        let h = hist(&[-0.7, 0.1, 2.3]);
        let e = calibrate(&h, Scheme::Minmax, spec(8, false)).unwrap();
        assert_eq!(e, Encoding::from_range(-0.7, 2.3, 8, false).unwrap());
    }

    #[test]
    fn percentile_100_is_minmax_and_lower_clips_each_tail() {
        let data = gaussian_with_outliers(1, 200_000, &[60.0, -45.0, 80.0]);
        let h = hist(&data);
        for s in [spec(8, false), spec(8, true), spec(4, false)] {
            assert_eq!(
                calibrate(&h, Scheme::Percentile(100.0), s).unwrap(),
                calibrate(&h, Scheme::Minmax, s).unwrap()
            );
        }
        let e = calibrate(&h, Scheme::Percentile(99.9), spec(8, false)).unwrap();
        // N(0,1) 0.1% tails sit at ±3.09.
        assert!(
            (e.min + 3.09).abs() < 0.1 && (e.max - 3.09).abs() < 0.1,
            "{e:?}"
        );
        assert!(calibrate(&h, Scheme::Percentile(30.0), spec(8, false)).is_err());
    }

    #[test]
    fn tf_enhanced_clips_outliers_and_beats_minmax() {
        // Clipping pays (even at 3x weight) only when outliers are rare enough: at 8 bit a
        // range of 80 costs ~(80/255)^2/12 per value; clipping one outlier of 40 to ~4 costs
        // ~3 * 36^2 / n.
        let data = gaussian_with_outliers(2, 4_000_000, &[40.0, -40.0]);
        let h = hist(&data);
        for s in [spec(8, false), spec(8, true), spec(4, false), spec(4, true)] {
            let minmax = calibrate(&h, Scheme::Minmax, s).unwrap();
            let tfe = calibrate(&h, Scheme::TfEnhanced, s).unwrap();
            assert!(
                tfe.max - tfe.min <= (minmax.max - minmax.min) / 3.0,
                "{s:?}: {tfe:?} vs {minmax:?}"
            );
            assert!(tfe.min < -2.0 && tfe.max > 2.0, "{s:?}: {tfe:?}");
            let (mse_tfe, mse_mm) = (fake_quant_mse(&tfe, &data), fake_quant_mse(&minmax, &data));
            assert!(mse_tfe < mse_mm, "{s:?}: {mse_tfe} vs {mse_mm}");
        }
    }

    /// Weight-like channels (from `Rng`) and the asymmetric `tf_enhanced` encodings AIMET
    /// computes for them: aimet-onnx 2.42.0, `libpymo.BlockTensorQuantizer([1], bw,
    /// QUANTIZATION_TF_ENHANCED)`, `updateStats(x)`, `computeEncodings(False)`, run on the same
    /// arrays regenerated in Python. (scale, offset) at 4 and at 8 bit.
    #[test]
    fn tf_enhanced_weights_match_aimet() {
        #[allow(clippy::type_complexity)]
        let cases: [(u64, usize, bool, f32, f32, [(f64, i32); 2]); 6] = [
            (
                11,
                144,
                false,
                0.1,
                0.0,
                [(0.03643481805920601, -8), (0.0021363955456763506, -132)],
            ),
            (
                12,
                144,
                true,
                0.05,
                0.01,
                [(0.02814565785229206, -8), (0.0016556269256398082, -131)],
            ),
            (
                13,
                576,
                false,
                0.2,
                -0.03,
                [(0.0685560405254364, -8), (0.0043015554547309875, -138)],
            ),
            (
                14,
                1152,
                true,
                0.02,
                0.0,
                [(0.014160213991999626, -6), (0.0010251739295199513, -108)],
            ),
            (
                15,
                64,
                true,
                0.3,
                0.05,
                [(0.15367849171161652, -5), (0.009031048975884914, -81)],
            ),
            (
                16,
                9,
                false,
                0.5,
                0.0,
                [(0.07363173365592957, -4), (0.004331278149038553, -73)],
            ),
        ];
        for (seed, n, laplace, scale, shift, expected) in cases {
            let mut rng = Rng::new(seed);
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    let x = if laplace { rng.laplace() } else { rng.normal() };
                    x * scale + shift
                })
                .collect();
            if seed == 11 {
                // The Python regeneration starts with the same value.
                assert_eq!(data[0], 0.047251403);
            }
            for ((bits, (aimet_scale, aimet_offset)), s) in [4, 8]
                .into_iter()
                .zip(expected)
                .zip([spec(4, false), spec(8, false)])
            {
                let e = tf_enhanced_values(&data, s).unwrap();
                assert_eq!(e.offset, aimet_offset, "seed {seed}, {bits} bit: {e:?}");
                assert!(
                    (e.scale as f64 - aimet_scale).abs() <= 1e-5 * aimet_scale,
                    "seed {seed}, {bits} bit: {} vs AIMET {aimet_scale}",
                    e.scale
                );
            }
        }
    }

    /// `mbv2_digits`' `block1.dw.conv` weight after BN folding (144 values, bit-exact), where
    /// a `tf_enhanced` search in f64 picked another 4-bit grid than AIMET's float arithmetic
    /// (scale 0.2462 instead of 0.2409: grid ends on bin edges fall the other way). AIMET's
    /// encodings: aimet-onnx 2.42.0 `libpymo.BlockTensorQuantizer([1], bw,
    /// QUANTIZATION_TF_ENHANCED)`, `updateStats(w)`, `computeEncodings(False)`.
    #[test]
    fn tf_enhanced_matches_aimet_where_grid_ends_meet_bin_edges() {
        const BITS: [u32; 144] = [
            0x3fc2e736, 0x3e7d9477, 0x40038166, 0xbf7618c8, 0xbf1ea5ce, 0xbfad838c, 0x3eaddb8c,
            0xbfdf721a, 0x3ddd96c2, 0x3f7cf026, 0x3f07f866, 0x3f0c0937, 0x3f92afdf, 0xbf5a7841,
            0xbefd74db, 0xbfcd2227, 0x3d8b02ed, 0x3f305333, 0xbe847796, 0x3f9b33a3, 0x3f657a44,
            0xbeee286b, 0xbcaf47a5, 0xbf981564, 0x3f0ef029, 0x3f6816c2, 0x3f9fd774, 0xbf21db43,
            0x3e6747d9, 0xbe0e2f6a, 0xbe1b721c, 0x3f7aa6e6, 0x3f1cd3c5, 0x3e20b38d, 0x3f279384,
            0xbee6553f, 0xbcc1208a, 0xbdc708c7, 0xbe710d32, 0x3ec91d07, 0xbf39e24f, 0xbed1623c,
            0xbd696747, 0xbdca836a, 0xbed43f27, 0xbf1f065b, 0xbdf69e1e, 0x3f6810ae, 0x3f6e9159,
            0xbf8f3700, 0xbe18a641, 0x3fbce77c, 0x3f24510e, 0x3e42723e, 0x3f7240c5, 0x3f6b6df8,
            0x3bf1ee4c, 0xbfe64532, 0x3f84164c, 0xbf4b88d2, 0x3fa5fe46, 0x3e8367dd, 0x3f45f19a,
            0xbe0e13ef, 0xbde6a3da, 0xbd2d95e2, 0xbe0ad689, 0x3c546b0f, 0xbd9a24aa, 0xbe99ad69,
            0xbe739d67, 0xbf3eac79, 0x3f96d3f4, 0x3ea687dc, 0xbf8db5d0, 0x3efc83d9, 0xbf861e94,
            0x3f0f1bfd, 0xbe7f84f2, 0xbdfd0c06, 0xbfc22aab, 0x3dfbdd99, 0xbde5e323, 0x3e85ec7b,
            0x3f0f68d6, 0x3ea6ddc3, 0x3f73985c, 0xbf210807, 0xbf754a71, 0x3f824fad, 0xbfc8a6f1,
            0xbecc16aa, 0x3f3d25f3, 0x3e8a6ce4, 0x3f25c264, 0xbf07dd9a, 0xbdcacde2, 0xbf374813,
            0xbef38f89, 0x3f5b280f, 0xbf986d47, 0x3f25c0cf, 0x3eac595b, 0x3fc7a9c3, 0xbf1ea234,
            0xbd83bdce, 0xbfc91832, 0xbf2ab98c, 0xbeed506d, 0xbeda8238, 0xbd25ae8c, 0xbf4ecd36,
            0x3ed3a4f8, 0x3f9b7e0e, 0x3de02cbb, 0xbf0127f1, 0xbeca4b49, 0x3dd30888, 0xbf55643e,
            0xbe874392, 0x3fd51dbe, 0xbe556932, 0x3b982ada, 0xbf856a32, 0xbe1aa02c, 0xbfb0dc6d,
            0xbd9ebdd4, 0x3f8ec9a3, 0xbf009c40, 0x3fa0596b, 0xbfc0901f, 0xbe40030b, 0x3dd52d36,
            0x3f4d17fe, 0xbe8fa146, 0xbf90bc89, 0x3f00cf6f, 0xbedd422e, 0xbe81a975, 0x3f04c12b,
            0x3e08ccb8, 0xbf9e1386, 0x3f416ea5, 0x3fc4a71a,
        ];
        let data: Vec<f32> = BITS.iter().map(|&b| f32::from_bits(b)).collect();
        for (bits, aimet_scale, aimet_offset) in
            [(4, 0.2408599704504013, -7), (8, 0.015112781897187233, -120)]
        {
            let e = tf_enhanced_values(&data, spec(bits, false)).unwrap();
            assert_eq!(e.offset, aimet_offset, "{bits} bit: {e:?}");
            assert_eq!(e.scale, aimet_scale as f32, "{bits} bit: {e:?}");
        }
    }

    #[test]
    fn tf_enhanced_keeps_the_whole_range_of_a_uniform_distribution() {
        // Nothing to clip: uniform data wants the full range.
        let data: Vec<f32> = (0..100_000)
            .map(|i| -1.0 + 3.0 * i as f32 / 99_999.0)
            .collect();
        let h = hist(&data);
        let e = calibrate(&h, Scheme::TfEnhanced, spec(8, false)).unwrap();
        assert!(e.min <= -0.95 && e.max >= 1.95, "{e:?}");
    }

    #[test]
    fn mse_never_worse_than_minmax() {
        let mut rng = Rng::new(3);
        let laplace: Vec<f32> = (0..100_000).map(|_| rng.laplace()).collect();
        let relu: Vec<f32> = laplace.iter().map(|&x| x.max(0.0) * 2.0).collect();
        for data in [
            laplace,
            relu,
            gaussian_with_outliers(4, 100_000, &[30.0, -20.0]),
        ] {
            let h = hist(&data);
            let unsigned = spec(8, true).with_unsigned_symmetric(true);
            for s in [
                spec(8, false),
                spec(8, true),
                spec(4, false),
                spec(4, true),
                unsigned,
            ] {
                let minmax = calibrate(&h, Scheme::Minmax, s).unwrap();
                let best = calibrate(&h, Scheme::Mse, s).unwrap();
                assert!(expected_sq_error(&h, &best) <= expected_sq_error(&h, &minmax));
                let (got, base) = (fake_quant_mse(&best, &data), fake_quant_mse(&minmax, &data));
                assert!(got <= base * 1.001, "{s:?}: {got} vs {base}");
            }
        }
    }

    /// Every (lo, hi) pair of candidate edges, costed with the same analytic noise.
    fn brute_force_mse(bins: &[Bin], s: QuantSpec) -> f64 {
        let mut edges: Vec<f64> = bins.iter().flat_map(|b| [b.lo, b.hi]).collect();
        edges.push(0.0);
        let mut best = f64::INFINITY;
        for &lo in edges.iter().filter(|&&e| e <= 0.0) {
            for &hi in edges.iter().filter(|&&e| e >= 0.0) {
                for (l, u) in [(lo, hi), (-hi, hi), (lo, -lo)] {
                    if s.symmetric() || (l, u) == (lo, hi) {
                        best = best.min(noise(bins, &s.encoding_f64(l, u), 1.0));
                    }
                }
            }
        }
        best
    }

    #[test]
    fn mse_matches_brute_force_on_a_small_histogram() {
        let mut rng = Rng::new(5);
        let data: Vec<f32> = (0..5000).map(|_| rng.laplace() + 0.4).collect();
        let mut h = Histogram::new(16);
        h.add(&data);
        let bins: Vec<Bin> = h.occupied().collect();
        let unsigned = spec(3, true).with_unsigned_symmetric(true);
        for s in [
            spec(3, false),
            spec(4, false),
            spec(3, true),
            spec(2, false),
            unsigned,
        ] {
            let got = noise(&bins, &calibrate(&h, Scheme::Mse, s).unwrap(), 1.0);
            let best = brute_force_mse(&bins, s);
            assert!(
                got <= best * (1.0 + 1e-12),
                "{s:?}: {got} vs brute force {best}"
            );
        }
    }

    #[test]
    fn mse_coarse_to_fine_search_comes_close_to_exhaustive() {
        let mut rng = Rng::new(8);
        let data: Vec<f32> = (0..50_000).map(|_| rng.laplace() * 0.7 - 0.3).collect();
        let mut h = Histogram::new(256);
        h.add(&data);
        let bins: Vec<Bin> = h.occupied().collect();
        for s in [spec(4, false), spec(8, false), spec(4, true)] {
            let got = noise(&bins, &calibrate(&h, Scheme::Mse, s).unwrap(), 1.0);
            let best = brute_force_mse(&bins, s);
            assert!(got <= best * 1.02, "{s:?}: {got} vs exhaustive {best}");
        }
    }

    /// Midpoint-rule integral of the true fake-quant error, independent of `Grid`.
    fn numeric_sq_error(bins: &[Bin], e: &Encoding) -> f64 {
        let steps = 2000;
        let mut total = 0.0;
        for b in bins {
            let mut s = 0.0;
            for k in 0..steps {
                let x = b.lo + (b.hi - b.lo) * (k as f64 + 0.5) / steps as f64;
                s += (e.fake_quant(x as f32) as f64 - x).powi(2);
            }
            total += b.count as f64 * s / steps as f64;
        }
        total
    }

    #[test]
    fn expected_error_matches_numeric_integration() {
        let mut rng = Rng::new(6);
        let data: Vec<f32> = (0..20_000).map(|_| rng.normal() * 1.5).collect();
        let mut h = Histogram::new(64);
        h.add(&data);
        let bins: Vec<Bin> = h.occupied().collect();
        for (lo, hi, bits) in [
            (-2.0, 2.0, 4),
            (-5.0, 5.0, 8),
            (-1.0, 0.5, 3),
            (-6.0, 6.0, 16),
        ] {
            let e = Encoding::from_range(lo, hi, bits, false).unwrap();
            let exact = expected_sq_error(&h, &e);
            let numeric = numeric_sq_error(&bins, &e) / h.count() as f64;
            assert!(
                (exact - numeric).abs() <= 0.01 * numeric + 1e-12,
                "{bits} bit [{lo}, {hi}]: {exact} vs {numeric}"
            );
            // And close to fake-quant on the samples themselves.
            let sampled = fake_quant_mse(&e, &data);
            assert!(
                (exact - sampled).abs() <= 0.15 * sampled,
                "{exact} vs {sampled}"
            );
        }
    }

    #[test]
    fn degenerate_histograms_never_give_nan() {
        let all_zero = hist(&[0.0; 100]);
        let constant = hist(&[2.5; 100]);
        let negative = hist(&[-1e-20; 10]);
        let empty = Histogram::default();
        let single = hist(&[-3.0]);
        let schemes = [
            Scheme::Minmax,
            Scheme::TfEnhanced,
            Scheme::Percentile(99.0),
            Scheme::Mse,
        ];
        for h in [&all_zero, &constant, &negative, &empty, &single] {
            for scheme in schemes {
                for s in [
                    spec(8, false),
                    spec(8, true),
                    spec(2, true),
                    spec(16, false),
                ] {
                    let e = calibrate(h, scheme, s).unwrap();
                    e.validate().unwrap();
                    assert!(e.min.is_finite() && e.max.is_finite(), "{scheme} {e:?}");
                    assert_eq!(e.fake_quant(0.0), 0.0);
                    assert!(!expected_sq_error(h, &e).is_nan());
                }
            }
        }
        // A constant tensor keeps its value (to within half a step) under every scheme.
        for scheme in schemes {
            let e = calibrate(&constant, scheme, spec(8, false)).unwrap();
            assert!(
                (e.fake_quant(2.5) - 2.5).abs() <= e.scale,
                "{scheme}: {e:?}"
            );
        }
    }

    #[test]
    fn non_finite_data_is_an_input_error() {
        let h = hist(&[1.0, f32::NAN, 2.0, f32::INFINITY]);
        let err = calibrate(&h, Scheme::Minmax, spec(8, false)).unwrap_err();
        assert!(matches!(err, Error::Input(_)));
        assert!(err.to_string().contains("2 of 4"), "{err}");
    }
}
