//! Top-1 predictions of a variant on a dataset, kept in the workspace cache so the A/B
//! comparison can say where two variants disagree without rerunning either.

use crate::fsutil::write_json_atomic;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Predictions {
    pub variant: u32,
    pub dataset_fingerprint: String,
    /// Arg-max class per sample, in dataset order.
    pub predictions: Vec<i64>,
    #[serde(default)]
    pub labels: Option<Vec<i64>>,
}

fn path(workspace: &Path, variant: u32, fingerprint: &str) -> PathBuf {
    let short = &fingerprint[..fingerprint.len().min(16)];
    workspace
        .join("cache")
        .join("predictions")
        .join(format!("v{variant}-{short}.json"))
}

pub fn save_predictions(workspace: &Path, p: &Predictions) -> Result<()> {
    write_json_atomic(&path(workspace, p.variant, &p.dataset_fingerprint), p)
}

/// `None` when missing or unreadable (a cache: it can always be recomputed).
pub fn load_predictions(workspace: &Path, variant: u32, fingerprint: &str) -> Option<Predictions> {
    let text = std::fs::read_to_string(path(workspace, variant, fingerprint)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = Predictions {
            variant: 3,
            dataset_fingerprint: "abcdef0123456789ffff".into(),
            predictions: vec![1, 2, 3],
            labels: Some(vec![1, 2, 2]),
        };
        save_predictions(dir.path(), &p).unwrap();
        assert_eq!(
            load_predictions(dir.path(), 3, &p.dataset_fingerprint),
            Some(p)
        );
        assert_eq!(
            load_predictions(dir.path(), 4, "abcdef0123456789ffff"),
            None
        );
    }
}
