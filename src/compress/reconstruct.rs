//! Layer-wise reconstruction (DESIGN.md §3, fine-tuning path 1): after a compression, refit
//! each changed layer to the FP32 parent's outputs on calibration data by closed-form least
//! squares: no labels, no training framework. Changes are visited in the parent's graph
//! order, so each refit reads its inputs from a model whose upstream layers are already
//! refitted. Of a change's `refit` layers the last one (the one writing the original
//! layer's output value) is refitted; layers before it (the first factor of an SVD split)
//! are kept, since the parent has no value their outputs should match.

use super::activations::{compile_capturing, sample_layer, slot_of, LayerSamples};
use super::calibration::CalibrationData;
use super::refit::{current, fit_linear, output_mse, takes_bias, write_fit};
use super::{ChangeDetail, CompressOutcome, LayerChange};
use crate::cancel::CancelToken;
use crate::model::Model;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One refitted layer: its output error against the parent on the sampled positions
/// (the fit's own samples), before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReconstruction {
    /// The original layer (the change's name).
    pub layer: String,
    /// The layer of the compressed model that was refitted.
    pub refit: String,
    /// Sampled output positions the fit used.
    pub samples: usize,
    pub mse_before: f64,
    pub mse_after: f64,
    pub sqnr_before_db: f64,
    pub sqnr_after_db: f64,
    /// Sampled positions held out of the trial fit (the last images' positions).
    #[serde(default)]
    pub held_out_samples: usize,
    /// Output error on the held-out positions with the compressed layer as it was, and
    /// with the trial fit made without them.
    #[serde(default)]
    pub held_out_mse_before: f64,
    #[serde(default)]
    pub held_out_mse_after: f64,
    /// False when the trial fit did not lower the error on the held-out positions (it
    /// would have fitted the calibration samples only) and the weights were kept.
    pub refitted: bool,
}

/// The share of the sampled positions held out to check a refit.
const HELD_OUT: f64 = 0.2;

/// What to write for one layer: a refit, or nothing when it does not generalise.
struct FitChoice {
    fit: Option<super::refit::Fit>,
    held_out: usize,
    held_out_before: f64,
    held_out_after: f64,
}

/// Fit on all but the last [`HELD_OUT`] of the positions (columns come image by image, so
/// these are other images) and compare with the current weights there. A fit that does
/// not lower the held-out error is refused; an accepted one is refitted on every position.
fn choose_fit(
    samples: &LayerSamples,
    current: &super::refit::Fit,
    with_bias: bool,
) -> Result<FitChoice> {
    let n = samples.len();
    let held = ((n as f64 * HELD_OUT) as usize).min(n.saturating_sub(1));
    if held == 0 {
        // Too few positions to hold any out: the plain rule (lower error on the samples).
        let fit = fit_linear(samples, with_bias)?;
        let better = output_mse(&fit.weight, fit.bias.as_ref(), samples)
            < output_mse(&current.weight, current.bias.as_ref(), samples);
        return Ok(FitChoice {
            fit: better.then_some(fit),
            held_out: 0,
            held_out_before: 0.0,
            held_out_after: 0.0,
        });
    }
    let (train, check) = (columns(samples, 0..n - held), columns(samples, n - held..n));
    let trial = fit_linear(&train, with_bias)?;
    let before = output_mse(&current.weight, current.bias.as_ref(), &check);
    let after = output_mse(&trial.weight, trial.bias.as_ref(), &check);
    let fit = if after < before {
        Some(fit_linear(samples, with_bias)?)
    } else {
        None
    };
    Ok(FitChoice {
        fit,
        held_out: held,
        held_out_before: before,
        held_out_after: after,
    })
}

/// The sampled positions `range` of `samples`.
fn columns(samples: &LayerSamples, range: std::ops::Range<usize>) -> LayerSamples {
    use ndarray::s;
    LayerSamples {
        cols: samples
            .cols
            .iter()
            .map(|c| c.slice(s![.., range.clone()]).to_owned())
            .collect(),
        targets: samples.targets.slice(s![.., range]).to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionReport {
    pub layers: Vec<LayerReconstruction>,
    /// Calibration samples (images) run.
    pub images: usize,
    pub seconds: f64,
}

fn sqnr_db(signal: f64, mse: f64) -> f64 {
    crate::metrics::clamp_db(10.0 * (signal / mse).log10())
}

/// The output channels `layer` still produces when a pruned layer downstream winnowed
/// it: that layer's kept input channels (channel indices pass unchanged through the BN,
/// activation and depthwise nodes between them).
fn winnowed_channels<'a>(changes: &'a [LayerChange], layer: &str) -> Option<&'a [usize]> {
    changes.iter().find_map(|c| match &c.detail {
        ChangeDetail::Channels { kept, winnowed, .. } if winnowed.iter().any(|w| w == layer) => {
            Some(kept.as_slice())
        }
        _ => None,
    })
}

/// Refit the changed layers of `outcome.model` to `parent`'s outputs; `progress(stage,
/// done, total)` per layer.
pub fn reconstruct(
    parent: &Model,
    outcome: &CompressOutcome,
    data: &CalibrationData,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Model, ReconstructionReport)> {
    let start = Instant::now();
    data.check_fits(parent)?;
    let parent_layers = parent.layers(&parent.shapes(Some(&data.shapes_for(parent)?))?)?;
    let position = |node: usize| parent.index().order().iter().position(|&n| n == node);
    // (graph position, change, parent output value)
    let mut todo = Vec::new();
    for change in &outcome.changes {
        let Some(refit) = change.refit.last() else {
            continue;
        };
        let layer = parent_layers
            .iter()
            .find(|l| l.name == change.layer)
            .ok_or_else(|| {
                Error::input(format!(
                    "{}: the parent has no layer '{}' for the change to refit",
                    parent.source(),
                    change.layer
                ))
            })?;
        todo.push((
            position(layer.node),
            change,
            refit.clone(),
            layer.output.clone(),
        ));
    }
    todo.sort_by_key(|t| t.0);
    let total = todo.len();
    let mut model = outcome.model.clone();
    let mut layers_report = Vec::new();
    if total > 0 {
        let targets: Vec<String> = todo.iter().map(|t| t.3.clone()).collect();
        let compiled = compile_capturing(parent, data, &targets)?;
        for (done, (_, change, refit, value)) in todo.iter().enumerate() {
            progress("layer-wise reconstruction", done, total);
            cancel.check()?;
            let layers = model.layers(&model.shapes(Some(&data.shapes_for(&model)?))?)?;
            let layer = layers.iter().find(|l| &l.name == refit).ok_or_else(|| {
                Error::input(format!(
                    "{}: no layer '{refit}' to refit for '{}'",
                    model.source(),
                    change.layer
                ))
            })?;
            let slot = slot_of(&compiled, value)?;
            let channels = winnowed_channels(&outcome.changes, refit);
            let (op, samples) =
                sample_layer(&model, layer, &compiled, slot, channels, data, cancel)?;
            let before = current(&model, layer, &op)?;
            let mse_before = output_mse(&before.weight, before.bias.as_ref(), &samples);
            let choice = choose_fit(&samples, &before, takes_bias(layer))?;
            let signal = samples
                .targets
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / samples.targets.len().max(1) as f64;
            let refitted = choice.fit.is_some();
            let mse_after = match &choice.fit {
                Some(fit) => {
                    model = write_fit(&model, layer, &op, fit)?;
                    output_mse(&fit.weight, fit.bias.as_ref(), &samples)
                }
                None => mse_before,
            };
            layers_report.push(LayerReconstruction {
                layer: change.layer.clone(),
                refit: refit.clone(),
                samples: samples.len(),
                mse_before,
                mse_after,
                sqnr_before_db: sqnr_db(signal, mse_before),
                sqnr_after_db: sqnr_db(signal, mse_after),
                held_out_samples: choice.held_out,
                held_out_mse_before: choice.held_out_before,
                held_out_mse_after: choice.held_out_after,
                refitted,
            });
        }
    }
    progress("layer-wise reconstruction", total, total);
    Ok((
        model,
        ReconstructionReport {
            layers: layers_report,
            images: data.len(),
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `out × k` weights and `n` input columns; targets are the weights' outputs plus noise.
    fn noisy_samples(
        rng: &mut SplitMix64,
        w: &ndarray::Array2<f32>,
        n: usize,
        noise: f32,
    ) -> LayerSamples {
        let cols = ndarray::Array2::from_shape_fn((w.ncols(), n), |_| rng.symmetric());
        let targets = w.dot(&cols)
            + ndarray::Array2::from_shape_fn((w.nrows(), n), |_| rng.symmetric() * noise);
        LayerSamples {
            cols: vec![cols],
            targets,
        }
    }

    #[test]
    fn a_refit_that_only_fits_the_calibration_samples_is_refused() {
        let mut rng = SplitMix64(5);
        let w = ndarray::Array2::from_shape_fn((2, 20), |_| rng.symmetric());
        // 20 unknowns per output and 16 positions to fit them: the fit reproduces the noise
        // of those positions exactly and is worse than the true weights anywhere else.
        let samples = noisy_samples(&mut rng, &w, 20, 0.5);
        let current = super::super::refit::Fit {
            weight: w.clone(),
            bias: None,
        };
        let all_fit = fit_linear(&samples, false).unwrap();
        assert!(
            output_mse(&all_fit.weight, None, &samples) < output_mse(&w, None, &samples),
            "on its own samples the fit always looks better"
        );
        let choice = choose_fit(&samples, &current, false).unwrap();
        assert!(choice.fit.is_none(), "refused");
        assert_eq!(choice.held_out, 4);
        assert!(choice.held_out_after > choice.held_out_before);
        // With enough positions a fit away from bad weights is kept.
        let plenty = noisy_samples(&mut rng, &w, 400, 0.05);
        let bad = super::super::refit::Fit {
            weight: w.mapv(|v| v * 0.5),
            bias: None,
        };
        let choice = choose_fit(&plenty, &bad, false).unwrap();
        assert!(choice.fit.is_some());
        assert!(choice.held_out_after < choice.held_out_before);
    }
    use crate::compress::testing::*;
    use crate::compress::{ChangeDetail, LayerChange};
    use crate::data::SplitMix64;
    use crate::model::builder::{attr_ints, ProtoBuilder};
    use faer_ext::IntoFaer;
    use ndarray::{ArrayD, IxDyn};

    /// x → Conv 3×3 6→12 → Relu → conv2 (Conv 3×3 12→10) → y, and the same net with conv2
    /// split by truncated SVD into Conv 3×3 12→r then Conv 1×1 r→10 (√σ on each side).
    fn parent_and_split(rng: &mut SplitMix64, rank: usize) -> (Model, Model) {
        let w2 = random(rng, &[10, 12, 3, 3], 0.5);
        let b2 = random(rng, &[10], 0.2);
        let mut base = ProtoBuilder::new(13);
        base.input("x", &[6, 8, 8]).output("y");
        conv(&mut base, rng, "conv1", ["x", "h1"], [12, 6, 3, 3], 1);
        base.node("Relu", "relu", &["h1"], &["h"], vec![]);
        let mut parent = base.clone();
        parent
            .initializer("conv2.w", &w2)
            .initializer("conv2.b", &b2);
        let pads = vec![attr_ints("pads", &[1; 4])];
        parent.node(
            "Conv",
            "conv2",
            &["h", "conv2.w", "conv2.b"],
            &["y"],
            pads.clone(),
        );
        let m = w2.to_shape((10, 108)).unwrap().mapv(f64::from);
        let svd = m.view().into_faer().thin_svd().unwrap();
        let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
        let first = ArrayD::from_shape_fn(IxDyn(&[rank, 12, 3, 3]), |i| {
            let col = (i[1] * 3 + i[2]) * 3 + i[3];
            (s[i[0]].sqrt() * v[(col, i[0])]) as f32
        });
        let second = ArrayD::from_shape_fn(IxDyn(&[10, rank, 1, 1]), |i| {
            (u[(i[0], i[1])] * s[i[1]].sqrt()) as f32
        });
        let mut split = base;
        split
            .initializer("conv2.a.w", &first)
            .initializer("conv2.w", &second)
            .initializer("conv2.b", &b2);
        split.node("Conv", "conv2.a", &["h", "conv2.a.w"], &["h2"], pads);
        split.node(
            "Conv",
            "conv2",
            &["h2", "conv2.w", "conv2.b"],
            &["y"],
            vec![],
        );
        (
            parent.model("parent").unwrap(),
            split.model("split").unwrap(),
        )
    }

    fn change(model: &Model) -> CompressOutcome {
        CompressOutcome {
            model: model.clone(),
            changes: vec![LayerChange {
                layer: "conv2".into(),
                ratio: 0.5,
                macs_before: 0,
                macs_after: 0,
                params_before: 0,
                params_after: 0,
                detail: ChangeDetail::Rank {
                    rank: 3,
                    full_rank: 10,
                },
                refit: vec!["conv2.a".into(), "conv2".into()],
            }],
            skipped: vec![],
            macs_before: 0,
            macs_after: 0,
        }
    }

    /// Parent, split at `rank`, `n` calibration samples and 16 held-out inputs.
    fn setup(
        rank: usize,
        n: usize,
    ) -> (Model, Model, std::sync::Arc<CalibrationData>, ArrayD<f32>) {
        let mut rng = SplitMix64(8);
        let (parent, split) = parent_and_split(&mut rng, rank);
        let data = synthetic_data(&mut rng, &[6, 8, 8], n);
        let x = random(&mut rng, &[16, 6, 8, 8], 1.0);
        (parent, split, data, x)
    }

    #[test]
    fn full_rank_split_reconstructs_to_the_same_function() {
        let (parent, split, data, x) = setup(10, 30);
        assert!(sqnr(&parent, &split, &x) > 80.0);
        let (model, report) = reconstruct(
            &parent,
            &change(&split),
            &data,
            &CancelToken::new(),
            &|_, _, _| {},
        )
        .unwrap();
        assert!(report.layers[0].sqnr_before_db > 80.0, "{report:?}");
        assert!(sqnr(&parent, &model, &x) > 60.0);
    }

    #[test]
    fn reconstruction_lowers_the_error_of_a_low_rank_split() {
        let (parent, split, data, x) = setup(3, 60);
        let seen = std::sync::Mutex::new(Vec::new());
        let (model, report) = reconstruct(
            &parent,
            &change(&split),
            &data,
            &CancelToken::new(),
            &|stage, done, total| seen.lock().unwrap().push((stage.to_string(), done, total)),
        )
        .unwrap();
        let r = &report.layers[0];
        assert_eq!((r.layer.as_str(), r.refit.as_str()), ("conv2", "conv2"));
        assert_eq!(r.samples, 60 * 10);
        assert!(r.refitted && r.mse_after < 0.95 * r.mse_before, "{r:?}");
        let (before, after) = (sqnr(&parent, &split, &x), sqnr(&parent, &model, &x));
        assert!(after > before + 0.2, "held-out SQNR {before} → {after} dB");
        // The first factor is kept; only the layer writing the original output changed.
        assert_eq!(model.weight("conv2.a.w"), split.weight("conv2.a.w"));
        assert_ne!(model.weight("conv2.w"), split.weight("conv2.w"));
        assert_eq!(seen.lock().unwrap().last().unwrap().1, 1);
    }

    #[test]
    fn a_change_naming_an_unknown_layer_is_an_input_error() {
        let (parent, split, data, _) = setup(3, 4);
        let mut outcome = change(&split);
        outcome.changes[0].refit = vec!["missing".into()];
        let err =
            reconstruct(&parent, &outcome, &data, &CancelToken::new(), &|_, _, _| {}).unwrap_err();
        assert!(matches!(err, Error::Input(_)) && err.to_string().contains("'missing'"));
    }

    /// Spatial SVD, then pruning both halves of the split: the first half is pruned AND
    /// winnowed by the second, so its refit target is only the channels it still has.
    #[test]
    fn a_pruned_and_winnowed_layer_reconstructs_against_its_kept_channels() {
        use crate::compress::testing::{digits, digits_calibration, sample};
        use crate::compress::{ChannelPruner, ChannelSelection, LayerCompressor, SpatialSvd};
        let data = digits_calibration();
        let parent = sample("resnet_digits");
        let cancel = CancelToken::new();
        let ssvd = SpatialSvd::new(Some(data.sample_shapes.clone()));
        let ratios = [("layer2.conv2".to_string(), 0.75)].into_iter().collect();
        let split = ssvd.apply(&parent, &ratios, &cancel).unwrap().model;
        let pruner = ChannelPruner::new(data.clone(), ChannelSelection::Magnitude);
        let ratios = [
            ("layer2.conv2.svd0".to_string(), 0.5),
            ("layer2.conv2.svd1".to_string(), 0.5),
        ]
        .into_iter()
        .collect();
        let pruned = pruner.apply(&split, &ratios, &cancel).unwrap();
        let winnowed = pruned.changes.iter().any(|c| {
            matches!(&c.detail, ChangeDetail::Channels { winnowed, .. }
                if winnowed.iter().any(|w| w == "layer2.conv2.svd0"))
        });
        assert!(winnowed, "the second half winnows the first");
        let (model, report) = reconstruct(&split, &pruned, &data, &cancel, &|_, _, _| {}).unwrap();
        assert_eq!(report.layers.len(), 2);
        for l in &report.layers {
            assert!(l.mse_after <= l.mse_before, "{l:?}");
        }
        let x = digits(32);
        assert!(sqnr(&split, &model, &x) >= sqnr(&split, &pruned.model, &x) - 0.5);
    }
}
