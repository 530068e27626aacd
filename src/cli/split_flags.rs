//! The dataset split, worker and metric flags the compress and sweep commands share.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SplitFlags {
    /// Samples set aside for calibration when the dataset is split
    #[arg(long, default_value_t = 200)]
    pub calibration_size: usize,
    /// Seed of the calibration / evaluation split
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0: one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub metric: super::metric_flags::MetricFlags,
}
