//! From a method name and the job's settings to a [`LayerCompressor`] (and to layer-wise
//! reconstruction), so the compress job and the benchmarks build compressors one way.

use super::{
    CalibrationData, ChannelPruner, ChannelSelection, CompressOutcome, LayerCompressor, Method,
};
use crate::cancel::CancelToken;
use crate::model::Model;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;

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
        if matches!(self.method, Method::WeightSvd | Method::SpatialSvd) {
            // The factorization changed what every entry scores (#17: BN-gain weighted).
            key.push_str(";factors=bn-gain");
        }
        if self.method == Method::ChannelPruning {
            key.push_str(&format!(
                ";selection={};calibration={};seed={}",
                selection_name(self.selection()),
                self.calibration_size,
                self.seed
            ));
        }
        key
    }

    /// The channel selection asked for, or the default one.
    fn selection(&self) -> ChannelSelection {
        match self.selection.as_deref() {
            Some("magnitude") => ChannelSelection::Magnitude,
            Some("greedy") => ChannelSelection::Greedy,
            _ => ChannelSelection::default(),
        }
    }

    fn calibration(&self) -> Result<CalibrationData> {
        CalibrationData::load(&self.data, self.calibration_size, self.seed, self.options)
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
        Method::ChannelPruning => Ok(Box::new(ChannelPruner::new(
            Arc::new(spec.calibration()?),
            spec.selection(),
        ))),
    }
}

fn selection_name(s: ChannelSelection) -> &'static str {
    match s {
        ChannelSelection::Magnitude => "magnitude",
        ChannelSelection::Greedy => "greedy",
    }
}

/// Layer-wise reconstruction of `outcome` (made from `parent`) to the parent's outputs on
/// the calibration samples; returns the refitted model and a report.
pub fn reconstruct_outcome(
    parent: &Model,
    outcome: &CompressOutcome,
    spec: &CompressorSpec,
    cancel: &CancelToken,
    progress: &(dyn Fn(&str, usize, usize) + Sync),
) -> Result<(Model, serde_json::Value)> {
    let calibration = spec.calibration()?;
    let (model, report) = super::reconstruct(parent, outcome, &calibration, cancel, progress)?;
    let report = serde_json::to_value(&report)
        .map_err(|e| Error::runtime(format!("reconstruction report: {e}")))?;
    Ok((model, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method) -> CompressorSpec {
        CompressorSpec {
            method,
            sample_shapes: vec![vec![1, 16, 16]],
            selection: None,
            data: PathBuf::from("digits"),
            calibration_size: 200,
            seed: 0,
            options: RunOptions::default(),
        }
    }

    /// A greedy dictionary scored with the plain SVD must not be reused now that the SVD
    /// methods weight by the BN gains: their cache key says which factorization it holds.
    #[test]
    fn svd_cache_keys_name_the_factorization() {
        for m in [Method::SpatialSvd, Method::WeightSvd] {
            assert_eq!(
                spec(m).settings_key(),
                "shapes=[[1, 16, 16]];factors=bn-gain"
            );
        }
        assert!(!spec(Method::ChannelPruning)
            .settings_key()
            .contains("factors"));
    }
}
