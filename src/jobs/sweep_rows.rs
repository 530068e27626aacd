//! A sweep candidate's row, read back from the workspace (its compression record, size and
//! latency), so a made candidate and a reused one report the same way.

use super::lock;
use crate::cancel::CancelToken;
use crate::compress::scorer::{Metric, ModelScorer};
use crate::compress::sweep::SweepRow;
use crate::experiment::Workspace;
use crate::metrics::Score;
use crate::model::Model;
use crate::{Error, Result};
use std::sync::Mutex;

/// What a row is measured against: the sweep's base and its score.
pub(crate) struct Base<'a> {
    pub id: u32,
    pub scorer: &'a ModelScorer,
}

impl Base<'_> {
    /// The metric in points (percent).
    fn points(&self, s: &Score) -> f64 {
        100.0 * self.scorer.value(s)
    }
}

/// The row of candidate `id`, made from `parent` (whose overall MAC ratio to the base is
/// `parent_overall`) asked for `requested`.
pub(crate) fn candidate_row(
    workspace: &Mutex<Workspace>,
    base: &Base,
    id: u32,
    requested: f64,
    parent_overall: f64,
    cancel: &CancelToken,
) -> Result<SweepRow> {
    let (record, variant, model_path) = {
        let ws = lock(workspace);
        let v = ws
            .variant(id)
            .cloned()
            .ok_or_else(|| Error::input(format!("{}: no variant {id}", ws.dir().display())))?;
        let record = ws.compression(id)?.ok_or_else(|| {
            Error::input(format!(
                "{}: variant {id} ({}) was not made by compression",
                ws.dir().display(),
                v.step
            ))
        })?;
        let path = ws.model_path(&v);
        (record, v, path)
    };
    let parent = variant.parent.unwrap_or(base.id);
    let final_score = record.reconstructed_score.as_ref().unwrap_or(&record.score);
    // Agreement is with the candidate's parent; for a grandchild of the base, score the
    // candidate against the base itself.
    let against_base = if record.metric == Metric::Agreement && parent != base.id {
        base.scorer.score(&Model::load(&model_path)?, cancel)?
    } else {
        final_score.clone()
    };
    Ok(SweepRow {
        variant: id,
        parent,
        method: record.method,
        requested,
        mac_ratio: record.mac_ratio,
        overall_mac_ratio: parent_overall * record.mac_ratio,
        score_before: record.score.clone(),
        score_after: record.reconstructed_score.clone(),
        drop_points: base.points(base.scorer.parent_score()) - base.points(&against_base),
        latency: variant.latency.clone(),
        size_bytes: variant.size_bytes,
        preselected: false,
    })
}
