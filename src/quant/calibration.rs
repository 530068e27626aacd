//! Activation calibration: ONE streaming pass of the FP32 model over the calibration set,
//! capturing every activation point, one [`Histogram`] per point filled batch by batch (the
//! activations of the whole set are never held), then an [`Encoding`] per point from its
//! histogram with the chosen [`Scheme`].
//!
//! The histograms are returned on their own ([`collect_histograms`]) so several schemes or
//! bitwidths can be tried without running the model again.

use std::collections::BTreeMap;

use super::batch_pdf::{aimet_batch_of, BatchPdf, PdfWindow, AIMET_BATCH};
use super::calibrate::{calibrate, Scheme};
use super::encoding::{Encoding, QuantSpec};
use super::histogram::{Histogram, DEFAULT_BINS};
use super::points::QuantPoint;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{check_fits, sample_shapes};
use crate::model::{attrs, Model};
use crate::runtime::{run_together_fold, CompiledModel, RunOptions};
use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewD, Axis, Slice};

#[derive(Debug, Clone, Copy)]
pub struct CalibrationOptions {
    pub run: RunOptions,
    /// Bins per histogram.
    pub bins: usize,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions {
            run: RunOptions {
                batch_size: 16,
                ..RunOptions::default()
            },
            bins: DEFAULT_BINS,
        }
    }
}

/// One histogram per point, keyed by value name, from one pass of `model` over `data`.
/// Graph-input points are binned straight from the dataset. `progress(done, total)` counts
/// samples; cancelled at the next batch boundary.
pub fn collect_histograms(
    model: &Model,
    points: &[QuantPoint],
    data: &Dataset,
    options: CalibrationOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BTreeMap<String, Histogram>> {
    collect_statistics(model, points, data, options, cancel, progress).map(|(h, _)| h)
}

/// The per-channel ranges of one activation value over the calibration samples: along the
/// channel axis 1 and the last axis (the channel axis of `[N, T, C]` sequences), and for a
/// Concat along its axis too, so a tensor joining very different ranges under one encoding
/// can be found (see [`ChannelStats::spread`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// Per axis (never the batch axis 0), `[min, max]` of each index along it. An axis
    /// whose extent changed between batches is dropped.
    pub axes: BTreeMap<usize, Vec<[f32; 2]>>,
    /// For a Concat's output: its axis and each input's name and extent along it (filled
    /// from the model's shapes; empty when they are unknown).
    pub concat: Option<(usize, Vec<(String, usize)>)>,
}

/// How unevenly a value's range is spread: over the channels of one axis, or over the
/// inputs of a Concat.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RangeSpread {
    /// The axis, or for a Concat the axis its inputs are joined on.
    pub axis: usize,
    /// Widest range over the median range along `axis` (for a Concat: widest input range
    /// over the narrowest).
    pub ratio: f64,
    /// `"channels"` or `"concat inputs"`.
    pub over: String,
    /// For a Concat: `[min, max]` of each input, in input order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(String, [f32; 2])>,
}

impl ChannelStats {
    /// The axes measured on a value of this rank (never the batch axis 0).
    fn axes_for(rank: usize, concat_axis: Option<i64>) -> Vec<usize> {
        let mut axes: Vec<usize> = Vec::new();
        if rank >= 2 {
            axes.push(1);
            axes.push(rank - 1);
        }
        if let Some(a) = concat_axis {
            let a = if a < 0 { a + rank as i64 } else { a };
            if (1..rank as i64).contains(&a) {
                axes.push(a as usize);
            }
        }
        axes.sort_unstable();
        axes.dedup();
        axes
    }

    /// Adds one batch: each axis's ranges in one pass over memory (the activations of big
    /// models are tens of MB per sample; walking the last axis lane by lane crossed all of
    /// it once per index and dominated calibration).
    fn add(&mut self, array: ArrayViewD<f32>, concat_axis: Option<i64>, first: bool) {
        let array = array.as_standard_layout();
        let data = array.as_slice().unwrap_or_default();
        let shape = array.shape();
        for axis in Self::axes_for(shape.len(), concat_axis) {
            let ranges = axis_ranges(data, shape, axis);
            self.include(axis, ranges, first);
        }
    }

    fn include(&mut self, axis: usize, ranges: Vec<[f32; 2]>, first: bool) {
        if first {
            self.axes.insert(axis, ranges);
        } else if let Some(known) = self.axes.get_mut(&axis) {
            if known.len() != ranges.len() {
                self.axes.remove(&axis);
                return;
            }
            for (k, r) in known.iter_mut().zip(&ranges) {
                k[0] = k[0].min(r[0]);
                k[1] = k[1].max(r[1]);
            }
        }
    }

    /// Combines the statistics of another part of the stream (e.g. another worker's
    /// batches): the same result as having seen both parts in one stream, in any order.
    fn merge(&mut self, other: &ChannelStats) {
        let axes: Vec<usize> = self.axes.keys().copied().collect();
        for axis in axes {
            match other.axes.get(&axis) {
                Some(ranges) => self.include(axis, ranges.clone(), false),
                None => {
                    self.axes.remove(&axis);
                }
            }
        }
    }

    /// For a Concat's output: each input's range along the joined axis, and the widest over
    /// the narrowest. `None` when the inputs' extents or ranges are unknown.
    pub fn concat_spread(&self) -> Option<RangeSpread> {
        let width = |r: &[f32; 2]| (r[1] - r[0]).max(0.0) as f64;
        let (axis, inputs) = self.concat.as_ref()?;
        let ranges = self.axes.get(axis)?;
        let total: usize = inputs.iter().map(|(_, n)| n).sum();
        if total != ranges.len() || inputs.len() < 2 {
            return None;
        }
        let mut at = 0;
        let per_input: Vec<(String, [f32; 2])> = inputs
            .iter()
            .map(|(name, n)| {
                let r = ranges[at..at + n]
                    .iter()
                    .fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], r| {
                        [lo.min(r[0]), hi.max(r[1])]
                    });
                at += n;
                (name.clone(), r)
            })
            .collect();
        let widths: Vec<f64> = per_input.iter().map(|(_, r)| width(r)).collect();
        let widest = widths.iter().copied().fold(0.0, f64::max);
        let narrowest = widths.iter().copied().fold(f64::INFINITY, f64::min);
        let ratio = widest / narrowest;
        (narrowest > 0.0 && ratio.is_finite()).then(|| RangeSpread {
            axis: *axis,
            ratio,
            over: "concat inputs".into(),
            inputs: per_input,
        })
    }

    /// The most uneven spread of this value's range: over a Concat's inputs, or over the
    /// channels of axis 1 or the last axis (max over median). `None` with nothing measured.
    pub fn spread(&self) -> Option<RangeSpread> {
        let width = |r: &[f32; 2]| (r[1] - r[0]).max(0.0) as f64;
        let mut best: Option<RangeSpread> = None;
        let mut consider = |s: RangeSpread| {
            if s.ratio.is_finite() && best.as_ref().is_none_or(|b| s.ratio > b.ratio) {
                best = Some(s);
            }
        };
        if let Some(s) = self.concat_spread() {
            consider(s);
        }
        for (&axis, ranges) in &self.axes {
            if ranges.len() < 2 {
                continue;
            }
            let mut widths: Vec<f64> = ranges.iter().map(width).collect();
            widths.sort_by(|a, b| a.total_cmp(b));
            let median = widths[widths.len() / 2];
            let widest = widths[widths.len() - 1];
            if median > 0.0 {
                consider(RangeSpread {
                    axis,
                    ratio: widest / median,
                    over: "channels".into(),
                    inputs: vec![],
                });
            }
        }
        best
    }
}

/// `[min, max]` of each index along `axis` of a standard-layout array (`data`, `shape`),
/// NaN ignored, in one pass over memory.
fn axis_ranges(data: &[f32], shape: &[usize], axis: usize) -> Vec<[f32; 2]> {
    let extent = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut ranges = vec![[f32::INFINITY, f32::NEG_INFINITY]; extent];
    if extent == 0 || inner == 0 {
        return ranges;
    }
    if inner == 1 {
        for row in data.chunks_exact(extent) {
            for (r, &x) in ranges.iter_mut().zip(row) {
                r[0] = if x < r[0] { x } else { r[0] };
                r[1] = if x > r[1] { x } else { r[1] };
            }
        }
    } else {
        for block in data.chunks_exact(extent * inner) {
            for (r, lane) in ranges.iter_mut().zip(block.chunks_exact(inner)) {
                let (lo, hi) = min_max(lane);
                r[0] = if lo < r[0] { lo } else { r[0] };
                r[1] = if hi > r[1] { hi } else { r[1] };
            }
        }
    }
    ranges
}

/// Min and max of a slice, NaN ignored, in eight independent lanes so it vectorizes.
fn min_max(data: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let chunks = data.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            let x = chunk[i];
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
        }
    }
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in lo.iter().chain(rest) {
        min = if x < min { x } else { min };
    }
    for &x in hi.iter().chain(rest) {
        max = if x > max { x } else { max };
    }
    (min, max)
}

/// [`collect_histograms`], and in the same pass each point's per-channel ranges
/// ([`ChannelStats`]; a Concat's input extents are left for the caller, who has the shapes).
pub fn collect_statistics(
    model: &Model,
    points: &[QuantPoint],
    data: &Dataset,
    options: CalibrationOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(BTreeMap<String, Histogram>, BTreeMap<String, ChannelStats>)> {
    collect_calibration(model, points, data, options, cancel, progress)
        .map(|s| (s.histograms, s.channel_stats))
}

/// What one calibration pass measures, per activation point (keyed by value name).
#[derive(Debug, Clone, Default)]
pub struct CalibrationStatistics {
    pub histograms: BTreeMap<String, Histogram>,
    pub channel_stats: BTreeMap<String, ChannelStats>,
    /// AIMET's per-batch density ([`BatchPdf`]), which `tf_enhanced` activations are
    /// calibrated from; absent for a point whose first batches were all zero.
    pub pdfs: BTreeMap<String, BatchPdf>,
}

/// How many AIMET batches the window search looks at before giving up on a point that is
/// still all zero (its `tf_enhanced` grid then comes from the streaming histogram).
const WINDOW_SEARCH_BATCHES: usize = 4;

/// [`collect_statistics`] and, in the same pass, each point's [`BatchPdf`]. The windows come
/// first, from a run of the first [`AIMET_BATCH`] samples (a further one for a point that
/// was all zero there).
pub fn collect_calibration(
    model: &Model,
    points: &[QuantPoint],
    data: &Dataset,
    options: CalibrationOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<CalibrationStatistics> {
    if data.is_empty() {
        return Err(Error::input("the calibration set has no samples"));
    }
    check_fits(model, data)?;
    let bins = options.bins.max(2);
    let input_names: Vec<String> = model.inputs().iter().map(|i| i.name.clone()).collect();
    // the dataset's input feeding each model input (named files list in their own order)
    let data_order = data.model_order(&input_names)?;
    let mut histograms: BTreeMap<String, Histogram> = BTreeMap::new();
    let mut stats: BTreeMap<String, ChannelStats> = BTreeMap::new();
    let mut concat_axes: BTreeMap<String, i64> = BTreeMap::new();
    let mut pdfs: BTreeMap<String, BatchPdf> = BTreeMap::new();
    let mut captured: Vec<String> = Vec::new();
    for p in points {
        if histograms.contains_key(&p.value) {
            continue;
        }
        if let Some(n) = p.node.map(|n| &model.graph().node[n]) {
            if n.op_type == "Concat" {
                concat_axes.insert(p.value.clone(), attrs::int(n, "axis").unwrap_or(0));
            }
        }
        let mut h = Histogram::new(bins);
        if let Some(k) = input_names.iter().position(|n| *n == p.value) {
            let input = data_order.get(k).and_then(|&d| data.inputs.get(d));
            let input = input.ok_or_else(|| {
                Error::input(format!("the dataset has no values for input '{}'", p.value))
            })?;
            // The calibration subset (bounded by calibration_size), read once.
            let values = input.data.read_all()?;
            h.add_array(&values);
            let mut s = ChannelStats::default();
            s.add(values.view(), None, true);
            stats.insert(p.value.clone(), s);
            if let Some(pdf) = input_pdf(&values) {
                pdfs.insert(p.value.clone(), pdf);
            }
        } else {
            captured.push(p.value.clone());
        }
        histograms.insert(p.value.clone(), h);
    }
    cancel.check()?;
    if captured.is_empty() {
        progress(data.len(), data.len());
        return Ok(CalibrationStatistics {
            histograms,
            channel_stats: stats,
            pdfs,
        });
    }
    let compiled = CompiledModel::compile(
        model,
        &sample_shapes(model, data)?,
        options.run.batch_size,
        &captured,
    )?;
    // Position of each captured value among the compiled outputs (a captured graph output is
    // not listed twice).
    let slots: Vec<(usize, String)> = captured
        .iter()
        .map(|name| {
            compiled
                .output_names()
                .iter()
                .position(|o| o == name)
                .map(|k| (k, name.clone()))
                .ok_or_else(|| Error::runtime(format!("value '{name}' was not captured")))
        })
        .collect::<Result<_>>()?;
    let windows = first_batch_windows(&compiled, &slots, data)?;
    cancel.check()?;
    let n = data.len();
    // Each worker bins its own batches (histograms and ranges are exact under merging; the
    // densities keep a batch's parts apart until it is whole), so the statistics run in
    // parallel with each other and with the model.
    let (parts, _) = run_together_fold(
        &[&compiled],
        data,
        options.run,
        cancel,
        progress,
        &|| {
            let h: BTreeMap<String, Histogram> = slots
                .iter()
                .map(|(_, name)| (name.clone(), Histogram::new(bins)))
                .collect();
            let d: BTreeMap<String, BatchPdf> = windows
                .iter()
                .map(|(name, w)| (name.clone(), BatchPdf::new(*w)))
                .collect();
            (h, BTreeMap::<String, ChannelStats>::new(), d)
        },
        &|(part_h, part_s, part_d), from, mut outputs| {
            let outputs = outputs.pop().unwrap_or_default();
            for (k, name) in &slots {
                let out = outputs
                    .get(*k)
                    .ok_or_else(|| Error::runtime(format!("no output for '{name}'")))?;
                if let Some(h) = part_h.get_mut(name) {
                    h.add_array(out);
                }
                if let Some(pdf) = part_d.get_mut(name) {
                    add_batch_rows(pdf, out, from, n);
                }
                let first = !part_s.contains_key(name);
                part_s.entry(name.clone()).or_default().add(
                    out.view(),
                    concat_axes.get(name).copied(),
                    first,
                );
            }
            Ok(())
        },
    )?;
    for (part_h, part_s, part_d) in parts {
        for (name, h) in part_h {
            if let Some(total) = histograms.get_mut(&name) {
                total.merge(&h);
            }
        }
        for (name, d) in part_d {
            match pdfs.get_mut(&name) {
                Some(total) => total.merge(&d),
                None => {
                    pdfs.insert(name, d);
                }
            }
        }
        for (name, s) in part_s {
            match stats.get_mut(&name) {
                Some(total) => total.merge(&s),
                None => {
                    stats.insert(name, s);
                }
            }
        }
    }
    Ok(CalibrationStatistics {
        histograms,
        channel_stats: stats,
        pdfs,
    })
}

/// Each captured value's AIMET window (see [`super::batch_pdf`]): from the first AIMET batch
/// in which it is not all zero, among the first [`WINDOW_SEARCH_BATCHES`].
fn first_batch_windows(
    compiled: &CompiledModel,
    slots: &[(usize, String)],
    data: &Dataset,
) -> Result<BTreeMap<String, PdfWindow>> {
    let (n, batch) = (data.len(), compiled.batch());
    let mut windows = BTreeMap::new();
    for b in 0..WINDOW_SEARCH_BATCHES {
        let (start, end) = (b * AIMET_BATCH, ((b + 1) * AIMET_BATCH).min(n));
        if start >= n || windows.len() == slots.len() {
            break;
        }
        let mut ranges: BTreeMap<&str, (f32, f32)> = BTreeMap::new();
        let mut from = start;
        while from < end {
            let to = (from + batch).min(end);
            let outputs = compiled.run_slice(data, from, to, batch)?;
            for (k, name) in slots {
                if windows.contains_key(name) {
                    continue;
                }
                let Some(out) = outputs.get(*k) else { continue };
                let out = out.as_standard_layout();
                let (lo, hi) = min_max(out.as_slice().unwrap_or_default());
                let r = ranges
                    .entry(name.as_str())
                    .or_insert((f32::INFINITY, f32::NEG_INFINITY));
                *r = (r.0.min(lo), r.1.max(hi));
            }
            from = to;
        }
        for (name, (lo, hi)) in ranges {
            if let Some(w) = PdfWindow::from_range(lo, hi, b) {
                windows.insert(name.to_string(), w);
            }
        }
    }
    Ok(windows)
}

/// Adds the values of samples `from..from + k` (`out`, batch axis 0) to `pdf`, each part to
/// its AIMET batch. A value without the batch axis counts as one part of `from`'s batch.
fn add_batch_rows(pdf: &mut BatchPdf, out: &ArrayD<f32>, from: usize, n: usize) {
    let rows = out.shape().first().copied().unwrap_or(0);
    let to = (from + rows).min(n);
    if out.ndim() == 0 || rows == 0 || from + rows > n {
        let (batch, expected) = aimet_batch_of(from.min(n.saturating_sub(1)), n);
        let values = out.as_standard_layout();
        pdf.add(batch, expected, 1, values.as_slice().unwrap_or_default());
        return;
    }
    let mut s = from;
    while s < to {
        let (batch, expected) = aimet_batch_of(s, n);
        let end = ((batch + 1) * AIMET_BATCH).min(to);
        let part = out.slice_axis(Axis(0), Slice::from(s - from..end - from));
        let part = part.as_standard_layout();
        pdf.add(
            batch,
            expected,
            end - s,
            part.as_slice().unwrap_or_default(),
        );
        s = end;
    }
}

/// The density of a graph input's calibration values (`[N, …]`, read whole).
fn input_pdf(values: &ArrayD<f32>) -> Option<BatchPdf> {
    let n = values.shape().first().copied().unwrap_or(0);
    if values.ndim() == 0 || n == 0 {
        return None;
    }
    let rows = |b: usize| {
        let (start, end) = (b * AIMET_BATCH, ((b + 1) * AIMET_BATCH).min(n));
        values.slice_axis(Axis(0), Slice::from(start..end))
    };
    let window = (0..WINDOW_SEARCH_BATCHES)
        .take_while(|b| b * AIMET_BATCH < n)
        .find_map(|b| {
            let part = rows(b);
            let part = part.as_standard_layout();
            let (lo, hi) = min_max(part.as_slice().unwrap_or_default());
            PdfWindow::from_range(lo, hi, b)
        })?;
    let mut pdf = BatchPdf::new(window);
    add_batch_rows(&mut pdf, values, 0, n);
    Some(pdf)
}

/// An encoding per histogram. NaN or infinite activations are an input error naming the value.
pub fn activation_encodings(
    histograms: &BTreeMap<String, Histogram>,
    scheme: Scheme,
    spec: QuantSpec,
) -> Result<BTreeMap<String, Encoding>> {
    histograms
        .iter()
        .map(|(name, h)| {
            calibrate(h, scheme, spec)
                .map(|e| (name.clone(), e))
                .map_err(|e| Error::input(format!("activation '{name}': {e}")))
        })
        .collect()
}

/// How activations are quantized: grid spec and calibration scheme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationConfig {
    pub spec: QuantSpec,
    pub scheme: Scheme,
}

/// [`collect_histograms`] then [`activation_encodings`].
pub fn calibrate_activations(
    model: &Model,
    points: &[QuantPoint],
    data: &Dataset,
    config: ActivationConfig,
    options: CalibrationOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<BTreeMap<String, Encoding>> {
    let histograms = collect_histograms(model, points, data, options, cancel, progress)?;
    activation_encodings(&histograms, config.scheme, config.spec)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::experiment::evaluate::{select_samples, Subset};
    use crate::quant::points::{activation_points, tests::sample_model};
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub fn digits(subset: Subset) -> Dataset {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/digits");
        select_samples(&path, subset, 200, 0).unwrap().data
    }

    pub fn options() -> CalibrationOptions {
        CalibrationOptions {
            run: RunOptions {
                batch_size: 50,
                threads: 2,
            },
            bins: DEFAULT_BINS,
        }
    }

    #[test]
    fn one_finite_encoding_per_point_from_one_pass() {
        let model = sample_model("mbv2_digits.onnx");
        let points = activation_points(&model).unwrap();
        let data = digits(Subset::Calibration);
        assert_eq!(data.len(), 200);
        let done = AtomicUsize::new(0);
        let spec = QuantSpec::new(8, false).unwrap();
        let hists = collect_histograms(
            &model,
            &points,
            &data,
            options(),
            &CancelToken::new(),
            &|d, _| {
                done.fetch_max(d, Ordering::SeqCst);
            },
        )
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 200);
        assert_eq!(hists.len(), points.len());
        // Every sample's every element was seen once: the input has 200 × 64 values.
        let input = &data.inputs[0].data;
        assert_eq!(
            hists["input"].count(),
            (input.len() * input.sample_size()) as u64
        );
        assert_eq!(hists["logits"].count(), 200 * 10);
        for scheme in [Scheme::Minmax, Scheme::TfEnhanced] {
            let enc = activation_encodings(&hists, scheme, spec).unwrap();
            assert_eq!(enc.len(), points.len());
            for p in &points {
                let e = &enc[&p.value];
                assert!(e.scale.is_finite() && e.scale > 0.0, "{}: {e:?}", p.value);
                e.validate().unwrap();
            }
            // Clip(0, 6) outputs are non-negative: the grid starts at 0.
            assert_eq!(enc["head.relu6.out"].offset, 0);
            assert!(enc["head.relu6.out"].max <= 6.05);
        }
        // The one-call form gives the same encodings (the histograms are order-independent).
        let config = ActivationConfig {
            spec,
            scheme: Scheme::TfEnhanced,
        };
        let direct = calibrate_activations(
            &model,
            &points,
            &data,
            config,
            options(),
            &CancelToken::new(),
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(
            direct,
            activation_encodings(&hists, Scheme::TfEnhanced, spec).unwrap()
        );
    }

    /// The straightforward per-axis ranges (one lane per index) the one-pass kernel replaced.
    fn lanewise(array: ArrayViewD<f32>, axis: usize) -> Vec<[f32; 2]> {
        array
            .axis_iter(ndarray::Axis(axis))
            .map(|c| {
                c.iter()
                    .fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], &v| {
                        [lo.min(v), hi.max(v)]
                    })
            })
            .collect()
    }

    #[test]
    fn one_pass_axis_ranges_equal_the_lanewise_ones() {
        let shapes: [&[usize]; 5] = [
            &[2, 3, 5, 7],
            &[3, 9],
            &[1, 4, 1, 1],
            &[2, 0, 3],
            &[2, 3, 17],
        ];
        let mut seed = 7u64;
        for shape in shapes {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if i % 29 == 5 {
                        f32::NAN
                    } else {
                        (seed >> 40) as f32 / 1e5 - 80.0
                    }
                })
                .collect();
            let a = ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).unwrap();
            // A transposed (non-standard layout) view goes through the same kernel.
            let mut t = a.view();
            t.swap_axes(0, shape.len() - 1);
            for view in [a.view(), t] {
                let mut stats = ChannelStats::default();
                stats.add(view.clone(), Some(-2), true);
                assert!(!stats.axes.is_empty(), "{shape:?}");
                for (&axis, ranges) in &stats.axes {
                    assert_eq!(
                        ranges,
                        &lanewise(view.clone(), axis),
                        "{shape:?} axis {axis}"
                    );
                }
            }
        }
    }

    #[test]
    fn statistics_merged_from_parallel_workers_equal_one_stream() {
        let model = sample_model("mbv2_digits.onnx");
        let points = activation_points(&model).unwrap();
        let data = digits(Subset::Calibration);
        let run = |threads: usize, batch_size: usize| {
            let options = CalibrationOptions {
                run: RunOptions {
                    batch_size,
                    threads,
                },
                bins: DEFAULT_BINS,
            };
            collect_statistics(
                &model,
                &points,
                &data,
                options,
                &CancelToken::new(),
                &|_, _| {},
            )
            .unwrap()
        };
        let (h1, s1) = run(1, 200);
        let (h2, s2) = run(2, 7);
        assert_eq!(h1, h2);
        assert_eq!(s1, s2);
        // Per-channel ranges of a conv output, checked against the lanewise fold of the
        // whole calibration set's activations.
        let value = "head.relu6.out";
        let shapes = sample_shapes(&model, &data).unwrap();
        let compiled = CompiledModel::compile(&model, &shapes, 200, &[value.to_string()]).unwrap();
        let out = compiled
            .run_dataset(&data, options().run, &CancelToken::new(), &|_, _| {})
            .unwrap();
        let slot = compiled
            .output_names()
            .iter()
            .position(|n| n == value)
            .unwrap();
        let whole = out.outputs[slot].view();
        for (&axis, ranges) in &s2[value].axes {
            assert_eq!(ranges, &lanewise(whole.clone(), axis), "axis {axis}");
        }
    }

    #[test]
    fn cancelled_before_start() {
        let model = sample_model("mbv2_digits.onnx");
        let points = activation_points(&model).unwrap();
        let cancel = CancelToken::new();
        cancel.cancel();
        let err = collect_histograms(
            &model,
            &points,
            &digits(Subset::Calibration),
            options(),
            &cancel,
            &|_, _| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
    }
}
