//! Quantization simulation. The first layer is pure math on slices and ndarray (encodings,
//! calibration statistics); the second places quantizers on a model, calibrates them in one
//! streaming pass and builds the simulated model.
//!
//! - [`encoding`]: one grid (scale, offset, bitwidth) and fake-quant, with ONNX's rounding.
//! - [`aimet`]: the per-encoding pieces of AIMET's encodings JSON (0.6.1 and 1.0.0).
//! - [`histogram`]: the streaming, mergeable histogram activations are calibrated from.
//! - [`calibrate`](mod@calibrate): encodings from a histogram: `minmax`, `tf_enhanced`, `percentile`, `mse`;
//!   [`batch_pdf`]: AIMET's per-batch activation density, which `tf_enhanced` activations use.
//! - [`per_channel`]: weight encodings per output channel (or per tensor) and their fake-quant.
//! - [`points`]: where quantizers sit: activation points (groups, pass-through ops) and
//!   per-layer weight quantizers; [`fused_groups`]: the op chains a runtime computes as one
//!   op (a layer's constant affine, a decomposed LayerNorm, a written-out HardSwish /
//!   HardSigmoid / SiLU: [`written_activation`]), with no quantizer inside;
//!   [`mixed_range`]: no quantizer on an output Concat joining very different ranges.
//! - [`weight_scheme`]: the weights' own calibration scheme (`--weight-scheme`).
//! - [`float_op_advice`]: the diagnosis's measured `--fp32-ops` advice.
//! - [`calibration`]: one streaming pass of the FP32 model filling a histogram per point.
//! - [`qdq`]: the simulated model: weights fake-quantized in place, QDQ (or equivalent float
//!   ops) after each activation point; modes W+A, weights-only, activations-only.
//! - [`encodings_file`]: AIMET encodings documents, 1.0.0 and 0.6.1, written and read.
//! - [`import`]: a file's encodings matched to a model, and the simulated model built from them.
//! - [`export`]: the QDQ ONNX model for ONNX Runtime and target tools ([`contrib_qdq`]: the
//!   `com.microsoft` Q/DQ used for 4- and 16-bit activations).

pub mod aimet;
pub mod aimet_bias;
pub mod analysis;
pub mod batch_pdf;
pub mod bias;
pub mod calibrate;
pub mod calibration;
pub mod contrib_qdq;
pub mod encoding;
pub mod encodings_file;
pub mod export;
pub mod float_op_advice;
pub mod float_ops;
pub mod fused_groups;
pub mod histogram;
pub mod import;
pub mod mixed_range;
pub mod per_channel;
pub mod points;
pub mod probe;
pub mod qdq;
pub mod simulate;
pub mod sweep;
pub mod weight_scheme;
pub mod written_activation;

pub use calibrate::{calibrate, expected_sq_error, Scheme};
pub use encoding::{Encoding, QuantSpec};
pub use histogram::Histogram;

/// Deterministic data for the tests (no rand dependency).
#[cfg(test)]
pub(crate) mod test_data {
    /// xorshift64* with Box-Muller normals.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in (0, 1).
        pub fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        pub fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        }

        /// Laplace(0, 1): heavier tails than a Gaussian, where clipping pays off.
        pub fn laplace(&mut self) -> f32 {
            let u = self.uniform() - 0.5;
            (-u.signum() * (1.0 - 2.0 * u.abs()).ln()) as f32
        }
    }

    /// Mean squared error of fake-quant over the samples, in f64.
    pub fn fake_quant_mse(e: &super::Encoding, data: &[f32]) -> f64 {
        data.iter()
            .map(|&x| {
                let d = (e.fake_quant(x) - x) as f64;
                d * d
            })
            .sum::<f64>()
            / data.len() as f64
    }
}
