//! `qsteer compress MODEL --data DIR --method wsvd|ssvd|cp --target C`: greedy per-layer
//! ratio selection (or `--ratios FILE`) run as a job on the model's workspace; the compressed
//! model is a child of the base variant, optionally copied to `--out FILE`.

use super::executor_flags::ExecutorFlags;
use super::outputs::{check_output, Output};
use super::split_flags::SplitFlags;
use super::table::{text, Table};
use super::{finish_child_job, lock, resolve_target, run_job, Common, SharedWorkspace, Target};
use clap::Args;
use qsteer::compress::build::SELECTIONS;
use qsteer::compress::{LayerRatios, Method};
use qsteer::jobs::{Executor, HeadlessJob, JobKind};
use qsteer::units::human;
use qsteer::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CompressArgs {
    /// A variant id in the workspace, or an ONNX model file (default: the embedded sample)
    #[arg(value_name = "VARIANT_OR_MODEL")]
    pub target: Option<String>,
    /// For a variant id: the model whose default workspace holds it (default: the embedded
    /// sample; --workspace DIR names the workspace directly)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compression method: wsvd (weight SVD), ssvd (spatial SVD), cp (channel pruning)
    #[arg(long, value_parser = parse_method)]
    pub method: Method,
    /// MAC ratio of the result to MODEL, in (0, 1): greedy per-layer ratio selection
    #[arg(
        long = "target",
        id = "target_ratio",
        conflicts_with = "ratios",
        required_unless_present = "ratios"
    )]
    pub target_ratio: Option<f64>,
    /// Manual per-layer ratios instead of a target: a JSON file {"layer": ratio, …}
    #[arg(long)]
    pub ratios: Option<PathBuf>,
    /// N of the candidate ratios k/N (k = 1..N−1) of the greedy selection
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    /// Hold layers at fixed ratios: LAYER=R,…
    #[arg(long, value_delimiter = ',')]
    pub pin: Vec<String>,
    /// Leave layers alone: LAYER,…
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Channel pruning's choice of input channels to keep
    #[arg(long, value_parser = SELECTIONS)]
    pub selection: Option<String>,
    /// Refit the changed layers to the model's outputs (layer-wise least squares, no labels)
    #[arg(long)]
    pub reconstruct: bool,
    #[command(flatten)]
    pub split: SplitFlags,
    /// Also write the compressed model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
    /// Only fill share I of N of the greedy dictionary into the workspace's cache (what a
    /// Slurm array task runs); no variant is made
    #[arg(long, hide = true, value_name = "I/N")]
    pub shard: Option<String>,
}

fn parse_method(s: &str) -> std::result::Result<Method, String> {
    Method::parse(s).ok_or_else(|| format!("'{s}' is not a method; expected wsvd, ssvd or cp"))
}

/// `LAYER=R` items; a malformed one is an error naming it.
fn parse_pins(items: &[String]) -> Result<LayerRatios> {
    items
        .iter()
        .map(|item| {
            let parsed = item
                .rsplit_once('=')
                .and_then(|(l, r)| Some((l.trim().to_string(), r.trim().parse::<f64>().ok()?)))
                .filter(|(l, _)| !l.is_empty());
            parsed.ok_or_else(|| {
                Error::input(format!(
                    "--pin '{item}': expected LAYER=RATIO, e.g. conv1=0.5"
                ))
            })
        })
        .collect()
}

/// The `--ratios` file: one JSON object of layer name → ratio.
fn read_ratios(path: &Path) -> Result<LayerRatios> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::input(format!(
            "{}: expected a JSON object of layer name → ratio, e.g. {{\"conv1\": 0.5}}: {e}",
            path.display()
        ))
    })
}

/// The job these arguments ask for, on its target and executor.
pub(crate) fn job(args: &CompressArgs, common: &Common) -> Result<(Target, JobKind, Executor)> {
    let ratios = args.ratios.as_deref().map(read_ratios).transpose()?;
    let pin = parse_pins(&args.pin)?;
    let target = resolve_target(args.target.as_deref(), args.model.as_ref(), common)?;
    let executor = args.executor.resolve(&mut lock(&target.workspace))?;
    let data = target
        .data
        .clone()
        .ok_or_else(|| Error::input("compress needs a dataset: --data DIR"))?;
    let kind = JobKind::Compress {
        variant: target.variant,
        data: std::path::absolute(&data).unwrap_or(data),
        method: args.method,
        target: args.target_ratio,
        ratios,
        pin,
        exclude: args.exclude.clone(),
        candidates: args.candidates,
        selection: args.selection.clone(),
        reconstruct: args.reconstruct,
        calibration_size: args.split.calibration_size,
        seed: args.split.seed,
        threads: args.split.threads,
        metric: args.split.metric.resolve(&target.workspace)?,
    };
    Ok((target, kind, executor))
}

pub fn run(args: CompressArgs, common: &Common) -> Result<()> {
    if let Some(shard) = &args.shard {
        return run_shard(&args, shard, common);
    }
    if let Some(out) = &args.out {
        check_output("--out", out, Output::File)?;
    }
    let (target, kind, executor) = job(&args, common)?;
    let summary = run_job(
        target.workspace.clone(),
        HeadlessJob::on(kind, executor),
        common,
    )?
    .to_json();
    finish_child_job(
        summary,
        args.out.as_ref(),
        &target.model,
        common,
        print_table,
    )
}

/// `--shard I/N`: one share of the dictionary, here; its report as the JSON document.
fn run_shard(args: &CompressArgs, shard: &str, common: &Common) -> Result<()> {
    let shard = qsteer::compress::greedy::dictionary::Shard::parse(shard)?;
    let (target, kind, executor) = job(args, common)?;
    if executor != Executor::Local {
        return Err(Error::input(
            "--shard runs here (it is what a Slurm array task runs)",
        ));
    }
    fill_share(&target.workspace, &kind, shard, common)
}

/// Fill one share of a greedy compress job's dictionary; its report as the JSON document.
pub(crate) fn fill_share(
    ws: &SharedWorkspace,
    kind: &JobKind,
    shard: qsteer::compress::greedy::dictionary::Shard,
    common: &Common,
) -> Result<()> {
    let cancel = qsteer::cancel::CancelToken::new();
    let doc = qsteer::jobs::fill_greedy_share(ws, kind, shard, &cancel, &|d, t| {
        if common.progress == super::Progress::Jsonl {
            eprintln!(
                "{}",
                serde_json::json!({"progress": {"done": d, "total": t}})
            );
        }
    })?;
    super::print_json(&doc)
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |v| format!("{:.2} %", 100.0 * v))
}

fn print_table(s: &Value) {
    println!("{}  {}", text(&s["model"]), text(&s["step"]));
    let predicted = s["predicted_mac_ratio"]
        .as_f64()
        .map_or(String::new(), |p| format!(", predicted {p:.3}"));
    let target = s["target"]
        .as_f64()
        .map_or(String::new(), |t| format!(", target {t}"));
    let macs = |k: &str| s[k].as_u64().map_or("-".into(), human);
    println!(
        "MAC ratio {:.3}{predicted}{target} · MACs {} → {} · params {}",
        s["mac_ratio"].as_f64().unwrap_or(1.0),
        macs("macs_before"),
        macs("macs"),
        macs("params_total"),
    );
    if let (Some(ms), Some(parent), Some(ratio)) = (
        s["latency_ms"].as_f64(),
        s["parent_latency_ms"].as_f64(),
        s["latency_ratio"].as_f64(),
    ) {
        println!(
            "latency ratio {ratio:.3} · {ms:.3} ms (model {parent:.3} ms), median of {} runs",
            s["latency"]["runs"]
        );
    }
    let metric = s["metric"].as_str().unwrap_or("agreement");
    let score = if s["accuracy"].is_null() || metric != "accuracy" {
        let value = s["metric_value"].as_f64().or(s["agreement"].as_f64());
        let shown = value.map_or("-".into(), |v| {
            qsteer::metrics::format_metric_value(metric, v)
        });
        if metric == "external" {
            format!("external metric {shown}")
        } else {
            format!("{metric} to the model {shown}")
        }
    } else {
        format!(
            "accuracy {} (model {})",
            pct(&s["accuracy"]),
            pct(&s["parent_accuracy"])
        )
    };
    match s["before_reconstruction"].as_object() {
        Some(b) => println!(
            "{score} after reconstruction, {} before; {} samples",
            match b.get("metric_value").and_then(|v| v.as_f64()) {
                Some(v) if metric != "accuracy" => qsteer::metrics::format_metric_value(metric, v),
                _ => pct(b.get("accuracy").unwrap_or(&b["agreement"])),
            },
            s["samples"]
        ),
        None => println!("{score} on {} samples", s["samples"]),
    }
    if let Some(d) = s["dictionary"].as_object() {
        println!(
            "dictionary: {} entries, {} reused, {} evaluated in {:.1} s",
            d["entries"],
            d["reused"],
            d["computed"],
            d["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let mut t = Table::new(
        &["layer", "ratio", "MACs", "→", "rank / channels"],
        &[false, true, true, true, false],
    );
    for l in s["layers"].as_array().into_iter().flatten() {
        let kept = match (l["rank"].as_u64(), l["kept_channels"].as_u64()) {
            (Some(r), _) => format!("rank {r}/{}", l["full_rank"]),
            (None, Some(k)) => format!("{k}/{} in", l["total_channels"]),
            _ => String::new(),
        };
        t.row(vec![
            text(&l["layer"]),
            format!("{:.2}", l["ratio"].as_f64().unwrap_or(1.0)),
            l["macs_before"].as_u64().map_or("-".into(), human),
            l["macs_after"].as_u64().map_or("-".into(), human),
            kept,
        ]);
    }
    print!("{}", t.render());
    for k in s["skipped"].as_array().into_iter().flatten() {
        println!("  left: {}: {}", text(&k["layer"]), text(&k["reason"]));
    }
    super::table::print_variant_line(s);
}
