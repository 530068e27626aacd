//! `qsteer eval MODEL --data DIR`: score, sample count, throughput; the result is
//! recorded on the model's base variant in its workspace.

use super::executor_flags::ExecutorFlags;
use super::{lock, open_workspace, print_json, resolve_model, run_job, with_model, Common};
use clap::Args;
use qsteer::cancel::CancelToken;
use qsteer::data::write_npy_f32;
use qsteer::experiment::evaluate::{evaluate, EvalRequest, Subset};
use qsteer::jobs::{EvaluateOutcome, HeadlessJob, JobKind};
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
    #[command(flatten)]
    pub metric: super::metric_flags::MetricFlags,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

pub fn run(args: EvalArgs, common: &Common) -> Result<()> {
    if args.no_workspace && common.workspace.is_some() {
        return Err(Error::input(
            "--no-workspace and --workspace contradict each other: --no-workspace records \
             nothing, --workspace says where to record; drop one",
        ));
    }
    if let Some(out) = &args.save_outputs {
        super::outputs::check_output("--save-outputs", out, super::outputs::Output::File)?;
    }
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("eval needs a dataset: --data DIR"))?;
    if args.batch_size == 0 || args.threads == Some(0) {
        return Err(Error::input(
            "--batch-size and --threads must be at least 1",
        ));
    }
    let model = super::open_model(&path, common, Some(&data))?;
    let mut options = RunOptions {
        batch_size: args.batch_size,
        ..RunOptions::default()
    };
    if let Some(t) = args.threads {
        options.threads = t;
    }
    let summary = if args.no_workspace {
        if args.executor.executor(&Default::default())? != qsteer::jobs::Executor::Local {
            return Err(Error::input(
                "--no-workspace evaluates here: it cannot go with --executor slurm",
            ));
        }
        let show_progress = std::io::stderr().is_terminal();
        let summary = evaluate_only(&args, &path, &data, &model, options, show_progress)?;
        if show_progress {
            eprintln!();
        }
        summary
    } else {
        evaluate_as_job(&args, &path, &data, &model, options, common)?
    };
    if common.json {
        return print_json(&summary);
    }
    print_summary(&summary);
    Ok(())
}

/// The normal path: the same evaluate job the app runs, recorded on the base variant of
/// the model's workspace and in its job history.
fn evaluate_as_job(
    args: &EvalArgs,
    path: &std::path::Path,
    data: &std::path::Path,
    model: &Model,
    options: RunOptions,
    common: &Common,
) -> Result<serde_json::Value> {
    let (_, ws) = open_workspace(path, model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    // Absolute paths: the journal must still make sense from the app started elsewhere.
    let abs = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let kind = JobKind::Evaluate {
        variant: 0,
        data: abs(data),
        subset: args.split,
        batch_size: options.batch_size,
        threads: options.threads,
        calibration_size: args.calibration_size,
        seed: args.seed,
        reference: None,
        reference_model: args.reference.as_deref().map(abs),
        save_outputs: args.save_outputs.as_deref().map(abs),
        metric: args.metric.resolve(&ws)?,
    };
    let outcome: EvaluateOutcome =
        run_job(ws, HeadlessJob::on(kind, executor), common)?.try_into()?;
    Ok(with_model(serde_json::json!(outcome), path))
}

/// `--no-workspace`: the same evaluation, nothing recorded.
fn evaluate_only(
    args: &EvalArgs,
    path: &std::path::Path,
    data: &std::path::Path,
    model: &Model,
    options: RunOptions,
    show_progress: bool,
) -> Result<serde_json::Value> {
    let req = EvalRequest {
        model: path.to_path_buf(),
        data: data.to_path_buf(),
        subset: args.split,
        reference: args.reference.clone(),
        options,
        calibration_size: args.calibration_size,
        seed: args.seed,
        metric: match (args.metric.save_metric, args.metric.spec()?) {
            (true, _) => {
                return Err(Error::input(
                    "--save-metric saves into a workspace: it cannot go with --no-workspace",
                ))
            }
            (false, spec) => spec.unwrap_or_default(),
        },
    };
    let progress = move |done: usize, total: usize| {
        if show_progress {
            eprint!("\reval {done}/{total}");
        }
    };
    let report = evaluate(&req, model, &CancelToken::new(), &progress)?;
    if let Some(f) = &report.fallback {
        eprintln!("note: {f}");
    }
    if let Some(out) = &args.save_outputs {
        write_npy_f32(out, &report.outputs)?;
    }
    let s = &report.score;
    let mut doc = json!({
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
        "macs": report.macs,
        "params": report.params,
        "variant": null,
        "workspace": null,
        "output": args.save_outputs.as_ref().map(|p| p.display().to_string()),
    });
    s.add_json_fields(&mut doc);
    Ok(doc)
}

fn print_summary(s: &serde_json::Value) {
    let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let num = |k: &str| s.get(k).and_then(|v| v.as_f64());
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.2}%", 100.0 * v))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{}  on {} ({}, {} samples)",
        text("model"),
        text("dataset"),
        text("subset"),
        num("samples").unwrap_or(0.0)
    );
    if num("accuracy").is_some() {
        println!(
            "accuracy   top-1 {}  top-5 {}",
            pct(num("accuracy")),
            pct(num("top5_accuracy"))
        );
    }
    print_fidelity(s, true);
    println!(
        "throughput {:.1} samples/s ({:.3} s, batch {}, {} threads)",
        num("samples_per_second").unwrap_or(0.0),
        num("seconds").unwrap_or(0.0),
        num("batch_size").unwrap_or(0.0),
        num("threads").unwrap_or(0.0)
    );
    if let Some(w) = s.get("workspace").and_then(|v| v.as_str()) {
        println!("recorded in workspace {w} (variant 0)");
    }
}

/// The fidelity and metric lines of a job's JSON document (eval, quantsim): the metric that
/// ranks (when it is not accuracy), then agreement, SQNR and cosine, per output when there
/// are several, and the external command's other keys.
pub(crate) fn print_fidelity(s: &serde_json::Value, head: bool) {
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_f64());
    let metric = s.get("metric").and_then(|v| v.as_str()).unwrap_or("");
    let figures = |v: &serde_json::Value| {
        let mut parts = Vec::new();
        if let Some(a) = num(v, "agreement") {
            parts.push(format!("agreement {:.2}%", 100.0 * a));
        }
        if let Some(d) = num(v, "sqnr_db") {
            parts.push(format!("SQNR {d:.1} dB"));
        }
        if let Some(c) = num(v, "cosine") {
            parts.push(format!("cosine {c:.4}"));
        }
        parts.join("  ")
    };
    let value = num(s, "metric_value").filter(|_| head);
    match (metric, value) {
        ("external", Some(v)) => {
            let extra = s
                .get("external")
                .and_then(|e| e.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                })
                .unwrap_or_default();
            println!("metric     external {v:.4}  {extra}");
        }
        // Accuracy has its own line; top-1 agreement is on the fidelity line.
        ("" | "accuracy" | "agreement", _) | (_, None) => {}
        (m, Some(v)) => println!(
            "metric     {m} {}",
            qsteer::metrics::format_metric_value(m, v)
        ),
    }
    let f = figures(s);
    if head && !f.is_empty() {
        println!("fidelity   {f}");
    }
    if let Some(outputs) = s
        .get("outputs")
        .and_then(|v| v.as_array())
        .filter(|o| o.len() > 1)
    {
        for o in outputs {
            println!(
                "  output {} {}: {} {}  {}",
                o["output"].as_str().unwrap_or(""),
                o["shape"],
                o["metric"].as_str().unwrap_or(""),
                num(o, "value").map_or("-".into(), |v| qsteer::metrics::format_metric_value(
                    o["metric"].as_str().unwrap_or(""),
                    v
                )),
                figures(o)
            );
        }
    }
}
