//! Post-training fixes: transforms of an FP32 model that make its quantized version better.
//!
//! - [`bias_correction`]: empirical, analytical and hybrid bias correction.

pub mod bias_correction;
