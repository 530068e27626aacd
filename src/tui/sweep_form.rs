//! The sweep dialog (`r`): the SSVD→CP recipe's overall target C, up to three spatial-SVD
//! targets Cssvd (following C until the user types one), the tolerable accuracy drop, the
//! fine-tuning of every candidate, the greedy selection's N and the calibration size.
//! Enter queues step 1 (the SSVD candidates); its decision dialog queues step 2.

use super::action::Action;
use super::form;
use super::run_on::{self, RunOn};
use super::state::{App, Popup};
use super::update::Effect;
use qsteer::compress::sweep::default_cssvd;
use qsteer::jobs::{JobKind, SweepStage};
use std::path::Path;

/// Targets in percent of the parent's MACs.
const TARGET: (usize, usize) = (1, 99);
/// A Cssvd of 0 leaves that slot out.
const CSSVD: (usize, usize) = (0, 99);
const DROP: (usize, usize) = (1, 100);
const CANDIDATES: (usize, usize) = (2, 100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Target,
    Cssvd(usize),
    MaxDrop,
    FineTune,
    Candidates,
    Calibration,
    RunOn,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Target,
        Field::Cssvd(0),
        Field::Cssvd(1),
        Field::Cssvd(2),
        Field::MaxDrop,
        Field::FineTune,
        Field::Candidates,
        Field::Calibration,
        Field::RunOn,
    ];

    pub fn name(self) -> String {
        match self {
            Field::Target => "target C".into(),
            Field::Cssvd(i) => format!("Cssvd {}", i + 1),
            Field::MaxDrop => "max drop".into(),
            Field::FineTune => "fine-tune".into(),
            Field::Candidates => "candidates".into(),
            Field::Calibration => "calibration".into(),
            Field::RunOn => "run on".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepForm {
    pub variant: u32,
    pub target_pct: usize,
    /// Spatial-SVD targets in percent; 0 = unused.
    pub cssvd_pct: [usize; 3],
    /// The user typed a Cssvd: it no longer follows the target.
    pub cssvd_edited: bool,
    /// Tolerable accuracy drop, in points.
    pub max_drop: usize,
    /// Refit every candidate layer-wise (the fine-tuning that needs no training).
    pub reconstruct: bool,
    pub candidates: usize,
    pub calibration_size: usize,
    pub field: usize,
    pub fresh: bool,
    /// Where the candidates are made.
    pub run_on: RunOn,
}

/// Percent values of the default Cssvd for a target, padded with unused slots.
fn default_slots(target_pct: usize) -> [usize; 3] {
    let mut slots = [0; 3];
    for (slot, c) in slots
        .iter_mut()
        .zip(default_cssvd(target_pct as f64 / 100.0))
    {
        *slot = (c * 100.0).round() as usize;
    }
    slots
}

impl SweepForm {
    /// The CLI's defaults: C = 0.5, Cssvd {0.5, 0.65, 0.75}, 2 points, reconstruction on.
    pub fn new(variant: u32) -> SweepForm {
        SweepForm {
            variant,
            target_pct: 50,
            cssvd_pct: default_slots(50),
            cssvd_edited: false,
            max_drop: 2,
            reconstruct: true,
            candidates: 10,
            calibration_size: 200,
            field: 0,
            fresh: true,
            run_on: RunOn::default(),
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    pub fn target(&self) -> f64 {
        self.target_pct as f64 / 100.0
    }

    /// The Cssvd values in use, ascending, without repeats.
    pub fn cssvd(&self) -> Vec<f64> {
        let mut v: Vec<usize> = self.cssvd_pct.iter().copied().filter(|&c| c > 0).collect();
        v.sort_unstable();
        v.dedup();
        v.into_iter().map(|c| c as f64 / 100.0).collect()
    }

    pub fn value_text(&self, f: Field) -> String {
        match f {
            Field::Target => format!("{:.2} of the MACs", self.target()),
            Field::Cssvd(i) => match self.cssvd_pct[i] {
                0 => "— (unused)".into(),
                c => format!("{:.2}", c as f64 / 100.0),
            },
            Field::MaxDrop => format!("{} points", self.max_drop),
            Field::FineTune if self.reconstruct => "layer-wise reconstruction".into(),
            Field::FineTune => "none".into(),
            Field::Candidates => format!("{} (ratios k/{})", self.candidates, self.candidates),
            Field::Calibration => format!("{} samples", self.calibration_size),
            Field::RunOn => self.run_on.text(),
        }
    }

    /// What is wrong with the typed numbers, if anything.
    pub fn problem(&self) -> Option<String> {
        if !(TARGET.0..=TARGET.1).contains(&self.target_pct) {
            return Some("the target C must be 0.01–0.99".into());
        }
        let cssvd = self.cssvd();
        if cssvd.is_empty() {
            return Some("give at least one Cssvd".into());
        }
        if let Some(c) = cssvd.iter().find(|&&c| c < self.target()) {
            return Some(format!(
                "Cssvd {c:.2} is below C: channel pruning would have to add MACs"
            ));
        }
        if !(CANDIDATES.0..=CANDIDATES.1).contains(&self.candidates) {
            return Some("candidates must be 2–100".into());
        }
        (self.calibration_size < form::CALIBRATION.0).then(|| "calibration needs a sample".into())
    }

    /// Step 1 of the sweep, which Enter queues.
    pub fn job(&self, data: &Path, threads: usize) -> JobKind {
        JobKind::Sweep {
            variant: self.variant,
            data: data.to_path_buf(),
            target: self.target(),
            cssvd: self.cssvd(),
            max_drop: self.max_drop as f64,
            neighbour: 0.05,
            reconstruct: self.reconstruct,
            candidates: self.candidates,
            stage: SweepStage::Ssvd,
            calibration_size: self.calibration_size,
            seed: 0,
            threads,
            metric: None,
        }
    }
}

impl form::Editable for SweepForm {
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize) {
        (&mut self.field, &mut self.fresh, Field::ALL.len())
    }

    fn change(&mut self, delta: i64) {
        match self.field() {
            Field::Target => {
                self.target_pct = form::step(self.target_pct, delta * 5, TARGET.0, TARGET.1)
            }
            Field::Cssvd(i) => {
                self.cssvd_pct[i] = form::step(self.cssvd_pct[i], delta * 5, CSSVD.0, CSSVD.1);
                self.cssvd_edited = true;
            }
            Field::MaxDrop => self.max_drop = form::step(self.max_drop, delta, DROP.0, DROP.1),
            Field::FineTune => self.reconstruct = !self.reconstruct,
            Field::Candidates => {
                self.candidates = form::step(self.candidates, delta, CANDIDATES.0, CANDIDATES.1)
            }
            Field::Calibration => {
                self.calibration_size = form::step_calibration(self.calibration_size, delta)
            }
            Field::RunOn => self.run_on.toggle(),
        }
        self.follow_target();
    }

    fn number(&mut self) -> Option<(&mut usize, usize)> {
        match self.field() {
            Field::Target => Some((&mut self.target_pct, TARGET.1)),
            Field::Cssvd(i) => {
                self.cssvd_edited = true;
                Some((&mut self.cssvd_pct[i], CSSVD.1))
            }
            Field::MaxDrop => Some((&mut self.max_drop, DROP.1)),
            Field::Candidates => Some((&mut self.candidates, CANDIDATES.1)),
            Field::Calibration => Some((&mut self.calibration_size, form::CALIBRATION.1)),
            Field::FineTune | Field::RunOn => None,
        }
    }
}

impl SweepForm {
    /// Until the user sets a Cssvd, the Cssvd values are the defaults for the target.
    fn follow_target(&mut self) {
        if !self.cssvd_edited && (TARGET.0..=TARGET.1).contains(&self.target_pct) {
            self.cssvd_pct = default_slots(self.target_pct);
        }
    }
}

/// Open the dialog on the variant selected in the variants pane when it has the focus,
/// else on the current variant.
pub fn open(app: &mut App) {
    let variant = form::dialog_variant(app);
    let mut form = SweepForm::new(variant);
    if let Some(saved) = super::dialog_memory::saved(app, super::dialog_memory::SWEEP) {
        form.recall(&saved.clone());
    }
    form.run_on = RunOn::from_app(app);
    app.popups.push(Popup::Sweep(form));
}

/// Why the dialog cannot launch now: no dataset, a quantized variant, or a bad number.
pub fn blocker(app: &App, form: &SweepForm) -> Option<String> {
    if let Some(b) = form::fp32_data_blocker(app, form.variant, "sweep") {
        return Some(b);
    }
    form.problem().or_else(|| {
        let key = (
            form.variant,
            qsteer::compress::Method::SpatialSvd,
            form.candidates,
        );
        (form.cssvd().into_iter()).find_map(|c| super::reach::refusal(app, key, "Cssvd", c))
    })
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut SweepForm, action: Action) -> Vec<Effect> {
    match action {
        Action::Char(c) if c.is_ascii_digit() => {
            form::edit(form, &action);
            form.follow_target();
        }
        Action::Backspace => {
            form::edit(form, &action);
            form.follow_target();
        }
        _ if form::edit(form, &action) => {}
        Action::Confirm => {
            let Some(data) = form::launch(app, blocker(app, form)) else {
                return vec![];
            };
            app.status = format!(
                "sweep of variant {} queued: spatial SVD at {} first; its decision table opens \
                 when it finishes",
                form.variant,
                form.cssvd()
                    .iter()
                    .map(|c| format!("{c:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let job = form.job(&data, app.cores);
            let mut effects = run_on::submit(app, &form.run_on, vec![job]);
            let values = form.remembered();
            effects.push(super::dialog_memory::remember(
                app,
                super::dialog_memory::SWEEP,
                values,
            ));
            return effects;
        }
        _ => {}
    }
    vec![]
}

/// The values the dialog opens with next time (see `dialog_memory`).
impl SweepForm {
    pub fn remembered(&self) -> serde_json::Value {
        serde_json::json!({
            "target_pct": self.target_pct,
            "cssvd_pct": self.cssvd_pct,
            "cssvd_edited": self.cssvd_edited,
            "max_drop": self.max_drop,
            "reconstruct": self.reconstruct,
            "candidates": self.candidates,
            "calibration_size": self.calibration_size,
        })
    }

    pub fn recall(&mut self, saved: &serde_json::Value) {
        use super::dialog_memory::{take, within};
        take(saved, "target_pct", &mut self.target_pct, within(TARGET));
        take(saved, "cssvd_edited", &mut self.cssvd_edited, |_| true);
        if self.cssvd_edited {
            take(saved, "cssvd_pct", &mut self.cssvd_pct, |c: &[usize; 3]| {
                c.iter().all(within(CSSVD))
            });
        } else {
            self.follow_target();
        }
        take(saved, "max_drop", &mut self.max_drop, within(DROP));
        take(saved, "reconstruct", &mut self.reconstruct, |_| true);
        take(
            saved,
            "candidates",
            &mut self.candidates,
            within(CANDIDATES),
        );
        take(
            saved,
            "calibration_size",
            &mut self.calibration_size,
            within(form::CALIBRATION),
        );
    }
}
