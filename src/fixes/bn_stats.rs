//! What BN folding keeps of the BatchNormalizations it removes: per channel, the mean and
//! standard deviation of the folded layer's output (before its activation). A trained BN
//! makes that output ≈ N(β, γ²) per channel, whatever came in, so β and |γ| describe the
//! pre-activation distribution without any data. High-bias absorption and analytical bias
//! correction read them; transforms that rescale or shift a layer's output keep them true.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The output statistics of one folded layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// The BatchNormalization node that was folded into the layer.
    pub bn: String,
    /// Per output channel: the BN's β (shifted by what HBA moved out of the layer).
    pub mean: Vec<f32>,
    /// Per output channel: the BN's |γ| (scaled as CLE scaled the channel).
    pub std: Vec<f32>,
}

/// Statistics per layer, keyed by the layer's node label in the folded model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BnStats {
    pub layers: BTreeMap<String, ChannelStats>,
}

impl BnStats {
    pub fn get(&self, layer: &str) -> Option<&ChannelStats> {
        self.layers.get(layer)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Add `other`'s layers, replacing entries of the same layer.
    pub fn merge(&mut self, other: BnStats) {
        self.layers.extend(other.layers);
    }

    /// The layer's output channel `c` was multiplied by `factor[c]`.
    pub(crate) fn scale(&mut self, layer: &str, factor: &[f32]) {
        if let Some(s) = self.layers.get_mut(layer) {
            for (c, f) in factor.iter().enumerate() {
                if let (Some(m), Some(d)) = (s.mean.get_mut(c), s.std.get_mut(c)) {
                    *m *= f;
                    *d *= f.abs();
                }
            }
        }
    }

    /// The layer's output channel `c` was lowered by `shift[c]`.
    pub(crate) fn shift_down(&mut self, layer: &str, shift: &[f32]) {
        if let Some(s) = self.layers.get_mut(layer) {
            for (m, d) in s.mean.iter_mut().zip(shift) {
                *m -= d;
            }
        }
    }
}
