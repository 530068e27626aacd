//! What a fine-tuning run is asked to do. Serialised into the job request and the
//! checkpoint key, so names are stable snake_case.

use super::augment::Augment;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    Constant,
    /// Cosine decay from `lr` to 0 over all steps.
    Cosine,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with (heavy-ball) momentum, as PyTorch's `SGD`.
    Sgd,
    /// Adam with L2 weight decay added to the gradient, as PyTorch's `Adam`.
    Adam,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Loss {
    /// Cross-entropy with the dataset's labels.
    CrossEntropy,
    /// KL divergence to the FP32 parent's softened outputs (no labels needed).
    Distill { temperature: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainLayers {
    All,
    /// Node names of Conv/Gemm/MatMul/BatchNormalization layers.
    Only(Vec<String>),
    /// Every layer but these (frozen).
    Except(Vec<String>),
    /// The last N layers with weights, in graph order (N = 1: the classifier head).
    Last(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneSettings {
    pub epochs: usize,
    pub lr: f64,
    pub schedule: Schedule,
    pub optimizer: Optimizer,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub train_layers: TrainLayers,
    pub loss: Loss,
    /// Stop after this many epochs without a better evaluation score (0: never).
    pub early_stop_patience: usize,
    /// Without `train_data`, the training subset is the calibration subset of this split.
    pub calibration_size: usize,
    pub seed: u64,
    /// The training set, used whole; `None`: the calibration subset of the job's data
    /// (the result says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_data: Option<PathBuf>,
    /// Augmentation of the training batches (image inputs only).
    #[serde(default, skip_serializing_if = "is_off")]
    pub augment: Augment,
}

fn is_off(a: &Augment) -> bool {
    !a.is_on()
}

impl Default for FineTuneSettings {
    fn default() -> Self {
        FineTuneSettings {
            epochs: 5,
            lr: 1e-3,
            schedule: Schedule::Cosine,
            optimizer: Optimizer::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            batch_size: 32,
            train_layers: TrainLayers::All,
            loss: Loss::CrossEntropy,
            early_stop_patience: 0,
            calibration_size: 200, // the workspace default
            seed: 0,
            train_data: None,
            augment: Augment::default(),
        }
    }
}

impl FineTuneSettings {
    /// Reject settings no run could use, naming the field.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::input(format!("finetune: {m}")));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("--lr {} must be a finite number ≥ 0", self.lr));
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("--weight-decay {} must be ≥ 0", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum {} must be in [0, 1)", self.momentum));
        }
        if let Schedule::Step { every, gamma } = self.schedule {
            if every == 0 || !(gamma > 0.0 && gamma.is_finite()) {
                return bad(format!(
                    "step schedule every {every} gamma {gamma}: need every ≥ 1, gamma > 0"
                ));
            }
        }
        if let Loss::Distill { temperature } = self.loss {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return bad(format!(
                    "distillation temperature {temperature} must be > 0"
                ));
            }
        }
        if self.calibration_size == 0 && self.train_data.is_none() {
            return bad("the training subset (calibration size) is empty".into());
        }
        Ok(())
    }

    /// The learning rate at `step` of `total` (0-based), in epoch `epoch`.
    pub fn lr_at(&self, epoch: usize, step: usize, total: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let t = step as f64 / total.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::Step { every, gamma } => self.lr * gamma.powi((epoch / every.max(1)) as i32),
        }
    }

    /// The recipe step name of the child variant.
    pub fn step_name(&self) -> String {
        format!("finetune{{epochs:{},lr:{}}}", self.epochs, self.lr)
    }
}
