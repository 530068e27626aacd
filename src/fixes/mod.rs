//! Post-training fixes: transforms of an FP32 model that make its quantized version better.
//!
//! - [`bias_correction`]: empirical, analytical and hybrid bias correction.
//! - [`adaround`]: learned up/down rounding of weights (AdaRound).

pub mod adaround;
pub mod bias_correction;
