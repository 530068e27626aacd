//! The dictionary's evaluations, a layer's candidates at a time. With
//! [`GreedyRequest::changed_part_only`] the parent runs once per layer up to the values the
//! compressed part reads and each candidate runs only what it changed (see [`super::suffix`]),
//! the candidates compiled side by side on the cores; otherwise (or where no cut exists) each
//! candidate's whole model is compiled and scored, as the scores are defined.

use super::dictionary::Entry;
use super::suffix::{assemble, cut, prefix_model, suffix_model, Cut, CutValues};
use super::GreedyRequest;
use crate::cancel::CancelToken;
use crate::compress::{CompressOutcome, LayerRatios};
use crate::data::{Dataset, NamedInput};
use crate::metrics::Score;
use crate::model::Model;
use crate::runtime::CompiledModel;
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

    /// `layer` alone at each of `ratios`, in order: `starting(i)` as the evaluation of
    /// `ratios[i]` starts, `finished(i, entry)` as soon as it is scored.
    pub fn layer(
        &self,
        layer: &str,
        ratios: &[f64],
        cancel: &CancelToken,
        starting: &dyn Fn(usize),
        finished: &mut dyn FnMut(usize, Entry) -> Result<()>,
    ) -> Result<()> {
        let Some(values) = &self.values else {
            for (i, &r) in ratios.iter().enumerate() {
                starting(i);
                let outcome = self.apply(layer, r, cancel)?;
                let score = self.req.scorer.score(&outcome.model, cancel);
                finished(i, self.entry(layer, r, &outcome, score)?)?;
            }
            return Ok(());
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
        // Compiling is one core's work: the candidates' parts compile side by side, then
        // each runs on all the cores (the samples split between them).
        let workers = ratios.len().min(self.req.scorer.options().threads).max(1);
        let mut compiled: Vec<Option<CompiledModel>> = (0..ratios.len()).map(|_| None).collect();
        if let Some(p) = &prefix {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|w| {
                        let (outcomes, cuts) = (&outcomes, &cuts);
                        s.spawn(move || {
                            (w..outcomes.len())
                                .step_by(workers)
                                .filter_map(|i| {
                                    let c = cuts[i].as_ref()?;
                                    Some((i, self.compile_part(&outcomes[i].model, c, p)?))
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in handles {
                    for (i, c) in h.join().expect("a compiling thread panicked") {
                        compiled[i] = Some(c);
                    }
                }
            });
        }
        for (i, ((&r, outcome), part)) in ratios.iter().zip(&outcomes).zip(compiled).enumerate() {
            starting(i);
            let score = match (part, &prefix) {
                (Some(part), Some(p)) => self.score_part(&outcome.model, &part, p, cancel),
                _ => self.req.scorer.score(&outcome.model, cancel),
            };
            finished(i, self.entry(layer, r, outcome, score)?)?;
        }
        Ok(())
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

    /// `child`'s `cut` compiled on its own, fed every value of the layer's prefix (all its
    /// candidates' cuts: one dataset serves them all; values it does not read are fed and
    /// ignored); `None` where that part cannot be built or compiled on its own.
    fn compile_part(&self, child: &Model, cut: &Cut, prefix: &Prefix) -> Option<CompiledModel> {
        let values = self.values.as_ref()?;
        let mut wide = cut.clone();
        wide.inputs.clone_from(&prefix.names);
        let model = suffix_model(child, &wide, values, &prefix.shapes).ok()?;
        let options = self.req.scorer.options();
        CompiledModel::compile(&model, &prefix.shapes, options.batch_size, &[]).ok()
    }

    /// Score `child` from its compiled changed part run on the parent's values (the whole
    /// model where that run fails).
    fn score_part(
        &self,
        child: &Model,
        part: &CompiledModel,
        prefix: &Prefix,
        cancel: &CancelToken,
    ) -> Result<Score> {
        let scorer = self.req.scorer;
        let run = match part.run_dataset(&prefix.data, scorer.options(), cancel, &|_, _| {}) {
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(_) => return scorer.score(child, cancel),
            Ok(run) => run,
        };
        let outputs = part
            .output_names()
            .iter()
            .cloned()
            .zip(run.outputs)
            .collect();
        self.partial.fetch_add(1, Ordering::Relaxed);
        scorer.score_outputs(child, assemble(scorer.parent_outputs(), outputs), cancel)
    }
}
