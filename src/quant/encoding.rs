//! One quantization grid (an "encoding"): bitwidth, scale, offset, and the fake-quant math.
//!
//! Sign conventions follow AIMET, so encodings files carry over unchanged:
//!
//! ```text
//! q  = clamp(round_half_even(x / scale) - offset, 0, 2^b - 1)      (quantize)
//! x' = (q + offset) * scale                                         (dequantize)
//! ```
//!
//! `offset` is an integer in `[-(2^b - 1), 0]`: the grid is `{(j + offset) * scale}` for
//! `j = 0 ..= 2^b - 1`, so 0 is always exactly representable. This is ONNX `QuantizeLinear`
//! (`y = saturate(round_half_even(x / y_scale) + y_zero_point)`) stored unsigned (`uintB`) with
//! **`y_zero_point = -offset`** ([`Encoding::onnx_zero_point`]); stored signed (`intB`) the zero
//! point is `-offset - 2^(b-1)` ([`Encoding::onnx_signed_zero_point`]), which is 0 for a signed
//! symmetric encoding. The division (not a multiply by 1/scale) and the f32 arithmetic match
//! what ONNX Runtime computes.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Smallest scale an encoding gets, so a constant or all-zero tensor still has a usable grid.
/// AIMET uses float32 epsilon for the same purpose (`_get_minimum_scale`).
pub const MIN_SCALE: f32 = f32::EPSILON;

/// Bitwidths we simulate. Below 2 there is no symmetric grid; above 16 f32 can no longer hold
/// every grid index exactly next to its value.
pub const BITWIDTHS: std::ops::RangeInclusive<u8> = 2..=16;

/// Range bounds are clamped to this magnitude so the grid end points stay finite in f32.
const RANGE_LIMIT: f64 = f32::MAX as f64 / 4.0;

/// How ranges become grids: bitwidth and symmetry. Validated on construction, so an
/// [`Encoding`] built from it always has a legal bitwidth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    bitwidth: u8,
    symmetric: bool,
    unsigned_symmetric: bool,
}

impl QuantSpec {
    /// Asymmetric (`symmetric == false`) or signed symmetric. Bitwidth 2..=16.
    pub fn new(bitwidth: u8, symmetric: bool) -> Result<Self> {
        check_bitwidth(bitwidth)?;
        Ok(QuantSpec {
            bitwidth,
            symmetric,
            unsigned_symmetric: false,
        })
    }

    /// AIMET's "unsigned symmetric": a symmetric spec given a range with `min >= 0` uses the
    /// whole unsigned grid (offset 0, scale = max / (2^b - 1)) instead of wasting the negative
    /// half. AIMET enables this by default; it only changes symmetric specs.
    pub fn with_unsigned_symmetric(mut self, on: bool) -> Self {
        self.unsigned_symmetric = on;
        self
    }

    pub fn bitwidth(&self) -> u8 {
        self.bitwidth
    }

    pub fn symmetric(&self) -> bool {
        self.symmetric
    }

    pub fn unsigned_symmetric(&self) -> bool {
        self.unsigned_symmetric
    }

    /// Number of grid steps, 2^b - 1 (the largest quantized value).
    pub fn num_steps(&self) -> u32 {
        (1u32 << self.bitwidth) - 1
    }

    /// Whether a range starting at `min` gets the unsigned symmetric grid.
    pub(crate) fn uses_unsigned_grid(&self, min: f64) -> bool {
        self.symmetric && self.unsigned_symmetric && min >= 0.0
    }

    /// The encoding covering `[min, max]`.
    ///
    /// The range is first widened to contain 0 and to at least [`MIN_SCALE`] per step; NaN
    /// bounds count as 0 and infinite ones are clamped, so the result is always finite.
    /// - asymmetric: `scale = (max - min) / (2^b - 1)`, `offset = round(min / scale)`;
    /// - signed symmetric (AIMET's definition, `TfEncodingAnalyzer`): `scale = max(|min|, |max|)
    ///   / (2^(b-1) - 1)`, `offset = -2^(b-1)`, i.e. grid `[-2^(b-1), 2^(b-1) - 1] * scale`;
    /// - unsigned symmetric (opt-in, `min >= 0`): `scale = max / (2^b - 1)`, `offset = 0`.
    ///
    /// `min`/`max` of the result are re-derived from the grid, so they are exactly the first and
    /// last representable values (asymmetric: shifted by at most scale/2 from the request).
    pub fn encoding(&self, min: f32, max: f32) -> Encoding {
        self.encoding_f64(min as f64, max as f64)
    }

    pub(crate) fn encoding_f64(&self, min: f64, max: f64) -> Encoding {
        let (mut lo, mut hi) = (sanitize(min), sanitize(max));
        if lo > hi {
            std::mem::swap(&mut lo, &mut hi);
        }
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let steps = self.num_steps() as f64;
        let min_scale = MIN_SCALE as f64;
        let (scale, offset) = if self.symmetric && !self.uses_unsigned_grid(lo) {
            let positive_steps = ((1u32 << (self.bitwidth - 1)) - 1) as f64;
            let scale = to_scale((hi.max(-lo) / positive_steps).max(min_scale));
            (scale, -(1i32 << (self.bitwidth - 1)))
        } else {
            let scale = ((hi - lo) / steps).max(min_scale);
            // The offset comes from the f64 scale, before rounding it to f32, and f64 round is
            // half away from zero: both as AIMET computes it ([-1, 1] at 8 bit gives -128).
            let offset = (lo / scale).round().clamp(-steps, 0.0) as i32;
            (to_scale(scale), offset)
        };
        self.grid(scale, offset)
    }

    /// An encoding with this spec's bitwidth and symmetry flag and the given grid. The caller
    /// guarantees `scale > 0` finite and `offset` in range.
    pub(crate) fn grid(&self, scale: f32, offset: i32) -> Encoding {
        Encoding::grid(self.bitwidth, self.symmetric, scale, offset)
    }
}

fn sanitize(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-RANGE_LIMIT, RANGE_LIMIT)
    }
}

/// Rounds to f32 without letting a tiny f64 scale underflow below [`MIN_SCALE`].
fn to_scale(scale: f64) -> f32 {
    (scale as f32).max(MIN_SCALE)
}

fn check_bitwidth(bitwidth: u8) -> Result<()> {
    if BITWIDTHS.contains(&bitwidth) {
        Ok(())
    } else {
        Err(Error::input(format!(
            "bitwidth {bitwidth} is not supported (use {} to {})",
            BITWIDTHS.start(),
            BITWIDTHS.end()
        )))
    }
}

/// A quantization grid. `min`/`max` are the first and last grid values (informational, and
/// what AIMET's 0.6.1 files carry); `scale` and `offset` define the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoding {
    pub bitwidth: u8,
    /// Symmetric grid: signed (offset -2^(b-1)) or, for non-negative data, unsigned (offset 0).
    pub symmetric: bool,
    pub scale: f32,
    /// AIMET's offset, <= 0: the negative of the ONNX (unsigned) zero point.
    pub offset: i32,
    pub min: f32,
    pub max: f32,
}

impl Encoding {
    /// The encoding covering `[min, max]`; see [`QuantSpec::encoding`] for the definition.
    pub fn from_range(min: f32, max: f32, bitwidth: u8, symmetric: bool) -> Result<Encoding> {
        Ok(QuantSpec::new(bitwidth, symmetric)?.encoding(min, max))
    }

    /// An encoding from an explicit grid, e.g. read from a file; `min`/`max` are derived.
    pub fn from_scale_offset(
        bitwidth: u8,
        symmetric: bool,
        scale: f32,
        offset: i32,
    ) -> Result<Encoding> {
        let encoding = Encoding::grid(bitwidth, symmetric, scale, offset);
        encoding.validate()?;
        Ok(encoding)
    }

    fn grid(bitwidth: u8, symmetric: bool, scale: f32, offset: i32) -> Encoding {
        let steps = ((1u32 << bitwidth.min(31)) - 1) as f64;
        let min = offset as f64 * scale as f64;
        let max = (offset as f64 + steps) * scale as f64;
        Encoding {
            bitwidth,
            symmetric,
            scale,
            offset,
            min: min as f32,
            max: max as f32,
        }
    }

    /// Checks what deserialization cannot: bitwidth 2..=16, a positive finite scale, and an
    /// offset that keeps 0 on the grid (so the ONNX zero point fits the unsigned type).
    pub fn validate(&self) -> Result<()> {
        check_bitwidth(self.bitwidth)?;
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::input(format!(
                "encoding scale {} is not a positive finite number",
                self.scale
            )));
        }
        let steps = self.num_steps() as i64;
        if !(-steps..=0).contains(&(self.offset as i64)) {
            return Err(Error::input(format!(
                "encoding offset {} is outside [-{steps}, 0] for {} bits (offset is minus the \
                 ONNX zero point)",
                self.offset, self.bitwidth
            )));
        }
        Ok(())
    }

    /// Largest quantized value, 2^b - 1.
    pub fn num_steps(&self) -> u32 {
        (1u32 << self.bitwidth.min(31)) - 1
    }

    /// `clamp(round_half_even(x / scale) - offset, 0, 2^b - 1)`. NaN maps to 0.
    #[inline]
    pub fn quantize(&self, x: f32) -> i32 {
        self.quantize_f32(x) as i32
    }

    /// The quantized value as an f32 (exact: every grid index is below 2^24).
    #[inline]
    fn quantize_f32(&self, x: f32) -> f32 {
        let q = (x / self.scale).round_ties_even() - self.offset as f32;
        q.clamp(0.0, self.num_steps() as f32)
    }

    /// `(q + offset) * scale`; `q` is not clamped.
    #[inline]
    pub fn dequantize(&self, q: i32) -> f32 {
        (q as i64 + self.offset as i64) as f32 * self.scale
    }

    /// Quantize then dequantize: the nearest grid value, saturating outside `[min, max]`.
    /// NaN stays NaN.
    #[inline]
    pub fn fake_quant(&self, x: f32) -> f32 {
        (self.quantize_f32(x) + self.offset as f32) * self.scale
    }

    /// [`Encoding::fake_quant`] in place over a buffer.
    pub fn fake_quant_slice(&self, values: &mut [f32]) {
        let (scale, offset) = (self.scale, self.offset as f32);
        let top = self.num_steps() as f32;
        for v in values {
            let q = ((*v / scale).round_ties_even() - offset).clamp(0.0, top);
            *v = (q + offset) * scale;
        }
    }

    /// ONNX `y_scale`.
    pub fn onnx_scale(&self) -> f32 {
        self.scale
    }

    /// ONNX `y_zero_point` for an unsigned `uintB` quantized tensor: `-offset`, in `[0, 2^b-1]`.
    pub fn onnx_zero_point(&self) -> i32 {
        -self.offset
    }

    /// ONNX `y_zero_point` for a signed `intB` quantized tensor: `-offset - 2^(b-1)`, in
    /// `[-2^(b-1), 2^(b-1) - 1]`; 0 for a signed symmetric encoding.
    pub fn onnx_signed_zero_point(&self) -> i32 {
        -self.offset - (1i32 << (self.bitwidth.clamp(1, 31) - 1))
    }

    /// An encoding from ONNX `y_scale` and an unsigned `y_zero_point` (the inverse of
    /// [`Encoding::onnx_scale`] / [`Encoding::onnx_zero_point`]).
    pub fn from_onnx(bitwidth: u8, symmetric: bool, scale: f32, zero_point: i32) -> Result<Self> {
        Encoding::from_scale_offset(bitwidth, symmetric, scale, zero_point.saturating_neg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asym8(min: f32, max: f32) -> Encoding {
        Encoding::from_range(min, max, 8, false).unwrap()
    }

    #[test]
    fn minus_one_to_one_at_8_bit_asymmetric() {
        let e = asym8(-1.0, 1.0);
        assert_eq!(e.scale, (2.0f64 / 255.0) as f32);
        // -1 / (2/255) = -127.5 rounds away from zero, like AIMET.
        assert_eq!(e.offset, -128);
        assert_eq!(e.onnx_zero_point(), 128);
        assert_eq!(e.onnx_signed_zero_point(), 0);
        assert_eq!(e.quantize(0.0), 128);
        assert_eq!(e.fake_quant(0.0), 0.0);
        assert_eq!(e.dequantize(128), 0.0);
        // The range is re-derived from the grid: [-128, 127] steps of 2/255.
        assert!((e.min as f64 - (-128.0 * 2.0 / 255.0)).abs() < 1e-6);
        assert!((e.max as f64 - (127.0 * 2.0 / 255.0)).abs() < 1e-6);
        assert_eq!(e.quantize(e.min), 0);
        assert_eq!(e.quantize(e.max), 255);
    }

    #[test]
    fn zero_to_six_is_unsigned() {
        let e = asym8(0.0, 6.0);
        assert_eq!(e.offset, 0);
        assert_eq!(e.onnx_zero_point(), 0);
        assert_eq!(e.scale, (6.0f64 / 255.0) as f32);
        assert_eq!(e.min, 0.0);
        assert!((e.max - 6.0).abs() < 1e-6);
        assert_eq!(e.quantize(6.0), 255);
        assert_eq!(e.quantize(-1.0), 0);

        // Unsigned symmetric gives the same grid, flagged symmetric.
        let spec = QuantSpec::new(8, true)
            .unwrap()
            .with_unsigned_symmetric(true);
        let u = spec.encoding(0.0, 6.0);
        assert!(u.symmetric);
        assert_eq!((u.scale, u.offset), (e.scale, e.offset));
        // Without the opt-in the same range takes the signed grid.
        let s = Encoding::from_range(0.0, 6.0, 8, true).unwrap();
        assert_eq!(s.offset, -128);
        assert_eq!(s.scale, (6.0f64 / 127.0) as f32);
    }

    #[test]
    fn one_sided_ranges_are_widened_to_zero() {
        let e = asym8(2.0, 4.0);
        assert_eq!(e.offset, 0);
        assert_eq!(e.scale, (4.0f64 / 255.0) as f32);
        let n = asym8(-4.0, -2.0);
        assert_eq!(n.offset, -255);
        assert_eq!(n.max, 0.0);
        assert_eq!(n.fake_quant(0.0), 0.0);
    }

    #[test]
    fn symmetric_int4_grid() {
        let e = Encoding::from_range(-0.5, 0.7, 4, true).unwrap();
        // scale = 0.7 / 7, offset = -8: grid -8..=7 steps of 0.1.
        assert_eq!(e.scale, (0.7f64 / 7.0) as f32);
        assert_eq!(e.offset, -8);
        assert_eq!(e.onnx_signed_zero_point(), 0);
        assert_eq!(e.onnx_zero_point(), 8);
        assert!((e.min + 0.8).abs() < 1e-6);
        assert!((e.max - 0.7).abs() < 1e-6);
        let grid: Vec<f32> = (0..16).map(|q| e.dequantize(q)).collect();
        for (j, g) in grid.iter().enumerate() {
            assert!((g - (j as f32 - 8.0) * 0.1).abs() < 1e-6, "{grid:?}");
        }
        assert_eq!(e.quantize(0.04), 8);
        assert_eq!(e.quantize(0.06), 9);
        assert_eq!(e.quantize(5.0), 15);
        assert_eq!(e.quantize(-5.0), 0);
    }

    #[test]
    fn rounds_half_to_even_like_quantize_linear() {
        // scale 1, offset -128: x / scale = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0.
        let e = Encoding::from_scale_offset(8, false, 1.0, -128).unwrap();
        assert_eq!(e.quantize(0.5), 128);
        assert_eq!(e.quantize(1.5), 130);
        assert_eq!(e.quantize(2.5), 130);
        assert_eq!(e.quantize(-0.5), 128);
        assert_eq!(e.quantize(-1.5), 126);
    }

    #[test]
    fn fake_quant_error_is_at_most_half_a_step_inside_and_saturates_outside() {
        for (bits, symmetric) in [(8, false), (8, true), (4, false), (4, true), (16, false)] {
            let e = Encoding::from_range(-1.3, 2.9, bits, symmetric).unwrap();
            for i in 0..=10_000 {
                let x = e.min + (e.max - e.min) * i as f32 / 10_000.0;
                let y = e.fake_quant(x);
                // Half a step, plus f32 rounding of the result (matters at 16 bit).
                let half = e.scale / 2.0 + 2.0 * f32::EPSILON * x.abs();
                assert!((y - x).abs() <= half, "{bits} bit {x} -> {y}");
                assert!(y >= e.min && y <= e.max);
            }
            assert_eq!(e.fake_quant(1e9), e.dequantize(e.num_steps() as i32));
            assert_eq!(e.fake_quant(-1e9), e.dequantize(0));
            assert_eq!(e.fake_quant(f32::INFINITY), e.fake_quant(1e9));
            assert_eq!(e.fake_quant(0.0), 0.0);
        }
    }

    #[test]
    fn slice_matches_scalar() {
        let e = asym8(-0.37, 1.91);
        let mut xs: Vec<f32> = (-300..300).map(|i| i as f32 * 0.0071).collect();
        let expected: Vec<f32> = xs.iter().map(|&x| e.fake_quant(x)).collect();
        e.fake_quant_slice(&mut xs);
        assert_eq!(xs, expected);
    }

    #[test]
    fn degenerate_ranges_give_tiny_valid_grids() {
        let cases = [
            (0.0, 0.0),
            (f32::NAN, f32::NAN),
            (f32::NAN, 1.0),
            (3.0, 3.0),
            (-2.0, -2.0),
            (f32::NEG_INFINITY, f32::INFINITY),
            (1e-30, 1e-30),
            (5.0, -5.0),
        ];
        for (lo, hi) in cases {
            for bits in [2, 8, 16] {
                for symmetric in [false, true] {
                    let e = Encoding::from_range(lo, hi, bits, symmetric).unwrap();
                    e.validate().unwrap();
                    assert!(e.scale >= MIN_SCALE && e.scale.is_finite(), "{e:?}");
                    assert!(e.min.is_finite() && e.max.is_finite(), "{e:?}");
                    assert!(e.min <= 0.0 && e.max >= 0.0, "{e:?}");
                    assert_eq!(e.fake_quant(0.0), 0.0);
                    assert!(!e.fake_quant(1.0).is_nan());
                }
            }
        }
        let z = asym8(0.0, 0.0);
        assert_eq!(z.scale, MIN_SCALE);
        // A constant tensor is represented (to within half a step) after widening to 0.
        let c = asym8(3.0, 3.0);
        assert!((c.fake_quant(3.0) - 3.0).abs() <= c.scale / 2.0);
    }

    #[test]
    fn bitwidths_outside_2_to_16_are_input_errors_naming_the_value() {
        for bits in [0u8, 1, 17, 32] {
            let err = Encoding::from_range(-1.0, 1.0, bits, false).unwrap_err();
            assert!(matches!(err, Error::Input(_)));
            assert!(err.to_string().contains(&bits.to_string()), "{err}");
        }
        for bits in 2..=16 {
            let e = Encoding::from_range(-1.0, 3.0, bits, false).unwrap();
            assert_eq!(e.quantize(3.0), e.num_steps() as i32);
        }
    }

    #[test]
    fn onnx_round_trip_and_validation() {
        let e = asym8(-0.3, 2.2);
        let back = Encoding::from_onnx(8, false, e.onnx_scale(), e.onnx_zero_point()).unwrap();
        assert_eq!(back, e);
        assert!(Encoding::from_scale_offset(8, false, 0.0, 0).is_err());
        assert!(Encoding::from_scale_offset(8, false, f32::NAN, 0).is_err());
        assert!(Encoding::from_scale_offset(8, false, 0.1, 1).is_err());
        assert!(Encoding::from_scale_offset(8, false, 0.1, -256).is_err());
        assert!(Encoding::from_scale_offset(8, false, 0.1, -255).is_ok());
    }

    #[test]
    fn sixteen_bit_grid_is_exact() {
        let e = Encoding::from_range(-1.0, 1.0, 16, false).unwrap();
        assert_eq!(e.num_steps(), 65535);
        for q in [0, 1, 32767, 32768, 65534, 65535] {
            assert_eq!(e.quantize(e.dequantize(q)), q);
        }
    }
}
