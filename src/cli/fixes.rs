//! `qsteer fold-bn MODEL` and `qsteer cle MODEL`: a post-training fix run as a job on the
//! model's workspace (a child of the base variant), optionally written to `--out FILE` and
//! scored on `--data DIR`; CLE's high-bias absorption is then limited to what the data's
//! calibration samples allow, and its FP32 change measured on the evaluation samples.

use super::executor_flags::ExecutorFlags;
use super::table::Table;
use super::{lock, open_workspace, print_json, resolve_model, run_job, with_model, Common};
use clap::Args;
use qsteer::fixes::CleScaling;
use qsteer::fsutil::write_atomic;
use qsteer::jobs::{CleOutcome, EvaluateOutcome, FoldBnOutcome, HeadlessJob, JobKind, JobOutcome};
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
    /// `once`: each set of a chain scaled once, in order (AIMET's); `settle`: again until
    /// no scale moves (every set balanced, shared layers too)
    #[arg(long, default_value = "once", value_parser = parse_scaling)]
    pub scaling: CleScaling,
    /// Also write the equalized model to this ONNX file
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

pub(crate) fn parse_scaling(s: &str) -> std::result::Result<CleScaling, String> {
    s.parse::<CleScaling>().map_err(|e| e.to_string())
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
    let s: FoldBnOutcome = done.outcome.clone().try_into()?;
    println!(
        "{}  fold_bn: {} BatchNormalization(s) folded",
        done.model.display(),
        s.folded.len()
    );
    for f in &s.folded {
        let added = if f.bias_added { " (bias added)" } else { "" };
        println!("  {} → {} {}{added}", f.bn, f.op, f.layer);
    }
    for k in &s.skipped {
        println!("  left: {}: {}", k.bn, k.reason);
    }
    done.print_footer();
    Ok(())
}

pub fn run_cle(args: CleArgs, common: &Common) -> Result<()> {
    let (relu6_to_relu, hba, hba_padded) = (args.relu6_to_relu, !args.no_hba, args.hba_padded);
    let scaling = args.scaling;
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
            scaling,
            data,
        },
    )?;
    if common.json {
        return print_json(&done.document());
    }
    let s: CleOutcome = done.outcome.clone().try_into()?;
    println!("{}  {}", done.model.display(), s.step);
    if let Some(f) = &s.folded {
        println!("BN folded first: {} BatchNormalization(s)", f.len());
    }
    println!("{} set(s) equalized {}", s.sets.len(), s.passes());
    for set in &s.sets {
        println!("  {}", set.layers.join(" → "));
    }
    let stopped_by_clip = (s.ends.iter())
        .filter(|e| e.reason.contains("needs relu6_to_relu"))
        .count();
    if s.sets.is_empty() && stopped_by_clip > 0 {
        println!(
            "note: Relu6 (Clip 0..6) stops every chain ({stopped_by_clip} of them), so CLE changed \
             nothing: `--relu6-to-relu` equalizes through them (it changes the function)"
        );
    }
    for c in &s.converted {
        println!("  {} '{}' → Relu (changes the function)", c.was, c.node);
    }
    let mut t = Table::new(
        &["layer", "op", "ch", "range max/med before", "after"],
        &[false, false, true, true, true],
    );
    // A ratio JSON could not hold (no channel range) shows as "-", as it always has.
    let ratio = |r: f64| {
        if r.is_finite() {
            format!("{r:.1}")
        } else {
            "-".into()
        }
    };
    for l in &s.layers {
        t.row(vec![
            l.layer.clone(),
            l.op.clone(),
            l.channels.to_string(),
            ratio(l.ratio_before),
            ratio(l.ratio_after),
        ]);
    }
    print!("{}", t.render());
    if let Some(h) = &s.hba {
        let checked = match h.checked_on {
            Some(k) => format!(" (limited to what {k} calibration samples allow)"),
            None if !h.absorbed.is_empty() => " (from BN statistics: may change outputs)".into(),
            None => String::new(),
        };
        println!(
            "high-bias absorption: {} pair(s) absorbed, {} skipped{checked}",
            h.absorbed.len(),
            h.skipped.len()
        );
        for a in &h.absorbed {
            let lowered = if a.reduced > 0 {
                format!(", {} lowered by the data", a.reduced)
            } else {
                String::new()
            };
            println!(
                "  {} → {}: {} channel(s), max {:.4}{lowered}",
                a.layer, a.into, a.channels, a.max
            );
        }
    }
    if let Some(c) = &s.fp32_change {
        println!(
            "FP32 outputs vs the parent on {} evaluation samples: max |Δ| {:.3e}, SQNR {:.1} dB",
            c.samples, c.max_abs, c.sqnr_db
        );
    }
    done.print_footer();
    Ok(())
}

/// What a fix command did: the job's outcome, where the model went, and its score.
struct Done {
    model: PathBuf,
    outcome: JobOutcome,
    /// The child variant and its model file in the workspace.
    variant: u32,
    workspace: String,
    output: String,
    evaluation: Option<EvaluateOutcome>,
}

impl Done {
    /// The `--json` document: the job's summary with `model`, `output` (the `--out` file
    /// if given, else the workspace's) and, with a dataset, `accuracy` and `samples`.
    fn document(&self) -> Value {
        let mut doc = with_model(self.outcome.to_json(), &self.model);
        doc["output"] = json!(self.output);
        if let Some(e) = &self.evaluation {
            doc["accuracy"] = json!(e.accuracy);
            doc["top5_accuracy"] = json!(e.top5_accuracy);
            doc["samples"] = json!(e.samples);
            doc["dataset"] = json!(e.dataset);
        }
        doc
    }

    fn print_footer(&self) {
        if let Some(e) = &self.evaluation {
            if let Some(a) = e.accuracy {
                println!(
                    "accuracy   top-1 {:.2}% on {} evaluation samples",
                    100.0 * a,
                    e.samples
                );
            }
        }
        println!(
            "variant {} in workspace {}; model {}",
            self.variant, self.workspace, self.output
        );
    }
}

/// The child variant, its workspace and model file of a fold-BN or CLE outcome.
fn child_of(outcome: &JobOutcome) -> Result<(u32, String, String)> {
    match outcome {
        JobOutcome::FoldBn(o) => Ok((o.variant, o.workspace.clone(), o.output.clone())),
        JobOutcome::Cle(o) => Ok((o.variant, o.workspace.clone(), o.output.clone())),
        other => Err(Error::runtime(format!(
            "expected the outcome of a fold-bn or cle job, got {}",
            other.to_json()
        ))),
    }
}

/// The `--json` document of a fold-BN or CLE job started from `model` without `--out` or
/// a score: the summary with the model and the new variant's file as `output`.
pub(crate) fn document(outcome: &JobOutcome, model: &Path) -> Result<Value> {
    let (_, _, output) = child_of(outcome)?;
    let mut doc = with_model(outcome.to_json(), model);
    doc["output"] = json!(output);
    Ok(doc)
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
    let outcome = run_job(ws.clone(), job, common)?;
    let (variant, workspace, child) = child_of(&outcome)?;
    let output = match out {
        Some(file) => {
            copy_model(Path::new(&child), file)?;
            file.display().to_string()
        }
        None => child,
    };
    let evaluation = match data {
        Some(d) => {
            let job = HeadlessJob::on(JobKind::evaluate(variant, d), executor);
            Some(run_job(ws, job, common)?.try_into()?)
        }
        None => None,
    };
    Ok(Done {
        model: path,
        outcome,
        variant,
        workspace,
        output,
        evaluation,
    })
}

fn copy_model(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
    write_atomic(to, &bytes)
}
