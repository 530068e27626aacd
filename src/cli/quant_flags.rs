//! The quantsim settings flags shared by `quantsim`, `analyze`, the fixes and
//! `finetune --qat`.

use clap::Args;
use qsteer::quant::qdq::QuantMode;
use qsteer::quant::simulate::{CalibrateOn, LayerOverride, QuantsimSettings};
use qsteer::quant::weight_scheme::WeightScheme;
use qsteer::quant::{QuantSpec, Scheme};
use qsteer::runtime::RunOptions;
use qsteer::{Error, Result};

#[derive(Debug, Clone, Args)]
pub struct QuantFlags {
    #[command(flatten)]
    pub grid: GridFlags,
    /// Samples set aside for calibration when the dataset is split
    #[arg(long, default_value_t = 200)]
    pub calibration_size: usize,
    /// Seed of the calibration / evaluation split
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub metric: super::metric_flags::MetricFlags,
}

/// The ids of the [`GridFlags`] arguments: what an encodings file settles instead.
pub const GRID_ARGS: [&str; 14] = [
    "w_bits",
    "a_bits",
    "per_channel",
    "symmetric",
    "scheme",
    "weight_scheme",
    "mode",
    "fp32_layers",
    "layer_w_bits",
    "layer_a_bits",
    "fp32_ops",
    "mixed_range",
    "a16_flagged",
    "calibrate_on",
];

/// The quantsim settings alone (bitwidths, granularity, scheme, mode, per-layer overrides).
#[derive(Debug, Clone, Args)]
pub struct GridFlags {
    /// Weight bitwidth (2–16)
    #[arg(long, default_value_t = 8, value_parser = parse_bits, allow_negative_numbers = true)]
    pub w_bits: u8,
    /// Activation bitwidth (2–16)
    #[arg(long, default_value_t = 8, value_parser = parse_bits, allow_negative_numbers = true)]
    pub a_bits: u8,
    /// One weight encoding per output channel (default: per tensor)
    #[arg(long)]
    pub per_channel: bool,
    /// Symmetric encodings (default: asymmetric)
    #[arg(long)]
    pub symmetric: bool,
    /// Calibration scheme: minmax, tf_enhanced, percentile[:P], mse
    #[arg(long, default_value = "tf_enhanced", value_parser = parse_scheme)]
    pub scheme: Scheme,
    /// The weights' calibration scheme: auto (minmax for 8-bit and wider per-tensor grids,
    /// tf_enhanced otherwise: measured), minmax, tf_enhanced, percentile[:P], mse, or same
    /// (the activations' --scheme, as AIMET's one quant_scheme does)
    #[arg(long, value_name = "auto|same|SCHEME", default_value = "auto", value_parser = parse_weight_scheme)]
    pub weight_scheme: WeightScheme,
    /// What to quantize: wa (weights and activations), w, a
    #[arg(long, default_value = "wa", value_parser = parse_mode)]
    pub mode: QuantMode,
    /// Keep FP32: a layer (no weight or output quantizer), or any node or value name
    /// carrying a quantizer (that quantizer only: e.g. a Concat's output); repeat or
    /// comma-separate
    #[arg(long = "fp32", value_name = "NAME", value_delimiter = ',')]
    pub fp32_layers: Vec<String>,
    /// Compute these op types in float (e.g. Pow,Sqrt,Log,LSTM): no quantizer on their
    /// inputs or outputs, nor on what follows them in float up to the next layer; repeat or
    /// comma-separate
    #[arg(long = "fp32-ops", value_name = "OP", value_delimiter = ',')]
    pub fp32_ops: Vec<String>,
    /// Another weight bitwidth for one layer: LAYER=BITS (repeatable)
    #[arg(long = "layer-w-bits", value_name = "LAYER=BITS", value_parser = parse_layer_bits)]
    pub layer_w_bits: Vec<(String, u8)>,
    /// Another output activation bitwidth for one layer: LAYER=BITS (repeatable)
    #[arg(long = "layer-a-bits", value_name = "LAYER=BITS", value_parser = parse_layer_bits)]
    pub layer_a_bits: Vec<(String, u8)>,
    /// A Concat at the model's outputs whose inputs' ranges differ more than FACTOR times
    /// (a detector's boxes and scores) gets no quantizer; its inputs keep their own
    /// encodings. `off` quantizes it like any Concat
    #[arg(long, value_name = "FACTOR|off", default_value = "16", value_parser = parse_mixed_range)]
    pub mixed_range: MixedRange,
    /// 16-bit activations on the tensors `analyze` flags as wide-range (channels or Concat
    /// inputs whose ranges differ more than 16 times); exported as com.microsoft Q/DQ
    #[arg(long = "a16-flagged")]
    pub a16_flagged: bool,
    /// The model activations are calibrated on: fp32 (the FP32 model) or quantized-weights
    /// (AIMET's order: a pass with the weights already quantized, once per weight setting).
    /// Runs that quantize only activations calibrate on FP32 either way
    #[arg(long, value_name = "fp32|quantized-weights", default_value = "fp32", value_parser = parse_calibrate_on)]
    pub calibrate_on: CalibrateOn,
}

fn parse_calibrate_on(s: &str) -> std::result::Result<CalibrateOn, String> {
    s.parse::<CalibrateOn>().map_err(|e| e.to_string())
}

/// `--mixed-range`: a factor of at least 1, or off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedRange(pub Option<f64>);

fn parse_mixed_range(s: &str) -> std::result::Result<MixedRange, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(MixedRange(None));
    }
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 1.0)
        .map(|f| MixedRange(Some(f)))
        .ok_or_else(|| format!("'{s}': expected a factor of at least 1 (e.g. 16) or off"))
}

fn parse_weight_scheme(s: &str) -> std::result::Result<WeightScheme, String> {
    s.parse::<WeightScheme>().map_err(|e| e.to_string())
}

fn parse_scheme(s: &str) -> std::result::Result<Scheme, String> {
    s.parse::<Scheme>().map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> std::result::Result<QuantMode, String> {
    s.parse::<QuantMode>().map_err(|e| e.to_string())
}

/// A bitwidth, 2–16 (any other number, negative or above 255 included, says so).
fn parse_bits(s: &str) -> std::result::Result<u8, String> {
    let range = qsteer::quant::encoding::BITWIDTHS;
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|b| u8::try_from(b).ok())
        .filter(|b| range.contains(b))
        .ok_or_else(|| {
            format!(
                "'{s}' is not a supported bitwidth: expected {}–{}",
                range.start(),
                range.end()
            )
        })
}

fn parse_layer_bits(s: &str) -> std::result::Result<(String, u8), String> {
    let (layer, bits) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}': expected LAYER=BITS"))?;
    let bits = parse_bits(bits).map_err(|e| format!("'{s}': {e}"))?;
    if layer.trim().is_empty() {
        return Err(format!("'{s}': the layer name is empty"));
    }
    Ok((layer.trim().to_string(), bits))
}

impl QuantFlags {
    /// The settings, checked before any work is done.
    pub fn settings(&self) -> Result<QuantsimSettings> {
        self.grid.settings()
    }

    pub fn run_options(&self) -> Result<RunOptions> {
        let mut options = RunOptions::default();
        match self.threads {
            Some(0) => return Err(Error::input("--threads must be at least 1")),
            Some(t) => options.threads = t,
            None => {}
        }
        Ok(options)
    }
}

impl GridFlags {
    /// The settings, checked before any work is done.
    pub fn settings(&self) -> Result<QuantsimSettings> {
        QuantSpec::new(self.w_bits, self.symmetric)
            .map_err(|e| Error::input(format!("--w-bits: {e}")))?;
        QuantSpec::new(self.a_bits, self.symmetric)
            .map_err(|e| Error::input(format!("--a-bits: {e}")))?;
        self.scheme.validate()?;
        self.check_overrides()?;
        let mut overrides: Vec<LayerOverride> = Vec::new();
        for layer in &self.fp32_layers {
            entry(&mut overrides, layer).skip = true;
        }
        for (layer, bits) in &self.layer_w_bits {
            entry(&mut overrides, layer).w_bits = Some(*bits);
        }
        for (layer, bits) in &self.layer_a_bits {
            entry(&mut overrides, layer).a_bits = Some(*bits);
        }
        Ok(QuantsimSettings {
            w_bits: self.w_bits,
            a_bits: self.a_bits,
            per_channel: self.per_channel,
            symmetric: self.symmetric,
            scheme: self.scheme,
            weight_scheme: self.weight_scheme,
            mode: self.mode,
            overrides,
            fp32_ops: self.fp32_ops.iter().map(|o| o.trim().to_string()).collect(),
            mixed_range_factor: self.mixed_range.0,
            a16_flagged: self.a16_flagged,
            calibrate_on: self.calibrate_on,
        })
    }

    /// Per-layer flags that contradict the others: a bitwidth for an FP32 layer, or for
    /// what `--mode` leaves unquantized.
    fn check_overrides(&self) -> Result<()> {
        for (flag, given) in [
            ("--layer-w-bits", &self.layer_w_bits),
            ("--layer-a-bits", &self.layer_a_bits),
        ] {
            if let Some((layer, bits)) = given.iter().find(|(l, _)| self.fp32_layers.contains(l)) {
                return Err(Error::input(format!(
                    "--fp32 {layer} and {flag} {layer}={bits} contradict each other: an FP32 \
                     layer has no quantizer; drop one"
                )));
            }
        }
        let unquantized = [
            (
                "--layer-w-bits",
                &self.layer_w_bits,
                self.mode.weights(),
                "weights",
            ),
            (
                "--layer-a-bits",
                &self.layer_a_bits,
                self.mode.activations(),
                "activations",
            ),
        ];
        for (flag, given, quantized, what) in unquantized {
            if let (Some((layer, bits)), false) = (given.first(), quantized) {
                return Err(Error::input(format!(
                    "{flag} {layer}={bits} has no effect with --mode {}: {what} are not \
                     quantized; drop it or use --mode wa",
                    self.mode
                )));
            }
        }
        Ok(())
    }
}

/// The override of `layer`, added if missing.
fn entry<'a>(overrides: &'a mut Vec<LayerOverride>, layer: &str) -> &'a mut LayerOverride {
    let i = match overrides.iter().position(|o| o.layer == layer) {
        Some(i) => i,
        None => {
            overrides.push(LayerOverride {
                layer: layer.to_string(),
                ..LayerOverride::default()
            });
            overrides.len() - 1
        }
    };
    &mut overrides[i]
}
