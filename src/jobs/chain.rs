//! The fix-chain job: several post-training fixes in a row (e.g. fold BN → CLE → bias
//! correction → quantsim), each step a variant whose parent is the previous step's. Every
//! step runs the body of its own job kind (no second copy of the engine calls); the chain
//! only hands each the previous step's variant and labels its progress "step 2/4: CLE".
//!
//! Bias correction and AdaRound run here without their quantsim grandchild: the chain's
//! `quantsim` step is that grandchild (with AdaRound's frozen encodings after AdaRound).

use super::exec::JobCtx;
use super::kind::JobKind;
use super::outcome::SlurmRun;
use super::{adaround, bias_correct, fixes, lock, quantsim};
use crate::experiment::Workspace;
use crate::fixes::bias_correction::BcMode;
use crate::fixes::CleScaling;
use crate::quant::simulate::QuantsimSettings;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

/// One step of a fix chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ChainStep {
    FoldBn,
    Cle {
        #[serde(default)]
        relu6_to_relu: bool,
        /// A step written before the option meant `settle`.
        #[serde(default = "CleScaling::unrecorded")]
        scaling: CleScaling,
    },
    BiasCorrect {
        #[serde(default)]
        mode: BcMode,
    },
    #[serde(rename = "adaround")]
    AdaRound {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iterations: Option<usize>,
    },
    Quantsim,
}

impl ChainStep {
    /// Where the step may stand: fold, then CLE, then BC or AdaRound, then quantsim.
    fn rank(&self) -> u8 {
        match self {
            ChainStep::FoldBn => 0,
            ChainStep::Cle { .. } => 1,
            ChainStep::BiasCorrect { .. } | ChainStep::AdaRound { .. } => 2,
            ChainStep::Quantsim => 3,
        }
    }

    /// Steps that calibrate or score need a dataset.
    pub fn needs_data(&self) -> bool {
        self.rank() >= 2
    }

    /// Short name for progress and logs, e.g. `CLE (Relu6 → Relu)`.
    pub fn name(&self) -> String {
        match self {
            ChainStep::FoldBn => "fold BN".into(),
            ChainStep::Cle {
                relu6_to_relu,
                scaling,
            } => {
                let mut name = String::from("CLE");
                let mut notes = Vec::new();
                if *relu6_to_relu {
                    notes.push("Relu6 → Relu".to_string());
                }
                if *scaling != CleScaling::default() {
                    notes.push(format!("scaling {scaling}"));
                }
                if !notes.is_empty() {
                    name.push_str(&format!(" ({})", notes.join(", ")));
                }
                name
            }
            ChainStep::BiasCorrect { mode } => format!("bias correction ({mode})"),
            ChainStep::AdaRound { iterations: None } => "AdaRound".into(),
            ChainStep::AdaRound {
                iterations: Some(n),
            } => format!("AdaRound ({n} it.)"),
            ChainStep::Quantsim => "quantsim".into(),
        }
    }
}

/// What the data-driven steps are run with.
#[derive(Debug, Clone)]
pub struct StepInputs<'a> {
    pub data: &'a std::path::Path,
    pub settings: &'a QuantsimSettings,
    pub calibration_size: usize,
    pub seed: u64,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// The metric the scoring steps use (`None`: the workspace's).
    pub metric: Option<crate::metrics::MetricSpec>,
}

impl ChainStep {
    /// The job kind whose body runs this step on `variant`; a quantsim step after
    /// AdaRound reads AdaRound's frozen `encodings`.
    pub fn job(&self, variant: u32, inputs: &StepInputs, encodings: Option<PathBuf>) -> JobKind {
        let data = inputs.data.to_path_buf();
        let settings = inputs.settings.clone();
        let (calibration_size, seed, threads) =
            (inputs.calibration_size, inputs.seed, inputs.threads);
        let metric = inputs.metric.clone();
        match self {
            ChainStep::FoldBn => JobKind::FoldBn { variant },
            ChainStep::Cle {
                relu6_to_relu,
                scaling,
            } => JobKind::Cle {
                variant,
                relu6_to_relu: *relu6_to_relu,
                hba: true,
                hba_padded: false,
                scaling: *scaling,
                // HBA limited to what the data allows, when the chain has data.
                data: Some(data).filter(|d| !d.as_os_str().is_empty()),
            },
            ChainStep::BiasCorrect { mode } => JobKind::BiasCorrect {
                variant,
                data,
                settings,
                mode: *mode,
                calibration_size,
                seed,
                threads,
                metric,
            },
            ChainStep::AdaRound { iterations } => JobKind::AdaRound {
                variant,
                data,
                settings,
                iterations: *iterations,
                calibration_size,
                seed,
                threads,
                metric,
            },
            ChainStep::Quantsim => JobKind::Quantsim {
                variant,
                data,
                settings,
                calibration_size,
                seed,
                threads,
                encodings,
                metric,
            },
        }
    }
}

/// `fold-bn`, `cle`, `bc` (or `bias-correct`), `adaround`, `quantsim`; the options
/// (Relu6 → Relu, CLE scaling, BC mode, iterations) are set by the caller.
impl FromStr for ChainStep {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "fold-bn" | "fold" => Ok(ChainStep::FoldBn),
            "cle" => Ok(ChainStep::Cle {
                relu6_to_relu: false,
                scaling: CleScaling::default(),
            }),
            "bc" | "bias-correct" => Ok(ChainStep::BiasCorrect {
                mode: BcMode::default(),
            }),
            "adaround" => Ok(ChainStep::AdaRound { iterations: None }),
            "quantsim" => Ok(ChainStep::Quantsim),
            other => Err(Error::input(format!(
                "unknown chain step '{other}' (expected fold-bn, cle, bc, adaround, quantsim)"
            ))),
        }
    }
}

/// A chain must hold at least one step, each at most once and in the order fold BN → CLE →
/// bias correction or AdaRound (not both: AdaRound learns its rounding for uncorrected
/// biases) → quantsim.
pub fn check_chain(steps: &[ChainStep]) -> Result<()> {
    if steps.is_empty() {
        return Err(Error::input("the fix chain has no steps"));
    }
    for pair in steps.windows(2) {
        if pair[1].rank() == pair[0].rank() && pair[0].rank() == 2 {
            return Err(Error::input(
                "the fix chain holds bias correction and AdaRound: choose one (they are not combined)",
            ));
        }
        if pair[1].rank() <= pair[0].rank() {
            return Err(Error::input(format!(
                "the fix chain has '{}' after '{}': the order is fold-bn, cle, bc or adaround, quantsim, each once",
                pair[1].name(),
                pair[0].name()
            )));
        }
    }
    Ok(())
}

/// What one step made.
struct StepOutcome {
    /// The variant the next step starts from.
    variant: u32,
    /// AdaRound's frozen weight encodings, for the quantsim step after it.
    encodings: Option<PathBuf>,
    /// The score, when the step scored (the quantsim step).
    score: ChainScore,
    summary: Value,
}

/// What a fix-chain job reports (the core of `qsteer fix --json`): the last step's variant,
/// each step's outcome, and the last step's score.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FixChainOutcome {
    /// The last step's variant.
    pub variant: u32,
    /// The variant the chain started from.
    pub parent: u32,
    pub steps: Vec<ChainStepOutcome>,
    pub settings: QuantsimSettings,
    #[serde(flatten)]
    pub score: ChainScore,
    pub workspace: String,
    /// Set when the job ran on a Slurm node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

/// The score keys of a chain: its last step's, null when that step did not score.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainScore {
    pub accuracy: Option<f64>,
    pub agreement: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub metric: Option<String>,
    pub metric_value: Option<f64>,
    pub result: Option<String>,
}

/// One finished step of a chain: its name and variant, and the rest of its kind's outcome
/// (the steps are of different kinds; each is that kind's outcome written out).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainStepOutcome {
    pub step_name: String,
    pub variant: u32,
    #[serde(flatten)]
    pub outcome: serde_json::Map<String, Value>,
}

impl ChainStepOutcome {
    /// The step's accuracy, when it scored with labels.
    pub fn accuracy(&self) -> Option<f64> {
        self.outcome.get("accuracy").and_then(Value::as_f64)
    }
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<FixChainOutcome> {
    let JobKind::FixChain {
        variant,
        steps,
        data,
        settings,
        calibration_size,
        seed,
        threads,
        metric,
    } = ctx.kind
    else {
        return Err(Error::runtime(
            "the fix-chain job was handed another kind of job",
        ));
    };
    check_chain(steps)?;
    let data = match (data, steps.iter().find(|s| s.needs_data())) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(s)) => {
            return Err(Error::input(format!(
                "the fix chain's '{}' step needs a dataset",
                s.name()
            )))
        }
        (None, None) => None,
    };
    let data = data.unwrap_or_default();
    let inputs = StepInputs {
        data: &data,
        settings,
        calibration_size: *calibration_size,
        seed: *seed,
        threads: *threads,
        metric: metric.clone(),
    };
    let n = steps.len();
    let mut parent = *variant;
    let mut encodings: Option<PathBuf> = None;
    let mut done: Vec<ChainStepOutcome> = Vec::new();
    let mut score = ChainScore::default();
    for (i, step) in steps.iter().enumerate() {
        ctx.cancel.check()?;
        let label = format!("step {}/{n}: {}", i + 1, step.name());
        ctx.log(format!("{label} on v{parent}"));
        ctx.progress(i, n, &label);
        let kind = step.job(parent, &inputs, encodings.take());
        let step_ctx = ctx.step(&kind, &label);
        let outcome = run_step(&step_ctx, workspace, step).map_err(|e| match e {
            Error::Cancelled => Error::Cancelled,
            e => failed_step(e, &label, &done),
        })?;
        ctx.log(format!("{label} → variant {}", outcome.variant));
        parent = outcome.variant;
        encodings = outcome.encodings;
        score = outcome.score;
        let mut rest = match outcome.summary {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        rest.remove("variant");
        done.push(ChainStepOutcome {
            step_name: step.name().to_string(),
            variant: outcome.variant,
            outcome: rest,
        });
    }
    ctx.progress(n, n, "chain done");
    Ok(FixChainOutcome {
        variant: parent,
        parent: *variant,
        steps: done,
        settings: settings.clone(),
        score,
        workspace: lock(workspace).dir().display().to_string(),
        slurm: None,
    })
}

/// The failed step named, with the variants the chain made before it (they stay).
fn failed_step(e: Error, label: &str, done: &[ChainStepOutcome]) -> Error {
    let kept: Vec<String> = done.iter().map(|s| format!("v{}", s.variant)).collect();
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(" (variants kept: {})", kept.join(", "))
    };
    let msg = format!("{label} failed: {e}{kept}");
    match e {
        Error::Input(_) => Error::input(msg),
        _ => Error::runtime(msg),
    }
}

fn run_step(ctx: &JobCtx, workspace: &Mutex<Workspace>, step: &ChainStep) -> Result<StepOutcome> {
    // Each step's typed outcome: its variant, and its summary as the chain reports it.
    fn done<T: serde::Serialize>(variant: u32, o: &T, encodings: Option<PathBuf>) -> StepOutcome {
        StepOutcome {
            variant,
            encodings,
            score: ChainScore::default(),
            summary: json!(o),
        }
    }
    Ok(match step {
        ChainStep::FoldBn => {
            let o = fixes::run_fold_bn(ctx, workspace)?;
            done(o.variant, &o, None)
        }
        ChainStep::Cle { .. } => {
            let o = fixes::run_cle(ctx, workspace)?;
            done(o.variant, &o, None)
        }
        ChainStep::BiasCorrect { .. } => {
            let o = bias_correct::correct(ctx, workspace)?;
            done(o.variant, &o, None)
        }
        ChainStep::AdaRound { .. } => {
            let o = adaround::round(ctx, workspace)?;
            done(o.variant, &o, Some(PathBuf::from(&o.encodings)))
        }
        ChainStep::Quantsim => {
            // With AdaRound's frozen encodings the quantsim reads a file made for the chain's
            // settings: they are recorded with the variant.
            let o = quantsim::run_frozen(ctx, workspace)?;
            StepOutcome {
                score: ChainScore {
                    accuracy: o.accuracy,
                    agreement: o.score.agreement,
                    sqnr_db: o.score.sqnr_db,
                    metric: o.score.metric.clone(),
                    metric_value: o.score.metric_value,
                    result: Some(o.result.clone()),
                },
                ..done(o.variant, &o, None)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<ChainStep>> {
        s.split(',').map(str::parse).collect()
    }

    #[test]
    fn a_chain_is_checked_for_order_and_exclusive_steps() {
        let ok = parse("fold-bn,cle,bc,quantsim").unwrap();
        assert!(check_chain(&ok).is_ok());
        assert!(check_chain(&parse("adaround,quantsim").unwrap()).is_ok());
        let e = check_chain(&parse("cle,bc,adaround").unwrap()).unwrap_err();
        assert!(e.to_string().contains("choose one"), "{e}");
        let e = check_chain(&parse("cle,fold-bn").unwrap()).unwrap_err();
        assert!(e.to_string().contains("'fold BN' after 'CLE'"), "{e}");
        assert!(check_chain(&parse("cle,cle").unwrap()).is_err());
        assert!(check_chain(&[]).is_err());
        let e = parse("cle,svd").unwrap_err();
        assert!(e.to_string().contains("'svd'"), "{e}");
    }
}
