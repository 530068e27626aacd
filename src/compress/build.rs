//! From a method name and the job's settings to a [`LayerCompressor`] (and to layer-wise
//! reconstruction), so the compress job and the benchmarks build compressors one way.

use super::{CompressOutcome, LayerCompressor, Method};
use crate::cancel::CancelToken;
use crate::model::Model;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use std::path::PathBuf;

/// How channel pruning picks the input channels to keep.
pub const SELECTIONS: [&str; 2] = ["magnitude", "greedy"];

/// Everything a compressor may need beyond the model.
#[derive(Debug, Clone)]
pub struct CompressorSpec {
    pub method: Method,
    /// Per-sample input shapes from the dataset (they pin symbolic dimensions).
    pub sample_shapes: Vec<Vec<usize>>,
    /// Channel selection for channel pruning (`magnitude` or `greedy`; `None`: default).
    pub selection: Option<String>,
    /// The dataset, for the calibration samples of channel pruning and reconstruction.
    pub data: PathBuf,
    pub calibration_size: usize,
    pub seed: u64,
    pub options: RunOptions,
}

impl CompressorSpec {
    /// The settings that change what the compressor makes, as they enter cache keys.
    pub fn settings_key(&self) -> String {
        let mut key = format!("shapes={:?}", self.sample_shapes);
        if self.method == Method::ChannelPruning {
            key.push_str(&format!(
                ";selection={};calibration={};seed={}",
                self.selection.as_deref().unwrap_or("default"),
                self.calibration_size,
                self.seed
            ));
        }
        key
    }

    fn check(&self) -> Result<()> {
        if let Some(s) = &self.selection {
            if !SELECTIONS.contains(&s.as_str()) {
                return Err(Error::input(format!(
                    "--selection is '{s}'; expected one of {}",
                    SELECTIONS.join(", ")
                )));
            }
            if self.method != Method::ChannelPruning {
                return Err(Error::input(format!(
                    "--selection applies to channel pruning (cp), not {}",
                    self.method.short()
                )));
            }
        }
        Ok(())
    }
}

/// The compressor of `spec.method`.
pub fn build_compressor(spec: &CompressorSpec) -> Result<Box<dyn LayerCompressor>> {
    spec.check()?;
    let shapes = Some(spec.sample_shapes.clone());
    match spec.method {
        Method::WeightSvd => Ok(Box::new(super::WeightSvd::new(shapes))),
        Method::SpatialSvd => Ok(Box::new(super::SpatialSvd::new(shapes))),
        Method::ChannelPruning => Err(not_built(spec.method.short())),
    }
}

/// Layer-wise reconstruction of `outcome` (made from `parent`) to the parent's outputs on
/// the calibration samples; returns the refitted model and a report.
pub fn reconstruct_outcome(
    _parent: &Model,
    _outcome: &CompressOutcome,
    _spec: &CompressorSpec,
    _cancel: &CancelToken,
    _progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Model, serde_json::Value)> {
    Err(not_built("layer-wise reconstruction"))
}

fn not_built(what: &str) -> Error {
    Error::input(format!(
        "{what} is not available in this build of qsteer yet (its compressor has not been merged)"
    ))
}
