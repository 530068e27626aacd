//! The weights' calibration scheme, chosen apart from the activations' (`--weight-scheme`).
//!
//! Weights and activations are different data: all of a weight is known (no unseen sample
//! can exceed its range) and a clipped weight is wrong for every input, while an activation
//! histogram is a sample of a stream whose rare tails are often worth clipping. One scheme for
//! both (AIMET's `quant_scheme`, one for every quantizer: `tf_enhanced` by default in
//! aimet-onnx 1.x, `min_max` in aimet-onnx 2.x) forces a trade.
//!
//! Whether clipping a weight pays depends on the grid (measured, README "Weight scheme"):
//! an 8-bit per-tensor grid is fine enough that `tf_enhanced`'s clipping of a few outlying
//! weights costs more than the rounding it saves (ddddocr's CRNN: 0.59 of the CTC lines
//! with `tf_enhanced` weights, 0.91 with `minmax`), while per channel or below 8 bits the
//! rounding noise dominates and clipping wins (the CRNN per channel 0.91 vs 0.88; the
//! digits MobileNetV2 at W4 per tensor 0.86 vs 0.74). [`WeightScheme::Auto`] follows that.
//!
//! [`WeightScheme::Same`] is the activations' scheme: what every settings record made before
//! this option meant, so older records read the same, and the AIMET-exact comparison
//! (`tf_enhanced` for both) stays one flag away.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::calibrate::Scheme;
use crate::{Error, Result};

/// How the weights are calibrated. Serialized as its label (`"auto"`, `"same"`, `"minmax"`,
/// `"percentile:99.9"`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum WeightScheme {
    /// `minmax` for per-tensor grids of 8 bits or more, `tf_enhanced` otherwise.
    #[default]
    Auto,
    /// The activations' scheme.
    Same,
    Fixed(Scheme),
}

impl WeightScheme {
    /// The scheme one weight is calibrated with, on a `bits`-bit grid per tensor or per
    /// channel, the activations being calibrated with `activations`.
    pub fn resolve(self, activations: Scheme, bits: u8, per_channel: bool) -> Scheme {
        match self {
            WeightScheme::Auto if bits >= 8 && !per_channel => Scheme::Minmax,
            WeightScheme::Auto => Scheme::TfEnhanced,
            WeightScheme::Same => activations,
            WeightScheme::Fixed(s) => s,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            WeightScheme::Fixed(s) => s.validate(),
            _ => Ok(()),
        }
    }

    /// What settings recorded before the weight scheme existed meant.
    pub fn same() -> WeightScheme {
        WeightScheme::Same
    }

    pub fn is_same(&self) -> bool {
        *self == WeightScheme::Same
    }
}

impl fmt::Display for WeightScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightScheme::Auto => f.write_str("auto"),
            WeightScheme::Same => f.write_str("same"),
            WeightScheme::Fixed(s) => s.fmt(f),
        }
    }
}

impl FromStr for WeightScheme {
    type Err = Error;

    /// `auto`, `same`, or a scheme name (`minmax`, `tf_enhanced`, `percentile[:P]`, `mse`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightScheme::Auto),
            "same" => Ok(WeightScheme::Same),
            _ => s.parse::<Scheme>().map(WeightScheme::Fixed).map_err(|e| {
                Error::input(format!(
                    "weight scheme: {e}; or auto, or same (the activations')"
                ))
            }),
        }
    }
}

impl From<WeightScheme> for String {
    fn from(w: WeightScheme) -> String {
        w.to_string()
    }
}

impl TryFrom<String> for WeightScheme {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_8_bit_per_tensor_weights_whole_and_clips_finer_grids() {
        let tf = Scheme::TfEnhanced;
        assert_eq!(WeightScheme::Auto.resolve(tf, 8, false), Scheme::Minmax);
        assert_eq!(WeightScheme::Auto.resolve(tf, 16, false), Scheme::Minmax);
        assert_eq!(WeightScheme::Auto.resolve(tf, 8, true), Scheme::TfEnhanced);
        assert_eq!(WeightScheme::Auto.resolve(tf, 4, false), Scheme::TfEnhanced);
        assert_eq!(
            WeightScheme::Same.resolve(Scheme::Mse, 8, false),
            Scheme::Mse
        );
        let fixed = WeightScheme::Fixed(Scheme::Percentile(99.9));
        assert_eq!(fixed.resolve(tf, 4, true), Scheme::Percentile(99.9));
    }

    #[test]
    fn labels_parse_back_and_serialize_as_strings() {
        for w in [
            WeightScheme::Auto,
            WeightScheme::Same,
            WeightScheme::Fixed(Scheme::Minmax),
            WeightScheme::Fixed(Scheme::Percentile(99.9)),
        ] {
            assert_eq!(w.to_string().parse::<WeightScheme>().unwrap(), w);
            let json = serde_json::to_value(w).unwrap();
            assert_eq!(json, serde_json::Value::String(w.to_string()));
            assert_eq!(serde_json::from_value::<WeightScheme>(json).unwrap(), w);
        }
        assert!("tf".parse::<WeightScheme>().is_ok());
        let e = "bogus".parse::<WeightScheme>().unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("same"), "{e}");
        assert!(serde_json::from_str::<WeightScheme>("\"percentile:20\"").is_err());
    }
}
