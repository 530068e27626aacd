//! The calibration samples compression works from: the model inputs of the calibration
//! split (as every data-driven job picks them), their per-sample shapes, and how to run
//! models over them. Only the inputs are kept; layer activations are recomputed from them
//! when a step needs them, so memory stays bounded by the dataset, not by the model.

use crate::data::Dataset;
use crate::experiment::evaluate::{check_fits, sample_shapes, select_samples, Subset};
use crate::model::Model;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct CalibrationData {
    /// The calibration samples (inputs, labels unused).
    pub data: Dataset,
    /// Per-sample shape of each dataset input, in the dataset's order (the model's, unless
    /// the inputs are named: use [`CalibrationData::shapes_for`] to pin a model).
    pub sample_shapes: Vec<Vec<usize>>,
    /// Batch size and worker threads for the passes over the samples.
    pub options: RunOptions,
    /// Seeds the spatial positions sampled per image.
    pub seed: u64,
}

impl CalibrationData {
    /// The calibration split of the dataset at `data` (`calibration_size` samples, split
    /// with `seed` unless the directory has an explicit `calibration/` part).
    pub fn load(
        data: &Path,
        calibration_size: usize,
        seed: u64,
        options: RunOptions,
    ) -> Result<CalibrationData> {
        let selected = select_samples(data, Subset::Calibration, calibration_size, seed)?;
        CalibrationData::from_dataset(selected.data, seed, options)
    }

    /// Samples already in memory (tests, benchmarks, callers that picked their own).
    pub fn from_dataset(data: Dataset, seed: u64, options: RunOptions) -> Result<CalibrationData> {
        if data.is_empty() {
            return Err(Error::input(format!(
                "{}: no calibration samples to compress with",
                data.name
            )));
        }
        Ok(CalibrationData {
            sample_shapes: (0..data.inputs.len())
                .map(|i| data.sample_shape(i).to_vec())
                .collect(),
            data,
            options: RunOptions {
                batch_size: options.batch_size.max(1),
                threads: options.threads.max(1),
            },
            seed,
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Per-sample shapes in `model`'s input order, to pin its symbolic dims.
    pub fn shapes_for(&self, model: &Model) -> Result<Vec<Vec<usize>>> {
        sample_shapes(model, &self.data)
    }

    /// A clear error when the samples do not fit `model`'s inputs.
    pub fn check_fits(&self, model: &Model) -> Result<()> {
        check_fits(model, &self.data)
    }
}
