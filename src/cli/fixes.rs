//! `qsteer fold-bn MODEL` and `qsteer cle MODEL`: a post-training fix run as a job on the
//! model's workspace (a child of the base variant), optionally written to `--out FILE` and
//! scored on `--data DIR`; CLE's high-bias absorption is then limited to what the data's
//! calibration samples allow, and its FP32 change measured on the evaluation samples.

use super::executor_flags::ExecutorFlags;
use super::table::Table;
use super::{lock, open_workspace, print_json, resolve_model, run_job, with_model, Common};
use clap::Args;
use qsteer::fsutil::write_atomic;
use qsteer::jobs::{HeadlessJob, JobKind};
use qsteer::{Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct FoldBnArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// Also write the folded model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

#[derive(Debug, Args)]
pub struct CleArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// Turn Relu6 (Clip 0..6) inside chains into Relu so they can be equalized; this
    /// changes the model's function (every converted node is reported)
    #[arg(long)]
    pub relu6_to_relu: bool,
    /// Skip high-bias absorption
    #[arg(long)]
    pub no_hba: bool,
    /// Absorb high biases also into layers that zero-pad their input (AIMET's behaviour;
    /// their border outputs then differ)
    #[arg(long, conflicts_with = "no_hba")]
    pub hba_padded: bool,
    /// Also write the equalized model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

pub fn run_fold_bn(args: FoldBnArgs, common: &Common) -> Result<()> {
    let done = run_fix(
        args.model.as_ref(),
        args.out.as_ref(),
        &args.executor,
        common,
        |variant, _| JobKind::FoldBn { variant },
    )?;
    if common.json {
        return print_json(&done.document());
    }
    let s = &done.summary;
    let folded = s["folded"].as_array().cloned().unwrap_or_default();
    println!(
        "{}  fold_bn: {} BatchNormalization(s) folded",
        done.model.display(),
        folded.len()
    );
    for f in &folded {
        let added = if f["bias_added"] == true {
            " (bias added)"
        } else {
            ""
        };
        println!(
            "  {} → {} {}{added}",
            text(&f["bn"]),
            text(&f["op"]),
            text(&f["layer"])
        );
    }
    for k in s["skipped"].as_array().into_iter().flatten() {
        println!("  left: {}: {}", text(&k["bn"]), text(&k["reason"]));
    }
    done.print_footer();
    Ok(())
}

pub fn run_cle(args: CleArgs, common: &Common) -> Result<()> {
    let (relu6_to_relu, hba, hba_padded) = (args.relu6_to_relu, !args.no_hba, args.hba_padded);
    let done = run_fix(
        args.model.as_ref(),
        args.out.as_ref(),
        &args.executor,
        common,
        |variant, data| JobKind::Cle {
            variant,
            relu6_to_relu,
            hba,
            hba_padded,
            data,
        },
    )?;
    if common.json {
        return print_json(&done.document());
    }
    let s = &done.summary;
    println!("{}  {}", done.model.display(), text(&s["step"]));
    if let Some(f) = s["folded"].as_array() {
        println!("BN folded first: {} BatchNormalization(s)", f.len());
    }
    let sets = s["sets"].as_array().cloned().unwrap_or_default();
    println!(
        "{} set(s) equalized, {} iteration(s){}",
        sets.len(),
        s["iterations"],
        if s["converged"] == true {
            ""
        } else {
            " (not converged)"
        }
    );
    for set in &sets {
        let layers: Vec<String> = set["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        println!("  {}", layers.join(" → "));
    }
    let stopped_by_clip = s["ends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| text(&e["reason"]).contains("needs relu6_to_relu"))
        .count();
    if sets.is_empty() && stopped_by_clip > 0 {
        println!(
            "note: Relu6 (Clip 0..6) stops every chain ({stopped_by_clip} of them), so CLE changed \
             nothing: `--relu6-to-relu` equalizes through them (it changes the function)"
        );
    }
    for c in s["converted"].as_array().into_iter().flatten() {
        println!(
            "  {} '{}' → Relu (changes the function)",
            text(&c["was"]),
            text(&c["node"])
        );
    }
    let mut t = Table::new(
        &["layer", "op", "ch", "range max/med before", "after"],
        &[false, false, true, true, true],
    );
    for l in s["layers"].as_array().into_iter().flatten() {
        let ratio = |v: &Value| v.as_f64().map_or("-".into(), |r| format!("{r:.1}"));
        t.row(vec![
            text(&l["layer"]),
            text(&l["op"]),
            l["channels"].to_string(),
            ratio(&l["ratio_before"]),
            ratio(&l["ratio_after"]),
        ]);
    }
    print!("{}", t.render());
    if let Some(h) = s["hba"].as_object() {
        let n = |k: &str| h.get(k).and_then(|v| v.as_array()).map_or(0, |a| a.len());
        let checked = match h.get("checked_on").and_then(Value::as_u64) {
            Some(k) => format!(" (limited to what {k} calibration samples allow)"),
            None if n("absorbed") > 0 => " (from BN statistics: may change outputs)".into(),
            None => String::new(),
        };
        println!(
            "high-bias absorption: {} pair(s) absorbed, {} skipped{checked}",
            n("absorbed"),
            n("skipped")
        );
        for a in h
            .get("absorbed")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let reduced = a["reduced"].as_u64().unwrap_or(0);
            let lowered = if reduced > 0 {
                format!(", {reduced} lowered by the data")
            } else {
                String::new()
            };
            println!(
                "  {} → {}: {} channel(s), max {:.4}{lowered}",
                text(&a["layer"]),
                text(&a["into"]),
                a["channels"],
                a["max"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let Some(c) = s["fp32_change"].as_object() {
        println!(
            "FP32 outputs vs the parent on {} evaluation samples: max |Δ| {:.3e}, SQNR {:.1} dB",
            c.get("samples").cloned().unwrap_or(Value::Null),
            c.get("max_abs").and_then(Value::as_f64).unwrap_or(0.0),
            c.get("sqnr_db").and_then(Value::as_f64).unwrap_or(0.0)
        );
    }
    done.print_footer();
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// What a fix command did: the job's summary, where the model went, and its score.
struct Done {
    model: PathBuf,
    summary: Value,
    output: String,
    evaluation: Option<Value>,
}

impl Done {
    /// The `--json` document: the job's summary with `model`, `output` (the `--out` file
    /// if given, else the workspace's) and, with a dataset, `accuracy` and `samples`.
    fn document(&self) -> Value {
        let mut doc = document(self.summary.clone(), &self.model);
        doc["output"] = json!(self.output);
        if let Some(e) = &self.evaluation {
            for key in ["accuracy", "top5_accuracy", "samples", "dataset"] {
                doc[key] = e[key].clone();
            }
        }
        doc
    }

    fn print_footer(&self) {
        if let Some(a) = self
            .evaluation
            .as_ref()
            .and_then(|e| e["accuracy"].as_f64())
        {
            println!(
                "accuracy   top-1 {:.2}% on {} evaluation samples",
                100.0 * a,
                self.evaluation
                    .as_ref()
                    .map_or(Value::Null, |e| e["samples"].clone())
            );
        }
        println!(
            "variant {} in workspace {}; model {}",
            self.summary["variant"],
            text(&self.summary["workspace"]),
            self.output
        );
    }
}

/// The `--json` document of a fold-BN or CLE job started from `model` without `--out` or
/// a score: the summary with the model and the new variant's file as `output`.
pub(crate) fn document(summary: Value, model: &Path) -> Value {
    let output = summary["output"].clone();
    let mut doc = with_model(summary, model);
    doc["output"] = json!(text(&output));
    doc
}

/// Run the fix job `kind(0)` on the model's workspace, write `--out`, score with `--data`.
fn run_fix(
    model: Option<&PathBuf>,
    out: Option<&PathBuf>,
    executor: &ExecutorFlags,
    common: &Common,
    kind: impl Fn(u32, Option<PathBuf>) -> JobKind,
) -> Result<Done> {
    if let Some(out) = out {
        super::outputs::check_output("--out", out, super::outputs::Output::File)?;
    }
    let (path, data) = resolve_model(model, common.data.as_ref())?;
    let loaded = super::open_model(&path, common, data.as_deref())?;
    let (_, ws) = open_workspace(&path, &loaded, common)?;
    let executor = executor.resolve(&mut lock(&ws))?;
    let data = data.map(|d| std::path::absolute(&d).unwrap_or(d));
    let job = HeadlessJob::on(kind(0, data.clone()), executor.clone());
    let summary = run_job(ws.clone(), job, common)?;
    let variant = summary["variant"]
        .as_u64()
        .ok_or_else(|| Error::runtime("the job reported no variant"))? as u32;
    let child = PathBuf::from(text(&summary["output"]));
    let output = match out {
        Some(file) => {
            copy_model(&child, file)?;
            file.display().to_string()
        }
        None => child.display().to_string(),
    };
    let evaluation = match data {
        Some(d) => {
            let job = HeadlessJob::on(JobKind::evaluate(variant, d), executor);
            Some(run_job(ws, job, common)?)
        }
        None => None,
    };
    Ok(Done {
        model: path,
        summary,
        output,
        evaluation,
    })
}

fn copy_model(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
    write_atomic(to, &bytes)
}
