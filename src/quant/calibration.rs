//! Activation calibration: ONE streaming pass of the FP32 model over the calibration set,
//! capturing every activation point, one [`Histogram`] per point filled batch by batch (the
//! activations of the whole set are never held), then an [`Encoding`] per point from its
//! histogram with the chosen [`Scheme`].
//!
//! The histograms are returned on their own ([`collect_histograms`]) so several schemes or
//! bitwidths can be tried without running the model again.

use std::collections::BTreeMap;

use super::calibrate::{calibrate, Scheme};
use super::encoding::{Encoding, QuantSpec};
use super::histogram::{Histogram, DEFAULT_BINS};
use super::points::QuantPoint;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{check_fits, sample_shapes};
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};

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
    if data.is_empty() {
        return Err(Error::input("the calibration set has no samples"));
    }
    check_fits(model, data)?;
    let bins = options.bins.max(2);
    let input_names: Vec<String> = model.inputs().iter().map(|i| i.name.clone()).collect();
    let mut histograms: BTreeMap<String, Histogram> = BTreeMap::new();
    let mut captured: Vec<String> = Vec::new();
    for p in points {
        if histograms.contains_key(&p.value) {
            continue;
        }
        let mut h = Histogram::new(bins);
        if let Some(k) = input_names.iter().position(|n| *n == p.value) {
            let input = data.inputs.get(k).ok_or_else(|| {
                Error::input(format!("the dataset has no values for input '{}'", p.value))
            })?;
            h.add_array(&input.data);
        } else {
            captured.push(p.value.clone());
        }
        histograms.insert(p.value.clone(), h);
    }
    cancel.check()?;
    if captured.is_empty() {
        progress(data.len(), data.len());
        return Ok(histograms);
    }
    let compiled = CompiledModel::compile(
        model,
        &sample_shapes(data),
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
    compiled.run_dataset_streaming(data, options.run, cancel, progress, &mut |_, outputs| {
        for (k, name) in &slots {
            let out = outputs
                .get(*k)
                .ok_or_else(|| Error::runtime(format!("no output for '{name}'")))?;
            if let Some(h) = histograms.get_mut(name) {
                h.add_array(out);
            }
        }
        Ok(())
    })?;
    Ok(histograms)
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
        assert_eq!(hists["input"].count(), data.inputs[0].data.len() as u64);
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
