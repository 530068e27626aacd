//! Scoring compressed models on the evaluation samples, against the parent they were made
//! from: top-1 accuracy with labels, top-1 agreement with the parent's outputs without.
//! The parent runs once; each candidate then costs one compile and one pass.

use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::experiment::evaluate::{as_rows, check_fits, sample_shapes};
use crate::metrics::{score_outputs, Score};
use crate::model::Model;
use crate::runtime::{CompiledModel, RunOptions};
use crate::{Error, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// The number the greedy selection compares: accuracy if the samples have labels, else
/// agreement with the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    Agreement,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Agreement => "agreement",
        }
    }
}

pub struct ModelScorer {
    data: Dataset,
    shapes: Vec<Vec<usize>>,
    options: RunOptions,
    parent_rows: Array2<f32>,
    parent_score: Score,
}

impl ModelScorer {
    /// Check `data` fits `parent` and run the parent once for the fidelity reference.
    pub fn new(
        parent: &Model,
        data: Dataset,
        options: RunOptions,
        cancel: &CancelToken,
    ) -> Result<ModelScorer> {
        check_fits(parent, &data)?;
        let shapes = sample_shapes(&data);
        let parent_rows = run_rows(parent, &data, &shapes, options, cancel)?;
        data.check_labels(parent_rows.ncols())?;
        let parent_score = score_outputs(
            parent_rows.view(),
            data.labels.as_deref(),
            Some(parent_rows.view()),
        )?;
        Ok(ModelScorer {
            data,
            shapes,
            options,
            parent_rows,
            parent_score,
        })
    }

    pub fn metric(&self) -> Metric {
        if self.data.labels.is_some() {
            Metric::Accuracy
        } else {
            Metric::Agreement
        }
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    pub fn sample_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The parent's score (agreement 1 with itself).
    pub fn parent_score(&self) -> &Score {
        &self.parent_score
    }

    /// Accuracy, agreement and SQNR of `model` against the parent.
    pub fn score(&self, model: &Model, cancel: &CancelToken) -> Result<Score> {
        let rows = run_rows(model, &self.data, &self.shapes, self.options, cancel)?;
        if rows.dim() != self.parent_rows.dim() {
            return Err(Error::runtime(format!(
                "{}: outputs of shape {:?}, the parent's are {:?}",
                model.source(),
                rows.shape(),
                self.parent_rows.shape()
            )));
        }
        score_outputs(
            rows.view(),
            self.data.labels.as_deref(),
            Some(self.parent_rows.view()),
        )
    }

    /// The metric's value in a score this scorer made.
    pub fn value(&self, score: &Score) -> f64 {
        match self.metric() {
            Metric::Accuracy => score.accuracy,
            Metric::Agreement => score.agreement,
        }
        .unwrap_or(0.0)
    }
}

/// The first output of `model` for every sample, as `[N, C]` rows.
fn run_rows(
    model: &Model,
    data: &Dataset,
    shapes: &[Vec<usize>],
    options: RunOptions,
    cancel: &CancelToken,
) -> Result<Array2<f32>> {
    let compiled = CompiledModel::compile(model, shapes, options.batch_size, &[])?;
    let run = compiled.run_dataset(data, options, cancel, &|_, _| {})?;
    let first = run.outputs.into_iter().next().ok_or_else(|| {
        Error::runtime(format!("{}: the model produced no output", model.source()))
    })?;
    as_rows(&first, &compiled.output_names()[0])
}
