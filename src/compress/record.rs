//! What a compress job keeps beside the variant it made (`variants/<id>.compress.json`): the
//! ratios chosen per layer and why, what each layer became, and the scores.

use super::greedy::DictionaryReport;
use super::scorer::Metric;
use super::{LayerChange, LayerRatios, Method, Skipped};
use crate::metrics::Score;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionRecord {
    pub method: Method,
    /// The target MAC ratio (greedy selection); `None` for manual ratios.
    pub target: Option<f64>,
    /// Every compressed layer's ratio (pins included).
    pub ratios: LayerRatios,
    pub pinned: LayerRatios,
    pub excluded: Vec<String>,
    pub changes: Vec<LayerChange>,
    pub skipped: Vec<Skipped>,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Measured on the compressed model.
    pub mac_ratio: f64,
    /// Predicted by the greedy search from the per-layer savings (differs from the
    /// measured ratio when savings interact).
    pub predicted_mac_ratio: Option<f64>,
    /// The score threshold of the greedy search.
    pub threshold: Option<f64>,
    /// Layers the search moved above the threshold's pick to come closer to the target.
    #[serde(default)]
    pub relaxed: Vec<String>,
    pub dictionary: Option<DictionaryReport>,
    /// The number the selection compared.
    pub metric: Metric,
    pub parent_score: Score,
    pub score: Score,
    /// After layer-wise reconstruction, when it ran.
    pub reconstructed_score: Option<Score>,
}
