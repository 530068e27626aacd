//! The "fix" decision dialog (`f`): after a quantsim result, the post-training fixes that
//! could help, with the reasons the diagnosis gives. Space picks steps for a chain (fold BN
//! → CLE → bias correction or AdaRound → quantsim, in that fixed order) run as one job;
//! with nothing picked, Enter runs the fix under the cursor alone. On a quantsim variant
//! the fixes apply to its FP32 parent with the quantsim's settings (bias correction,
//! AdaRound and the final quantsim use them); each step's result lands in the variants
//! tree, ready for the next step or for A/B. ◂▸ change the bias-correction mode on its row
//! and how CLE scales its sets (once, AIMET's, or until settled) on the CLE rows.

use super::action::Action;
use super::state::{App, Pane, Popup};
use super::update::Effect;
use qsteer::fixes::bias_correction::BcMode;
use qsteer::fixes::CleScaling;
use qsteer::jobs::{ChainStep, JobKind, StepInputs};
use qsteer::quant::simulate::QuantsimSettings;

/// The fixes offered, in the order AIMET's recipe applies them (a chain keeps this order).
pub const FIXES: [&str; 6] = [
    "fold BatchNorm into the layers",
    "CLE + high-bias absorption",
    "CLE, Relu6 → Relu (changes the function)",
    "bias correction",
    "AdaRound (learned rounding)",
    "quantsim at the settings",
];

/// Rows of which a chain holds at most one: the two CLEs; bias correction and AdaRound
/// (DESIGN.md §3: don't combine them).
const EXCLUSIVE: [[usize; 2]; 2] = [[1, 2], [3, 4]];

/// The "CLE, Relu6 → Relu" row.
const RELU6_CLE_ROW: usize = 2;

/// The bias-correction row, whose mode ◂▸ changes.
const BC_ROW: usize = 3;

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
    /// Rows picked for the chain (Space).
    pub chosen: [bool; FIXES.len()],
    pub bc_mode: BcMode,
    /// How both CLE rows scale their sets (◂▸ on either row).
    pub cle_scaling: CleScaling,
    /// Why each fix might help, from the diagnosis.
    pub reasons: Vec<String>,
}

impl FixForm {
    /// A row's text, e.g. `bias correction ◂ hybrid ▸`, `quantsim at W4A8 per-tensor …`.
    pub fn row_label(&self, row: usize) -> String {
        match row {
            BC_ROW => format!("{} ◂ {} ▸", FIXES[row], self.bc_mode),
            1 | RELU6_CLE_ROW => format!("{} ◂ {} ▸", FIXES[row], self.cle_scaling),
            5 => format!(
                "quantsim at {}",
                qsteer::experiment::quantsim::settings_label(&self.settings)
            ),
            _ => FIXES[row].to_string(),
        }
    }

    /// Space on a row: pick or drop it; picking drops the row it excludes.
    pub fn toggle(&mut self, row: usize) {
        self.chosen[row] = !self.chosen[row];
        if self.chosen[row] {
            for pair in EXCLUSIVE {
                if pair.contains(&row) {
                    for other in pair {
                        self.chosen[other] = other == row;
                    }
                }
            }
        }
    }

    /// The picked steps in chain order.
    pub fn chain(&self) -> Vec<ChainStep> {
        (0..FIXES.len())
            .filter(|&row| self.chosen[row])
            .map(|row| self.step(row))
            .collect()
    }

    fn step(&self, row: usize) -> ChainStep {
        match row {
            0 => ChainStep::FoldBn,
            1 | RELU6_CLE_ROW => ChainStep::Cle {
                relu6_to_relu: row == RELU6_CLE_ROW,
                scaling: self.cle_scaling,
            },
            BC_ROW => ChainStep::BiasCorrect { mode: self.bc_mode },
            4 => ChainStep::AdaRound { iterations: None },
            _ => ChainStep::Quantsim,
        }
    }
}

/// The next bias-correction mode, ◂ (back) or ▸.
fn next_mode(mode: BcMode, forward: bool) -> BcMode {
    const MODES: [BcMode; 3] = [BcMode::Hybrid, BcMode::Empirical, BcMode::Analytical];
    let i = MODES.iter().position(|m| *m == mode).unwrap_or(0);
    let step = if forward { 1 } else { MODES.len() - 1 };
    MODES[(i + step) % MODES.len()]
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
        chosen: [false; FIXES.len()],
        bc_mode: BcMode::Hybrid,
        cle_scaling: CleScaling::default(),
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
    let score = |s: &qsteer::metrics::Score| s.value().unwrap_or(0.0);
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
    // Both lines above point at CLE; say when plain CLE cannot do anything here.
    if (w < act || wide > 0) && relu6_stops_cle(app, target) {
        let sets = app.cle_reach.map_or(0, |r| r.sets_with_relu);
        out.push(format!(
            "Relu6 (Clip 0–6) stops every CLE chain: plain CLE changes nothing here → \
             \"CLE, Relu6 → Relu\" equalizes {sets} sets (their Relu6s become Relu, which \
             changes the function: check the FP32 score)"
        ));
    }
    out
}

/// Whether the fix target's Relu6s stop every CLE chain (known for the variant shown, or
/// when it is a quantsim of the target, which has the target's graph).
fn relu6_stops_cle(app: &App, target: u32) -> bool {
    let shows_target = app.current == target
        || app
            .variant(app.current)
            .is_some_and(|v| v.quantsim.is_some() && v.parent == Some(target));
    shows_target && app.cle_reach.is_some_and(|r| r.relu6_stops_every_chain())
}

/// The job the dialog runs: the picked chain, or with nothing picked the fix under the
/// cursor alone (bias correction and AdaRound simulate their result anyway); or why it
/// cannot run.
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
    let mut steps = form.chain();
    if steps.is_empty() {
        steps.push(form.step(form.cursor));
    }
    let data = match (&app.data_path, steps.iter().find(|s| s.needs_data())) {
        (None, Some(s)) => {
            return Err(format!(
                "no dataset for {}: restart with --data DIR",
                s.name()
            ))
        }
        (data, _) => data.clone(),
    };
    if let [step] = steps.as_slice() {
        let data = data.unwrap_or_default();
        let inputs = StepInputs {
            data: &data,
            settings: &form.settings,
            calibration_size: 200,
            seed: 0,
            threads: app.cores,
            metric: None,
        };
        return Ok(step.job(form.target, &inputs, None));
    }
    Ok(JobKind::FixChain {
        variant: form.target,
        steps,
        data,
        settings: form.settings.clone(),
        calibration_size: 200,
        seed: 0,
        threads: app.cores,
        metric: None,
    })
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut FixForm, action: Action) -> Vec<Effect> {
    match action {
        Action::Up | Action::FocusPrev => form.cursor = form.cursor.saturating_sub(1),
        Action::Down | Action::FocusNext => form.cursor = (form.cursor + 1).min(FIXES.len() - 1),
        Action::Toggle => form.toggle(form.cursor),
        Action::Left | Action::Right if form.cursor == BC_ROW => {
            form.bc_mode = next_mode(form.bc_mode, action == Action::Right)
        }
        // Two values: either arrow flips between them.
        Action::Left | Action::Right if matches!(form.cursor, 1 | RELU6_CLE_ROW) => {
            form.cle_scaling = match form.cle_scaling {
                CleScaling::Once => CleScaling::Settle,
                CleScaling::Settle => CleScaling::Once,
            }
        }
        Action::Confirm => match job(app, form) {
            Ok(kind) => {
                app.popups.pop();
                app.status = format!(
                    "{} queued on variant {}; each result appears in the variants tree",
                    kind.label(),
                    form.target
                );
                return vec![Effect::Submit(kind)];
            }
            Err(why) => app.status = why,
        },
        _ => {}
    }
    vec![]
}
