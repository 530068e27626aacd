//! The fine-tuning dialog (`t`, and `t` in the sweep's decision tables for the picked
//! candidates): the trainer (built-in; QAT for a quantsim variant; the workspace's external
//! trainer command when one is saved), epochs, learning rate and schedule, optimizer, batch
//! size, weight decay, which layers train (all, the last N, or all but those marked [skip]
//! in the layers pane), loss (labels or distillation to the parent), early stop, the
//! training set (the workspace's saved one, a `training/` folder beside the dataset, or the
//! calibration part with its size) and augmentation, prefilled with the CLI's defaults.
//! Enter queues one job per variant.

use super::action::Action;
use super::form;
use super::run_on::{self, RunOn};
use super::state::{App, Popup};
use super::update::Effect;
use qsteer::jobs::JobKind;
use qsteer::train::{Augment, FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
use std::path::{Path, PathBuf};

/// Learning rates offered (◂▸ steps through them).
pub const LRS: [f64; 9] = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1];
pub const WEIGHT_DECAYS: [f64; 5] = [0.0, 1e-5, 1e-4, 5e-4, 1e-3];
const EPOCHS: (usize, usize) = (1, 500);
const BATCH: (usize, usize) = (1, 4096);
const PATIENCE: (usize, usize) = (0, 100);
/// "The last N layers" goes up to this many.
const TRAIN_LAST_MAX: usize = 999;
const DISTILL_TEMPERATURE: f64 = 2.0;
/// Augmentations offered (◂▸ steps through them; the CLI takes any shift).
pub const AUGMENTS: [Augment; 5] = [
    Augment {
        shift: 0,
        flip: false,
    },
    Augment {
        shift: 1,
        flip: false,
    },
    Augment {
        shift: 2,
        flip: false,
    },
    Augment {
        shift: 1,
        flip: true,
    },
    Augment {
        shift: 0,
        flip: true,
    },
];

/// Who trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainer {
    /// Backpropagation on the CPU (FP32 variants).
    BuiltIn,
    /// Quantization-aware training from a quantsim variant's encodings.
    Qat,
    /// The workspace's saved trainer command (`qsteer finetune --save-trainer`).
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Trainer,
    Epochs,
    Lr,
    Schedule,
    Optimizer,
    BatchSize,
    WeightDecay,
    Layers,
    Loss,
    Patience,
    TrainSet,
    Calibration,
    Augment,
    RunOn,
}

impl Field {
    pub const ALL: [Field; 14] = [
        Field::Trainer,
        Field::Epochs,
        Field::Lr,
        Field::Schedule,
        Field::Optimizer,
        Field::BatchSize,
        Field::WeightDecay,
        Field::Layers,
        Field::Loss,
        Field::Patience,
        Field::TrainSet,
        Field::Calibration,
        Field::Augment,
        Field::RunOn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Trainer => "trainer",
            Field::Epochs => "epochs",
            Field::Lr => "learn rate",
            Field::Schedule => "schedule",
            Field::Optimizer => "optimizer",
            Field::BatchSize => "batch size",
            Field::WeightDecay => "wt decay",
            Field::Layers => "layers",
            Field::Loss => "loss",
            Field::Patience => "early stop",
            Field::TrainSet => "train set",
            Field::Calibration => "calib part",
            Field::Augment => "augment",
            Field::RunOn => "run on",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChoice {
    Cosine,
    Constant,
    /// ×0.1 every third of the epochs.
    Step,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FineTuneForm {
    /// The variants to train, one job each.
    pub variants: Vec<u32>,
    pub trainer: Trainer,
    /// The trainers these variants can take, in the order ◂▸ steps through them.
    pub trainers: Vec<Trainer>,
    /// The workspace's external trainer command, when one is saved.
    pub command: Option<String>,
    pub epochs: usize,
    /// Index into [`LRS`].
    pub lr: usize,
    pub schedule: ScheduleChoice,
    pub adam: bool,
    pub batch_size: usize,
    /// Index into [`WEIGHT_DECAYS`].
    pub weight_decay: usize,
    /// Train only the last this many layers with weights (0: see `freeze_marked`).
    pub train_last: usize,
    /// With `train_last` 0: freeze the `frozen` layers (else every layer trains).
    pub freeze_marked: bool,
    /// The layers marked [skip] in the layers pane when the dialog opened.
    pub frozen: Vec<String>,
    pub distill: bool,
    /// Epochs without a better score before stopping (0: never).
    pub patience: usize,
    pub calibration_size: usize,
    /// The training sets offered: `None` is the calibration part of the dataset.
    pub train_sets: Vec<Option<PathBuf>>,
    /// Index into `train_sets`.
    pub train_set: usize,
    /// Index into [`AUGMENTS`].
    pub augment: usize,
    pub field: usize,
    pub fresh: bool,
    pub run_on: RunOn,
}

impl FineTuneForm {
    /// The CLI's defaults (`qsteer finetune`) for `variants`; `quantized` when they are
    /// quantsim variants (QAT, not the FP32 trainer), `command` the saved external trainer.
    pub fn new(variants: Vec<u32>, quantized: bool, command: Option<String>) -> FineTuneForm {
        let d = FineTuneSettings::default();
        let mut trainers = vec![if quantized {
            Trainer::Qat
        } else {
            Trainer::BuiltIn
        }];
        if command.is_some() {
            trainers.push(Trainer::External);
        }
        FineTuneForm {
            variants,
            trainer: trainers[0],
            trainers,
            command,
            epochs: d.epochs,
            lr: LRS.iter().position(|&l| l == d.lr).unwrap_or(4),
            schedule: ScheduleChoice::Cosine,
            adam: d.optimizer == Optimizer::Adam,
            batch_size: d.batch_size,
            weight_decay: 0,
            train_last: 0,
            freeze_marked: false,
            frozen: vec![],
            distill: matches!(d.loss, Loss::Distill { .. }),
            patience: d.early_stop_patience,
            calibration_size: d.calibration_size,
            train_sets: vec![None],
            train_set: 0,
            augment: 0,
            field: 0,
            fresh: true,
            run_on: RunOn::default(),
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.field.min(Field::ALL.len() - 1)]
    }

    pub fn settings(&self) -> FineTuneSettings {
        FineTuneSettings {
            epochs: self.epochs,
            lr: LRS[self.lr.min(LRS.len() - 1)],
            schedule: match self.schedule {
                ScheduleChoice::Cosine => Schedule::Cosine,
                ScheduleChoice::Constant => Schedule::Constant,
                ScheduleChoice::Step => Schedule::Step {
                    every: (self.epochs / 3).max(1),
                    gamma: 0.1,
                },
            },
            optimizer: if self.adam {
                Optimizer::Adam
            } else {
                Optimizer::Sgd
            },
            weight_decay: WEIGHT_DECAYS[self.weight_decay.min(WEIGHT_DECAYS.len() - 1)],
            batch_size: self.batch_size,
            train_layers: match self.train_last {
                0 if self.freeze_marked && !self.frozen.is_empty() => {
                    TrainLayers::Except(self.frozen.clone())
                }
                0 => TrainLayers::All,
                n => TrainLayers::Last(n),
            },
            loss: if self.distill {
                Loss::Distill {
                    temperature: DISTILL_TEMPERATURE,
                }
            } else {
                Loss::CrossEntropy
            },
            early_stop_patience: self.patience,
            calibration_size: self.calibration_size,
            train_data: self.train_sets.get(self.train_set).cloned().flatten(),
            augment: AUGMENTS[self.augment.min(AUGMENTS.len() - 1)],
            ..FineTuneSettings::default()
        }
    }

    pub fn value_text(&self, f: Field) -> String {
        let s = self.settings();
        let external = self.trainer == Trainer::External;
        match f {
            Field::Trainer => match self.trainer {
                Trainer::BuiltIn => "built-in (CPU backpropagation)".into(),
                Trainer::Qat => "QAT (fake-quant, the variant's encodings)".into(),
                Trainer::External => {
                    let cmd = self.command.as_deref().unwrap_or_default();
                    let short: String = cmd.chars().take(32).collect();
                    let cut = if cmd.chars().count() > 32 { "…" } else { "" };
                    format!("external: {short}{cut}")
                }
            },
            Field::Epochs => format!("{}", self.epochs),
            Field::Lr => format!("{:e}", s.lr),
            Field::RunOn => self.run_on.text(),
            // The external command trains as it likes: only {epochs} and {lr} reach it.
            _ if external => "(your trainer's)".into(),
            Field::Schedule => match s.schedule {
                Schedule::Cosine => "cosine to 0".into(),
                Schedule::Constant => "constant".into(),
                Schedule::Step { every, gamma } => format!("×{gamma} every {every} epoch(s)"),
            },
            Field::Optimizer if self.adam => "Adam".into(),
            Field::Optimizer => format!("SGD, momentum {}", s.momentum),
            Field::BatchSize => format!("{}", self.batch_size),
            Field::WeightDecay if s.weight_decay == 0.0 => "0 (off)".into(),
            Field::WeightDecay => format!("{:e}", s.weight_decay),
            Field::Layers => match s.train_layers {
                TrainLayers::Last(1) => "the last one (the classifier head)".into(),
                TrainLayers::Last(n) => format!("the last {n} with weights"),
                TrainLayers::Except(frozen) => {
                    format!("all but the {} marked [skip]", frozen.len())
                }
                _ if self.frozen.is_empty() => "all".into(),
                _ => "all (◂: freeze the [skip]-marked)".into(),
            },
            Field::Loss if self.distill => {
                format!("distil the parent (T={DISTILL_TEMPERATURE}, no labels)")
            }
            Field::Loss => "cross-entropy with labels".into(),
            Field::Patience if self.patience == 0 => "off (keep the last epoch)".into(),
            Field::Patience => format!("after {} epoch(s) without gain", self.patience),
            Field::TrainSet => match &s.train_data {
                Some(dir) => format!("{} (all of it)", shown(dir).display()),
                None => "the calibration part (no training set)".into(),
            },
            Field::Calibration if s.train_data.is_some() => {
                format!("{} samples (not trained on)", self.calibration_size)
            }
            Field::Calibration => format!("{} samples (trained on)", self.calibration_size),
            Field::Augment => match s.augment.describe().as_str() {
                "none" => "off".into(),
                what => format!("{what} (images only)"),
            },
        }
    }

    /// One job per variant, of the chosen trainer.
    pub fn jobs(&self, data: &Path, threads: usize) -> Vec<JobKind> {
        let settings = self.settings();
        let data = data.to_path_buf();
        self.variants
            .iter()
            .map(|&variant| match self.trainer {
                Trainer::BuiltIn => JobKind::FineTune {
                    variant,
                    data: data.clone(),
                    settings: settings.clone(),
                    threads,
                },
                Trainer::Qat => JobKind::Qat {
                    variant,
                    data: data.clone(),
                    settings: settings.clone(),
                    threads,
                },
                Trainer::External => JobKind::ExternalFineTune {
                    variant,
                    data: data.clone(),
                    command: self.command.clone().unwrap_or_default(),
                    epochs: settings.epochs,
                    lr: settings.lr,
                    threads,
                },
            })
            .collect()
    }
}

impl form::Editable for FineTuneForm {
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize) {
        (&mut self.field, &mut self.fresh, Field::ALL.len())
    }

    fn change(&mut self, delta: i64) {
        match self.field() {
            Field::Trainer => {
                let n = self.trainers.len();
                let at = self.trainers.iter().position(|t| *t == self.trainer);
                let next = (at.unwrap_or(0) as i64 + delta).rem_euclid(n as i64) as usize;
                self.trainer = self.trainers[next];
            }
            Field::Epochs => self.epochs = form::step(self.epochs, delta, EPOCHS.0, EPOCHS.1),
            Field::Lr => self.lr = form::step(self.lr, delta, 0, LRS.len() - 1),
            Field::Schedule => {
                self.schedule = match (self.schedule, delta > 0) {
                    (ScheduleChoice::Cosine, true) | (ScheduleChoice::Step, false) => {
                        ScheduleChoice::Constant
                    }
                    (ScheduleChoice::Constant, true) | (ScheduleChoice::Cosine, false) => {
                        ScheduleChoice::Step
                    }
                    (ScheduleChoice::Step, true) | (ScheduleChoice::Constant, false) => {
                        ScheduleChoice::Cosine
                    }
                }
            }
            Field::Optimizer => self.adam = !self.adam,
            // Powers of two are the usual batch sizes: ◂▸ halve and double.
            Field::BatchSize => {
                let b = if delta > 0 {
                    self.batch_size.saturating_mul(2)
                } else {
                    self.batch_size / 2
                };
                self.batch_size = b.clamp(BATCH.0, BATCH.1);
            }
            Field::WeightDecay => {
                self.weight_decay = form::step(self.weight_decay, delta, 0, WEIGHT_DECAYS.len() - 1)
            }
            Field::Layers => {
                // ◂ from "all" freezes the marked layers (when there are any); ▸ counts up
                // "the last N".
                let at = match (self.train_last, self.freeze_marked) {
                    (0, true) => -1,
                    (n, _) => n as i64,
                };
                let lowest = if self.frozen.is_empty() { 0 } else { -1 };
                let next = (at + delta).clamp(lowest, TRAIN_LAST_MAX as i64);
                self.freeze_marked = next < 0;
                self.train_last = next.max(0) as usize;
            }
            Field::Loss => self.distill = !self.distill,
            Field::RunOn => self.run_on.toggle(),
            Field::Patience => {
                self.patience = form::step(self.patience, delta, PATIENCE.0, PATIENCE.1)
            }
            Field::Calibration => {
                self.calibration_size = form::step_calibration(self.calibration_size, delta)
            }
            Field::TrainSet => {
                let n = self.train_sets.len().max(1) as i64;
                self.train_set = (self.train_set as i64 + delta).rem_euclid(n) as usize;
            }
            Field::Augment => {
                let n = AUGMENTS.len() as i64;
                self.augment = (self.augment as i64 + delta).rem_euclid(n) as usize;
            }
        }
    }

    fn number(&mut self) -> Option<(&mut usize, usize)> {
        match self.field() {
            Field::Epochs => Some((&mut self.epochs, EPOCHS.1)),
            Field::BatchSize => Some((&mut self.batch_size, BATCH.1)),
            Field::Patience => Some((&mut self.patience, PATIENCE.1)),
            Field::Layers => Some((&mut self.train_last, TRAIN_LAST_MAX)),
            Field::Calibration => Some((&mut self.calibration_size, form::CALIBRATION.1)),
            _ => None,
        }
    }
}

/// Open the dialog on one variant: the one selected in the variants pane when it has the
/// focus, else the current one.
pub fn open(app: &mut App) {
    let variant = form::dialog_variant(app);
    open_on(app, vec![variant]);
}

/// Open the dialog on the given variants (a decision table's picks).
pub fn open_on(app: &mut App, variants: Vec<u32>) {
    let quantized = variants
        .iter()
        .any(|&v| app.variant(v).is_some_and(|v| v.encodings_file.is_some()));
    let mut form = FineTuneForm::new(variants, quantized, app.trainer_command.clone());
    if let Some(saved) = super::dialog_memory::saved(app, super::dialog_memory::FINETUNE) {
        form.recall(&saved.clone());
    }
    form.train_sets = train_sets(app.train_data.as_deref(), app.data_path.as_deref());
    // A training set when there is one: the calibration part is the fallback.
    form.train_set = usize::from(form.train_sets.len() > 1);
    form.frozen = app.layer_choices.excluded();
    form.run_on = RunOn::from_app(app);
    app.popups.push(Popup::FineTune(form));
}

/// `dir` relative to the working directory when it is under it (shorter in the dialog).
fn shown(dir: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok())
        .unwrap_or(dir)
}

/// The training sets the dialog offers: the calibration part (`None`), the workspace's
/// saved training set, and a `training/` folder beside the dataset's calibration part
/// (as the sample data has), each once.
pub fn train_sets(saved: Option<&Path>, data: Option<&Path>) -> Vec<Option<PathBuf>> {
    let mut sets = vec![None];
    let beside = data
        .map(|d| d.join("training"))
        .filter(|d| d.is_dir())
        .map(|d| std::path::absolute(&d).unwrap_or(d));
    for dir in [saved.map(Path::to_path_buf), beside].into_iter().flatten() {
        if !sets.contains(&Some(dir.clone())) {
            sets.push(Some(dir));
        }
    }
    sets
}

/// Why the dialog cannot launch now: no dataset, a quantized variant, or a bad number.
pub fn blocker(app: &App, form: &FineTuneForm) -> Option<String> {
    if form.variants.is_empty() {
        return Some("no variant to fine-tune".into());
    }
    if app.data_path.is_none() {
        return Some("no dataset: restart with --data DIR to fine-tune".into());
    }
    for &v in &form.variants {
        let quantized = app.variant(v).is_some_and(|v| v.encodings_file.is_some());
        match (form.trainer, quantized) {
            (Trainer::BuiltIn, true) => {
                return Some(format!(
                    "variant {v} is quantized: QAT trains it (pick it alone, or its FP32 parent)"
                ))
            }
            (Trainer::Qat, false) => {
                return Some(format!(
                    "variant {v} is not quantized: QAT starts from a quantsim variant"
                ))
            }
            _ => {}
        }
    }
    if form.epochs < EPOCHS.0 {
        return Some("train at least one epoch".into());
    }
    if form.batch_size < BATCH.0 {
        return Some("the batch size must be at least 1".into());
    }
    (form.calibration_size < form::CALIBRATION.0)
        .then(|| "the calibration part needs a sample".into())
}

/// A key in the open dialog. The form is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, form: &mut FineTuneForm, action: Action) -> Vec<Effect> {
    match action {
        _ if form::edit(form, &action) => {}
        Action::Confirm => {
            let Some(data) = form::launch(app, blocker(app, form)) else {
                return vec![];
            };
            let ids: Vec<String> = form.variants.iter().map(|v| v.to_string()).collect();
            app.status = format!(
                "fine-tuning of variant(s) {} queued; the loss curve shows in the jobs pane",
                ids.join(", ")
            );
            let jobs = form.jobs(&data, app.cores);
            let run_on = form.run_on.clone();
            let mut effects = run_on::submit(app, &run_on, jobs);
            let values = form.remembered();
            effects.push(super::dialog_memory::remember(
                app,
                super::dialog_memory::FINETUNE,
                values,
            ));
            return effects;
        }
        _ => {}
    }
    vec![]
}

/// The values the dialog opens with next time (see `dialog_memory`): the training settings,
/// not the trainer, the training set or the layers, which depend on the variants.
impl FineTuneForm {
    const SCHEDULES: [ScheduleChoice; 3] = [
        ScheduleChoice::Cosine,
        ScheduleChoice::Constant,
        ScheduleChoice::Step,
    ];

    pub fn remembered(&self) -> serde_json::Value {
        let schedule = Self::SCHEDULES.iter().position(|s| *s == self.schedule);
        serde_json::json!({
            "epochs": self.epochs,
            "lr": self.lr,
            "schedule": schedule,
            "adam": self.adam,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "train_last": self.train_last,
            "distill": self.distill,
            "patience": self.patience,
            "calibration_size": self.calibration_size,
            "augment": self.augment,
        })
    }

    pub fn recall(&mut self, saved: &serde_json::Value) {
        use super::dialog_memory::{take, within};
        take(saved, "epochs", &mut self.epochs, within(EPOCHS));
        take(saved, "lr", &mut self.lr, |i| *i < LRS.len());
        let mut schedule = usize::MAX;
        take(saved, "schedule", &mut schedule, |i| {
            *i < Self::SCHEDULES.len()
        });
        if let Some(s) = Self::SCHEDULES.get(schedule) {
            self.schedule = *s;
        }
        take(saved, "adam", &mut self.adam, |_| true);
        take(saved, "batch_size", &mut self.batch_size, within(BATCH));
        take(saved, "weight_decay", &mut self.weight_decay, |i| {
            *i < WEIGHT_DECAYS.len()
        });
        take(
            saved,
            "train_last",
            &mut self.train_last,
            within((0, TRAIN_LAST_MAX)),
        );
        take(saved, "distill", &mut self.distill, |_| true);
        take(saved, "patience", &mut self.patience, within(PATIENCE));
        take(
            saved,
            "calibration_size",
            &mut self.calibration_size,
            within(super::form::CALIBRATION),
        );
        take(saved, "augment", &mut self.augment, |i| *i < AUGMENTS.len());
    }
}
