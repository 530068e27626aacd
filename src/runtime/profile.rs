//! Where the time goes: one compiled plan run a few times on deterministic inputs, each
//! node of tract's optimized plan timed on its own, summed per op kind and per node. The
//! answer to "why is it slow": the op kinds the plan spends its time in (tract's names after
//! optimisation: `OptMatMul` for convolutions and matrix products, `DepthWise`, `Im2col`,
//! element-wise ops by their function) and the nodes that cost most.

use super::latency::pattern_inputs;
use super::CompiledModel;
use crate::cancel::CancelToken;
use crate::model::Model;
use crate::{Error, Result};
use ndarray::ArrayViewD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Time spent in one op kind (or one node), per run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OpTime {
    /// tract's op name (for a node: its name in the plan, which starts with the ONNX node's).
    pub name: String,
    /// The op kind of a node; the number of nodes of an op kind.
    pub op: String,
    pub nodes: usize,
    /// Mean milliseconds per run.
    pub ms: f64,
    /// Share of the time of all nodes, 0..1.
    pub share: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OpProfile {
    /// Timed runs (after one untimed warm-up run).
    pub runs: usize,
    pub batch: usize,
    /// Mean milliseconds per run, summed over the nodes (the timing itself excluded).
    pub total_ms: f64,
    /// Per op kind, most expensive first.
    pub by_op: Vec<OpTime>,
    /// Per node, most expensive first, the first `top` of them.
    pub by_node: Vec<OpTime>,
}

/// Profile `model` at `batch` samples of `sample_shapes` per call, `runs` times, keeping the
/// `top` most expensive nodes.
pub fn profile_ops(
    model: &Model,
    sample_shapes: &[Vec<usize>],
    batch: usize,
    runs: usize,
    top: usize,
    cancel: &CancelToken,
) -> Result<OpProfile> {
    if runs == 0 {
        return Err(Error::input("profile: at least one run is needed"));
    }
    let compiled = CompiledModel::compile(model, sample_shapes, batch.max(1), &[])?;
    let inputs = pattern_inputs(&compiled, sample_shapes);
    let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
    profile_compiled(&compiled, &views, runs, top, cancel)
}

/// Profile an already compiled plan on the given inputs (one batch).
pub fn profile_compiled(
    compiled: &CompiledModel,
    inputs: &[ArrayViewD<f32>],
    runs: usize,
    top: usize,
    cancel: &CancelToken,
) -> Result<OpProfile> {
    // The first run allocates and warms caches; it is not counted.
    compiled.run(inputs)?;
    // node id → (name, op, seconds summed over runs)
    let mut nodes: HashMap<usize, (String, String, f64)> = HashMap::new();
    for _ in 0..runs {
        cancel.check()?;
        compiled.run_timed(inputs, &mut |node, seconds| {
            let entry = nodes
                .entry(node.id)
                .or_insert_with(|| (node.name.clone(), node.op().name().to_string(), 0.0));
            entry.2 += seconds;
        })?;
    }
    Ok(summarise(nodes.into_values(), runs, compiled.batch(), top))
}

fn summarise(
    nodes: impl Iterator<Item = (String, String, f64)>,
    runs: usize,
    batch: usize,
    top: usize,
) -> OpProfile {
    let per_run = |s: f64| s * 1e3 / runs as f64;
    let mut by_node: Vec<OpTime> = nodes
        .map(|(name, op, s)| OpTime {
            name,
            op,
            nodes: 1,
            ms: per_run(s),
            share: 0.0,
        })
        .collect();
    let total_ms: f64 = by_node.iter().map(|n| n.ms).sum();
    let mut ops: HashMap<String, (usize, f64)> = HashMap::new();
    for n in &by_node {
        let e = ops.entry(n.op.clone()).or_default();
        e.0 += 1;
        e.1 += n.ms;
    }
    let share = |ms: f64| if total_ms > 0.0 { ms / total_ms } else { 0.0 };
    let mut by_op: Vec<OpTime> = ops
        .into_iter()
        .map(|(op, (count, ms))| OpTime {
            name: op.clone(),
            op,
            nodes: count,
            ms,
            share: share(ms),
        })
        .collect();
    let order = |a: &OpTime, b: &OpTime| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name));
    by_op.sort_by(order);
    by_node.sort_by(order);
    by_node.truncate(top);
    for n in &mut by_node {
        n.share = share(n.ms);
    }
    OpProfile {
        runs,
        batch,
        total_ms,
        by_op,
        by_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::latency::declared_sample_shapes;
    use std::path::Path;

    fn sample(name: &str) -> Model {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("sample-models/{name}.onnx"));
        Model::load(&p).unwrap()
    }

    #[test]
    fn every_node_is_timed_and_convolutions_lead_on_resnet() {
        let model = sample("resnet_digits");
        let shapes = declared_sample_shapes(&model).unwrap();
        let p = profile_ops(&model, &shapes, 1, 3, 5, &CancelToken::new()).unwrap();
        assert_eq!((p.runs, p.batch), (3, 1));
        assert!(p.total_ms > 0.0);
        assert_eq!(p.by_node.len(), 5);
        let shares: f64 = p.by_op.iter().map(|o| o.share).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{shares}");
        assert!(p.by_op.windows(2).all(|w| w[0].ms >= w[1].ms));
        // A conv net spends most of its time in matrix products.
        assert_eq!(p.by_op[0].name, "OptMatMul", "{:?}", p.by_op);
    }

    #[test]
    fn zero_runs_is_an_input_error() {
        let model = sample("resnet_digits");
        let shapes = declared_sample_shapes(&model).unwrap();
        let err = profile_ops(&model, &shapes, 1, 0, 5, &CancelToken::new());
        assert!(matches!(err, Err(Error::Input(_))), "{err:?}");
    }
}
