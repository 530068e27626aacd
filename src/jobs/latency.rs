//! Latency inside jobs: measured with the default options (batch 1, one caller) and kept on
//! the variant, so a parent timed once is not timed again by every child.

use super::exec::JobCtx;
use super::lock;
use crate::experiment::Workspace;
use crate::model::Model;
use crate::runtime::{measure_latency, Latency, LatencyOptions};
use crate::Result;
use std::sync::Mutex;

/// Time variant `id` (its `model`) and record the figure on it.
pub(crate) fn measure_variant(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    id: u32,
    model: &Model,
    sample_shapes: &[Vec<usize>],
) -> Result<Latency> {
    ctx.progress(0, 1, &format!("latency of v{id}"));
    let l = measure_latency(model, sample_shapes, &LatencyOptions::default(), ctx.cancel)?;
    lock(workspace).set_latency(id, l.clone())?;
    Ok(l)
}

/// Variant `id`'s latency with the default options: the recorded one, else measured now.
pub(crate) fn known_or_measured(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    id: u32,
    model: &Model,
    sample_shapes: &[Vec<usize>],
) -> Result<Latency> {
    let known = lock(workspace)
        .variant(id)
        .and_then(|v| v.latency.clone())
        .filter(|l| l.matches(&LatencyOptions::default()));
    match known {
        Some(l) => Ok(l),
        None => measure_variant(ctx, workspace, id, model, sample_shapes),
    }
}
