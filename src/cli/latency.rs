//! `qsteer latency VARIANT_OR_MODEL`: time a variant of a workspace (or a model file, then
//! its workspace's base variant) and record the latency on that variant.

use super::{open_workspace, print_json, variant_id, variant_workspace, Common};
use clap::Args;
use qsteer::cancel::CancelToken;
use qsteer::compress::ModelCost;
use qsteer::experiment::evaluate::{sample_shapes, select_samples, Subset};
use qsteer::model::Model;
use qsteer::runtime::latency::declared_sample_shapes;
use qsteer::runtime::{measure_latency, profile_ops, LatencyOptions, OpProfile};
use qsteer::units::human;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// A variant id in the workspace, or an ONNX model file
    #[arg(value_name = "VARIANT_OR_MODEL")]
    pub target: String,
    /// Samples per call
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Callers running the model at the same time
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs (stops early after 5 s)
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Also time each node of the plan once per run (10 runs, one caller) and print the op
    /// kinds and nodes that take the time: why a model is slow
    #[arg(long)]
    pub profile: bool,
    /// With --profile: how many nodes to list
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// For a variant id: the model whose default workspace holds it (default: the embedded
    /// sample; --workspace DIR names the workspace directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: LatencyArgs, common: &Common) -> Result<()> {
    if args.batch == 0 || args.threads == 0 || args.runs == 0 {
        return Err(Error::input(
            "latency: --batch, --threads and --runs must be at least 1",
        ));
    }
    let (dir, mut ws, id) = match variant_id(&args.target) {
        Some(id) => {
            let (dir, ws) = variant_workspace(args.model.as_ref(), common)?;
            (dir, ws, id)
        }
        None => {
            let path = PathBuf::from(&args.target);
            let model = super::open_model(&path, common, common.data.as_deref())?;
            let (dir, ws) = open_workspace(&path, &model, common)?;
            let ws = ws
                .lock()
                .map_err(|_| Error::runtime("workspace lock"))?
                .clone();
            (dir, ws, 0)
        }
    };
    let model_path = {
        let v = ws
            .variant(id)
            .ok_or_else(|| Error::input(format!("{}: no variant {id}", dir.display())))?;
        ws.model_path(v)
    };
    let model = Model::load(&model_path)?;
    // A dataset fixes symbolic input dimensions; without one, the file's declared shapes.
    let shapes = match &common.data {
        Some(data) => sample_shapes(&model, &select_samples(data, Subset::All, 0, 0)?.data)?,
        None => declared_sample_shapes(&model)?,
    };
    let opts = LatencyOptions {
        batch: args.batch,
        threads: args.threads,
        runs: args.runs,
        ..LatencyOptions::default()
    };
    let started = Instant::now();
    let latency = measure_latency(&model, &shapes, &opts, &CancelToken::new())?;
    let macs = ModelCost::measure(&model, Some(&shapes))?.macs_total;
    ws.set_latency(id, latency.clone())?;
    let profile = if args.profile {
        Some(profile_ops(
            &model,
            &shapes,
            args.batch,
            PROFILE_RUNS,
            args.top,
            &CancelToken::new(),
        )?)
    } else {
        None
    };
    if common.json {
        let mut doc = json!({
            "median_ms": latency.median_ms,
            "p90_ms": latency.p90_ms,
            "runs": latency.runs,
            "batch": latency.batch,
            "threads": latency.threads,
            "macs": macs,
            "variant": id,
            "model": model_path.display().to_string(),
            "workspace": dir.display().to_string(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        if let Some(p) = &profile {
            doc["profile"] = serde_json::to_value(p).map_err(|e| Error::runtime(e.to_string()))?;
        }
        return print_json(&doc);
    }
    println!(
        "{}  v{id}: median {:.3} ms, p90 {:.3} ms over {} runs (batch {}, {} caller(s)); {} MACs \
         per sample",
        model_path.display(),
        latency.median_ms,
        latency.p90_ms,
        latency.runs,
        latency.batch,
        latency.threads,
        human(macs)
    );
    println!("recorded on variant {id} in workspace {}", dir.display());
    if let Some(p) = &profile {
        print_profile(p);
    }
    Ok(())
}

/// Runs of the per-node profile (after one warm-up run).
const PROFILE_RUNS: usize = 10;

fn print_profile(p: &OpProfile) {
    println!(
        "profile: {:.3} ms per call in the plan's nodes (batch {}, mean of {} runs, one caller)",
        p.total_ms, p.batch, p.runs
    );
    println!("  by op kind:");
    for op in &p.by_op {
        if op.share < 0.005 {
            break;
        }
        println!(
            "    {:>5.1} %  {:>9.3} ms  {:>4} × {}",
            op.share * 100.0,
            op.ms,
            op.nodes,
            op.name
        );
    }
    println!("  slowest nodes:");
    for n in &p.by_node {
        println!(
            "    {:>5.1} %  {:>9.3} ms  {} ({})",
            n.share * 100.0,
            n.ms,
            n.name,
            n.op
        );
    }
}
