//! AIMET's activation statistic for `tf_enhanced`: a density over a window fixed by the first
//! batch, averaged over batches.
//!
//! AIMET (aimet-onnx's `tf_enhanced` activation quantizer) sets its histogram window from the
//! first batch it sees — 3× that batch's span around its centre, [`TF_ENHANCED_BINS`] bins
//! ([`tf_enhanced_window`], the same window it builds for a weight) — and never moves it:
//! later values outside are dropped. Each batch's histogram becomes a density (counts over the
//! batch's value count, dropped values included) and the densities are averaged with equal
//! weight per batch. An all-zero batch before the window exists is skipped.
//!
//! The streaming [`super::Histogram`] is exact and order-free; this statistic is neither, on
//! purpose: with it qsteer's `tf_enhanced` activation grids are AIMET's on the same batches.
//! Batches are [`AIMET_BATCH`] samples in dataset order (what AIMET is given by
//! tests/peers), whatever batch the model runs. Workers may see parts of one batch: the parts
//! are kept per batch index until the batch is whole, so the result does not depend on which
//! worker saw what.

use std::collections::BTreeMap;

use super::calibrate::{
    tf_enhanced_bin, tf_enhanced_density, tf_enhanced_window, TF_ENHANCED_BINS,
};
use super::encoding::{Encoding, QuantSpec};

/// Samples per AIMET calibration batch.
pub const AIMET_BATCH: usize = 32;

/// The window of a [`BatchPdf`]: bin `i` holds `[(first + i)·width, (first + i + 1)·width)`;
/// batches before `batch` (the one that set it) do not count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PdfWindow {
    pub first: f64,
    pub width: f64,
    pub batch: usize,
}

impl PdfWindow {
    /// AIMET's window for batch `batch` with finite range `[min, max]`; `None` for an all-zero
    /// batch (AIMET waits for the next). A constant batch gets a span of 0.01, as in AIMET.
    pub fn from_range(min: f32, max: f32, batch: usize) -> Option<PdfWindow> {
        if !(min.is_finite() && max.is_finite()) || min > max || (min == 0.0 && max == 0.0) {
            return None;
        }
        let max = if min == max { max.max(min + 0.01) } else { max };
        let (first, width) = tf_enhanced_window(min, max);
        Some(PdfWindow {
            first,
            width,
            batch,
        })
    }
}

/// Counts of one batch seen so far (its parts may come from several workers).
#[derive(Clone, Debug, PartialEq)]
struct Partial {
    counts: Vec<u64>,
    values: u64,
    samples: usize,
    expected: usize,
}

/// AIMET's averaged activation density. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPdf {
    window: PdfWindow,
    density_sum: Vec<f64>,
    batches: u64,
    partial: BTreeMap<usize, Partial>,
}

impl BatchPdf {
    pub fn new(window: PdfWindow) -> BatchPdf {
        BatchPdf {
            window,
            density_sum: vec![0.0; TF_ENHANCED_BINS],
            batches: 0,
            partial: BTreeMap::new(),
        }
    }

    pub fn window(&self) -> PdfWindow {
        self.window
    }

    /// Adds `samples` samples' values (`data`) of batch `batch`, which has `expected` samples
    /// in all. Batches before the window's are ignored; non-finite values are dropped (the
    /// streaming histogram reports them).
    pub fn add(&mut self, batch: usize, expected: usize, samples: usize, data: &[f32]) {
        if batch < self.window.batch {
            return;
        }
        let PdfWindow { first, width, .. } = self.window;
        let part = self.partial.entry(batch).or_insert_with(|| Partial {
            counts: vec![0; TF_ENHANCED_BINS],
            values: 0,
            samples: 0,
            expected,
        });
        for &x in data {
            if let Some(k) = tf_enhanced_bin(x, first, width) {
                part.counts[k] += 1;
            }
        }
        part.values += data.len() as u64;
        part.samples += samples;
        if part.samples >= part.expected {
            self.complete(batch);
        }
    }

    /// Combines the batches another worker saw (same window) into this one.
    pub fn merge(&mut self, other: &BatchPdf) {
        debug_assert_eq!(self.window, other.window);
        for (d, o) in self.density_sum.iter_mut().zip(&other.density_sum) {
            *d += o;
        }
        self.batches += other.batches;
        for (&batch, theirs) in &other.partial {
            let part = self.partial.entry(batch).or_insert_with(|| Partial {
                counts: vec![0; TF_ENHANCED_BINS],
                values: 0,
                samples: 0,
                expected: theirs.expected,
            });
            for (c, o) in part.counts.iter_mut().zip(&theirs.counts) {
                *c += o;
            }
            part.values += theirs.values;
            part.samples += theirs.samples;
            if part.samples >= part.expected {
                self.complete(batch);
            }
        }
    }

    /// Turns batch `batch`'s counts into a density and adds it to the average.
    fn complete(&mut self, batch: usize) {
        let Some(part) = self.partial.remove(&batch) else {
            return;
        };
        if part.values == 0 {
            return;
        }
        let n = part.values as f64;
        for (d, &c) in self.density_sum.iter_mut().zip(&part.counts) {
            *d += c as f64 / n;
        }
        self.batches += 1;
    }

    /// The averaged density (batches left incomplete, e.g. by a short last batch count, count
    /// as they are); `None` before any value.
    pub fn density(&self) -> Option<Vec<f64>> {
        let mut done = self.clone();
        let open: Vec<usize> = done.partial.keys().copied().collect();
        for b in open {
            done.complete(b);
        }
        (done.batches > 0).then(|| {
            let n = done.batches as f64;
            done.density_sum.iter().map(|d| d / n).collect()
        })
    }

    /// AIMET's `tf_enhanced` encoding of this density; `None` before any value.
    pub fn tf_enhanced(&self, spec: QuantSpec) -> Option<Encoding> {
        let density = self.density()?;
        Some(tf_enhanced_density(
            self.window.first,
            self.window.width,
            &density,
            spec,
        ))
    }
}

/// The AIMET batch of sample `i`, and how many samples that batch has in a set of `n`.
pub fn aimet_batch_of(i: usize, n: usize) -> (usize, usize) {
    let b = i / AIMET_BATCH;
    (b, (n - b * AIMET_BATCH).min(AIMET_BATCH))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_data::Rng;

    fn spec(bits: u8) -> QuantSpec {
        QuantSpec::new(bits, false).unwrap()
    }

    #[test]
    fn window_is_three_spans_of_the_first_batch_and_later_outliers_are_dropped() {
        let w = PdfWindow::from_range(0.0, 1.0, 0).unwrap();
        assert!((w.first * w.width - -1.0).abs() < 1e-6, "{w:?}");
        assert!((w.width * TF_ENHANCED_BINS as f64 - 3.0).abs() < 1e-6);
        let mut pdf = BatchPdf::new(w);
        pdf.add(0, 2, 2, &[0.25, 0.75]);
        // 5.0 lies outside the window: dropped, but it still counts in its batch's total.
        pdf.add(1, 2, 2, &[0.25, 5.0]);
        let d = pdf.density().unwrap();
        let total: f64 = d.iter().sum();
        assert!((total - 0.75).abs() < 1e-12, "{total}");
        let bin = tf_enhanced_bin(0.25, w.first, w.width).unwrap();
        assert!((d[bin] - 0.5).abs() < 1e-12);
        assert_eq!(PdfWindow::from_range(0.0, 0.0, 0), None);
        let constant = PdfWindow::from_range(2.0, 2.0, 3).unwrap();
        assert!((constant.width * TF_ENHANCED_BINS as f64 - 0.03).abs() < 1e-6);
    }

    #[test]
    fn batches_weigh_equally_whatever_their_size() {
        let w = PdfWindow::from_range(0.0, 1.0, 0).unwrap();
        let mut pdf = BatchPdf::new(w);
        pdf.add(0, 1, 1, &[0.1; 1000]);
        pdf.add(1, 1, 1, &[0.9; 10]);
        let d = pdf.density().unwrap();
        let (a, b) = (
            tf_enhanced_bin(0.1, w.first, w.width).unwrap(),
            tf_enhanced_bin(0.9, w.first, w.width).unwrap(),
        );
        assert!((d[a] - 0.5).abs() < 1e-12 && (d[b] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn parts_of_batches_from_several_workers_merge_to_the_single_stream() {
        let mut rng = Rng::new(9);
        let data: Vec<Vec<f32>> = (0..6)
            .map(|b| (0..40).map(|_| rng.normal() * (1.0 + b as f32)).collect())
            .collect();
        let w = PdfWindow::from_range(-2.0, 2.0, 0).unwrap();
        // One stream: three batches of two parts (samples) each.
        let mut single = BatchPdf::new(w);
        for (i, part) in data.iter().enumerate() {
            single.add(i / 2, 2, 1, part);
        }
        // Two workers, each with one part of every batch, merged either way.
        let (mut a, mut b) = (BatchPdf::new(w), BatchPdf::new(w));
        for (i, part) in data.iter().enumerate() {
            let worker = if i % 2 == 0 { &mut a } else { &mut b };
            worker.add(i / 2, 2, 1, part);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        let expected = single.density().unwrap();
        for got in [ab.density().unwrap(), ba.density().unwrap()] {
            for (x, y) in got.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-15);
            }
        }
        assert_eq!(
            ab.tf_enhanced(spec(8)).unwrap(),
            single.tf_enhanced(spec(8)).unwrap()
        );
    }

    #[test]
    fn batches_before_the_window_do_not_count() {
        let w = PdfWindow::from_range(0.0, 1.0, 1).unwrap();
        let mut pdf = BatchPdf::new(w);
        pdf.add(0, 1, 1, &[0.0; 100]);
        assert_eq!(pdf.density(), None);
        pdf.add(1, 1, 1, &[0.5]);
        let d = pdf.density().unwrap();
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// A hand-made stream of four batches — the first sets the window, the second is small
    /// (it weighs as much as the others) with an outlier far outside the window (dropped), the
    /// last is all zeros — and the encodings AIMET computes on it: aimet-onnx 2.42.0,
    /// `libpymo.BlockTensorQuantizer([1], bw, QUANTIZATION_TF_ENHANCED)`, `updateStats` per
    /// batch, `computeEncodings(False)`. The same values as one batch give AIMET (and the
    /// streaming histogram) a much wider grid (8 bit: scale 0.1216, offset -8).
    #[test]
    fn multi_batch_activation_encodings_match_aimet() {
        let b0: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 64) as f32 * 0.0625 - 1.0)
            .collect();
        let mut b1: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 + 0.25).collect();
        b1[7] = 30.0;
        let b2: Vec<f32> = (0..200)
            .map(|j| (j % 50) as f32 * 0.02f32 - 0.1f32)
            .collect();
        let b3 = vec![0.0f32; 16];
        let batches = [b0, b1, b2, b3];
        let (lo, hi) = batches[0]
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        let mut pdf = BatchPdf::new(PdfWindow::from_range(lo, hi, 0).unwrap());
        for (b, values) in batches.iter().enumerate() {
            pdf.add(b, 1, 1, values);
        }
        for (bits, aimet_scale, aimet_offset) in
            [(8, 0.016677677631378174, -60), (4, 0.26816317439079285, -3)]
        {
            let e = pdf.tf_enhanced(spec(bits)).unwrap();
            assert_eq!(e.offset, aimet_offset, "{bits} bit: {e:?}");
            assert_eq!(e.scale, aimet_scale as f32, "{bits} bit: {e:?}");
        }
        // A first batch of zeros sets no window; AIMET then takes the next batch's
        // (scale 0.007835477590560913, offset 0 at 8 bit).
        let window = PdfWindow::from_range(0.0, 0.0, 0)
            .or(PdfWindow::from_range(0.5, 2.0, 1))
            .unwrap();
        let mut pdf = BatchPdf::new(window);
        pdf.add(0, 1, 1, &[0.0; 10]);
        pdf.add(1, 1, 1, &[0.5, 1.0, 1.5, 2.0]);
        pdf.add(2, 1, 1, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let e = pdf.tf_enhanced(spec(8)).unwrap();
        assert_eq!((e.scale, e.offset), (0.007835477590560913f64 as f32, 0));
    }

    #[test]
    fn aimet_batches_of_a_set() {
        assert_eq!(aimet_batch_of(0, 200), (0, 32));
        assert_eq!(aimet_batch_of(31, 200), (0, 32));
        assert_eq!(aimet_batch_of(192, 200), (6, 8));
        assert_eq!(aimet_batch_of(5, 10), (0, 10));
    }
}
