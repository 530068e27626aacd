//! The quantsim decision dialog: a settings form prefilled with AIMET's defaults, launching
//! one quantsim of the chosen variant (Enter) or the diagnosis set users compare (`d`):
//! the FP32 score, W+A, weights only and activations only at the same bits.

use super::action::Action;
use super::form;
use super::state::{App, Pane, Popup};
use super::update::Effect;
use qsteer::jobs::JobKind;
use qsteer::quant::qdq::QuantMode;
use qsteer::quant::simulate::{CalibrateOn, LayerOverride, QuantsimSettings};
use qsteer::quant::weight_scheme::WeightScheme;
use qsteer::quant::Scheme;
use std::path::Path;

/// The schemes offered, as the form shows them.
pub const SCHEMES: [(&str, Scheme); 4] = [
    ("minmax", Scheme::Minmax),
    ("tf_enhanced", Scheme::TfEnhanced),
    ("percentile 99.99", Scheme::Percentile(99.99)),
    ("mse", Scheme::Mse),
];

/// The weight schemes offered: auto (measured), the schemes, then the activations'.
pub const WEIGHT_SCHEMES: [(&str, WeightScheme); 6] = [
    ("auto", WeightScheme::Auto),
    ("minmax", WeightScheme::Fixed(Scheme::Minmax)),
    ("tf_enhanced", WeightScheme::Fixed(Scheme::TfEnhanced)),
    (
        "percentile 99.99",
        WeightScheme::Fixed(Scheme::Percentile(99.99)),
    ),
    ("mse", WeightScheme::Fixed(Scheme::Mse)),
    ("same as activations", WeightScheme::Same),
];

/// The models activations are calibrated on: FP32, AIMET's (weights already quantized).
pub const CALIBRATE_ON: [(&str, CalibrateOn); 2] = [
    ("FP32 model", CalibrateOn::Fp32),
    ("quantized weights", CalibrateOn::QuantizedWeights),
];

pub const MODES: [(&str, QuantMode); 3] = [
    ("W+A", QuantMode::WeightsAndActivations),
    ("weights only", QuantMode::WeightsOnly),
    ("activations only", QuantMode::ActivationsOnly),
];

/// Op types the form offers to compute in float (`--fp32-ops`), where the model has them:
/// a power spectrum and its Log/Sqrt, exponentials, recurrent cells.
pub const FLOAT_OP_CANDIDATES: [&str; 8] = qsteer::quant::float_op_advice::CANDIDATES;

const BITS: (usize, usize) = (2, 16);
/// The split's calibration size everywhere else in the app and the CLI.
const CALIBRATION_DEFAULT: usize = 200;

/// The form's fields, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    WBits,
    ABits,
    PerChannel,
    Symmetric,
    Scheme,
    WeightScheme,
    Mode,
    CalibrateOn,
    FloatOps,
    MixedRange,
    A16Flagged,
    Calibration,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::WBits,
        Field::ABits,
        Field::PerChannel,
        Field::Symmetric,
        Field::Scheme,
        Field::WeightScheme,
        Field::Mode,
        Field::CalibrateOn,
        Field::FloatOps,
        Field::Calibration,
        Field::MixedRange,
        Field::A16Flagged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::WBits => "W bits",
            Field::ABits => "A bits",
            Field::PerChannel => "per-channel",
            Field::Symmetric => "symmetric",
            Field::Scheme => "scheme",
            Field::WeightScheme => "w scheme",
            Field::Mode => "mode",
            Field::CalibrateOn => "calib. on",
            Field::FloatOps => "float ops",
            Field::MixedRange => "mixed range",
            Field::A16Flagged => "wide range",
            Field::Calibration => "calibration",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantsimForm {
    /// The variant to quantize.
    pub variant: u32,
    pub w_bits: usize,
    pub a_bits: usize,
    pub per_channel: bool,
    pub symmetric: bool,
    /// Index into [`SCHEMES`].
    pub scheme: usize,
    /// Index into [`WEIGHT_SCHEMES`].
    pub weight_scheme: usize,
    /// Index into [`MODES`].
    pub mode: usize,
    /// Index into [`CALIBRATE_ON`].
    pub calibrate_on: usize,
    /// The mixed-range Concat rule at its default factor (off: quantize every Concat).
    pub mixed_range: bool,
    /// 16-bit activations on the wide-range tensors the diagnosis flags.
    pub a16_flagged: bool,
    pub calibration_size: usize,
    /// Index into [`Field::ALL`].
    pub field: usize,
    /// No digit typed in this field yet: the first one replaces the value.
    pub fresh: bool,
    /// Nodes kept FP32 (`F` in the graph or layers pane when the dialog opened).
    pub keep_fp32: Vec<String>,
    /// The float op sets offered (the first: none), from the model's op types.
    pub float_op_choices: Vec<Vec<String>>,
    /// Index into `float_op_choices`.
    pub float_ops: usize,
}

impl QuantsimForm {
    /// AIMET's defaults (W8A8 asymmetric per tensor, tf_enhanced, W+A) on `variant`.
    pub fn new(variant: u32, calibration_size: usize) -> QuantsimForm {
        let d = QuantsimSettings::default();
        QuantsimForm {
            variant,
            w_bits: d.w_bits as usize,
            a_bits: d.a_bits as usize,
            per_channel: d.per_channel,
            symmetric: d.symmetric,
            scheme: SCHEMES.iter().position(|s| s.1 == d.scheme).unwrap_or(0),
            weight_scheme: WEIGHT_SCHEMES
                .iter()
                .position(|s| s.1 == d.weight_scheme)
                .unwrap_or(0),
            mode: MODES.iter().position(|m| m.1 == d.mode).unwrap_or(0),
            calibrate_on: CALIBRATE_ON
                .iter()
                .position(|c| c.1 == d.calibrate_on)
                .unwrap_or(0),
            mixed_range: d.mixed_range_factor.is_some(),
            a16_flagged: d.a16_flagged,
            calibration_size,
            field: 0,
            fresh: true,
            keep_fp32: Vec::new(),
            float_op_choices: vec![Vec::new()],
            float_ops: 0,
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    /// Whether the mode quantizes weights: without, "calib. on" has no effect and the
    /// cursor steps over it.
    pub fn weights_quantized(&self) -> bool {
        MODES[self.mode.min(MODES.len() - 1)].1.weights()
    }

    /// The settings of the form, in `mode`.
    pub fn settings_in(&self, mode: QuantMode) -> QuantsimSettings {
        QuantsimSettings {
            w_bits: self.w_bits as u8,
            a_bits: self.a_bits as u8,
            per_channel: self.per_channel,
            symmetric: self.symmetric,
            scheme: SCHEMES[self.scheme].1,
            weight_scheme: WEIGHT_SCHEMES[self.weight_scheme].1,
            mode,
            overrides: self
                .keep_fp32
                .iter()
                .map(|name| LayerOverride {
                    layer: name.clone(),
                    skip: true,
                    ..Default::default()
                })
                .collect(),
            fp32_ops: self
                .float_op_choices
                .get(self.float_ops)
                .cloned()
                .unwrap_or_default(),
            mixed_range_factor: self
                .mixed_range
                .then_some(qsteer::quant::mixed_range::DEFAULT_FACTOR),
            a16_flagged: self.a16_flagged,
            calibrate_on: CALIBRATE_ON[self.calibrate_on].1,
        }
    }

    /// Offer, of [`FLOAT_OP_CANDIDATES`], those among `model_ops`: none, all of them, then
    /// each alone.
    pub fn offer_float_ops<'a>(&mut self, model_ops: impl IntoIterator<Item = &'a str>) {
        let present: std::collections::BTreeSet<&str> = model_ops.into_iter().collect();
        let found: Vec<String> = FLOAT_OP_CANDIDATES
            .iter()
            .filter(|op| present.contains(*op))
            .map(|op| op.to_string())
            .collect();
        let mut choices = vec![Vec::new()];
        if !found.is_empty() {
            choices.push(found.clone());
        }
        if found.len() > 1 {
            choices.extend(found.into_iter().map(|op| vec![op]));
        }
        self.float_op_choices = choices;
        self.float_ops = 0;
    }

    pub fn settings(&self) -> QuantsimSettings {
        self.settings_in(MODES[self.mode].1)
    }

    pub fn value_text(&self, f: Field) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        match f {
            Field::WBits => self.w_bits.to_string(),
            Field::ABits => self.a_bits.to_string(),
            Field::PerChannel => yes_no(self.per_channel),
            Field::Symmetric => yes_no(self.symmetric),
            Field::Scheme => SCHEMES[self.scheme].0.to_string(),
            Field::WeightScheme => WEIGHT_SCHEMES[self.weight_scheme].0.to_string(),
            Field::Mode => MODES[self.mode].0.to_string(),
            Field::CalibrateOn if !self.weights_quantized() => {
                "– (no weights quantized)".to_string()
            }
            Field::CalibrateOn => CALIBRATE_ON[self.calibrate_on].0.to_string(),
            Field::FloatOps => match self.float_op_choices.get(self.float_ops) {
                Some(ops) if !ops.is_empty() => ops.join(","),
                _ if self.float_op_choices.len() < 2 => {
                    "none (no Pow/Sqrt/Log/Exp/LSTM… here)".into()
                }
                _ => "none".into(),
            },
            Field::MixedRange => if self.mixed_range {
                "keep FP32"
            } else {
                "quantize"
            }
            .to_string(),
            Field::A16Flagged => if self.a16_flagged { "16 bit" } else { "A bits" }.to_string(),
            Field::Calibration => format!("{} samples", self.calibration_size),
        }
    }

    /// What is wrong with the typed numbers, if anything.
    pub fn problem(&self) -> Option<String> {
        let (lo, hi) = BITS;
        for (name, v) in [("W bits", self.w_bits), ("A bits", self.a_bits)] {
            if !(lo..=hi).contains(&v) {
                return Some(format!("{name} must be {lo}–{hi}"));
            }
        }
        (self.calibration_size < form::CALIBRATION.0).then(|| "calibration needs a sample".into())
    }
}

impl form::Editable for QuantsimForm {
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize) {
        (&mut self.field, &mut self.fresh, Field::ALL.len())
    }

    fn change(&mut self, delta: i64) {
        let cycle = |i: usize, n: usize| (i as i64 + delta).rem_euclid(n as i64) as usize;
        match self.field() {
            Field::WBits => self.w_bits = form::step(self.w_bits, delta, BITS.0, BITS.1),
            Field::ABits => self.a_bits = form::step(self.a_bits, delta, BITS.0, BITS.1),
            Field::PerChannel => self.per_channel = !self.per_channel,
            Field::Symmetric => self.symmetric = !self.symmetric,
            Field::Scheme => self.scheme = cycle(self.scheme, SCHEMES.len()),
            Field::WeightScheme => {
                self.weight_scheme = cycle(self.weight_scheme, WEIGHT_SCHEMES.len())
            }
            Field::Mode => self.mode = cycle(self.mode, MODES.len()),
            Field::CalibrateOn => self.calibrate_on = cycle(self.calibrate_on, CALIBRATE_ON.len()),
            Field::FloatOps => {
                self.float_ops = cycle(self.float_ops, self.float_op_choices.len().max(1))
            }
            Field::MixedRange => self.mixed_range = !self.mixed_range,
            Field::A16Flagged => self.a16_flagged = !self.a16_flagged,
            Field::Calibration => {
                self.calibration_size = form::step_calibration(self.calibration_size, delta)
            }
        }
    }

    fn number(&mut self) -> Option<(&mut usize, usize)> {
        match self.field() {
            Field::WBits => Some((&mut self.w_bits, BITS.1)),
            Field::ABits => Some((&mut self.a_bits, BITS.1)),
            Field::Calibration => Some((&mut self.calibration_size, form::CALIBRATION.1)),
            _ => None,
        }
    }
}

impl QuantsimForm {
    /// The jobs Enter launches: one quantsim in the form's mode.
    pub fn run(&self, data: &Path, threads: usize) -> Vec<JobKind> {
        vec![self.quantsim(data, threads, self.settings())]
    }

    /// The jobs `d` launches: the parent's FP32 evaluation (unless it already has one on
    /// these samples), then W+A, weights only and activations only.
    pub fn diagnosis(&self, data: &Path, threads: usize, fp32_known: bool) -> Vec<JobKind> {
        let mut jobs = Vec::new();
        if !fp32_known {
            let mut eval = JobKind::evaluate(self.variant, data.to_path_buf());
            if let JobKind::Evaluate {
                calibration_size,
                threads: t,
                ..
            } = &mut eval
            {
                *calibration_size = self.calibration_size;
                *t = threads;
            }
            jobs.push(eval);
        }
        jobs.extend(
            MODES
                .iter()
                .map(|(_, mode)| self.quantsim(data, threads, self.settings_in(*mode))),
        );
        jobs
    }

    fn quantsim(&self, data: &Path, threads: usize, settings: QuantsimSettings) -> JobKind {
        JobKind::Quantsim {
            variant: self.variant,
            data: data.to_path_buf(),
            settings,
            calibration_size: self.calibration_size,
            seed: 0,
            threads,
            encodings: None,
            metric: None,
        }
    }
}

/// Open the dialog on the variant selected in the variants pane when it has the focus,
/// else on the current variant.
pub fn open(app: &mut App) {
    let variant = match app.focus {
        Pane::Variants => app.selected_variant().unwrap_or(app.current),
        _ => app.current,
    };
    let mut form = QuantsimForm::new(variant, CALIBRATION_DEFAULT);
    if let Some(saved) = super::dialog_memory::saved(app, super::dialog_memory::QUANTSIM) {
        form.recall(&saved.clone());
    }
    form.keep_fp32 = app.keep_fp32.iter().cloned().collect();
    form.offer_float_ops(app.graph.iter().map(|row| row.op.as_str()));
    app.popups.push(Popup::Quantsim(form));
}

/// Whether `variant` already has an FP32 score on the evaluation samples the form's
/// split gives (same dataset, calibration size and seed 0).
fn fp32_known(app: &App, form: &QuantsimForm, data: &Path) -> bool {
    let data = data.display().to_string();
    app.variant(form.variant).is_some_and(|v| {
        v.results.iter().any(|r| {
            r.dataset == data
                && r.subset == "evaluation"
                && r.split.as_ref().is_none_or(|s| {
                    s.calibration_requested == form.calibration_size && s.seed.unwrap_or(0) == 0
                })
        })
    })
}

/// Why the dialog cannot launch now, if it cannot: no dataset, a quantized variant, or a
/// number out of range. The dialog shows it, and Enter or `d` says it again.
pub fn blocker(app: &App, form: &QuantsimForm) -> Option<String> {
    if app.data_path.is_none() {
        return Some("no dataset: restart with --data DIR to run quantsim".into());
    }
    if app
        .variant(form.variant)
        .is_some_and(|v| v.encodings_file.is_some())
    {
        return Some(format!(
            "variant {} is already quantized: pick an unquantized one",
            form.variant
        ));
    }
    form.problem()
}

/// The analysis `a` (`A`: with the sensitivity sweep) launches: of an FP32 variant with the
/// form's settings, or of a quantsim variant with the settings that made it.
pub fn analyze_job(
    app: &App,
    form: &QuantsimForm,
    sweep: bool,
) -> std::result::Result<JobKind, String> {
    let Some(data) = app.data_path.clone() else {
        return Err("no dataset: restart with --data DIR to analyze".into());
    };
    let v = app
        .variant(form.variant)
        .ok_or_else(|| format!("no variant {}", form.variant))?;
    let settings = match (&v.quantsim, &v.encodings_file) {
        (Some(s), _) => s.clone(),
        (None, Some(_)) => {
            return Err(format!(
                "variant {} has imported encodings and no settings: analyze its parent",
                v.id
            ))
        }
        (None, None) => {
            if let Some(p) = form.problem() {
                return Err(p);
            }
            form.settings()
        }
    };
    Ok(JobKind::Analyze {
        variant: form.variant,
        data,
        settings,
        calibration_size: form.calibration_size,
        seed: 0,
        threads: app.cores,
        sweep,
        metric: None,
    })
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut QuantsimForm, action: Action) -> Vec<Effect> {
    let moves = matches!(
        action,
        Action::Up | Action::Down | Action::FocusNext | Action::FocusPrev
    );
    if form::edit(form, &action) {
        if moves && form.field() == Field::CalibrateOn && !form.weights_quantized() {
            form::edit(form, &action);
        }
        return vec![];
    }
    match action {
        Action::Char(c @ ('a' | 'A')) => {
            return match analyze_job(app, form, c == 'A') {
                Ok(job) => {
                    app.popups.pop();
                    app.status = format!(
                        "analysis of variant {} queued; the layers pane shows it when done (n toggles)",
                        form.variant
                    );
                    vec![Effect::Submit(job)]
                }
                Err(why) => {
                    app.status = why;
                    vec![]
                }
            };
        }
        Action::Confirm | Action::Char('d') => {
            if let Some(p) = blocker(app, form) {
                app.status = p;
                return vec![];
            }
            let Some(data) = app.data_path.clone() else {
                return vec![];
            };
            let jobs = if action == Action::Confirm {
                form.run(&data, app.cores)
            } else {
                form.diagnosis(&data, app.cores, fp32_known(app, form, &data))
            };
            app.popups.pop();
            app.status = format!(
                "{} job(s) queued on variant {}; new variants appear when they finish",
                jobs.len(),
                form.variant
            );
            let mut effects: Vec<Effect> = jobs.into_iter().map(Effect::Submit).collect();
            let values = form.remembered();
            effects.push(super::dialog_memory::remember(
                app,
                super::dialog_memory::QUANTSIM,
                values,
            ));
            return effects;
        }
        _ => {}
    }
    vec![]
}

/// The values the dialog opens with next time (see `dialog_memory`): the settings, not the
/// variant or the nodes kept FP32, which belong to the moment.
impl QuantsimForm {
    pub fn remembered(&self) -> serde_json::Value {
        let name = |table: &[&'static str], i: usize| table.get(i).copied().unwrap_or("");
        serde_json::json!({
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "per_channel": self.per_channel,
            "symmetric": self.symmetric,
            "scheme": name(&SCHEMES.map(|s| s.0), self.scheme),
            "weight_scheme": name(&WEIGHT_SCHEMES.map(|s| s.0), self.weight_scheme),
            "mode": name(&MODES.map(|s| s.0), self.mode),
            "calibrate_on": name(&CALIBRATE_ON.map(|s| s.0), self.calibrate_on),
            "mixed_range": self.mixed_range,
            "a16_flagged": self.a16_flagged,
            "calibration_size": self.calibration_size,
        })
    }

    pub fn recall(&mut self, saved: &serde_json::Value) {
        use super::dialog_memory::{take, take_named, within};
        take(saved, "w_bits", &mut self.w_bits, within(BITS));
        take(saved, "a_bits", &mut self.a_bits, within(BITS));
        take(saved, "per_channel", &mut self.per_channel, |_| true);
        take(saved, "symmetric", &mut self.symmetric, |_| true);
        take_named(saved, "scheme", &mut self.scheme, SCHEMES.map(|s| s.0));
        take_named(
            saved,
            "weight_scheme",
            &mut self.weight_scheme,
            WEIGHT_SCHEMES.map(|s| s.0),
        );
        take_named(saved, "mode", &mut self.mode, MODES.map(|s| s.0));
        take_named(
            saved,
            "calibrate_on",
            &mut self.calibrate_on,
            CALIBRATE_ON.map(|s| s.0),
        );
        take(saved, "mixed_range", &mut self.mixed_range, |_| true);
        take(saved, "a16_flagged", &mut self.a16_flagged, |_| true);
        take(
            saved,
            "calibration_size",
            &mut self.calibration_size,
            within(form::CALIBRATION),
        );
    }
}
