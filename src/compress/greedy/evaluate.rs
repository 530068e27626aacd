//! The dictionary's evaluations, a layer's candidates at a time. With
//! [`GreedyRequest::changed_part_only`] the parent runs once per layer up to the values the
//! compressed part reads and each candidate runs only what it changed (see [`super::suffix`]),
//! the candidates side by side on the cores; otherwise (or where no cut exists) each
//! candidate's whole model is compiled and scored, as the scores are defined.

use super::dictionary::Entry;
use super::suffix::{assemble, cut, prefix_model, suffix_model, Cut, CutValues};
use super::GreedyRequest;
use crate::cancel::CancelToken;
use crate::compress::{CompressOutcome, LayerRatios};
use crate::data::{Dataset, NamedInput};
use crate::metrics::Score;
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) struct Evaluator<'a> {
    req: &'a GreedyRequest<'a>,
    /// `None`: every candidate is scored on its whole model.
    values: Option<CutValues>,
    /// Evaluations that ran only the changed part.
    pub partial: AtomicUsize,
}

/// The parent's cut values on every sample, as a dataset the suffixes read by name.
struct Prefix {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    data: Dataset,
}

impl<'a> Evaluator<'a> {
    pub fn new(req: &'a GreedyRequest<'a>) -> Evaluator<'a> {
        // An analysis that fails here fails for the whole model too: scored the slow way,
        // its error is reported there.
        let values = if req.changed_part_only {
            CutValues::of(req.model, req.scorer.sample_shapes())
                .ok()
                .flatten()
        } else {
            None
        };
        Evaluator {
            req,
            values,
            partial: AtomicUsize::new(0),
        }
    }

    /// `layer` alone at each of `ratios`: the entries, in order.
    pub fn layer(&self, layer: &str, ratios: &[f64], cancel: &CancelToken) -> Result<Vec<Entry>> {
        let Some(values) = &self.values else {
            return ratios
                .iter()
                .map(|&r| {
                    let outcome = self.apply(layer, r, cancel)?;
                    let score = self.req.scorer.score(&outcome.model, cancel);
                    self.entry(layer, r, &outcome, score)
                })
                .collect();
        };
        let outcomes: Vec<CompressOutcome> = ratios
            .iter()
            .map(|&r| self.apply(layer, r, cancel))
            .collect::<Result<_>>()?;
        let cuts: Vec<Option<Cut>> = outcomes
            .iter()
            .map(|o| cut(self.req.model, &o.model, values))
            .collect();
        let prefix = if cuts.iter().any(Option::is_some) {
            let needed: BTreeSet<String> = cuts
                .iter()
                .flatten()
                .flat_map(|c| c.inputs.clone())
                .collect();
            match self.prefix(needed.into_iter().collect(), cancel) {
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                other => other.ok(),
            }
        } else {
            None
        };
        // The candidates side by side, each on its share of the cores.
        let options = self.req.scorer.options();
        let workers = ratios.len().min(options.threads).max(1);
        let share = RunOptions {
            threads: (options.threads / workers).max(1),
            ..options
        };
        let mut scores: Vec<Option<Result<Score>>> = (0..ratios.len()).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (outcomes, cuts, prefix) = (&outcomes, &cuts, &prefix);
                    s.spawn(move || {
                        (w..outcomes.len())
                            .step_by(workers)
                            .map(|i| {
                                let child = &outcomes[i].model;
                                let score = match (&cuts[i], prefix) {
                                    (Some(c), Some(p)) => {
                                        self.score_part(child, c, p, share, cancel)
                                    }
                                    _ => self.req.scorer.score(child, cancel),
                                };
                                (i, score)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, score) in h.join().expect("a scoring thread panicked") {
                    scores[i] = Some(score);
                }
            }
        });
        ratios
            .iter()
            .zip(&outcomes)
            .zip(scores)
            .map(|((&r, o), score)| self.entry(layer, r, o, score.expect("scored")))
            .collect()
    }

    fn apply(&self, layer: &str, ratio: f64, cancel: &CancelToken) -> Result<CompressOutcome> {
        let ratios = LayerRatios::from([(layer.to_string(), ratio)]);
        self.req.compressor.apply(self.req.model, &ratios, cancel)
    }

    fn entry(
        &self,
        layer: &str,
        ratio: f64,
        outcome: &CompressOutcome,
        score: Result<Score>,
    ) -> Result<Entry> {
        let score = score.map_err(|e| match e {
            Error::Cancelled => e,
            e => Error::runtime(format!(
                "scoring layer '{layer}' at ratio {ratio} failed: {e}"
            )),
        })?;
        Ok(Entry {
            layer: layer.to_string(),
            ratio,
            score: self.req.scorer.value(&score),
            macs_after: outcome.macs_after,
        })
    }

    /// Run the parent up to `names` on every sample.
    fn prefix(&self, names: Vec<String>, cancel: &CancelToken) -> Result<Prefix> {
        let scorer = self.req.scorer;
        let model = prefix_model(self.req.model, &names)?;
        let options = scorer.options();
        let compiled =
            CompiledModel::compile(&model, scorer.sample_shapes(), options.batch_size, &[])?;
        let run = compiled.run_dataset(scorer.data(), options, cancel, &|_, _| {})?;
        let shapes = run
            .outputs
            .iter()
            .map(|a| a.shape()[1..].to_vec())
            .collect();
        let inputs = names
            .iter()
            .zip(run.outputs)
            .map(|(n, a)| NamedInput::from_array(Some(n.clone()), format!("value '{n}'"), a))
            .collect();
        Ok(Prefix {
            data: Dataset::from_arrays("the parent's values", inputs, None)?,
            names,
            shapes,
        })
    }

    /// Score `child` running only its `cut` from the parent's values; where that part
    /// cannot be built or compiled on its own, the whole model.
    fn score_part(
        &self,
        child: &Model,
        cut: &Cut,
        prefix: &Prefix,
        options: RunOptions,
        cancel: &CancelToken,
    ) -> Result<Score> {
        let scorer = self.req.scorer;
        let values = self.values.as_ref().expect("cut values");
        // The suffix takes every value of the layer's prefix (all its candidates'), so one
        // dataset serves them all; values it does not read are fed and ignored.
        let mut wide = cut.clone();
        wide.inputs.clone_from(&prefix.names);
        let compiled = suffix_model(child, &wide, values, &prefix.shapes)
            .and_then(|m| CompiledModel::compile(&m, &prefix.shapes, options.batch_size, &[]));
        let Ok(compiled) = compiled else {
            return scorer.score(child, cancel);
        };
        let run = match compiled.run_dataset(&prefix.data, options, cancel, &|_, _| {}) {
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(_) => return scorer.score(child, cancel),
            Ok(run) => run,
        };
        let outputs = compiled
            .output_names()
            .iter()
            .cloned()
            .zip(run.outputs)
            .collect();
        self.partial.fetch_add(1, Ordering::Relaxed);
        scorer.score_outputs(child, assemble(scorer.parent_outputs(), outputs), cancel)
    }
}
