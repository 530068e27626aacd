//! What a sweep reports, one row per candidate variant, and where it is kept
//! (`<workspace>/sweeps/<key16>.json`, rewritten after every candidate) so a rerun of the
//! same sweep reuses the candidates already made.

use crate::compress::Method;
use crate::fsutil::write_json_atomic;
use crate::metrics::Score;
use crate::runtime::Latency;
use crate::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One candidate: a variant made by SSVD from the sweep's base, or by CP from an SSVD
/// candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub variant: u32,
    pub parent: u32,
    pub method: Method,
    /// The MAC ratio asked of this step (Cssvd or Ccp).
    pub requested: f64,
    /// Measured, to its parent.
    pub mac_ratio: f64,
    /// Measured, to the sweep's base.
    pub overall_mac_ratio: f64,
    /// Before fine-tuning.
    pub score_before: Score,
    /// After layer-wise reconstruction, if it ran.
    pub score_after: Option<Score>,
    /// Points of the metric lost against the base, after fine-tuning when it ran.
    pub drop_points: f64,
    pub latency: Option<Latency>,
    pub size_bytes: u64,
    pub preselected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPick {
    pub variant: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub base: u32,
    /// The overall MAC ratio C.
    pub target: f64,
    /// Tolerable drop X, in points of `metric`.
    pub max_drop: f64,
    /// `accuracy` with labels, else `agreement` (with the base).
    pub metric: String,
    pub base_score: Score,
    pub base_latency: Option<Latency>,
    pub ssvd: Vec<SweepRow>,
    pub advice: Option<String>,
    pub cp: Vec<SweepRow>,
    pub pick: Option<SweepPick>,
}

impl SweepReport {
    /// The candidate made by `method` at `requested` from `parent`, if any.
    pub fn find(&self, parent: u32, method: Method, requested: f64) -> Option<&SweepRow> {
        self.ssvd
            .iter()
            .chain(&self.cp)
            .find(|r| r.parent == parent && r.method == method && same(r.requested, requested))
    }

    /// Add or replace the row of the same parent, method and request.
    pub fn upsert(&mut self, row: SweepRow) {
        let rows = match row.method {
            Method::ChannelPruning => &mut self.cp,
            _ => &mut self.ssvd,
        };
        match rows.iter_mut().find(|r| {
            r.parent == row.parent && r.method == row.method && same(r.requested, row.requested)
        }) {
            Some(r) => *r = row,
            None => rows.push(row),
        }
    }
}

/// Requested ratios are rounded to 1e-6 when made; compare with that slack.
pub fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 5e-7
}

/// sha256 over what the candidates depend on: the base model, the samples, the settings.
pub fn sweep_key(model_hash: &str, dataset_fingerprint: &str, settings: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"qsteer-sweep-v1\0");
    for part in [model_hash, dataset_fingerprint, settings] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    crate::model::hex(&h.finalize())
}

/// `<workspace>/sweeps/<first 16 hex of key>.json`.
pub fn report_path(workspace: &Path, key: &str) -> PathBuf {
    workspace
        .join("sweeps")
        .join(format!("{}.json", &key[..16.min(key.len())]))
}

/// The file as kept: the key beside the report, so a foreign file is never reused.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReportFile {
    key: String,
    report: SweepReport,
}

/// The report an earlier run of the same sweep left, if any. A damaged or foreign file is
/// ignored: the candidates it listed are still variants, only their reuse is lost.
pub fn load_report(path: &Path, key: &str) -> Option<SweepReport> {
    let bytes = std::fs::read(path).ok()?;
    let file: ReportFile = serde_json::from_slice(&bytes).ok()?;
    (file.key == key).then_some(file.report)
}

pub fn save_report(path: &Path, key: &str, report: &SweepReport) -> Result<()> {
    write_json_atomic(
        path,
        &ReportFile {
            key: key.to_string(),
            report: report.clone(),
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn score(accuracy: f64) -> Score {
        Score {
            accuracy: Some(accuracy),
            top5_accuracy: None,
            agreement: None,
            sqnr_db: None,
            samples: 100,
            ..Default::default()
        }
    }

    pub(crate) fn row(variant: u32, parent: u32, method: Method, requested: f64) -> SweepRow {
        SweepRow {
            variant,
            parent,
            method,
            requested,
            mac_ratio: requested,
            overall_mac_ratio: requested,
            score_before: score(0.9),
            score_after: None,
            drop_points: 0.0,
            latency: None,
            size_bytes: 0,
            preselected: false,
        }
    }

    fn report() -> SweepReport {
        SweepReport {
            base: 0,
            target: 0.5,
            max_drop: 2.0,
            metric: "accuracy".into(),
            base_score: score(0.99),
            base_latency: None,
            ssvd: vec![],
            advice: None,
            cp: vec![],
            pick: None,
        }
    }

    #[test]
    fn upsert_replaces_the_same_candidate_and_find_sees_both_lists() {
        let mut r = report();
        r.upsert(row(1, 0, Method::SpatialSvd, 0.65));
        r.upsert(row(2, 1, Method::ChannelPruning, 0.769231));
        r.upsert(row(3, 0, Method::SpatialSvd, 0.65));
        assert_eq!(r.ssvd.len(), 1);
        assert_eq!(r.find(0, Method::SpatialSvd, 0.65).unwrap().variant, 3);
        assert_eq!(
            r.find(1, Method::ChannelPruning, 0.769231).unwrap().variant,
            2
        );
        assert!(r.find(0, Method::SpatialSvd, 0.75).is_none());
    }

    #[test]
    fn saved_report_loads_only_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = sweep_key("m", "d", "s");
        assert_ne!(key, sweep_key("m", "d", "t"));
        let path = report_path(dir.path(), &key);
        let mut r = report();
        r.upsert(row(1, 0, Method::SpatialSvd, 0.5));
        save_report(&path, &key, &r).unwrap();
        assert_eq!(load_report(&path, &key), Some(r));
        assert_eq!(load_report(&path, &sweep_key("x", "d", "s")), None);
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(load_report(&path, &key), None);
    }
}
