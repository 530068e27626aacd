//! The "fix" decision dialog (`f`): after a quantsim result, the post-training fixes that
//! could help, with the reasons the diagnosis gives, launching one as a job. On a quantsim
//! variant the fix applies to its FP32 parent with the quantsim's settings (bias correction
//! and AdaRound are tuned to them); each result lands in the variants tree, ready for the
//! next step or for A/B.

use super::action::Action;
use super::state::{App, Pane, Popup};
use super::update::Effect;
use qsteer::fixes::bias_correction::BcMode;
use qsteer::jobs::JobKind;
use qsteer::quant::simulate::QuantsimSettings;

/// The fixes offered, in the order AIMET's recipe applies them.
pub const FIXES: [&str; 5] = [
    "fold BatchNorm into the layers",
    "CLE + high-bias absorption",
    "CLE, Relu6 → Relu (changes the function)",
    "bias correction (hybrid)",
    "AdaRound (learned rounding)",
];

/// A weight-range ratio (widest / median channel) above which CLE usually pays.
const WIDE_RANGE_RATIO: f64 = 4.0;

#[derive(Debug, Clone, PartialEq)]
pub struct FixForm {
    /// The variant the dialog was opened on.
    pub from: u32,
    /// The FP32 variant the fix applies to.
    pub target: u32,
    /// The quantsim settings bias correction and AdaRound are tuned for.
    pub settings: QuantsimSettings,
    pub cursor: usize,
    /// Why each fix might help, from the diagnosis.
    pub reasons: Vec<String>,
}

/// Open on the variant selected in the variants pane (or the current one).
pub fn open(app: &mut App) {
    let from = match app.focus {
        Pane::Variants => app.selected_variant().unwrap_or(app.current),
        _ => app.current,
    };
    let (target, settings) = match app.variant(from) {
        Some(v) => match (&v.quantsim, v.parent) {
            (Some(s), Some(p)) => (p, s.clone()),
            _ => (from, QuantsimSettings::default()),
        },
        None => (from, QuantsimSettings::default()),
    };
    let reasons = reasons(app, from, target);
    app.popups.push(Popup::Fix(FixForm {
        from,
        target,
        settings,
        cursor: 0,
        reasons,
    }));
}

/// What the diagnosis says, as short lines pointing at a fix.
pub fn reasons(app: &App, from: u32, target: u32) -> Vec<String> {
    let mut out = Vec::new();
    if app.current == target && app.graph.iter().any(|r| r.op == "BatchNormalization") {
        out.push(
            "BatchNorms are not folded: fold first (quantizers see the folded weights)".into(),
        );
    }
    let analysis = app
        .analysis
        .as_ref()
        .filter(|(id, _)| *id == from || *id == target)
        .map(|(_, a)| a);
    let Some(a) = analysis else {
        out.push(
            "no analysis yet: `a` in the quantsim dialog shows where the noise comes from".into(),
        );
        return out;
    };
    let score = |s: &qsteer::metrics::Score| s.accuracy.or(s.agreement).unwrap_or(0.0);
    let (w, act) = (
        score(&a.scores.weights_only),
        score(&a.scores.activations_only),
    );
    if w < act {
        out.push(format!(
            "weights dominate the noise (W only {:.1} % vs A only {:.1} %) → CLE, bias \
             correction, AdaRound",
            100.0 * w,
            100.0 * act
        ));
    } else {
        out.push(format!(
            "activations dominate the noise (A only {:.1} % vs W only {:.1} %) → other A bits \
             or scheme; bias correction",
            100.0 * act,
            100.0 * w
        ));
    }
    let wide = a
        .layers
        .iter()
        .filter(|l| l.weights.max_median_ratio > WIDE_RANGE_RATIO)
        .count();
    if wide > 0 {
        out.push(format!(
            "wide per-channel weight ranges (max/median > {WIDE_RANGE_RATIO}) in {wide} layers → CLE"
        ));
    }
    out
}

/// The job the chosen fix runs, or why it cannot run.
pub fn job(app: &App, form: &FixForm) -> std::result::Result<JobKind, String> {
    if app
        .variant(form.target)
        .is_some_and(|v| v.encodings_file.is_some())
    {
        return Err(format!(
            "variant {} is quantized and has no FP32 parent to fix",
            form.target
        ));
    }
    let data = || {
        app.data_path
            .clone()
            .ok_or_else(|| "no dataset: restart with --data DIR for this fix".to_string())
    };
    Ok(match form.cursor {
        0 => JobKind::FoldBn {
            variant: form.target,
        },
        1 | 2 => JobKind::Cle {
            variant: form.target,
            relu6_to_relu: form.cursor == 2,
            hba: true,
            hba_padded: false,
        },
        3 => JobKind::BiasCorrect {
            variant: form.target,
            data: data()?,
            settings: form.settings.clone(),
            mode: BcMode::Hybrid,
            calibration_size: 200,
            seed: 0,
            threads: app.cores,
        },
        _ => JobKind::AdaRound {
            variant: form.target,
            data: data()?,
            settings: form.settings.clone(),
            iterations: None,
            calibration_size: 200,
            seed: 0,
            threads: app.cores,
        },
    })
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut FixForm, action: Action) -> Vec<Effect> {
    match action {
        Action::Up | Action::FocusPrev => form.cursor = form.cursor.saturating_sub(1),
        Action::Down | Action::FocusNext => form.cursor = (form.cursor + 1).min(FIXES.len() - 1),
        Action::Confirm => match job(app, form) {
            Ok(kind) => {
                app.popups.pop();
                app.focus = Pane::Jobs;
                app.status = format!(
                    "{} queued on variant {}; the result appears in the variants tree",
                    FIXES[form.cursor], form.target
                );
                return vec![Effect::Submit(kind)];
            }
            Err(why) => app.status = why,
        },
        _ => {}
    }
    vec![]
}
