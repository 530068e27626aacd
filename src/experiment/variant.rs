//! A variant is one model in the experiment tree: the base, or a child made by a recipe
//! step from its parent.

use crate::data::SplitInfo;
use crate::metrics::Score;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Variant {
    pub id: u32,
    pub parent: Option<u32>,
    /// The recipe step that made it from its parent (`base` for the original model).
    pub step: String,
    /// Model file, relative to the workspace directory.
    pub model_file: String,
    #[serde(default)]
    pub encodings_file: Option<String>,
    /// The quantsim settings that made it, for a quantsim variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantsim: Option<crate::quant::simulate::QuantsimSettings>,
    /// The latest per-layer quantization analysis (`qsteer analyze`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_file: Option<String>,
    /// Statistics of the BatchNormalizations folded into this variant's layers (BN
    /// folding, CLE), for the fixes that need them (HBA, analytical bias correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_stats_file: Option<String>,
    /// How compression made this variant (`variants/<id>.compress.json`), for a compressed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_file: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    #[serde(default)]
    pub macs: Option<u64>,
    #[serde(default)]
    pub params: Option<u64>,
    #[serde(default)]
    pub size_bytes: u64,
    /// The latest measured latency (`qsteer latency`, compress and sweep jobs).
    #[serde(default)]
    pub latency: Option<crate::runtime::Latency>,
    /// A name the user gave it (`qsteer variants rename`, `R` in the app), shown instead of
    /// its step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub results: Vec<EvalRecord>,
}

/// One evaluation of a variant on a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    /// The dataset path as given.
    pub dataset: String,
    /// Content fingerprint of the evaluated samples.
    pub dataset_fingerprint: String,
    /// `evaluation`, `calibration` or `all`.
    pub subset: String,
    #[serde(default)]
    pub split: Option<SplitInfo>,
    pub score: Score,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub batch_size: usize,
    pub threads: usize,
    /// Variant id of the reference the fidelity columns compare against, if any.
    #[serde(default)]
    pub reference: Option<String>,
    pub when: u64,
}

impl Variant {
    /// A fresh variant with no costs, results or notes yet.
    pub fn new(
        id: u32,
        parent: Option<u32>,
        step: &str,
        model_file: String,
        size_bytes: u64,
    ) -> Variant {
        Variant {
            id,
            parent,
            step: step.to_string(),
            model_file,
            encodings_file: None,
            analysis_file: None,
            bn_stats_file: None,
            compression_file: None,
            quantsim: None,
            created: super::now(),
            macs: None,
            params: None,
            size_bytes,
            latency: None,
            name: None,
            notes: String::new(),
            tags: vec![],
            results: vec![],
        }
    }

    /// The most recent result on the given samples, if any.
    pub fn latest_result(&self, dataset_fingerprint: &str) -> Option<&EvalRecord> {
        self.results
            .iter()
            .rev()
            .find(|r| r.dataset_fingerprint == dataset_fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A variant written before latency, tags or costs were recorded still loads.
    #[test]
    fn a_variant_from_an_older_workspace_loads() {
        let old = r#"{"id": 3, "parent": 0, "step": "cle", "model_file": "variants/3.onnx",
                      "created": 1700000000}"#;
        let v: Variant = serde_json::from_str(old).unwrap();
        assert_eq!((v.id, v.parent, v.tags.len()), (3, Some(0), 0));
        assert_eq!(v.latency, None);
        let mut v = v;
        v.latency = Some(crate::runtime::Latency {
            median_ms: 1.25,
            p90_ms: 2.5,
            runs: 30,
            batch: 1,
            threads: 1,
        });
        let back: Variant = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
}
