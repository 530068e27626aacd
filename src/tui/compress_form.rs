//! The compress dialog (`c`): method, target MAC ratio, candidate count, layer-wise
//! reconstruction, channel selection (channel pruning only), calibration size and the
//! ratios' origin, prefilled with the CLI's defaults; Enter queues one compress job of the
//! variant: greedy to the target with the layers pane's pins and exclusions, or manual at
//! exactly the pinned ratios.

use super::action::Action;
use super::form;
use super::layer_choice::LayerChoices;
use super::run_on::{self, RunOn};
use super::state::{App, Popup};
use super::update::Effect;
use qsteer::compress::build::SELECTIONS;
use qsteer::compress::Method;
use qsteer::jobs::JobKind;
use std::path::Path;

/// The target in percent of the parent's MACs: 1..=99 (a ratio in (0, 1)).
const TARGET: (usize, usize) = (1, 99);
/// The greedy selection's bounds on N (ratios k/N, k = 1..N−1).
const CANDIDATES: (usize, usize) = (2, 100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Method,
    Target,
    Candidates,
    Reconstruct,
    Selection,
    Calibration,
    Ratios,
    RunOn,
}

impl Field {
    pub const ALL: [Field; 8] = [
        Field::Method,
        Field::Target,
        Field::Candidates,
        Field::Reconstruct,
        Field::Selection,
        Field::Calibration,
        Field::Ratios,
        Field::RunOn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Method => "method",
            Field::Target => "target MACs",
            Field::Candidates => "candidates",
            Field::Reconstruct => "reconstruct",
            Field::Selection => "channels by",
            Field::Calibration => "calibration",
            Field::Ratios => "ratios",
            Field::RunOn => "run on",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompressForm {
    pub variant: u32,
    /// Index into [`Method::ALL`].
    pub method: usize,
    /// Target MAC ratio in percent.
    pub target_pct: usize,
    pub candidates: usize,
    pub reconstruct: bool,
    /// Index into [`SELECTIONS`]; used by channel pruning only.
    pub selection: usize,
    pub calibration_size: usize,
    /// Manual mode: the layers pane's pinned ratios, no search.
    pub manual: bool,
    /// Index into [`Field::ALL`].
    pub field: usize,
    /// No digit typed in this field yet: the first one replaces the value.
    pub fresh: bool,
    pub run_on: RunOn,
}

impl CompressForm {
    /// The CLI's defaults: weight SVD to half the MACs, N = 10, no reconstruction.
    pub fn new(variant: u32) -> CompressForm {
        CompressForm {
            variant,
            method: 0,
            target_pct: 50,
            candidates: 10,
            reconstruct: false,
            selection: 0,
            calibration_size: 200,
            manual: false,
            field: 0,
            fresh: true,
            run_on: RunOn::default(),
        }
    }

    pub fn method(&self) -> Method {
        Method::ALL[self.method.min(Method::ALL.len() - 1)]
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    pub fn target(&self) -> f64 {
        self.target_pct as f64 / 100.0
    }

    pub fn value_text(&self, f: Field) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        match f {
            Field::Method => self.method().short().to_string(),
            Field::Target => format!("{:.2}", self.target()),
            Field::Candidates => format!("{} (ratios k/{})", self.candidates, self.candidates),
            Field::Reconstruct => yes_no(self.reconstruct),
            Field::Selection if self.method() != Method::ChannelPruning => "— (cp only)".into(),
            Field::Selection => SELECTIONS[self.selection].to_string(),
            Field::Calibration => format!("{} samples", self.calibration_size),
            Field::Ratios if self.manual => "manual: the pinned layers (layers pane + −)".into(),
            Field::Ratios => "greedy to the target".into(),
            Field::RunOn => self.run_on.text(),
        }
    }

    /// What is wrong with the typed numbers, if anything.
    pub fn problem(&self) -> Option<String> {
        if !(TARGET.0..=TARGET.1).contains(&self.target_pct) {
            return Some("the target MAC ratio must be 0.01–0.99".into());
        }
        if !(CANDIDATES.0..=CANDIDATES.1).contains(&self.candidates) {
            return Some("candidates must be 2–100".into());
        }
        (self.calibration_size < form::CALIBRATION.0).then(|| "calibration needs a sample".into())
    }
}

impl form::Editable for CompressForm {
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize) {
        (&mut self.field, &mut self.fresh, Field::ALL.len())
    }

    fn change(&mut self, delta: i64) {
        let cycle = |i: usize, n: usize| (i as i64 + delta).rem_euclid(n as i64) as usize;
        match self.field() {
            Field::Method => self.method = cycle(self.method, Method::ALL.len()),
            Field::Target => {
                self.target_pct = form::step(self.target_pct, delta * 5, TARGET.0, TARGET.1)
            }
            Field::Candidates => {
                self.candidates = form::step(self.candidates, delta, CANDIDATES.0, CANDIDATES.1)
            }
            Field::Reconstruct => self.reconstruct = !self.reconstruct,
            Field::Ratios => self.manual = !self.manual,
            Field::Selection => self.selection = cycle(self.selection, SELECTIONS.len()),
            Field::RunOn => self.run_on.toggle(),
            Field::Calibration => {
                self.calibration_size = form::step_calibration(self.calibration_size, delta)
            }
        }
    }

    fn number(&mut self) -> Option<(&mut usize, usize)> {
        match self.field() {
            Field::Target => Some((&mut self.target_pct, TARGET.1)),
            Field::Candidates => Some((&mut self.candidates, CANDIDATES.1)),
            Field::Calibration => Some((&mut self.calibration_size, form::CALIBRATION.1)),
            _ => None,
        }
    }
}

impl CompressForm {
    /// The job Enter queues, with the layers pane's choices.
    pub fn job(&self, data: &Path, threads: usize, choices: &LayerChoices) -> JobKind {
        let cp = self.method() == Method::ChannelPruning;
        let (target, ratios, pin, exclude) = if self.manual {
            (None, Some(choices.pinned()), Default::default(), vec![])
        } else {
            (
                Some(self.target()),
                None,
                choices.pinned(),
                choices.excluded(),
            )
        };
        JobKind::Compress {
            variant: self.variant,
            data: data.to_path_buf(),
            method: self.method(),
            target,
            ratios,
            pin,
            exclude,
            candidates: self.candidates,
            selection: cp.then(|| SELECTIONS[self.selection].to_string()),
            reconstruct: self.reconstruct,
            calibration_size: self.calibration_size,
            seed: 0,
            threads,
            metric: None,
        }
    }
}

/// Open the dialog on the variant selected in the variants pane when it has the focus,
/// else on the current variant.
pub fn open(app: &mut App) {
    let variant = form::dialog_variant(app);
    let mut form = CompressForm::new(variant);
    if let Some(saved) = super::dialog_memory::saved(app, super::dialog_memory::COMPRESS) {
        form.recall(&saved.clone());
    }
    form.run_on = RunOn::from_app(app);
    app.popups.push(Popup::Compress(form));
}

/// Why the dialog cannot launch now: no dataset, a quantized variant, or a number out of
/// range.
pub fn blocker(app: &App, form: &CompressForm) -> Option<String> {
    if let Some(b) = form::fp32_data_blocker(app, form.variant, "compress") {
        return Some(b);
    }
    if form.manual && app.layer_choices.pinned().is_empty() {
        return Some("manual ratios: pin layers first (layers pane, + and −)".into());
    }
    form.problem().or_else(|| {
        let key = (form.variant, form.method(), form.candidates);
        (!form.manual)
            .then(|| super::reach::refusal(app, key, "target", form.target()))
            .flatten()
    })
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut CompressForm, action: Action) -> Vec<Effect> {
    match action {
        _ if form::edit(form, &action) => {}
        Action::Confirm => {
            let Some(data) = form::launch(app, blocker(app, form)) else {
                return vec![];
            };
            app.status = format!(
                "compress of variant {} queued; the compressed variant appears when it finishes",
                form.variant
            );
            let job = form.job(&data, app.cores, &app.layer_choices);
            let mut effects = run_on::submit(app, &form.run_on, vec![job]);
            let values = form.remembered();
            effects.push(super::dialog_memory::remember(
                app,
                super::dialog_memory::COMPRESS,
                values,
            ));
            return effects;
        }
        _ => {}
    }
    vec![]
}

/// The values the dialog opens with next time (see `dialog_memory`); manual mode is not
/// remembered (it needs the layers pinned at the time).
impl CompressForm {
    pub fn remembered(&self) -> serde_json::Value {
        serde_json::json!({
            "method": self.method,
            "target_pct": self.target_pct,
            "candidates": self.candidates,
            "reconstruct": self.reconstruct,
            "selection": SELECTIONS.get(self.selection).copied().unwrap_or(""),
            "calibration_size": self.calibration_size,
        })
    }

    pub fn recall(&mut self, saved: &serde_json::Value) {
        use super::dialog_memory::{take, take_named, within};
        take(saved, "method", &mut self.method, |m| {
            *m < Method::ALL.len()
        });
        take(saved, "target_pct", &mut self.target_pct, within(TARGET));
        take(
            saved,
            "candidates",
            &mut self.candidates,
            within(CANDIDATES),
        );
        take(saved, "reconstruct", &mut self.reconstruct, |_| true);
        take_named(saved, "selection", &mut self.selection, SELECTIONS);
        take(
            saved,
            "calibration_size",
            &mut self.calibration_size,
            within(form::CALIBRATION),
        );
    }
}
