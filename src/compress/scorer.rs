//! Scoring compressed models on the evaluation samples, against the parent they were made
//! from, with the job's metric (see `metrics::score_all`): top-1 accuracy with labels on
//! `[N, C]` outputs, else fidelity to the parent's outputs chosen by output shape, or the
//! user's metric command. The parent runs once; each candidate then costs one compile and
//! one pass.

use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{check_fits, sample_shapes};
use crate::metrics::{score_all, MetricChoice, Score, Scoring};
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

/// The number the greedy selection compares: its name as in [`Score::metric`]
/// (`accuracy`, `agreement`, `per_position`, `map_agreement`, `cosine`, `sqnr`,
/// `external`, or several outputs' names joined by `+`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metric(pub String);

impl Metric {
    pub fn accuracy() -> Metric {
        Metric("accuracy".into())
    }

    pub fn agreement() -> Metric {
        Metric("agreement".into())
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// Fidelity to the parent (as opposed to accuracy or the external command's score).
    pub fn is_fidelity(&self) -> bool {
        !matches!(self.0.as_str(), "accuracy" | "external")
    }

    /// `value` in points: percent for fractions, dB for SQNR, the command's units ×100 for
    /// the external metric (scores in 0..1 such as mAP read as points).
    pub fn points(&self, value: f64) -> f64 {
        if self.0.split('+').any(|m| m == "sqnr") {
            value
        } else {
            100.0 * value
        }
    }
}

pub struct ModelScorer {
    data: Dataset,
    shapes: Vec<Vec<usize>>,
    options: RunOptions,
    parent_outputs: Vec<(String, ArrayD<f32>)>,
    parent_score: Score,
    scoring: Scoring,
}

impl ModelScorer {
    /// Check `data` fits `parent` and run the parent once for the fidelity reference; the
    /// `auto` metric on samples `0..N` of `data`.
    pub fn new(
        parent: &Model,
        data: Dataset,
        options: RunOptions,
        cancel: &CancelToken,
    ) -> Result<ModelScorer> {
        ModelScorer::with_scoring(parent, data, options, Scoring::default(), cancel)
    }

    /// [`ModelScorer::new`] with a metric (and, for the external one, the dataset path and
    /// the samples' indices in it).
    pub fn with_scoring(
        parent: &Model,
        data: Dataset,
        options: RunOptions,
        mut scoring: Scoring,
        cancel: &CancelToken,
    ) -> Result<ModelScorer> {
        scoring.metric.validate()?;
        scoring.states = crate::metrics::state_outputs::state_outputs(parent);
        check_fits(parent, &data)?;
        // Every candidate is scored on these samples: decode them once when they are small.
        let data = data.cached_up_to(crate::data::MULTI_PASS_CACHE)?;
        let shapes = sample_shapes(parent, &data)?;
        let parent_outputs = run_outputs(parent, &data, &shapes, options, cancel)?;
        crate::metrics::check_labels_fit(&data, &parent_outputs)?;
        let parent_score = score_all(
            &parent_outputs,
            data.labels.as_deref(),
            Some(&parent_outputs),
            &scoring,
            cancel,
        )?;
        Ok(ModelScorer {
            data,
            shapes,
            options,
            parent_outputs,
            parent_score,
            scoring,
        })
    }

    /// The metric the scores are compared by (decided on the parent's score).
    pub fn metric(&self) -> Metric {
        Metric(
            self.parent_score
                .metric_name()
                .unwrap_or("agreement")
                .to_string(),
        )
    }

    /// What, beyond the metric's name, a cached score depends on: the external command.
    pub fn cache_tag(&self) -> String {
        match (self.scoring.metric.choice, &self.scoring.metric.command) {
            (MetricChoice::External, Some(c)) => format!(";metric_command={c}"),
            (MetricChoice::Auto, _) => String::new(),
            (other, _) => format!(";metric={}", other.name()),
        }
    }

    pub fn scoring(&self) -> &Scoring {
        &self.scoring
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    pub fn sample_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// A scorer of `parent` on the first `k` of these samples (the same metric; the
    /// parent runs again on them, as outputs need not carry the batch on axis 0).
    pub fn first(&self, parent: &Model, k: usize, cancel: &CancelToken) -> Result<ModelScorer> {
        let k = k.min(self.data.len());
        let positions: Vec<usize> = (0..k).collect();
        let mut scoring = self.scoring.clone();
        if !scoring.indices.is_empty() {
            scoring.indices.truncate(k);
        }
        let data = self.data.subset(&positions);
        ModelScorer::with_scoring(parent, data, self.options, scoring, cancel)
    }

    /// The parent's score (agreement 1 with itself).
    pub fn parent_score(&self) -> &Score {
        &self.parent_score
    }

    /// Accuracy, fidelity to the parent (and the external score) of `model`.
    pub fn score(&self, model: &Model, cancel: &CancelToken) -> Result<Score> {
        let outputs = run_outputs(model, &self.data, &self.shapes, self.options, cancel)?;
        self.score_outputs(model, outputs, cancel)
    }

    /// The score of `model` from its outputs on every sample (graph outputs in order, each
    /// with its name), computed elsewhere (e.g. only the part of the model that changed).
    pub fn score_outputs(
        &self,
        model: &Model,
        outputs: Vec<(String, ArrayD<f32>)>,
        cancel: &CancelToken,
    ) -> Result<Score> {
        let shapes = |o: &[(String, ArrayD<f32>)]| -> Vec<Vec<usize>> {
            o.iter().map(|(_, a)| a.shape().to_vec()).collect()
        };
        if shapes(&outputs) != shapes(&self.parent_outputs) {
            return Err(Error::runtime(format!(
                "{}: outputs of shape {:?}, the parent's are {:?}",
                model.source(),
                shapes(&outputs),
                shapes(&self.parent_outputs)
            )));
        }
        score_all(
            &outputs,
            self.data.labels.as_deref(),
            Some(&self.parent_outputs),
            &self.scoring,
            cancel,
        )
    }

    /// The parent's outputs on every sample, graph outputs in order, each with its name.
    pub fn parent_outputs(&self) -> &[(String, ArrayD<f32>)] {
        &self.parent_outputs
    }

    pub fn options(&self) -> RunOptions {
        self.options
    }

    /// The metric's value in a score this scorer made.
    pub fn value(&self, score: &Score) -> f64 {
        score.value().unwrap_or(0.0)
    }
}

/// Every output of `model` for every sample, with the output names.
fn run_outputs(
    model: &Model,
    data: &Dataset,
    shapes: &[Vec<usize>],
    options: RunOptions,
    cancel: &CancelToken,
) -> Result<Vec<(String, ArrayD<f32>)>> {
    let compiled = CompiledModel::compile(model, shapes, options.batch_size, &[])?;
    let run = compiled.run_dataset(data, options, cancel, &|_, _| {})?;
    if run.outputs.is_empty() {
        return Err(Error::runtime(format!(
            "{}: the model produced no output",
            model.source()
        )));
    }
    Ok(compiled
        .output_names()
        .iter()
        .cloned()
        .zip(run.outputs)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::NamedInput;
    use crate::model::builder::ProtoBuilder;
    use ndarray::{Array, IxDyn};

    /// `[N, 4, 3]` → MatMul `[3, 5]` → per-position logits `[N, 4, 5]`.
    fn recognizer(shift: f32) -> Model {
        let w = Array::from_shape_fn(IxDyn(&[3, 5]), |d| {
            ((d[0] * 5 + d[1]) as f32 * 0.61).sin() + shift * (d[1] as f32 - 2.0)
        });
        let mut b = ProtoBuilder::new(13);
        b.input("x", &[4, 3])
            .initializer("w", &w)
            .node("MatMul", "proj", &["x", "w"], &["y"], vec![])
            .output("y");
        b.model("recognizer").unwrap()
    }

    fn data(n: usize) -> Dataset {
        let x = Array::from_shape_fn(IxDyn(&[n, 4, 3]), |d| {
            ((d[0] * 12 + d[1] * 3 + d[2]) as f32 * 0.913).cos()
        });
        Dataset::from_arrays("seq", vec![NamedInput::from_array(None, "seq", x)], None).unwrap()
    }

    fn options() -> RunOptions {
        RunOptions {
            batch_size: 1,
            threads: 1,
        }
    }

    /// The greedy selection's number for an `[N, T, C]` model is per-position agreement,
    /// computed by hand here; the old flattened argmax gives another number.
    #[test]
    fn a_sequence_model_is_ranked_by_per_position_agreement() {
        let cancel = CancelToken::new();
        let scorer = ModelScorer::new(&recognizer(0.0), data(24), options(), &cancel).unwrap();
        assert_eq!(scorer.metric(), Metric("per_position".into()));
        assert_eq!(scorer.value(scorer.parent_score()), 1.0);
        let changed = recognizer(0.35);
        let score = scorer.score(&changed, &cancel).unwrap();
        let run = |m: &Model| {
            run_outputs(m, scorer.data(), scorer.sample_shapes(), options(), &cancel)
                .unwrap()
                .remove(0)
                .1
        };
        let (a, b) = (run(&changed), run(&recognizer(0.0)));
        let agree = |classes: usize| {
            let rows =
                |x: &ArrayD<f32>| x.to_shape((x.len() / classes, classes)).unwrap().to_owned();
            let (ra, rb) = (
                crate::metrics::argmax_rows(rows(&a).view()),
                crate::metrics::argmax_rows(rows(&b).view()),
            );
            ra.iter().zip(&rb).filter(|(x, y)| x == y).count() as f64 / ra.len() as f64
        };
        let (per_position, flat) = (agree(5), agree(20));
        assert!(
            (per_position - flat).abs() > 0.01,
            "{per_position} vs {flat}"
        );
        assert_eq!(scorer.value(&score), per_position);
        assert_eq!(score.agreement, Some(per_position));
        assert_eq!(score.metric.as_deref(), Some("per_position"));
    }
}
