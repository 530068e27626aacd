//! `qsteer sweep MODEL --data DIR --target C`: the SSVD→CP sweep as one job on the model's
//! workspace — SSVD candidates (decision 1), CP on the pre-selected or the given ones
//! (decision 2), the pick. Every candidate is a variant of the workspace.

use super::executor_flags::ExecutorFlags;
use super::split_flags::SplitFlags;
use super::table::{text, Table};
use super::{lock, open_workspace, print_json, resolve_model, run_job, with_model, Common};
use clap::{Args, ValueEnum};
use qsteer::jobs::{HeadlessJob, JobKind, SweepStage};
use qsteer::units::human;
use qsteer::{Error, Result};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    /// Step 1 only: the SSVD candidates, pre-selection and advice
    Ssvd,
    /// Both steps, CP on the pre-selected SSVD candidates, and the pick
    Full,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// The overall MAC ratio C of the result to MODEL, in (0, 1)
    #[arg(long)]
    pub target: f64,
    /// SSVD MAC ratios to try (default: C, C+0.15, C+0.25, capped at 0.95)
    #[arg(long, value_delimiter = ',')]
    pub cssvd: Vec<f64>,
    /// Tolerable drop of the score, in points (accuracy with labels, else agreement)
    #[arg(long, default_value_t = 2.0)]
    pub max_drop: f64,
    /// CP ratios tried besides C / Cssvd: ± this step
    #[arg(long, default_value_t = 0.05)]
    pub neighbour: f64,
    /// Skip layer-wise reconstruction of the candidates
    #[arg(long)]
    pub no_reconstruct: bool,
    /// How far to go
    #[arg(long, value_enum, default_value_t = StageArg::Full, conflicts_with = "ssvd_picks")]
    pub stage: StageArg,
    /// Run step 2 only, on these SSVD candidates (variant ids) of the sweep
    #[arg(long, value_delimiter = ',')]
    pub ssvd_picks: Vec<u32>,
    /// N of the greedy selection's candidate ratios k/N
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    #[command(flatten)]
    pub split: SplitFlags,
    /// With --executor slurm, each step's candidates run as Slurm jobs side by side; the
    /// sweep itself (scoring, decisions) stays in this process
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

pub fn run(args: SweepArgs, common: &Common) -> Result<()> {
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("sweep needs a dataset: --data DIR"))?;
    let model = super::open_model(&path, common, Some(&data))?;
    let (_, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let stage = match (args.ssvd_picks.is_empty(), args.stage) {
        (false, _) => SweepStage::Cp {
            ssvd: args.ssvd_picks.clone(),
        },
        (true, StageArg::Ssvd) => SweepStage::Ssvd,
        (true, StageArg::Full) => SweepStage::Full,
    };
    let kind = JobKind::Sweep {
        variant: 0,
        data: std::path::absolute(&data).unwrap_or(data),
        target: args.target,
        cssvd: args.cssvd.clone(),
        max_drop: args.max_drop,
        neighbour: args.neighbour,
        reconstruct: !args.no_reconstruct,
        candidates: args.candidates,
        stage,
        calibration_size: args.split.calibration_size,
        seed: args.split.seed,
        threads: args.split.threads,
        metric: args.split.metric.resolve(&ws)?,
    };
    let summary = run_job(ws, HeadlessJob::on(kind, executor), common)?.to_json();
    let summary = with_model(summary, &path);
    if common.json {
        return print_json(&summary);
    }
    print_report(&summary);
    Ok(())
}

/// The metric of a score object in points (percent; dB for SQNR), or `-`.
fn points(score: &Value, metric: &str) -> String {
    let v = match metric {
        "accuracy" | "agreement" => score[metric].as_f64(),
        _ => None,
    }
    .or_else(|| score["metric_value"].as_f64());
    match v {
        None => "-".into(),
        Some(v) if metric.split('+').any(|m| m == "sqnr") => format!("{v:.1}"),
        Some(v) => format!("{:.2}", 100.0 * v),
    }
}

fn latency(row: &Value) -> String {
    row["latency"]["median_ms"]
        .as_f64()
        .map_or("-".into(), |v| format!("{v:.3}"))
}

fn ratio(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |v| format!("{v:.4}"))
}

fn print_report(s: &Value) {
    let metric = text(&s["metric"]);
    println!(
        "{}  sweep to C = {} · tolerable drop {} points of {metric}",
        text(&s["model"]),
        s["target"],
        s["max_drop"]
    );
    println!(
        "base v{}: {metric} {} %, latency {} ms",
        s["base"],
        points(&s["base_score"], &metric),
        s["base_latency"]["median_ms"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.3}"))
    );
    let mut t = Table::new(
        &[
            "Cssvd",
            "variant",
            "MAC ratio",
            "before",
            "after",
            "drop",
            "ms",
            "size",
            "pre",
        ],
        &[true, true, true, true, true, true, true, true, false],
    );
    for r in s["ssvd"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&r["requested"]),
            format!("v{}", r["variant"]),
            ratio(&r["mac_ratio"]),
            points(&r["score_before"], &metric),
            points(&r["score_after"], &metric),
            format!("{:.2}", r["drop_points"].as_f64().unwrap_or(0.0)),
            latency(r),
            r["size_bytes"].as_u64().map_or("-".into(), human),
            if r["preselected"].as_bool() == Some(true) {
                "✓".into()
            } else {
                String::new()
            },
        ]);
    }
    println!("decision 1: SSVD candidates (scores in % {metric}; drop in points)");
    print!("{}", t.render());
    if let Some(a) = s["advice"].as_str() {
        println!("advice: {a}");
    }
    let cp = s["cp"].as_array().cloned().unwrap_or_default();
    if !cp.is_empty() {
        let cssvd_of = |parent: &Value| {
            s["ssvd"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["variant"] == *parent)
                .map_or(format!("v{parent}"), |r| text(&r["requested"]))
        };
        let mut t = Table::new(
            &[
                "Cssvd",
                "Ccp",
                "variant",
                "overall MAC",
                "before",
                "after",
                "drop",
                "ms",
                "size",
            ],
            &[true, true, true, true, true, true, true, true, true],
        );
        for r in &cp {
            t.row(vec![
                cssvd_of(&r["parent"]),
                text(&r["requested"]),
                format!("v{}", r["variant"]),
                ratio(&r["overall_mac_ratio"]),
                points(&r["score_before"], &metric),
                points(&r["score_after"], &metric),
                format!("{:.2}", r["drop_points"].as_f64().unwrap_or(0.0)),
                latency(r),
                r["size_bytes"].as_u64().map_or("-".into(), human),
            ]);
        }
        println!("decision 2: SSVD→CP candidates");
        print!("{}", t.render());
    }
    match s["pick"].as_object() {
        Some(p) => println!(
            "pick: v{} ({}); model {}",
            p["variant"],
            text(&p["reason"]),
            text(&s["output"])
        ),
        None => println!("no pick"),
    }
    println!(
        "workspace {}; report {}; {:.1} s",
        text(&s["workspace"]),
        text(&s["report_file"]),
        s["seconds"].as_f64().unwrap_or(0.0)
    );
}
