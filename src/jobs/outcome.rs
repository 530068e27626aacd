//! What a finished job returns, typed per kind (#18). A body returns its kind's outcome
//! struct; its serde form is the job's summary: journalled in `logs/jobs.jsonl`, sent in
//! `JobEvent::Finished`, written by detached and Slurm jobs, and the core of the command's
//! `--json` document (DESIGN.md §CLI: keep those keys). A summary read back from a file is
//! parsed by the job's kind ([`JobOutcome::from_summary`]), so old files keep loading.

use super::kind::JobKind;
use crate::metrics::{OutputScore, Score};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::adaround::{AdaroundOutcome, RoundedOutcome};
pub use super::analyze::AnalyzeOutcome;
pub use super::bias_correct::BiasCorrectOutcome;
pub use super::chain::{ChainScore, ChainStepOutcome, FixChainOutcome};
pub use super::compress::{CompressedLayer, CompressionOutcome};
pub use super::evaluate::EvaluateOutcome;
pub use super::external_finetune::{ExternalEpoch, ExternalFineTuneOutcome};
pub use super::finetune::{FineTuneOutcome, TrainedFields};
pub use super::fixes::{CleOutcome, FoldBnOutcome};
pub use super::qat::QatOutcome;
pub use super::quantsim::QuantsimOutcome;
pub use super::sweep::SweepOutcome;

/// One finished job's result.
// One value per finished job, never kept in bulk: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Evaluate(EvaluateOutcome),
    Quantsim(QuantsimOutcome),
    FoldBn(FoldBnOutcome),
    Cle(CleOutcome),
    BiasCorrect(BiasCorrectOutcome),
    Analyze(AnalyzeOutcome),
    AdaRound(AdaroundOutcome),
    FineTune(FineTuneOutcome),
    Qat(QatOutcome),
    ExternalFineTune(ExternalFineTuneOutcome),
    Compress(CompressionOutcome),
    Sweep(SweepOutcome),
    FixChain(FixChainOutcome),
    /// A kind whose outcome is not typed yet: its summary as JSON.
    Untyped(Value),
}

impl JobOutcome {
    /// The typed outcome of a `kind` job from its summary (a journal line, an event file,
    /// a Slurm node's document). Keys an older qsteer did not write read as their default.
    pub fn from_summary(kind: &JobKind, summary: Value) -> Result<JobOutcome> {
        fn parse<T: serde::de::DeserializeOwned>(kind: &JobKind, summary: Value) -> Result<T> {
            serde_json::from_value(summary)
                .map_err(|e| Error::runtime(format!("the summary of job '{}': {e}", kind.label())))
        }
        Ok(match kind {
            JobKind::Evaluate { .. } => JobOutcome::Evaluate(parse(kind, summary)?),
            JobKind::Quantsim { .. } => JobOutcome::Quantsim(parse(kind, summary)?),
            JobKind::FoldBn { .. } => JobOutcome::FoldBn(parse(kind, summary)?),
            JobKind::Cle { .. } => JobOutcome::Cle(parse(kind, summary)?),
            JobKind::BiasCorrect { .. } => JobOutcome::BiasCorrect(parse(kind, summary)?),
            JobKind::Analyze { .. } => JobOutcome::Analyze(parse(kind, summary)?),
            JobKind::AdaRound { .. } => JobOutcome::AdaRound(parse(kind, summary)?),
            JobKind::FineTune { .. } => JobOutcome::FineTune(parse(kind, summary)?),
            JobKind::Qat { .. } => JobOutcome::Qat(parse(kind, summary)?),
            JobKind::ExternalFineTune { .. } => JobOutcome::ExternalFineTune(parse(kind, summary)?),
            JobKind::Compress { .. } => JobOutcome::Compress(parse(kind, summary)?),
            JobKind::Sweep { .. } => JobOutcome::Sweep(parse(kind, summary)?),
            JobKind::FixChain { .. } => JobOutcome::FixChain(parse(kind, summary)?),
            _ => JobOutcome::Untyped(summary),
        })
    }

    /// The summary: the outcome's serde form (keys in JSON order, as every reader sees
    /// them through `serde_json::Value`).
    pub fn to_json(&self) -> Value {
        let value = match self {
            JobOutcome::Evaluate(o) => serde_json::to_value(o),
            JobOutcome::Quantsim(o) => serde_json::to_value(o),
            JobOutcome::FoldBn(o) => serde_json::to_value(o),
            JobOutcome::Cle(o) => serde_json::to_value(o),
            JobOutcome::BiasCorrect(o) => serde_json::to_value(o),
            JobOutcome::Analyze(o) => serde_json::to_value(o),
            JobOutcome::AdaRound(o) => serde_json::to_value(o),
            JobOutcome::FineTune(o) => serde_json::to_value(o),
            JobOutcome::Qat(o) => serde_json::to_value(o),
            JobOutcome::ExternalFineTune(o) => serde_json::to_value(o),
            JobOutcome::Compress(o) => serde_json::to_value(o),
            JobOutcome::Sweep(o) => serde_json::to_value(o),
            JobOutcome::FixChain(o) => serde_json::to_value(o),
            JobOutcome::Untyped(v) => return v.clone(),
        };
        // Plain structs of numbers, strings and lists: serializing them cannot fail.
        value.unwrap_or(Value::Null)
    }

    /// The summary's one-line result (`result`), for the jobs pane and the status line.
    pub fn result_line(&self) -> Option<String> {
        match self {
            JobOutcome::Quantsim(o) => Some(o.result.clone()),
            JobOutcome::BiasCorrect(o) => Some(o.result.clone()),
            // Kinds whose older summaries may lack the line: none rather than empty.
            JobOutcome::Analyze(o) => nonempty(&o.result),
            JobOutcome::AdaRound(o) => nonempty(&o.result),
            JobOutcome::Sweep(o) => nonempty(&o.result),
            JobOutcome::FixChain(o) => o.score.result.clone(),
            JobOutcome::Evaluate(_)
            | JobOutcome::FoldBn(_)
            | JobOutcome::Cle(_)
            | JobOutcome::FineTune(_)
            | JobOutcome::Qat(_)
            | JobOutcome::ExternalFineTune(_)
            | JobOutcome::Compress(_) => None,
            JobOutcome::Untyped(v) => v["result"].as_str().map(str::to_string),
        }
    }
}

/// `line` unless it is empty.
fn nonempty(line: &str) -> Option<String> {
    (!line.is_empty()).then(|| line.to_string())
}

/// The outcome of a `what` job, or an error naming the kind it was instead (a front end
/// asked for one kind's outcome of a job of another kind).
macro_rules! outcome_of {
    ($variant:ident, $ty:ty, $what:literal) => {
        impl TryFrom<JobOutcome> for $ty {
            type Error = Error;
            fn try_from(o: JobOutcome) -> Result<$ty> {
                match o {
                    JobOutcome::$variant(o) => Ok(o),
                    other => Err(Error::runtime(format!(
                        concat!("expected the outcome of a ", $what, " job, got {}"),
                        other.to_json()
                    ))),
                }
            }
        }
    };
}
outcome_of!(Evaluate, EvaluateOutcome, "evaluate");
outcome_of!(Quantsim, QuantsimOutcome, "quantsim");
outcome_of!(FoldBn, FoldBnOutcome, "fold-bn");
outcome_of!(Cle, CleOutcome, "cle");
outcome_of!(BiasCorrect, BiasCorrectOutcome, "bias-correction");
outcome_of!(Analyze, AnalyzeOutcome, "analyze");
outcome_of!(AdaRound, AdaroundOutcome, "AdaRound");
outcome_of!(FineTune, FineTuneOutcome, "fine-tune");
outcome_of!(Qat, QatOutcome, "QAT");
outcome_of!(
    ExternalFineTune,
    ExternalFineTuneOutcome,
    "external fine-tune"
);
outcome_of!(Compress, CompressionOutcome, "compress");
outcome_of!(Sweep, SweepOutcome, "sweep");
outcome_of!(FixChain, FixChainOutcome, "fix-chain");

impl TryFrom<JobOutcome> for Value {
    type Error = Error;
    /// Any outcome as its summary (for the kinds read as JSON still).
    fn try_from(o: JobOutcome) -> Result<Value> {
        Ok(o.to_json())
    }
}

/// The score keys a scoring job's summary has beside `accuracy` and `top5_accuracy`
/// (see [`Score::add_json_fields`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreFields {
    pub agreement: Option<f64>,
    pub sqnr_db: Option<f64>,
    /// The metric that ranks the score (see [`Score::metric`]).
    pub metric: Option<String>,
    pub metric_value: Option<f64>,
    pub cosine: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<serde_json::Map<String, Value>>,
}

impl From<&Score> for ScoreFields {
    fn from(s: &Score) -> ScoreFields {
        ScoreFields {
            agreement: s.agreement,
            sqnr_db: s.sqnr_db,
            metric: s.metric_name().map(str::to_string),
            metric_value: s.value(),
            cosine: s.cosine,
            outputs: s.outputs.clone(),
            external: s.external.clone(),
        }
    }
}

/// Where a job ran when that was a Slurm node: the record the submitting process adds to
/// the node's summary under `slurm`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SlurmRun {
    pub job_id: String,
    pub state: String,
    pub node: String,
    pub exit_code: String,
    pub queued_seconds: Option<f64>,
    pub script: String,
    pub output: String,
}
