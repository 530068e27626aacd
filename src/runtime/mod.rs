//! Running models with tract: compile once for the dataset's sample shape (batch left
//! symbolic), then run a dataset in batches on a few worker threads. tract is faster per
//! image at batch 1 than at large batches, so the default is one sample per call with
//! one worker per core, all sharing one compiled plan.

mod compiled;
mod dataset_run;
mod feed;
pub mod latency;
mod plan_rewrites;
pub mod profile;

pub use compiled::{CompiledModel, MAX_VALUE_ELEMENTS};
pub use dataset_run::{run_together, run_together_fold, RunOptions, RunOutput};
pub use latency::{measure_latency, Latency, LatencyOptions};
pub use profile::{profile_compiled, profile_ops, OpProfile, OpTime};
