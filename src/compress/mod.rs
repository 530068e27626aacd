//! Compression (DESIGN.md §3): cut a model's MACs to a target ratio with the least accuracy
//! lost. Each method is a [`LayerCompressor`]: pure, `&Model` in, a new model and a report of
//! what changed per layer out. The greedy per-layer ratio selection and the SSVD→CP sweep
//! drive any compressor through this one interface.
//!
//! A per-layer *ratio* is the fraction of that layer's MACs to keep (0 < r ≤ 1, 1 = leave the
//! layer alone), the unit AIMET's greedy selection uses for every method:
//! - Weight SVD and Spatial SVD take the largest rank whose split layers cost at most
//!   `ratio ×` the original layer's MACs;
//! - channel pruning keeps `round(ratio × Cin)` input channels (at least one).

pub mod activations;
mod bn_scale;
pub mod build;
pub mod calibration;
pub mod cost;
mod factor;
pub mod greedy;
pub mod prune;
pub mod rank;
pub mod reconstruct;
pub mod record;
pub mod refit;
pub mod scorer;
pub mod spatial_svd;
mod split;
pub mod svd;
#[cfg(test)]
mod svd_tests;
pub mod sweep;
#[cfg(test)]
pub(crate) mod test_double;
#[cfg(test)]
pub(crate) mod testing;

pub use calibration::CalibrationData;
pub use cost::{CostComparison, CostRow, LayerCost, ModelCost};
pub use prune::{ChannelPruner, ChannelSelection};
pub use rank::SplitCost;
pub use reconstruct::{reconstruct, LayerReconstruction, ReconstructionReport};
pub use spatial_svd::SpatialSvd;
pub use svd::WeightSvd;

use crate::cancel::CancelToken;
use crate::model::Model;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A compression method, as the CLI's `--method` and the workspace's recipe steps name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    WeightSvd,
    SpatialSvd,
    ChannelPruning,
}

impl Method {
    pub const ALL: [Method; 3] = [
        Method::WeightSvd,
        Method::SpatialSvd,
        Method::ChannelPruning,
    ];

    /// The short name of the CLI (`wsvd`, `ssvd`, `cp`) and of recipe steps.
    pub fn short(self) -> &'static str {
        match self {
            Method::WeightSvd => "wsvd",
            Method::SpatialSvd => "ssvd",
            Method::ChannelPruning => "cp",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| {
            m.short() == s
                || serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    == Some(s.to_string())
        })
    }
}

/// Per-layer ratios keyed by layer (node) name; a layer not named keeps ratio 1.
pub type LayerRatios = BTreeMap<String, f64>;

/// What compression did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeDetail {
    /// SVD: the layer became two layers of this rank (`full_rank` = min of the factor sides).
    Rank { rank: usize, full_rank: usize },
    /// Channel pruning: the input channels kept (indices into the original), and the
    /// upstream nodes that lost the matching output channels (winnowing).
    Channels {
        kept: Vec<usize>,
        total: usize,
        winnowed: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerChange {
    /// The original layer's name.
    pub layer: String,
    /// The ratio asked for.
    pub ratio: f64,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub detail: ChangeDetail,
    /// Names of the layers in the compressed model that replace or continue this one and
    /// whose weights layer-wise reconstruction may refit to the parent's outputs (the last
    /// one produces the original layer's output value).
    pub refit: Vec<String>,
}

/// A layer left alone, and why (the user sees this next to the table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub layer: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct CompressOutcome {
    pub model: Model,
    pub changes: Vec<LayerChange>,
    pub skipped: Vec<Skipped>,
    /// Whole-model MACs per sample before and after.
    pub macs_before: u64,
    pub macs_after: u64,
}

impl CompressOutcome {
    pub fn mac_ratio(&self) -> f64 {
        if self.macs_before == 0 {
            1.0
        } else {
            self.macs_after as f64 / self.macs_before as f64
        }
    }
}

/// Whether a method can compress a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eligibility {
    pub layer: String,
    /// `None`: eligible; otherwise why not (e.g. "depthwise: winnowed, not pruned").
    pub not_eligible: Option<String>,
}

/// One compression method. Implementations carry what they need beyond the model (the
/// sample shape that pins symbolic dimensions, sampled activations for channel pruning).
pub trait LayerCompressor: Send + Sync {
    fn method(&self) -> Method;

    /// Every layer of the model in graph order, with the reason this method cannot
    /// compress it where it cannot.
    fn eligible(&self, model: &Model) -> Result<Vec<Eligibility>>;

    /// Compress the named layers at their ratios (ratio 1 or an unnamed layer: unchanged).
    /// A named layer the method cannot compress is an input error naming it.
    fn apply(
        &self,
        model: &Model,
        ratios: &LayerRatios,
        cancel: &CancelToken,
    ) -> Result<CompressOutcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.short()), Some(m));
            let long = serde_json::to_value(m).unwrap();
            assert_eq!(Method::parse(long.as_str().unwrap()), Some(m));
        }
        assert_eq!(Method::parse("svd"), None);
    }
}
