//! What a front end asks for: a job kind with all its settings, so a queued job can be
//! journalled, shown and rerun without looking anything else up.

use super::chain::ChainStep;
use crate::compress::{LayerRatios, Method};
use crate::experiment::evaluate::Subset;
use crate::experiment::quantsim::settings_label;
use crate::fixes::bias_correction::BcMode;
use crate::fixes::CleScaling;
use crate::metrics::MetricSpec;
use crate::quant::encodings_file::EncodingsVersion;
use crate::quant::simulate::QuantsimSettings;
use crate::train::FineTuneSettings;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A job's number in its workspace. Ids continue across restarts, so a log file name
/// never refers to two jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobKind {
    /// Score a variant on a dataset and measure its throughput; the result is recorded
    /// on the variant.
    Evaluate {
        variant: u32,
        data: PathBuf,
        subset: Subset,
        batch_size: usize,
        /// Worker threads; 0 means one per core.
        threads: usize,
        calibration_size: usize,
        seed: u64,
        /// A variant id: also score fidelity (agreement, SQNR) to its outputs.
        #[serde(default)]
        reference: Option<u32>,
        /// A model file outside the workspace to score fidelity against (the CLI's
        /// `--reference FILE`); used when `reference` is not set.
        #[serde(default)]
        reference_model: Option<PathBuf>,
        /// Also write the model's first output for every sample to this .npy file.
        #[serde(default)]
        save_outputs: Option<PathBuf>,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Calibrate and simulate quantization of a variant, score the simulated model on the
    /// evaluation samples, and keep it as a child variant with its encodings.
    Quantsim {
        variant: u32,
        data: PathBuf,
        settings: QuantsimSettings,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// An encodings file (AIMET JSON) to use instead of calibrating; `settings` is then
        /// ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encodings: Option<PathBuf>,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Diagnose quantization of a variant: scores per mode and the per-layer quant-noise
    /// table (optionally the sensitivity sweep), stored on the variant.
    Analyze {
        variant: u32,
        data: PathBuf,
        settings: QuantsimSettings,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        #[serde(default)]
        sweep: bool,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Correct the biases of an FP32 variant for quantization at `settings`; the corrected
    /// model is a child variant, and its quantsim at the same settings a grandchild.
    BiasCorrect {
        variant: u32,
        data: PathBuf,
        settings: QuantsimSettings,
        #[serde(default)]
        mode: BcMode,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Learn the rounding of an FP32 variant's weights (AdaRound) for `settings`; the
    /// rounded model is a child variant, its quantsim with the frozen encodings a grandchild.
    #[serde(rename = "adaround")]
    AdaRound {
        variant: u32,
        data: PathBuf,
        settings: QuantsimSettings,
        /// Iterations per layer; default AIMET's (10k, 15k below 8-bit weights).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iterations: Option<usize>,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Write a quantized variant as a QDQ ONNX model plus its encodings file.
    Export {
        variant: u32,
        /// Output directory; default `<workspace>/exports`.
        #[serde(default)]
        out: Option<PathBuf>,
        #[serde(default)]
        version: EncodingsVersion,
    },
    /// Compress a variant to a target MAC ratio by greedy per-layer ratio selection (or at
    /// the user's ratios), optionally refit layer-wise; the result is a child variant with
    /// the selection kept beside it (`variants/<id>.compress.json`).
    Compress {
        variant: u32,
        data: PathBuf,
        method: Method,
        /// MAC ratio of the result to the variant; exactly one of `target` and `ratios`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<f64>,
        /// Manual mode: these per-layer ratios, no search.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ratios: Option<LayerRatios>,
        /// Layers held at a fixed ratio.
        #[serde(default)]
        pin: LayerRatios,
        /// Layers left alone.
        #[serde(default)]
        exclude: Vec<String>,
        /// N of the candidate ratios k/N.
        #[serde(default = "default_candidates")]
        candidates: usize,
        /// Channel pruning's channel selection (`magnitude` or `greedy`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selection: Option<String>,
        /// Refit the changed layers to the parent's outputs (least squares, no labels).
        #[serde(default)]
        reconstruct: bool,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// The SSVD→CP sweep (DESIGN.md §3) from a variant to an overall MAC ratio `target`:
    /// SSVD candidates (children of `variant`), CP candidates on the picked ones (their
    /// children), each optionally refit; the result is a `SweepReport`.
    Sweep {
        variant: u32,
        data: PathBuf,
        /// The overall MAC ratio C.
        target: f64,
        /// Cssvd values; empty: {C, C+0.15, C+0.25} capped at 0.95.
        #[serde(default)]
        cssvd: Vec<f64>,
        /// Tolerable drop X in points of the score (accuracy with labels, else agreement).
        #[serde(default = "default_max_drop")]
        max_drop: f64,
        /// Ccp neighbours: C / Cssvd ± this.
        #[serde(default = "default_neighbour")]
        neighbour: f64,
        /// Fine-tune each candidate by layer-wise reconstruction.
        #[serde(default = "yes")]
        reconstruct: bool,
        /// N of the greedy selection's candidate ratios k/N.
        #[serde(default = "default_candidates")]
        candidates: usize,
        stage: SweepStage,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Fine-tune a variant with backpropagation on the training (calibration) subset; the
    /// trained model is a child variant scored on the evaluation subset.
    FineTune {
        variant: u32,
        data: PathBuf,
        settings: FineTuneSettings,
        /// Worker threads of the scoring runs; 0 means one per core.
        threads: usize,
    },
    /// Fine-tune a variant with the user's trainer command (a template with `{input}`,
    /// `{output}`, `{data}`, `{epochs}`, `{lr}`, `{encodings}`, `{workdir}`); its JSON-lines
    /// stdout is the progress. The trained model is a child variant scored on the evaluation
    /// subset (of a quantized variant: a float child of its parent and that one's quantsim).
    ExternalFineTune {
        variant: u32,
        data: PathBuf,
        command: String,
        epochs: usize,
        lr: f64,
        /// Worker threads of the scoring runs; 0 means one per core.
        threads: usize,
    },
    /// Quantization-aware training of a quantsim variant: its float parent's weights train
    /// through fake-quant with the variant's encodings; the trained model is a child of the
    /// float parent and the new quantsim variant (new encodings) a child of that.
    Qat {
        /// A quantsim variant (one with encodings).
        variant: u32,
        data: PathBuf,
        settings: FineTuneSettings,
        /// Worker threads of the scoring runs; 0 means one per core.
        threads: usize,
    },
    /// Fold the BatchNormalizations of a variant into their layers; the result is a child
    /// variant with the BN statistics kept beside it.
    FoldBn { variant: u32 },
    /// Cross-layer equalization of a variant (BN folded first if needed), optionally with
    /// high-bias absorption; the result is a child variant.
    Cle {
        variant: u32,
        /// Turn Clip(0, 6) inside chains into Relu (changes the function) instead of
        /// skipping those chains.
        #[serde(default)]
        relu6_to_relu: bool,
        #[serde(default = "yes")]
        hba: bool,
        /// HBA also into layers that zero-pad their input (AIMET's behaviour).
        #[serde(default)]
        hba_padded: bool,
        /// Each set scaled once (AIMET's) or until the scales settle; a request written
        /// before the option meant `settle`.
        #[serde(default = "CleScaling::unrecorded")]
        scaling: CleScaling,
        /// A dataset: HBA absorbs only what keeps the outputs on its calibration samples
        /// unchanged, and the FP32 change is measured on its evaluation samples.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<PathBuf>,
    },
    /// Several fixes in a row (fold BN → CLE → bias correction or AdaRound → quantsim),
    /// each step a child of the previous step's variant; `settings` are the quantsim
    /// settings bias correction, AdaRound and the quantsim step use.
    FixChain {
        variant: u32,
        steps: Vec<ChainStep>,
        /// Needed by the bias-correction, AdaRound and quantsim steps.
        #[serde(default)]
        data: Option<PathBuf>,
        settings: QuantsimSettings,
        calibration_size: usize,
        seed: u64,
        /// Worker threads; 0 means one per core.
        threads: usize,
        /// The metric that scores (`None`: the workspace's saved one, else `auto`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<MetricSpec>,
    },
    /// Follow a Slurm batch job an earlier run submitted (the app or CLI stopped before it
    /// ended): its state and output to the end, then its result (the node's JSON).
    SlurmFollow {
        slurm_id: String,
        /// File stem under `<workspace>/slurm/`.
        stem: String,
        /// The qsteer job that submitted it.
        job: u64,
    },
}

/// How far a sweep job goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "stage")]
pub enum SweepStage {
    /// Step 1: the SSVD candidates, their pre-selection and advice (decision 1).
    Ssvd,
    /// Step 2 for these SSVD candidates of the sweep: the CP candidates and the pick.
    Cp { ssvd: Vec<u32> },
    /// Both steps headless, on the pre-selected SSVD candidates.
    Full,
}

impl SweepStage {
    pub fn name(&self) -> &'static str {
        match self {
            SweepStage::Ssvd => "ssvd",
            SweepStage::Cp { .. } => "cp",
            SweepStage::Full => "full",
        }
    }
}

fn yes() -> bool {
    true
}

fn default_max_drop() -> f64 {
    2.0
}

fn default_neighbour() -> f64 {
    0.05
}

fn default_candidates() -> usize {
    10
}

impl JobKind {
    /// Evaluate `variant` on the evaluation subset with the CLI's defaults (batch 1,
    /// one thread per core, 200 calibration samples, seed 0, no reference).
    pub fn evaluate(variant: u32, data: PathBuf) -> JobKind {
        JobKind::Evaluate {
            variant,
            data,
            subset: Subset::Evaluation,
            batch_size: 1,
            threads: 0,
            calibration_size: 200,
            seed: 0,
            reference: None,
            reference_model: None,
            save_outputs: None,
            metric: None,
        }
    }

    /// Quantsim of `variant` with the CLI's split defaults (200 calibration samples,
    /// seed 0) and one thread per core.
    pub fn quantsim(variant: u32, data: PathBuf, settings: QuantsimSettings) -> JobKind {
        JobKind::Quantsim {
            variant,
            data,
            settings,
            calibration_size: 200,
            seed: 0,
            threads: 0,
            encodings: None,
            metric: None,
        }
    }

    /// Short name for lists and logs, e.g. `evaluate v3`, `evaluate v3 vs v0` or
    /// `quantsim v0 W8A8 per-tensor tf_enhanced`.
    pub fn label(&self) -> String {
        match self {
            JobKind::Evaluate {
                variant,
                reference,
                reference_model,
                ..
            } => match (reference, reference_model) {
                (Some(r), _) => format!("evaluate v{variant} vs v{r}"),
                (None, Some(m)) => format!("evaluate v{variant} vs {}", m.display()),
                (None, None) => format!("evaluate v{variant}"),
            },
            JobKind::Quantsim {
                variant,
                encodings: Some(file),
                ..
            } => format!("quantsim v{variant} with {}", file.display()),
            JobKind::Quantsim {
                variant, settings, ..
            } => format!("quantsim v{variant} {}", settings_label(settings)),
            JobKind::Analyze {
                variant,
                settings,
                sweep,
                ..
            } => format!(
                "analyze v{variant} {}{}",
                settings_label(settings),
                if *sweep { " + sweep" } else { "" }
            ),
            JobKind::Export {
                variant, version, ..
            } => format!("export v{variant} (QDQ + encodings {version})"),
            JobKind::BiasCorrect {
                variant,
                settings,
                mode,
                ..
            } => format!(
                "bias correction v{variant} {mode} for {}",
                settings_label(settings)
            ),
            JobKind::AdaRound {
                variant, settings, ..
            } => format!("adaround v{variant} for {}", settings_label(settings)),
            JobKind::Compress {
                variant,
                method,
                target,
                ratios,
                reconstruct,
                ..
            } => {
                let what = match (target, ratios) {
                    (Some(t), _) => format!("to {t} MACs"),
                    (None, Some(r)) => format!("at {} manual ratio(s)", r.len()),
                    (None, None) => "(no target)".into(),
                };
                let refit = if *reconstruct {
                    " + reconstruction"
                } else {
                    ""
                };
                format!("compress v{variant} {} {what}{refit}", method.short())
            }
            JobKind::Sweep { target, stage, .. } => match stage {
                SweepStage::Full => format!("sweep C={target}"),
                other => format!("sweep C={target} {}", other.name()),
            },
            JobKind::FineTune {
                variant, settings, ..
            } => format!(
                "finetune v{variant} {} epoch(s) lr {}",
                settings.epochs, settings.lr
            ),
            JobKind::ExternalFineTune {
                variant,
                epochs,
                lr,
                ..
            } => format!("external finetune v{variant} {epochs} epoch(s) lr {lr}"),
            JobKind::Qat {
                variant, settings, ..
            } => format!(
                "qat v{variant} {} epoch(s) lr {}",
                settings.epochs, settings.lr
            ),
            JobKind::FoldBn { variant } => format!("fold-bn v{variant}"),
            JobKind::SlurmFollow { slurm_id, job, .. } => {
                format!("slurm {slurm_id} (of job #{job}, followed again)")
            }
            JobKind::Cle {
                variant,
                relu6_to_relu,
                hba,
                hba_padded,
                scaling,
                ..
            } => {
                let mut label = format!("cle v{variant}");
                if *relu6_to_relu {
                    label.push_str(" relu6→relu");
                }
                if *scaling != CleScaling::default() {
                    label.push_str(&format!(" scaling {scaling}"));
                }
                match (hba, hba_padded) {
                    (true, true) => label.push_str(" +hba (padded too)"),
                    (true, false) => label.push_str(" +hba"),
                    _ => {}
                }
                label
            }
            JobKind::FixChain {
                variant,
                steps,
                settings,
                ..
            } => {
                let names: Vec<String> = steps.iter().map(ChainStep::name).collect();
                format!(
                    "fix chain v{variant}: {} for {}",
                    names.join(" → "),
                    settings_label(settings)
                )
            }
        }
    }

    /// The metric the job was given (`None`: the workspace's saved one, else `auto`).
    pub fn metric(&self) -> Option<&MetricSpec> {
        match self {
            JobKind::Evaluate { metric, .. }
            | JobKind::Quantsim { metric, .. }
            | JobKind::Analyze { metric, .. }
            | JobKind::BiasCorrect { metric, .. }
            | JobKind::AdaRound { metric, .. }
            | JobKind::Compress { metric, .. }
            | JobKind::Sweep { metric, .. }
            | JobKind::FixChain { metric, .. } => metric.as_ref(),
            _ => None,
        }
    }

    /// The variant the job starts from (none for following a Slurm job).
    pub fn variant(&self) -> Option<u32> {
        match self {
            JobKind::Evaluate { variant, .. }
            | JobKind::Quantsim { variant, .. }
            | JobKind::Analyze { variant, .. }
            | JobKind::BiasCorrect { variant, .. }
            | JobKind::AdaRound { variant, .. }
            | JobKind::Export { variant, .. }
            | JobKind::Compress { variant, .. }
            | JobKind::Sweep { variant, .. }
            | JobKind::FineTune { variant, .. }
            | JobKind::ExternalFineTune { variant, .. }
            | JobKind::Qat { variant, .. }
            | JobKind::FoldBn { variant }
            | JobKind::Cle { variant, .. }
            | JobKind::FixChain { variant, .. } => Some(*variant),
            JobKind::SlurmFollow { .. } => None,
        }
    }

    /// The job's worker threads (0: one per core), for the kinds that have them.
    fn threads_mut(&mut self) -> Option<&mut usize> {
        match self {
            JobKind::Evaluate { threads, .. }
            | JobKind::Quantsim { threads, .. }
            | JobKind::Analyze { threads, .. }
            | JobKind::BiasCorrect { threads, .. }
            | JobKind::AdaRound { threads, .. }
            | JobKind::Compress { threads, .. }
            | JobKind::Sweep { threads, .. }
            | JobKind::FineTune { threads, .. }
            | JobKind::ExternalFineTune { threads, .. }
            | JobKind::Qat { threads, .. }
            | JobKind::FixChain { threads, .. } => Some(threads),
            JobKind::Export { .. }
            | JobKind::FoldBn { .. }
            | JobKind::Cle { .. }
            | JobKind::SlurmFollow { .. } => None,
        }
    }

    /// The job on an allocation of `cpus` CPUs: never more worker threads than those, and
    /// "one per core" means all of them (a node's core count is not the allocation's).
    pub fn with_threads_at_most(mut self, cpus: Option<u32>) -> JobKind {
        if let (Some(t), Some(n)) = (self.threads_mut(), cpus) {
            *t = match *t {
                0 => n as usize,
                t => t.min(n as usize),
            };
        }
        self
    }

    /// Heavy jobs use all cores, so the runner limits how many run at once.
    pub fn is_heavy(&self) -> bool {
        match self {
            JobKind::Evaluate { .. }
            | JobKind::Quantsim { .. }
            | JobKind::Analyze { .. }
            | JobKind::BiasCorrect { .. }
            | JobKind::AdaRound { .. }
            | JobKind::Compress { .. }
            | JobKind::Sweep { .. }
            | JobKind::FineTune { .. }
            | JobKind::ExternalFineTune { .. }
            | JobKind::Qat { .. } => true,
            JobKind::FixChain { steps, .. } => steps.iter().any(ChainStep::needs_data),
            // Single-threaded weight arithmetic, well under a second on a ResNet-50.
            JobKind::FoldBn { .. } | JobKind::Cle { .. } | JobKind::Export { .. } => false,
            // Waits on the cluster.
            JobKind::SlurmFollow { .. } => false,
        }
    }
}
