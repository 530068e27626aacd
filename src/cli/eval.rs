//! `qsteer eval MODEL --data DIR`: score, sample count, throughput; the result is
//! recorded on the model's base variant in its workspace.

use super::{model_name, print_json, resolve_model, Common};
use clap::Args;
use qsteer::cancel::CancelToken;
use qsteer::data::write_npy_f32;
use qsteer::experiment::evaluate::{evaluate, EvalRequest, Subset};
use qsteer::experiment::{default_workspace_dir, now, EvalRecord, Workspace};
use qsteer::model::Model;
use qsteer::runtime::RunOptions;
use qsteer::{Error, Result};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// Which samples: the evaluation part of the split, the calibration part, or all
    #[arg(long, value_enum, default_value = "evaluation")]
    pub split: Subset,
    /// Score fidelity to this model's outputs (top-1 agreement, output SQNR)
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Samples per inference call
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Samples set aside for calibration when the dataset is split
    #[arg(long, default_value_t = 200)]
    pub calibration_size: usize,
    /// Seed of the calibration / evaluation split
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the model's first output for every evaluated sample to this .npy file
    #[arg(long)]
    pub save_outputs: Option<PathBuf>,
    /// Do not record the result in a workspace
    #[arg(long)]
    pub no_workspace: bool,
}

pub fn run(args: EvalArgs, common: &Common) -> Result<()> {
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("eval needs a dataset: --data DIR"))?;
    if args.batch_size == 0 || args.threads == Some(0) {
        return Err(Error::input(
            "--batch-size and --threads must be at least 1",
        ));
    }
    let model = Model::load(&path)?;
    let mut options = RunOptions {
        batch_size: args.batch_size,
        ..RunOptions::default()
    };
    if let Some(t) = args.threads {
        options.threads = t;
    }
    let req = EvalRequest {
        model: path.clone(),
        data: data.clone(),
        subset: args.split,
        reference: args.reference.clone(),
        options,
        calibration_size: args.calibration_size,
        seed: args.seed,
    };
    let show_progress = std::io::stderr().is_terminal();
    let progress = move |done: usize, total: usize| {
        if show_progress {
            eprint!("\reval {done}/{total}");
        }
    };
    let report = evaluate(&req, &model, &CancelToken::new(), &progress)?;
    if show_progress {
        eprintln!();
    }
    if let Some(f) = &report.fallback {
        eprintln!("note: {f}");
    }
    if !report.has_labels && args.reference.is_none() {
        eprintln!("note: the dataset has no labels and no --reference was given: throughput only");
    }
    if let Some(out) = &args.save_outputs {
        write_npy_f32(out, &report.outputs)?;
    }
    let workspace = if args.no_workspace {
        None
    } else {
        Some(record(&path, &model, &req, &report, common)?)
    };
    if common.json {
        let s = &report.score;
        return print_json(&json!({
            "model": path.display().to_string(),
            "dataset": data.display().to_string(),
            "subset": args.split.name(),
            "split": report.split,
            "samples": report.samples,
            "accuracy": s.accuracy,
            "top5_accuracy": s.top5_accuracy,
            "agreement": s.agreement,
            "sqnr_db": s.sqnr_db,
            "seconds": report.seconds,
            "samples_per_second": report.samples_per_second,
            "batch_size": options.batch_size,
            "threads": options.threads,
            "variant": workspace.as_ref().map(|_| 0),
            "workspace": workspace.as_ref().map(|w| w.display().to_string()),
            "output": args.save_outputs.as_ref().map(|p| p.display().to_string()),
        }));
    }
    let s = &report.score;
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.2}%", 100.0 * v))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{}  on {} ({}, {} samples)",
        path.display(),
        data.display(),
        args.split.name(),
        report.samples
    );
    if s.accuracy.is_some() {
        println!(
            "accuracy   top-1 {}  top-5 {}",
            pct(s.accuracy),
            pct(s.top5_accuracy)
        );
    }
    if s.agreement.is_some() {
        println!(
            "fidelity   top-1 agreement {}  output SQNR {:.1} dB",
            pct(s.agreement),
            s.sqnr_db.unwrap_or(f64::NAN)
        );
    }
    println!(
        "throughput {:.1} samples/s ({:.3} s, batch {}, {} threads)",
        report.samples_per_second, report.seconds, options.batch_size, options.threads
    );
    if let Some(w) = workspace {
        println!("recorded in workspace {}", w.display());
    }
    Ok(())
}

/// Store the result on the base variant of the model's workspace.
fn record(
    path: &std::path::Path,
    model: &Model,
    req: &EvalRequest,
    report: &qsteer::experiment::evaluate::EvalReport,
    common: &Common,
) -> Result<PathBuf> {
    let name = model_name(path);
    let dir = match &common.workspace {
        Some(d) => d.clone(),
        None => default_workspace_dir(&name, &model.content_hash())?,
    };
    let mut ws = Workspace::open_or_create(&dir, model, &name)?;
    ws.set_costs(0, report.macs, Some(report.params))?;
    let record = EvalRecord {
        dataset: req.data.display().to_string(),
        dataset_fingerprint: report.dataset_fingerprint.clone(),
        subset: req.subset.name().to_string(),
        split: report.split.clone(),
        score: report.score.clone(),
        seconds: report.seconds,
        samples_per_second: report.samples_per_second,
        batch_size: req.options.batch_size,
        threads: req.options.threads,
        reference: req.reference.as_ref().map(|p| p.display().to_string()),
        when: now(),
    };
    ws.record_result(0, record)?;
    ws.log_job(&json!({
        "kind": "evaluate", "variant": 0, "when": now(), "status": "finished",
        "samples": report.samples, "seconds": report.seconds, "score": report.score,
    }))?;
    Ok(dir)
}
