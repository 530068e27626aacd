//! How many evaluation samples score the dictionary. Every entry runs (part of) the model on
//! every sample, so on a large model a dictionary of a few hundred entries over all the
//! evaluation samples takes many minutes; the scores only need to rank candidates. When
//! the dictionary's cost — the parent's MACs per sample × samples × entries — exceeds
//! [`SELECTION_MAC_BUDGET`], the entries are scored on the first `k` evaluation samples
//! (fewer samples, never fewer than [`MIN_SELECTION_SAMPLES`]); the compressed model is
//! still scored on all of them. The count follows from MACs, not from a clock, so a run
//! that resumes reads the same dictionary key.

use super::candidates;
use super::plan::plan;
use crate::cancel::CancelToken;
use crate::compress::scorer::ModelScorer;
use crate::compress::{LayerCompressor, LayerRatios};
use crate::model::Model;
use crate::Result;

/// MACs the dictionary may spend in total (whole-model MACs per sample × samples ×
/// entries): about 4 minutes of the debug build on the zoo's detectors' 8 samples, while
/// the sample models' dictionaries (≤ 1e11) keep every sample.
pub const SELECTION_MAC_BUDGET: f64 = 5e11;

/// Fewer samples than this rank candidates too coarsely (agreement moves in 1/k steps).
pub const MIN_SELECTION_SAMPLES: usize = 8;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_dictionaries_keep_every_sample_and_large_ones_shrink_to_the_budget() {
        // The sample ResNet: 3.05M MACs, 400 samples, 63 entries.
        assert_eq!(selection_size(3_050_000, 400, 63), 400);
        // The zoo's DBNet: 573M MACs, 32 samples, 144 entries → 6 fit, floor 8.
        assert_eq!(selection_size(573_000_000, 32, 144), 8);
        // A model half as large fits 12 samples.
        let k = selection_size(173_000_000, 32, 144);
        assert_eq!(k, (SELECTION_MAC_BUDGET / (173e6 * 144.0)) as usize);
        assert!(k > MIN_SELECTION_SAMPLES && k < 32);
        // Never more than there are.
        assert_eq!(selection_size(573_000_000, 4, 144), 4);
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
        // The whole scorer still scores the result on all 60.
        assert_eq!(
            scorer.score(&sel.outcome.model, &cancel).unwrap().samples,
            60
        );
    }
}
