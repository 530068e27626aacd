//! `qsteer fix MODEL --data DIR --chain fold-bn,cle,bc,quantsim`: several post-training
//! fixes in a row as one job, each step a variant whose parent is the previous step's.

use super::executor_flags::ExecutorFlags;
use super::quant_flags::QuantFlags;
use super::{lock, open_workspace, print_json, resolve_model, run_job, with_model, Common};
use clap::Args;
use qsteer::fixes::bias_correction::BcMode;
use qsteer::fixes::CleScaling;
use qsteer::jobs::{check_chain, ChainStep, FixChainOutcome, HeadlessJob, JobKind};
use qsteer::{Error, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct FixArgs {
    /// The ONNX model (default: the embedded sample model)
    pub model: Option<PathBuf>,
    /// The steps, in order: fold-bn, cle, bc or adaround, quantsim (comma-separated)
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_step)]
    pub chain: Vec<ChainStep>,
    /// CLE turns Clip(0, 6) inside chains into Relu (changes the function)
    #[arg(long)]
    pub relu6_to_relu: bool,
    /// CLE scales each set of a chain `once` (AIMET's) or until the scales `settle`
    #[arg(long, default_value = "once", value_parser = super::fixes::parse_scaling)]
    pub cle_scaling: CleScaling,
    /// Bias correction: empirical, analytical or hybrid
    #[arg(long, default_value = "hybrid", value_parser = parse_mode)]
    pub bc_mode: BcMode,
    /// AdaRound steps per layer (default AIMET's: 10000, 15000 below 8-bit weights)
    #[arg(long)]
    pub iterations: Option<usize>,
    #[command(flatten)]
    pub quant: QuantFlags,
    #[command(flatten)]
    pub executor: ExecutorFlags,
}

/// The `--json` document of a fix chain started from `model`: the summary with the model
/// and the workspace.
pub(crate) fn document(
    outcome: &FixChainOutcome,
    model: &std::path::Path,
    workspace: &std::path::Path,
) -> serde_json::Value {
    let mut doc = with_model(json!(outcome), model);
    doc["workspace"] = json!(workspace.display().to_string());
    doc
}

fn parse_step(s: &str) -> std::result::Result<ChainStep, String> {
    s.parse::<ChainStep>().map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> std::result::Result<BcMode, String> {
    s.parse::<BcMode>().map_err(|e| e.to_string())
}

impl FixArgs {
    /// The chain with the step options applied, checked.
    fn steps(&self) -> Result<Vec<ChainStep>> {
        if self.iterations == Some(0) {
            return Err(Error::input("--iterations must be at least 1"));
        }
        let steps: Vec<ChainStep> = self
            .chain
            .iter()
            .map(|s| match s {
                ChainStep::Cle { .. } => ChainStep::Cle {
                    relu6_to_relu: self.relu6_to_relu,
                    scaling: self.cle_scaling,
                },
                ChainStep::BiasCorrect { .. } => ChainStep::BiasCorrect { mode: self.bc_mode },
                ChainStep::AdaRound { .. } => ChainStep::AdaRound {
                    iterations: self.iterations,
                },
                other => other.clone(),
            })
            .collect();
        check_chain(&steps)?;
        Ok(steps)
    }
}

pub fn run(args: FixArgs, common: &Common) -> Result<()> {
    let steps = args.steps()?;
    let (path, data) = resolve_model(args.model.as_ref(), common.data.as_ref())?;
    if data.is_none() {
        if let Some(s) = steps.iter().find(|s| s.needs_data()) {
            return Err(Error::input(format!(
                "the chain's '{}' step needs a dataset: --data DIR",
                s.name()
            )));
        }
    }
    let settings = args.quant.settings()?;
    let options = args.quant.run_options()?;
    let model = super::open_model(&path, common, data.as_deref())?;
    let (dir, ws) = open_workspace(&path, &model, common)?;
    let executor = args.executor.resolve(&mut lock(&ws))?;
    let kind = JobKind::FixChain {
        variant: 0,
        steps,
        data: data.map(|d| std::path::absolute(&d).unwrap_or(d)),
        settings,
        calibration_size: args.quant.calibration_size,
        seed: args.quant.seed,
        threads: options.threads,
        metric: args.quant.metric.resolve(&ws)?,
    };
    let outcome: FixChainOutcome =
        run_job(ws, HeadlessJob::on(kind, executor), common)?.try_into()?;
    if common.json {
        return print_json(&document(&outcome, &path, &dir));
    }
    for (i, s) in outcome.steps.iter().enumerate() {
        let score = (s.accuracy()).map_or(String::new(), |a| format!("  {:.2} %", 100.0 * a));
        println!(
            "step {}: {:<28} → variant {}{score}",
            i + 1,
            s.step_name,
            s.variant
        );
    }
    if let Some(line) = &outcome.score.result {
        println!("{line}");
    }
    println!("workspace {}", dir.display());
    Ok(())
}
