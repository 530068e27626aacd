//! Weight encodings per output channel (or per tensor), and fake-quant of weights with them.
//!
//! The channel axis is the weight's *output* axis, which is where ONNX per-axis
//! `DequantizeLinear` puts its `axis` attribute: see [`WeightLayout::output_axis`].

use ndarray::{ArrayD, ArrayViewD, Axis};

use super::calibrate::{calibrate, tf_enhanced_values, Scheme};
use super::encoding::{Encoding, QuantSpec};
use super::histogram::Histogram;
use crate::{Error, Result};

/// How an op stores its weight, which decides the output-channel axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `(M, C/group, k…)`: axis 0.
    Conv,
    /// `(C, M/group, k…)`: axis 1 (with groups > 1 that axis holds M/group channels, each
    /// shared by every group: it is still the axis ONNX per-axis quantization uses).
    ConvTranspose,
    /// Gemm's B: `(K, N)`, axis 1; with `transB = 1`, `(N, K)`, axis 0.
    Gemm { trans_b: bool },
    /// MatMul's constant right operand `(…, K, N)`: the last axis.
    MatMul,
}

impl WeightLayout {
    /// The output-channel axis of a weight of this rank.
    pub fn output_axis(self, rank: usize) -> Result<usize> {
        let (axis, min_rank) = match self {
            WeightLayout::Conv => (0, 1),
            WeightLayout::ConvTranspose => (1, 2),
            WeightLayout::Gemm { trans_b: false } => (1, 2),
            WeightLayout::Gemm { trans_b: true } => (0, 2),
            WeightLayout::MatMul => (rank.saturating_sub(1), 2),
        };
        if rank < min_rank {
            return Err(Error::input(format!(
                "a {self:?} weight needs rank {min_rank} or more, this one has rank {rank}"
            )));
        }
        Ok(axis)
    }
}

/// One encoding per slice of `w` along `axis` (per output channel), computed with `scheme`
/// from that channel's values. NaN or infinite weights are an input error naming the channel.
pub fn per_channel_encodings(
    w: ArrayViewD<f32>,
    axis: usize,
    spec: QuantSpec,
    scheme: Scheme,
) -> Result<Vec<Encoding>> {
    check_axis(w.ndim(), axis)?;
    w.axis_iter(Axis(axis))
        .enumerate()
        .map(|(c, channel)| {
            channel_encoding(channel, spec, scheme)
                .map_err(|e| Error::input(format!("channel {c} on axis {axis}: {e}")))
        })
        .collect()
}

/// One encoding for the whole tensor.
pub fn per_tensor_encoding(
    w: ArrayViewD<f32>,
    spec: QuantSpec,
    scheme: Scheme,
) -> Result<Encoding> {
    channel_encoding(w, spec, scheme)
}

fn channel_encoding(values: ArrayViewD<f32>, spec: QuantSpec, scheme: Scheme) -> Result<Encoding> {
    if scheme == Scheme::Minmax {
        // No histogram needed for the range alone.
        let (mut lo, mut hi) = (0.0f32, 0.0f32);
        for &x in values.iter() {
            if !x.is_finite() {
                return Err(Error::input(format!("weight value {x} is not finite")));
            }
            lo = lo.min(x);
            hi = hi.max(x);
        }
        return Ok(spec.encoding(lo, hi));
    }
    if scheme == Scheme::TfEnhanced {
        let values: Vec<f32> = values.iter().copied().collect();
        return tf_enhanced_values(&values, spec);
    }
    let mut h = Histogram::default();
    h.add_array(&values);
    calibrate(&h, scheme, spec)
}

/// Fake-quantizes `w` in place, slice `c` along `axis` with `encodings[c]`.
pub fn fake_quant_weight(w: &mut ArrayD<f32>, encodings: &[Encoding], axis: usize) -> Result<()> {
    check_axis(w.ndim(), axis)?;
    let channels = w.len_of(Axis(axis));
    if encodings.len() != channels {
        return Err(Error::runtime(format!(
            "{} encodings for {channels} channels on axis {axis} of a weight of shape {:?}",
            encodings.len(),
            w.shape()
        )));
    }
    for (mut channel, e) in w.axis_iter_mut(Axis(axis)).zip(encodings) {
        match channel.as_slice_memory_order_mut() {
            Some(values) => e.fake_quant_slice(values),
            None => channel.mapv_inplace(|x| e.fake_quant(x)),
        }
    }
    Ok(())
}

/// Fake-quantizes the whole of `w` in place with one encoding.
pub fn fake_quant_tensor(w: &mut ArrayD<f32>, encoding: &Encoding) {
    match w.as_slice_memory_order_mut() {
        Some(values) => encoding.fake_quant_slice(values),
        None => w.mapv_inplace(|x| encoding.fake_quant(x)),
    }
}

fn check_axis(ndim: usize, axis: usize) -> Result<()> {
    if axis < ndim {
        Ok(())
    } else {
        Err(Error::runtime(format!(
            "channel axis {axis} is out of range for a rank-{ndim} weight"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn spec(bits: u8, symmetric: bool) -> QuantSpec {
        QuantSpec::new(bits, symmetric).unwrap()
    }

    /// A Conv weight (4, 2, 3, 3) whose output channel c spans roughly ±(c + 1)·0.1.
    fn conv_weight() -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(&[4, 2, 3, 3]), |ix| {
            let t = (ix[1] * 9 + ix[2] * 3 + ix[3]) as f32 / 17.0 * 2.0 - 1.0;
            t * (ix[0] as f32 + 1.0) * 0.1
        })
    }

    #[test]
    fn output_axes_by_layout() {
        assert_eq!(WeightLayout::Conv.output_axis(4).unwrap(), 0);
        assert_eq!(WeightLayout::ConvTranspose.output_axis(4).unwrap(), 1);
        assert_eq!(
            WeightLayout::Gemm { trans_b: false }
                .output_axis(2)
                .unwrap(),
            1
        );
        assert_eq!(
            WeightLayout::Gemm { trans_b: true }.output_axis(2).unwrap(),
            0
        );
        assert_eq!(WeightLayout::MatMul.output_axis(2).unwrap(), 1);
        assert_eq!(WeightLayout::MatMul.output_axis(3).unwrap(), 2);
        assert!(WeightLayout::Gemm { trans_b: false }
            .output_axis(1)
            .is_err());
    }

    #[test]
    fn per_channel_ranges_follow_each_channel() {
        let w = conv_weight();
        let encs = per_channel_encodings(w.view(), 0, spec(8, true), Scheme::Minmax).unwrap();
        assert_eq!(encs.len(), 4);
        for (c, e) in encs.iter().enumerate() {
            let absmax = (c as f32 + 1.0) * 0.1;
            let expected = Encoding::from_range(-absmax, absmax, 8, true).unwrap();
            assert_eq!(*e, expected, "channel {c}");
        }
        let whole = per_tensor_encoding(w.view(), spec(8, true), Scheme::Minmax).unwrap();
        assert_eq!(whole, encs[3]);
    }

    #[test]
    fn per_channel_fake_quant_uses_each_channels_grid() {
        let w = conv_weight();
        let encs = per_channel_encodings(w.view(), 0, spec(4, false), Scheme::Minmax).unwrap();
        let mut q = w.clone();
        fake_quant_weight(&mut q, &encs, 0).unwrap();
        for (ix, &x) in w.indexed_iter() {
            let e = &encs[ix[0]];
            assert_eq!(q[&ix], e.fake_quant(x));
            assert!((q[&ix] - x).abs() <= e.scale / 2.0 * 1.0001);
        }
        // Per-channel error is below per-tensor error on this weight.
        let t = per_tensor_encoding(w.view(), spec(4, false), Scheme::Minmax).unwrap();
        let mut qt = w.clone();
        fake_quant_tensor(&mut qt, &t);
        let err = |a: &ArrayD<f32>| (a - &w).mapv(|d| d * d).sum();
        assert!(err(&q) < err(&qt) * 0.8, "{} vs {}", err(&q), err(&qt));
    }

    #[test]
    fn non_leading_axes_and_strided_channels() {
        // Gemm B (K=6, N=3), output axis 1: channels are strided columns.
        let w = ArrayD::from_shape_fn(IxDyn(&[6, 3]), |ix| {
            (ix[0] as f32 - 2.0) * (ix[1] + 1) as f32
        });
        let encs = per_channel_encodings(w.view(), 1, spec(8, false), Scheme::Minmax).unwrap();
        assert_eq!(encs.len(), 3);
        for (n, e) in encs.iter().enumerate() {
            let k = (n + 1) as f32;
            assert_eq!(
                *e,
                Encoding::from_range(-2.0 * k, 3.0 * k, 8, false).unwrap()
            );
        }
        let mut q = w.clone();
        fake_quant_weight(&mut q, &encs, 1).unwrap();
        for (ix, &x) in w.indexed_iter() {
            assert_eq!(q[&ix], encs[ix[1]].fake_quant(x));
        }
    }

    #[test]
    fn histogram_schemes_work_per_channel() {
        let w = conv_weight();
        for scheme in [Scheme::TfEnhanced, Scheme::Mse, Scheme::Percentile(99.0)] {
            let encs = per_channel_encodings(w.view(), 0, spec(8, false), scheme).unwrap();
            assert_eq!(encs.len(), 4);
            for e in &encs {
                e.validate().unwrap();
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut w = conv_weight();
        let encs = per_channel_encodings(w.view(), 0, spec(8, false), Scheme::Minmax).unwrap();
        assert!(fake_quant_weight(&mut w, &encs[..3], 0).is_err());
        assert!(fake_quant_weight(&mut w, &encs, 4).is_err());
        assert!(per_channel_encodings(w.view(), 7, spec(8, false), Scheme::Minmax).is_err());
        w[[2, 1, 0, 0]] = f32::NAN;
        for scheme in [Scheme::Minmax, Scheme::TfEnhanced] {
            let err = per_channel_encodings(w.view(), 0, spec(8, false), scheme).unwrap_err();
            assert!(matches!(err, Error::Input(_)));
            assert!(err.to_string().contains("channel 2"), "{err}");
        }
    }

    #[test]
    fn empty_and_zero_weights() {
        let zeros = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
        let encs = per_channel_encodings(zeros.view(), 0, spec(8, true), Scheme::Minmax).unwrap();
        for e in &encs {
            e.validate().unwrap();
            assert_eq!(e.fake_quant(0.0), 0.0);
        }
        let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
        assert!(
            per_channel_encodings(empty.view(), 0, spec(8, true), Scheme::Minmax)
                .unwrap()
                .is_empty()
        );
        let no_values = ArrayD::<f32>::zeros(IxDyn(&[2, 0]));
        let encs = per_channel_encodings(no_values.view(), 0, spec(8, false), Scheme::Mse).unwrap();
        assert_eq!(encs.len(), 2);
    }
}
