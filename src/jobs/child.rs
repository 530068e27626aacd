//! Keeping a job's model as a child variant with its costs and evaluation: the one record
//! the compress, fine-tune and QAT jobs all leave.

use crate::compress::scorer::ModelScorer;
use crate::data::SplitInfo;
use crate::experiment::evaluate::Subset;
use crate::experiment::{now, EvalRecord, Workspace};
use crate::metrics::Score;
use crate::model::Model;
use crate::runtime::RunOptions;
use crate::Result;
use std::path::{Path, PathBuf};

/// How a child's score was measured: on `scorer`'s evaluation samples of `data`.
pub(crate) struct Measured<'a> {
    pub data: &'a Path,
    pub scorer: &'a ModelScorer,
    pub split: Option<SplitInfo>,
    pub options: RunOptions,
    pub score: Score,
    pub seconds: f64,
}

/// What [`record_child`] made.
pub(crate) struct Recorded {
    pub id: u32,
    /// The child's model file.
    pub output: Option<PathBuf>,
    /// Elements of all its weights.
    pub params: u64,
}

/// Add `model` as a child of `parent` made by `step`, with `macs` (`None`: the parent's)
/// and, when measured, its evaluation (fidelity reference: the parent): one transaction,
/// so the variant is never listed without its costs and score.
pub(crate) fn record_child(
    ws: &mut Workspace,
    parent: u32,
    step: &str,
    model: &Model,
    macs: Option<u64>,
    measured: Option<Measured>,
) -> Result<Recorded> {
    ws.transaction(|ws| record(ws, parent, step, model, macs, measured))
}

fn record(
    ws: &mut Workspace,
    parent: u32,
    step: &str,
    model: &Model,
    macs: Option<u64>,
    measured: Option<Measured>,
) -> Result<Recorded> {
    let params: u64 = model.weights().map(|(_, w)| w.array.len() as u64).sum();
    let macs = macs.or_else(|| ws.variant(parent).and_then(|v| v.macs));
    let id = ws.add_variant(parent, step, model)?;
    ws.set_costs(id, macs, Some(params))?;
    if let Some(m) = measured {
        ws.record_result(
            id,
            EvalRecord {
                dataset: m.data.display().to_string(),
                dataset_fingerprint: m.scorer.data().fingerprint()?,
                subset: Subset::Evaluation.name().to_string(),
                split: m.split,
                samples_per_second: m.score.samples as f64 / m.seconds.max(1e-9),
                score: m.score,
                seconds: m.seconds,
                batch_size: m.options.batch_size,
                threads: m.options.threads,
                reference: Some(parent.to_string()),
                when: now(),
            },
        )?;
    }
    let output = ws.variant(id).map(|v| ws.model_path(v));
    Ok(Recorded { id, output, params })
}
