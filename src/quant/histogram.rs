//! A streaming histogram for activation calibration: one pass, samples never stored.
//!
//! Bins have a power-of-two width `w = 2^e` and sit on the global grid `[k·w, (k+1)·w)`.
//! When new data falls outside the current window of `bins` bins, the width doubles as often
//! as needed, which merges adjacent pairs of bins *exactly* (`floor(floor(x/w)/2) =
//! floor(x/2w)`), and the window slides. The width is always the smallest power of two whose
//! window holds `[min, max]`, so it depends only on the exact min/max seen, not on the batch
//! order: a stream, its concatenation and a merge of per-thread parts give identical
//! histograms. The data span always covers between about half and all of the bins.
//!
//! (AIMET's C++ histogram instead fixes its range at 3× the first batch and drops later values
//! that fall outside; its PyTorch v2 observer re-bins by splitting bins proportionally, which
//! is approximate. Power-of-two merging is both adaptive and exact.)

use ndarray::{ArrayBase, Data, Dimension};

/// AIMET's histogram size.
pub const DEFAULT_BINS: usize = 2048;

/// Below f32's smallest subnormal (2^-149): at this width every f32 has an exact bin index.
const MIN_EXP: i32 = -150;
/// Bin indices stay below 2^60 in magnitude so they fit an i64 with room to spare.
const MAX_INDEX_LOG2: i32 = 60;

/// Counts of values per bin, plus the exact min, max and count. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    /// Bin width is 2^exp.
    exp: i32,
    /// Global index of `counts[0]`; always `floor(min / width)`.
    first: i64,
    /// Exact finite min and max; meaningful when `count > 0`.
    min: f32,
    max: f32,
    count: u64,
    non_finite: u64,
}

/// One occupied bin, its edges clipped to the exact data range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(DEFAULT_BINS)
    }
}

impl Histogram {
    /// An empty histogram of `bins` bins (at least 2).
    pub fn new(bins: usize) -> Self {
        assert!(bins >= 2, "a histogram needs at least 2 bins, got {bins}");
        Histogram {
            counts: vec![0; bins],
            exp: MIN_EXP,
            first: 0,
            min: 0.0,
            max: 0.0,
            count: 0,
            non_finite: 0,
        }
    }

    /// Adds a batch. NaN and ±inf are not binned, only counted ([`Histogram::non_finite`]),
    /// so the caller can report them.
    pub fn add(&mut self, data: &[f32]) {
        let (lo, hi, non_finite) = scan(data);
        if non_finite > 0 {
            // Rare (and an error for calibration): bin the finite values only.
            self.non_finite += non_finite;
            let finite: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
            return self.add(&finite);
        }
        if data.is_empty() {
            return;
        }
        self.include_range(lo, hi);
        let inv_width = exp2(-self.exp);
        let last = self.counts.len() as i64 - 1;
        for &x in data {
            // In range by construction; the clamp only guards the invariant.
            let k = (floor_i64(x as f64 * inv_width) - self.first).clamp(0, last);
            self.counts[k as usize] += 1;
        }
        self.count += data.len() as u64;
    }

    /// Adds every element of an array, in any layout.
    pub fn add_array<S, D>(&mut self, data: &ArrayBase<S, D>)
    where
        S: Data<Elem = f32>,
        D: Dimension,
    {
        match data.as_slice_memory_order() {
            Some(slice) => self.add(slice),
            None => {
                // Strided views: copy in modest chunks rather than the whole tensor.
                let mut chunk = Vec::with_capacity(4096);
                for &x in data.iter() {
                    chunk.push(x);
                    if chunk.len() == chunk.capacity() {
                        self.add(&chunk);
                        chunk.clear();
                    }
                }
                self.add(&chunk);
            }
        }
    }

    /// Combines another histogram (e.g. one per worker thread) into this one. The result is
    /// the histogram of both streams. Panics if the bin counts differ.
    pub fn merge(&mut self, other: &Histogram) {
        assert_eq!(
            self.counts.len(),
            other.counts.len(),
            "merging histograms of different bin counts"
        );
        self.non_finite += other.non_finite;
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            let non_finite = self.non_finite;
            *self = other.clone();
            self.non_finite = non_finite;
            return;
        }
        self.include_range(other.min, other.max);
        let shift = self.exp - other.exp;
        debug_assert!(shift >= 0);
        let last = self.counts.len() as i64 - 1;
        for (i, &c) in other.counts.iter().enumerate() {
            if c > 0 {
                let k = shr_floor(other.first + i as i64, shift) - self.first;
                self.counts[k.clamp(0, last) as usize] += c;
            }
        }
        self.count += other.count;
    }

    /// Number of finite values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Number of NaN and infinite values seen (and not binned).
    pub fn non_finite(&self) -> u64 {
        self.non_finite
    }

    /// Exact min and max of the finite values, or None before any.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Current bin width.
    pub fn bin_width(&self) -> f64 {
        exp2(self.exp)
    }

    /// The raw bins: `(start, width, counts)`, `counts[i]` values in
    /// `[start + i·width, start + (i+1)·width)` (edges not clipped to the data range).
    pub fn regular_bins(&self) -> (f64, f64, &[u64]) {
        let width = self.bin_width();
        (self.first as f64 * width, width, &self.counts)
    }

    /// The occupied bins in increasing order, edges clipped to `[min, max]` (so the first bin
    /// starts at min and the last ends at max; a constant stream is one bin with lo == hi).
    pub fn occupied(&self) -> impl Iterator<Item = Bin> + '_ {
        let width = self.bin_width();
        let (min, max) = (self.min as f64, self.max as f64);
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(move |(i, &count)| {
                let k = (self.first + i as i64) as f64;
                Bin {
                    lo: (k * width).max(min),
                    hi: ((k + 1.0) * width).min(max),
                    count,
                }
            })
    }

    /// The value below which a fraction `p` (0..=1) of the data lies, interpolating linearly
    /// inside a bin. `quantile(0)` is min and `quantile(1)` is max exactly; None when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        if p == 1.0 {
            return Some(self.max as f64);
        }
        let target = p * self.count as f64;
        let mut below = 0.0;
        for bin in self.occupied() {
            let c = bin.count as f64;
            if below + c >= target {
                let frac = ((target - below) / c).clamp(0.0, 1.0);
                return Some(bin.lo + frac * (bin.hi - bin.lo));
            }
            below += c;
        }
        Some(self.max as f64)
    }

    /// Grows the window (and width) to hold `[lo, hi]` on top of what was seen.
    fn include_range(&mut self, lo: f32, hi: f32) {
        let (min, max) = if self.count == 0 {
            (lo, hi)
        } else {
            (self.min.min(lo), self.max.max(hi))
        };
        let bins = self.counts.len();
        let exp = if self.count == 0 {
            required_exp(min, max, bins)
        } else {
            required_exp(min, max, bins).max(self.exp)
        };
        let first = (min as f64 * exp2(-exp)).floor() as i64;
        if self.count > 0 && (exp != self.exp || first != self.first) {
            let shift = exp - self.exp;
            let mut counts = vec![0; bins];
            for (i, &c) in self.counts.iter().enumerate() {
                if c > 0 {
                    let k = shr_floor(self.first + i as i64, shift) - first;
                    counts[k.clamp(0, bins as i64 - 1) as usize] += c;
                }
            }
            self.counts = counts;
        }
        self.exp = exp;
        self.first = first;
        self.min = min;
        self.max = max;
    }
}

/// The smallest bin-width exponent whose window of `bins` bins holds `[min, max]` and keeps
/// bin indices small. Monotone in the range, which is what makes the histogram order-free.
fn required_exp(min: f32, max: f32, bins: usize) -> i32 {
    let (min, max) = (min as f64, max as f64);
    let fits = |e: i32| {
        let inv = exp2(-e);
        let span = (max * inv).floor() - (min * inv).floor();
        let big = min.abs().max(max.abs()) * inv;
        span <= (bins - 1) as f64 && big < exp2(MAX_INDEX_LOG2)
    };
    // Start from a lower bound (the estimates undershoot by design) and step up.
    let mut e = MIN_EXP;
    let abs_max = min.abs().max(max.abs());
    if abs_max > 0.0 {
        e = e.max(abs_max.log2().floor() as i32 - MAX_INDEX_LOG2 - 2);
    }
    let span = max - min;
    if span > 0.0 {
        e = e.max((span / bins as f64).log2().floor() as i32 - 2);
    }
    while !fits(e) {
        e += 1;
    }
    e
}

/// Min, max (NaN ignored) and the number of non-finite values, in eight independent lanes so
/// the compiler can vectorize it.
fn scan(data: &[f32]) -> (f32, f32, u64) {
    const LANES: usize = 8;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut bad = [0u64; LANES];
    let chunks = data.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let x = chunk[i];
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
            bad[i] += !x.is_finite() as u64;
        }
    }
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    for x in lo.into_iter().chain(rest.iter().copied()) {
        min = if x < min { x } else { min };
    }
    for x in hi.into_iter().chain(rest.iter().copied()) {
        max = if x > max { x } else { max };
    }
    let non_finite =
        bad.iter().sum::<u64>() + rest.iter().filter(|x| !x.is_finite()).count() as u64;
    (min, max, non_finite)
}

/// `floor(a)` for |a| < 2^63: a truncating cast and a correction, which (unlike `f64::floor`
/// on baseline x86-64) compiles to a few instructions instead of a libm call.
#[inline]
fn floor_i64(a: f64) -> i64 {
    let t = a as i64;
    t - ((t as f64) > a) as i64
}

/// floor(k / 2^shift): the index bin k merges into when the width grows by 2^shift.
fn shr_floor(k: i64, shift: i32) -> i64 {
    if shift >= 63 {
        if k < 0 {
            -1
        } else {
            0
        }
    } else {
        k >> shift
    }
}

/// 2^n as f64, exact for the exponents used here (|n| < 1023).
fn exp2(n: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&n));
    f64::from_bits(((1023 + n) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_data::Rng;

    fn gaussian(seed: u64, n: usize, sigma: f32, mean: f32) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| mean + sigma * rng.normal()).collect()
    }

    #[test]
    fn scan_finds_min_max_and_non_finite_in_any_lane() {
        assert_eq!(scan(&[]).2, 0);
        assert_eq!(scan(&[2.0]), (2.0, 2.0, 0));
        assert_eq!(scan(&[3.0, -1.0, 0.5]), (-1.0, 3.0, 0));
        let naive = |v: &[f32]| {
            let finite = v.iter().copied().filter(|x| !x.is_nan());
            let min = finite.clone().fold(f32::INFINITY, f32::min);
            let max = finite.fold(f32::NEG_INFINITY, f32::max);
            (min, max, v.iter().filter(|x| !x.is_finite()).count() as u64)
        };
        for n in [7, 8, 9, 16, 17, 100] {
            for at in 0..n {
                let mut v: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25).collect();
                for planted in [-9.0, 9.0, f32::NAN, f32::NEG_INFINITY, f32::INFINITY] {
                    v[at] = planted;
                    assert_eq!(scan(&v), naive(&v), "n {n}, {planted} at {at}");
                }
            }
        }
    }

    #[test]
    fn exp2_is_exact() {
        assert_eq!(exp2(0), 1.0);
        assert_eq!(exp2(3), 8.0);
        assert_eq!(exp2(-2), 0.25);
        assert_eq!(exp2(-150), 2f64.powi(-150));
    }

    #[test]
    fn tracks_exact_min_max_count_and_non_finite() {
        let mut h = Histogram::new(64);
        assert_eq!(h.range(), None);
        assert_eq!(h.quantile(0.5), None);
        h.add(&[1.5, -0.25, f32::NAN, 3.0, f32::INFINITY]);
        h.add(&[]);
        h.add(&[f32::NEG_INFINITY]);
        assert_eq!(h.range(), Some((-0.25, 3.0)));
        assert_eq!(h.count(), 3);
        assert_eq!(h.non_finite(), 3);
        assert_eq!(h.occupied().map(|b| b.count).sum::<u64>(), 3);
        assert_eq!(h.quantile(0.0), Some(-0.25));
        assert_eq!(h.quantile(1.0), Some(3.0));
    }

    #[test]
    fn window_holds_the_span_in_at_least_half_the_bins() {
        let data = gaussian(1, 10_000, 2.0, 0.5);
        let mut h = Histogram::default();
        h.add(&data);
        let (lo, hi) = h.range().unwrap();
        let used = (hi - lo) as f64 / h.bin_width();
        assert!(used <= DEFAULT_BINS as f64, "{used}");
        assert!(used >= DEFAULT_BINS as f64 / 2.0 - 2.0, "{used}");
        let first = h.occupied().next().unwrap();
        let last = h.occupied().last().unwrap();
        assert_eq!(first.lo, lo as f64);
        assert_eq!(last.hi, hi as f64);
    }

    #[test]
    fn a_stream_equals_its_concatenation_exactly() {
        // Batches whose range grows both ways, including a first batch of one constant.
        let mut batches = vec![vec![0.3f32; 5]];
        batches.push(gaussian(2, 1000, 0.01, 0.3));
        batches.push(gaussian(3, 1000, 1.0, 0.0));
        batches.push(gaussian(4, 1000, 50.0, -20.0));
        batches.push(vec![1e4, -3.0]);
        batches.push(gaussian(5, 1000, 0.5, 1.0));
        let mut stream = Histogram::new(256);
        for b in &batches {
            stream.add(b);
        }
        let mut whole = Histogram::new(256);
        whole.add(&batches.concat());
        assert_eq!(stream, whole);
        assert_eq!(stream.count(), 4007);
    }

    #[test]
    fn merge_equals_single_pass() {
        let parts: Vec<Vec<f32>> = (0..4)
            .map(|i| gaussian(10 + i, 3000, 1.0 + i as f32, i as f32 * 3.0 - 4.0))
            .collect();
        let mut single = Histogram::default();
        for p in &parts {
            single.add(p);
        }
        // Two "threads" with interleaved parts, merged in either order.
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.add(&parts[0]);
        a.add(&parts[2]);
        b.add(&parts[3]);
        b.add(&parts[1]);
        b.add(&[f32::NAN]);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        single.add(&[f32::NAN]);
        assert_eq!(ab, single);
        assert_eq!(ba, single);
        // Merging with empty histograms changes nothing.
        let mut e = Histogram::default();
        e.merge(&single);
        assert_eq!(e, single);
        e.merge(&Histogram::default());
        assert_eq!(e, single);
    }

    #[test]
    fn quantiles_track_the_data_within_a_bin() {
        let data = gaussian(7, 100_000, 1.0, 0.0);
        let mut h = Histogram::default();
        h.add(&data);
        let mut sorted = data.clone();
        sorted.sort_by(f32::total_cmp);
        let w = h.bin_width();
        let n = data.len() as f64;
        for p in [0.0001, 0.01, 0.25, 0.5, 0.9, 0.9999] {
            let q = h.quantile(p).unwrap();
            // Within one bin: at least p·n samples lie at or below q + w, at most p·n below q - w.
            let at_or_below = sorted.partition_point(|&x| (x as f64) <= q + w) as f64;
            let below = sorted.partition_point(|&x| (x as f64) < q - w) as f64;
            assert!(at_or_below >= p * n && below <= p * n, "p {p}: {q}");
        }
    }

    #[test]
    fn strided_arrays_bin_like_slices() {
        let a = ndarray::Array2::from_shape_fn((50, 40), |(i, j)| (i as f32 - 20.0) * j as f32);
        let mut strided = Histogram::new(128);
        strided.add_array(&a.t());
        let mut flat = Histogram::new(128);
        flat.add(a.as_slice().unwrap());
        assert_eq!(strided, flat);
    }

    #[test]
    fn extreme_and_tiny_values_stay_finite() {
        let mut h = Histogram::new(16);
        h.add(&[f32::MAX, f32::MIN, 0.0]);
        assert_eq!(h.count(), 3);
        assert_eq!(h.occupied().map(|b| b.count).sum::<u64>(), 3);
        let mut t = Histogram::new(16);
        t.add(&[f32::MIN_POSITIVE / 8.0, 0.0, -1e-45]);
        assert_eq!(t.occupied().map(|b| b.count).sum::<u64>(), 3);
        t.add(&[1e30]);
        assert_eq!(t.occupied().map(|b| b.count).sum::<u64>(), 4);
        // The same values in one batch give the same histogram.
        let mut once = Histogram::new(16);
        once.add(&[f32::MIN_POSITIVE / 8.0, 0.0, -1e-45, 1e30]);
        assert_eq!(once, t);
        assert_eq!(shr_floor(-5, 1), -3);
        for a in [
            -2.5,
            -2.0,
            -1e-300,
            -0.0,
            0.0,
            0.3,
            2.0,
            2.7,
            -4.5e15,
            4.5e15 + 1.0,
        ] {
            assert_eq!(floor_i64(a), a.floor() as i64, "{a}");
        }
        assert_eq!(shr_floor(-5, 200), -1);
        assert_eq!(shr_floor(5, 200), 0);
        for b in t.occupied() {
            assert!(b.lo.is_finite() && b.hi.is_finite() && b.lo <= b.hi);
        }
    }
}
