//! What the dictionary is scored on, and over which layers. Every entry runs (part of) the
//! model on every sample, so on a large model a dictionary of a few hundred entries over
//! all the evaluation samples takes many minutes; the scores only need to rank candidates.
//! When the dictionary's cost — the parent's MACs per sample × samples × entries — exceeds
//! [`SELECTION_MAC_BUDGET`]:
//!
//! 1. the entries are scored on the first `k` evaluation samples (as many as fit, never
//!    fewer than [`MIN_SELECTION_SAMPLES`]); the compressed model is still scored on all;
//! 2. if that still does not fit, the layers with the fewest MACs are left out of the search
//!    (kept as they are) until it fits, as long as the searched layers keep at least
//!    [`MIN_SEARCHED_MAC_SHARE`] of the eligible layers' MACs and the target stays reachable.
//!
//! Both follow from MACs, not from a clock, so a run that resumes reads the same dictionary.

use super::candidates;
use super::plan::plan;
use crate::cancel::CancelToken;
use crate::compress::scorer::ModelScorer;
use crate::compress::{LayerCompressor, LayerRatios};
use crate::model::Model;
use crate::Result;
use std::collections::HashMap;

/// MACs the dictionary may spend in total (whole-model MACs per sample × samples ×
/// entries): a few minutes of the debug build on a loaded machine, while the sample
/// models' dictionaries (≤ 1e11) keep every sample and layer.
pub const SELECTION_MAC_BUDGET: f64 = 2.5e11;

/// Fewer samples than this rank candidates too coarsely (agreement moves in 1/k steps).
pub const MIN_SELECTION_SAMPLES: usize = 4;

/// The searched layers keep at least this share of the eligible layers' MACs.
pub const MIN_SEARCHED_MAC_SHARE: f64 = 0.8;

/// The samples the dictionary is scored on: all `samples` when the dictionary fits the
/// budget, else as many as fit (at least [`MIN_SELECTION_SAMPLES`], at most `samples`).
pub fn selection_size(macs_per_sample: u64, samples: usize, entries: usize) -> usize {
    size_within(SELECTION_MAC_BUDGET, macs_per_sample, samples, entries)
}

fn size_within(budget: f64, macs_per_sample: u64, samples: usize, entries: usize) -> usize {
    let per_sample = macs_per_sample as f64 * entries as f64;
    if per_sample * samples as f64 <= budget || per_sample <= 0.0 {
        return samples;
    }
    let fit = (budget / per_sample).floor() as usize;
    fit.max(MIN_SELECTION_SAMPLES).min(samples)
}

/// The scorer the dictionary uses for a greedy selection over `n` candidates: `None` when
/// that is `scorer` itself (every evaluation sample), else one on the first samples.
pub fn selection_scorer(
    model: &Model,
    compressor: &dyn LayerCompressor,
    scorer: &ModelScorer,
    pin: &LayerRatios,
    exclude: &[String],
    n: usize,
    cancel: &CancelToken,
) -> Result<Option<ModelScorer>> {
    scorer_within(
        SELECTION_MAC_BUDGET,
        model,
        compressor,
        scorer,
        pin,
        exclude,
        n,
        cancel,
    )
}

#[allow(clippy::too_many_arguments)]
fn scorer_within(
    budget: f64,
    model: &Model,
    compressor: &dyn LayerCompressor,
    scorer: &ModelScorer,
    pin: &LayerRatios,
    exclude: &[String],
    n: usize,
    cancel: &CancelToken,
) -> Result<Option<ModelScorer>> {
    let layers = plan(compressor, model, pin, exclude)?.searched.len();
    let entries = layers * candidates(n)?.len();
    let macs = compressor
        .apply(model, &LayerRatios::new(), cancel)?
        .macs_before;
    let samples = scorer.data().len();
    let k = size_within(budget, macs, samples, entries);
    if k >= samples {
        return Ok(None);
    }
    scorer.first(model, k, cancel).map(Some)
}

/// The searched layers the dictionary leaves out, fewest MACs first, so that its entries
/// over `samples` samples fit the budget (see the module's rule); empty when it fits, or
/// when leaving layers out would put `target` out of reach.
#[allow(clippy::too_many_arguments)]
pub fn layers_left_out(
    model: &Model,
    compressor: &dyn LayerCompressor,
    shapes: &[Vec<usize>],
    samples: usize,
    pin: &LayerRatios,
    exclude: &[String],
    n: usize,
    target: f64,
    cancel: &CancelToken,
) -> Result<Vec<String>> {
    left_out_within(
        SELECTION_MAC_BUDGET,
        model,
        compressor,
        shapes,
        samples,
        (pin, exclude),
        n,
        target,
        cancel,
    )
}

#[allow(clippy::too_many_arguments)]
fn left_out_within(
    budget: f64,
    model: &Model,
    compressor: &dyn LayerCompressor,
    shapes: &[Vec<usize>],
    samples: usize,
    (pin, exclude): (&LayerRatios, &[String]),
    n: usize,
    target: f64,
    cancel: &CancelToken,
) -> Result<Vec<String>> {
    let plan = plan(compressor, model, pin, exclude)?;
    let ratios = candidates(n)?;
    let macs = compressor
        .apply(model, &LayerRatios::new(), cancel)?
        .macs_before;
    let per_layer = macs as f64 * samples as f64 * ratios.len() as f64;
    if per_layer * plan.searched.len() as f64 <= budget || per_layer <= 0.0 {
        return Ok(Vec::new());
    }
    let layer_macs: HashMap<String, u64> = model
        .layers(&model.shapes(Some(shapes))?)?
        .into_iter()
        .map(|l| (l.name, l.macs.unwrap_or(0)))
        .collect();
    let of = |l: &String| layer_macs.get(l).copied().unwrap_or(0);
    // Largest first; equal MACs keep graph order.
    let mut order = plan.searched.clone();
    order.sort_by_key(|l| std::cmp::Reverse(of(l)));
    let total: u64 = order.iter().map(of).sum();
    let fit = (budget / per_layer).floor() as usize;
    let (mut share, mut covered) = (0, 0u64);
    while share < order.len() && (covered as f64) < MIN_SEARCHED_MAC_SHARE * total as f64 {
        covered += of(&order[share]);
        share += 1;
    }
    let kept = fit.max(share).max(1).min(order.len());
    let left_out = order.split_off(kept);
    if left_out.is_empty() {
        return Ok(left_out);
    }
    // The greedy's floor with only the kept layers searched must still meet the target.
    let mut extreme = plan.pinned.clone();
    extreme.extend(order.iter().map(|l| (l.clone(), ratios[0])));
    let floor = compressor.apply(model, &extreme, cancel)?.mac_ratio();
    if floor > target + super::TOLERANCE {
        return Ok(Vec::new());
    }
    Ok(left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_dictionaries_keep_every_sample_and_large_ones_shrink_to_the_budget() {
        // The sample ResNet: 3.05M MACs, 400 samples, 63 entries.
        assert_eq!(selection_size(3_050_000, 400, 63), 400);
        // The zoo's DBNet: 573M MACs, 32 samples, 144 entries → 3 fit, floor 4.
        assert_eq!(selection_size(573_000_000, 32, 144), MIN_SELECTION_SAMPLES);
        assert_eq!(MIN_SELECTION_SAMPLES, 4);
        // A model a third as large fits 10 samples.
        let k = selection_size(173_000_000, 32, 144);
        assert_eq!(k, (SELECTION_MAC_BUDGET / (173e6 * 144.0)) as usize);
        assert!(k > MIN_SELECTION_SAMPLES && k < 32);
        // Never more than there are.
        assert_eq!(selection_size(573_000_000, 3, 144), 3);
        assert_eq!(selection_size(0, 32, 144), 32);
    }

    #[test]
    fn over_the_budget_the_dictionary_is_scored_on_the_first_samples_and_says_so() {
        let (model, double, scorer) = super::super::tests::setup();
        let cancel = CancelToken::new();
        let none = LayerRatios::new();
        // The sample ResNet's dictionary is far below the real budget: every sample.
        assert!(
            selection_scorer(&model, &double, &scorer, &none, &[], 4, &cancel)
                .unwrap()
                .is_none()
        );
        // A budget that fits 10 samples of the 60.
        let layers = plan(&double, &model, &none, &[]).unwrap().searched.len();
        let macs = double.apply(&model, &none, &cancel).unwrap().macs_before;
        let budget = macs as f64 * (layers * 3) as f64 * 10.5;
        let small = scorer_within(budget, &model, &double, &scorer, &none, &[], 4, &cancel)
            .unwrap()
            .expect("over the budget");
        assert_eq!(small.data().len(), 10);
        assert_eq!(
            small.data().read_all().unwrap()[0],
            scorer.data().gather(&(0..10).collect::<Vec<_>>()).unwrap()[0]
        );
        // The greedy on it reports the samples its entries used.
        let dir = tempfile::tempdir().unwrap();
        let mut req = super::super::tests::request(&model, &double, &small, 0.7, 4, dir.path());
        req.cache_dir = None;
        let sel = super::super::select_greedy(&req, &cancel, &|_| {}).unwrap();
        assert_eq!(sel.dictionary.samples, 10);
        // Over the budget with 10 samples too: the layers with the fewest MACs are left
        // out, the searched ones keep at least 80 % of the MACs and the target stays
        // reachable; under the budget none are.
        let shapes = scorer.sample_shapes().to_vec();
        let all = (&none, &[][..]);
        let left = |budget: f64, target: f64| {
            left_out_within(
                budget, &model, &double, &shapes, 10, all, 4, target, &cancel,
            )
            .unwrap()
        };
        assert!(left(budget, 0.7).is_empty());
        let out = left(budget / 4.0, 0.9);
        assert!(!out.is_empty() && out.len() < layers, "{out:?}");
        let layer_macs: HashMap<String, u64> = model
            .layers(&model.shapes(Some(&shapes)).unwrap())
            .unwrap()
            .into_iter()
            .map(|l| (l.name, l.macs.unwrap_or(0)))
            .collect();
        let searched = plan(&double, &model, &none, &[]).unwrap().searched;
        let kept: Vec<&String> = searched.iter().filter(|l| !out.contains(l)).collect();
        let smallest_kept = kept.iter().map(|l| layer_macs[*l]).min().unwrap();
        assert!(out.iter().all(|l| layer_macs[l] <= smallest_kept));
        let share = |ls: &[&String]| ls.iter().map(|l| layer_macs[*l]).sum::<u64>() as f64;
        let all_layers: Vec<&String> = searched.iter().collect();
        assert!(share(&kept) >= MIN_SEARCHED_MAC_SHARE * share(&all_layers));
        // A target only the whole search reaches: nothing is left out.
        let floor =
            crate::compress::greedy::reachable_mac_ratio(&double, &model, 4, &none, &[], &cancel)
                .unwrap();
        assert!(left(budget / 4.0, floor + 1e-4).is_empty());
        // The whole scorer still scores the result on all 60.
        assert_eq!(
            scorer.score(&sel.outcome.model, &cancel).unwrap().samples,
            60
        );
    }
}
