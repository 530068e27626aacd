//! `qsteer analyze MODEL --data DIR`: the diagnosis — FP32 / weights-only / activations-only
//! / W+A scores and the per-layer quant-noise table; `--sweep` adds the per-layer
//! sensitivity. The analysis is stored on the model's base variant in its workspace.

use super::executor_flags::ExecutorFlags;
use super::quant_flags::QuantFlags;
use super::table::Table;
use super::{lock, open_workspace, print_json, resolve_model, run_job, Common, SharedWorkspace};
use clap::Args;
use qsteer::jobs::{HeadlessJob, JobKind};
use qsteer::metrics::Score;
use qsteer::quant::analysis::Analysis;
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantFlags,
    /// Also score each layer alone quantized and alone left FP32 (two evaluations per layer;
    /// resumes from the workspace cache if interrupted)
    #[arg(long)]
    pub sweep: bool,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

/// The analysis stored on `variant`, as the `--json` document names it.
pub(crate) fn document(
    ws: &SharedWorkspace,
    variant: u32,
    model: &std::path::Path,
    dataset: &std::path::Path,
) -> Result<serde_json::Value> {
    let (analysis, dir) = {
        let ws = lock(ws);
        let analysis =
            (ws.analysis(variant)?).ok_or_else(|| Error::runtime("the analysis was not stored"))?;
        (analysis, ws.dir().to_path_buf())
    };
    // Through text, so f32 fields print as f32 (0.0235), not widened (0.02352941222).
    let text = serde_json::to_string(&analysis).map_err(|e| Error::runtime(e.to_string()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::runtime(e.to_string()))?;
    doc["model"] = json!(model.display().to_string());
    doc["dataset"] = json!(dataset.display().to_string());
    doc["variant"] = json!(variant);
    doc["workspace"] = json!(dir.display().to_string());
    Ok(doc)
}

pub fn run(args: AnalyzeArgs, common: &Common) -> Result<()> {
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    let data = data.ok_or_else(|| Error::input("analyze needs a dataset: --data DIR"))?;
    let settings = args.quant.settings()?;
    let options = args.quant.run_options()?;
    let model = super::open_model(&path, common, Some(&data))?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let kind = JobKind::Analyze {
        variant: 0,
        data: std::path::absolute(&data).unwrap_or(data.clone()),
        settings,
        calibration_size: args.quant.calibration_size,
        seed: args.quant.seed,
        threads: options.threads,
        sweep: args.sweep,
        metric: args.quant.metric.resolve(&ws)?,
    };
    run_job(ws.clone(), HeadlessJob::on(kind, executor), common)?;
    if common.json {
        return print_json(&document(&ws, 0, &path, &data)?);
    }
    let analysis =
        (lock(&ws).analysis(0)?).ok_or_else(|| Error::runtime("the analysis was not stored"))?;
    print!("{}", render(&path, &analysis));
    println!(
        "stored on variant 0 in workspace {} ({:.1} s, {} passes over the data + {})",
        dir.display(),
        analysis.seconds,
        analysis.data_passes,
        if analysis.sweep.is_some() {
            "the sweep"
        } else {
            "no sweep"
        }
    );
    Ok(())
}

fn metric(s: &Score) -> String {
    match (s.metric_name(), s.value()) {
        (Some("accuracy"), Some(a)) => format!("{:.2}%", 100.0 * a),
        (Some("agreement"), Some(a)) => format!("{:.2}% agr", 100.0 * a),
        (Some(m), Some(v)) => format!("{} {m}", qsteer::metrics::format_metric_value(m, v)),
        _ => "-".into(),
    }
}

fn db(v: Option<f64>) -> String {
    v.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into())
}

/// The score table and the per-layer table, in graph order.
fn render(path: &std::path::Path, a: &Analysis) -> String {
    let mut out = format!(
        "{}  {}  ({} evaluation samples)\n\n",
        path.display(),
        a.step,
        a.samples
    );
    let mut scores = Table::new(&["", "score"], &[false, true]);
    for (label, s) in [
        ("FP32", &a.scores.fp32),
        ("weights only", &a.scores.weights_only),
        ("activations only", &a.scores.activations_only),
        ("weights + activations", &a.scores.weights_and_activations),
    ] {
        scores.row(vec![label.into(), metric(s)]);
    }
    out.push_str(&scores.render());
    out.push('\n');
    // Each candidate float op set, measured: the advice names the flag.
    for t in &a.float_ops.trials {
        out.push_str(&format!(
            "with --fp32-ops {}: W+A {:.4} ({:+.4})\n",
            t.ops.join(","),
            t.metric_value,
            t.gain
        ));
    }
    if let Some(advice) = &a.float_ops.advice {
        out.push_str(&format!("advice: {advice}\n"));
    }
    if !a.float_ops.trials.is_empty() {
        out.push('\n');
    }
    let sweep = a.sweep.as_ref();
    let mut header = vec![
        "layer",
        "op",
        "W",
        "SQNR dB",
        "W only",
        "A only",
        "iso",
        "iso W",
        "rng max/med",
        "act range",
        "act_rng",
    ];
    if sweep.is_some() {
        header.extend(["only q", "only fp32"]);
    }
    let right: Vec<bool> = header.iter().enumerate().map(|(i, _)| i >= 2).collect();
    let mut t = Table::new(&header, &right);
    for l in &a.layers {
        let mut row = vec![
            l.layer.clone(),
            l.op.clone(),
            l.weight_bits
                .map(|b| b.to_string())
                .unwrap_or_else(|| "fp32".into()),
            db(l.sqnr_db),
            db(l.sqnr_weights_db),
            db(l.sqnr_activations_db),
            db(l.sqnr_isolated_db),
            db(l.sqnr_isolated_weights_db),
            format!("{:.1}", l.weights.max_median_ratio),
            l.activation
                .as_ref()
                .map(|r| format!("{:.3} … {:.3}", r.observed_min, r.observed_max))
                .unwrap_or_else(|| "-".into()),
            l.activation
                .as_ref()
                .and_then(|r| r.act_rng)
                .map(act_rng)
                .unwrap_or_else(|| "-".into()),
        ];
        if let Some(sweep) = sweep {
            let s = sweep.iter().find(|s| s.layer == l.layer);
            let pct = |v: Option<f64>| {
                v.map(|v| format!("{:.2}%", 100.0 * v))
                    .unwrap_or_else(|| "-".into())
            };
            row.push(pct(s.map(|s| s.only_this_quantized)));
            row.push(pct(s.map(|s| s.only_this_fp32)));
        }
        t.row(row);
    }
    out.push_str(&t.render());
    if !a.outputs.is_empty() {
        out.push('\n');
        let mut t = Table::new(
            &["output", "SQNR dB", "worst channel", "its SQNR dB"],
            &[false, true, true, true],
        );
        for o in &a.outputs {
            t.row(vec![
                o.output.clone(),
                db(o.sqnr_db),
                o.worst_channel
                    .map(|c| format!("{c} (axis 1)"))
                    .unwrap_or_else(|| "-".into()),
                db(o.worst_channel_sqnr_db),
            ]);
        }
        out.push_str(&t.render());
    }
    let flagged: Vec<_> = a.activations.iter().filter(|x| x.flagged).collect();
    if !flagged.is_empty() {
        out.push_str(&format!(
            "\n{} quantized tensor(s) with very different ranges under one scale (act_rng > {}):\n",
            flagged.len(),
            qsteer::quant::analysis::WIDE_RANGE_RATIO
        ));
        for x in flagged {
            out.push_str(&format!(
                "  {} ({}, act_rng {}): {}\n",
                x.node.as_deref().unwrap_or(&x.value),
                x.op,
                x.act_rng.map(act_rng).unwrap_or_default(),
                x.advice.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

/// The activation range spread, flagged with `!` above the threshold.
fn act_rng(r: f64) -> String {
    let flag = if r > qsteer::quant::analysis::WIDE_RANGE_RATIO {
        "!"
    } else {
        ""
    };
    format!("{r:.1}{flag}")
}
