//! A sweep candidate's row, read back from the workspace (its compression record, size and
//! latency), so a made candidate and a reused one report the same way.

use super::lock;
use crate::cancel::CancelToken;
use crate::compress::scorer::ModelScorer;
use crate::compress::sweep::SweepRow;
use crate::experiment::Workspace;
use crate::metrics::Score;
use crate::{Error, Result};
use std::sync::Mutex;

/// What a row is measured against: the sweep's base and its score.
pub(crate) struct Base<'a> {
    pub id: u32,
    pub scorer: &'a ModelScorer,
}

impl Base<'_> {
    /// The metric in points (percent; dB for SQNR).
    fn points(&self, s: &Score) -> f64 {
        self.scorer.metric().points(self.scorer.value(s))
    }
}

/// The variant `id` was compressed as: itself, or for a fine-tuned candidate (a float
/// descendant without a compression record of its own, e.g. `qsteer finetune` of an SSVD
/// candidate) the compressed ancestor it was trained from. Returns its id and record.
pub(crate) fn compressed_ancestor(
    ws: &Workspace,
    base: u32,
    id: u32,
) -> Result<(u32, crate::compress::record::CompressionRecord)> {
    let mut at = id;
    loop {
        let v = ws
            .variant(at)
            .ok_or_else(|| Error::input(format!("{}: no variant {at}", ws.dir().display())))?;
        if let Some(record) = ws.compression(at)? {
            return Ok((at, record));
        }
        let trained = v.encodings_file.is_none() && at != base;
        match v.parent.filter(|_| trained) {
            Some(parent) => at = parent,
            None => {
                return Err(Error::input(format!(
                    "{}: variant {id} ({}) was not made by compression (nor trained from a \
                     compressed variant)",
                    ws.dir().display(),
                    ws.variant(id).map_or("", |v| v.step.as_str())
                )))
            }
        }
    }
}

/// The row of candidate `id`, made from `parent` (whose overall MAC ratio to the base is
/// `parent_overall`) asked for `requested`. A fine-tuned candidate reports its compressed
/// ancestor's figures with its own score as the score after fine-tuning.
pub(crate) fn candidate_row(
    workspace: &Mutex<Workspace>,
    base: &Base,
    id: u32,
    requested: f64,
    parent_overall: f64,
    cancel: &CancelToken,
) -> Result<SweepRow> {
    let (record, compressed, variant, model_path) = {
        let ws = lock(workspace);
        let (compressed, record) = compressed_ancestor(&ws, base.id, id)?;
        let v = ws
            .variant(id)
            .cloned()
            .ok_or_else(|| Error::input(format!("{}: no variant {id}", ws.dir().display())))?;
        let compressed = ws.variant(compressed).cloned().unwrap_or_else(|| v.clone());
        let path = ws.model_path(&v);
        (record, compressed, v, path)
    };
    let trained = compressed.id != variant.id;
    let parent = compressed.parent.unwrap_or(base.id);
    let final_score = record.reconstructed_score.as_ref().unwrap_or(&record.score);
    // Fidelity is to the candidate's parent; for a grandchild of the base (or a trained
    // candidate), score the candidate against the base itself.
    let against_base = if trained || (record.metric.is_fidelity() && parent != base.id) {
        base.scorer
            .score(&super::load_model(workspace, &model_path)?, cancel)?
    } else {
        final_score.clone()
    };
    let (score_before, score_after) = if trained {
        (final_score.clone(), Some(against_base.clone()))
    } else {
        (record.score.clone(), record.reconstructed_score.clone())
    };
    Ok(SweepRow {
        variant: id,
        parent,
        method: record.method,
        requested,
        mac_ratio: record.mac_ratio,
        overall_mac_ratio: parent_overall * record.mac_ratio,
        score_before,
        score_after,
        drop_points: base.points(base.scorer.parent_score()) - base.points(&against_base),
        latency: variant.latency.clone().or(compressed.latency.clone()),
        size_bytes: variant.size_bytes,
        preselected: false,
    })
}
