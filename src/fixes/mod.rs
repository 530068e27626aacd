//! Post-training fixes (DESIGN.md §3): transforms that make a float model quantize better.
//! Each is pure — `&Model` in, a new model and a report out — and the jobs in `jobs/` keep
//! the result as a child variant.
//!
//! - [`bn_fold`]: BatchNormalization folded into the Conv/ConvTranspose/Gemm before it,
//!   keeping the BN statistics ([`bn_stats`]) for later fixes;
//! - [`cle`]: cross-layer equalization of the Conv/Gemm chains `chains` finds;
//! - [`hba`]: high-bias absorption after CLE;
//! - [`bias_correction`]: empirical, analytical and hybrid bias correction;
//! - [`adaround`]: learned up/down rounding of weights (AdaRound).

pub mod adaround;
pub mod bias_correction;
pub mod bn_fold;
pub mod bn_stats;
mod chains;
pub mod cle;
pub(crate) mod edit;
pub mod hba;
pub(crate) mod layout;

#[cfg(test)]
pub(crate) mod tests;

pub use bn_fold::{fold_batchnorms, FoldOutcome, FoldReport};
pub use bn_stats::{BnStats, ChannelStats};
pub use cle::{
    convert_to_relu, equalize, equalize_checked, reach, CleOptions, CleOutcome, CleReach,
    CleReport, CleScaling, HbaSamples,
};
pub use hba::{absorb_high_bias, pre_activation_minimums, HbaLink, HbaReport};
