//! A training job's loss curve and per-epoch scores, filled from its `train_step` and
//! `train_epoch` partial results as they arrive (the jobs pane draws it live).

use qsteer::jobs::{JobOutcome, Partial, TrainedFields};

/// The points kept per curve: older steps are thinned (every other one dropped) past this,
/// so a long run stays cheap to draw and its whole shape stays visible.
const MAX_POINTS: usize = 2048;

/// (epoch, loss, score) of a finished run's epochs.
type EpochPoints = Vec<(usize, Option<f64>, Option<f64>)>;

/// Steps per epoch, metric and epochs of a built-in training run.
fn curve_of(t: &TrainedFields) -> (usize, &str, EpochPoints) {
    let epochs = (t.epochs.iter())
        .map(|e| (e.epoch, Some(e.loss), Some(e.score)))
        .collect();
    (t.steps_per_epoch.max(1), &t.metric, epochs)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainCurve {
    /// (global step, loss) of the training steps, in order.
    pub steps: Vec<(f64, f64)>,
    /// Steps per epoch (from the last step event): places epoch ends on the step axis.
    pub steps_per_epoch: usize,
    pub epochs: Vec<EpochPoint>,
    /// The evaluation metric's name (`accuracy`, `agreement`).
    pub metric: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub loss: f64,
    /// The evaluation score after the epoch (0–1), when the trainer reports one.
    pub score: Option<f64>,
}

impl TrainCurve {
    /// Take a partial result; false when it is not a training event.
    pub fn take(&mut self, partial: &Partial) -> bool {
        if let Partial::TrainStep { train_step: s } = partial {
            let Some(loss) = s.loss else {
                return false;
            };
            let step = s.step;
            let epoch = s.epoch.max(1) as usize;
            if let Some(n) = s.steps.filter(|&n| n > 0) {
                self.steps_per_epoch = n as usize;
            }
            let x = match self.steps_per_epoch {
                0 => self.steps.len() as f64 + 1.0,
                n => ((epoch - 1) * n) as f64 + step as f64,
            };
            // A resumed run replays nothing, but a restarted one may go back in steps.
            self.steps.retain(|&(sx, _)| sx < x);
            self.steps.push((x, loss));
            if self.steps.len() > MAX_POINTS {
                self.steps = self.steps.iter().step_by(2).copied().collect();
            }
            return true;
        }
        if let Partial::TrainEpoch { train_epoch: e } = partial {
            let epoch = e.epoch;
            if !e.metric.is_empty() {
                self.metric = e.metric.clone();
            }
            self.epochs.retain(|p| p.epoch != epoch);
            self.epochs.push(EpochPoint {
                epoch,
                loss: e.loss.unwrap_or(f64::NAN),
                score: e.score.filter(|s| s.is_finite()),
            });
            return true;
        }
        false
    }

    /// A finished training job's curve from its outcome (a job from an earlier session):
    /// the per-epoch mean losses and scores, placed at each epoch's last step. The external
    /// trainer reports no steps per epoch and no score per epoch.
    pub fn from_outcome(outcome: &JobOutcome) -> Option<TrainCurve> {
        let (per_epoch, metric, epochs): (usize, &str, EpochPoints) = match outcome {
            JobOutcome::FineTune(o) => curve_of(&o.trained),
            JobOutcome::Qat(o) => curve_of(&o.trained),
            JobOutcome::ExternalFineTune(o) => (
                1,
                &o.metric,
                (o.epochs.iter())
                    .map(|e| (e.epoch as usize, e.loss, None))
                    .collect(),
            ),
            _ => return None,
        };
        let mut curve = TrainCurve {
            steps_per_epoch: per_epoch,
            metric: metric.to_string(),
            ..TrainCurve::default()
        };
        for (epoch, loss, score) in epochs {
            let loss = loss?;
            curve.steps.push(((epoch * per_epoch) as f64, loss));
            curve.epochs.push(EpochPoint { epoch, loss, score });
        }
        (!curve.epochs.is_empty()).then_some(curve)
    }

    pub fn last_loss(&self) -> Option<f64> {
        self.steps.last().map(|p| p.1)
    }

    /// The loss axis: from the lowest to the highest finite loss, never empty.
    pub fn loss_bounds(&self) -> [f64; 2] {
        let finite = self.steps.iter().map(|p| p.1).filter(|l| l.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), l| {
            (lo.min(l), hi.max(l))
        });
        if !lo.is_finite() {
            return [0.0, 1.0];
        }
        if hi - lo < 1e-9 {
            return [lo - 0.5, hi + 0.5];
        }
        [lo, hi]
    }

    /// The step axis: from the first to the last step.
    pub fn step_bounds(&self) -> [f64; 2] {
        let last = self.steps.last().map_or(1.0, |p| p.0).max(1.0);
        [
            self.steps.first().map_or(0.0, |p| p.0).min(last - 1.0),
            last,
        ]
    }

    /// `epoch 1 0.9875 · epoch 2 0.9900 ↑` — the per-epoch scores, newest last.
    pub fn epochs_text(&self, max_epochs: usize) -> String {
        let start = self.epochs.len().saturating_sub(max_epochs);
        let mut best = f64::NEG_INFINITY;
        let mut parts = Vec::new();
        for (i, p) in self.epochs.iter().enumerate() {
            let mark = match p.score {
                Some(s) if s > best => {
                    best = s;
                    "↑"
                }
                _ => "",
            };
            if i >= start {
                let score = p.score.map_or("–".into(), |s| format!("{:.2}%", 100.0 * s));
                parts.push(format!("e{} {score}{mark}", p.epoch));
            }
        }
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A partial from its wire form.
    fn p(v: Value) -> Partial {
        serde_json::from_value(v).unwrap()
    }

    fn step(epoch: u64, step: u64, steps: u64, loss: f64) -> Partial {
        p(
            json!({"train_step": {"epoch": epoch, "step": step, "steps": steps, "loss": loss, "lr": 1e-3}}),
        )
    }

    #[test]
    fn steps_land_on_a_global_axis_and_epochs_keep_their_scores() {
        let mut c = TrainCurve::default();
        assert!(c.take(&step(1, 1, 4, 2.0)));
        assert!(c.take(&step(1, 4, 4, 1.0)));
        assert!(c.take(&step(2, 1, 4, 0.5)));
        assert_eq!(c.steps, vec![(1.0, 2.0), (4.0, 1.0), (5.0, 0.5)]);
        assert_eq!(c.loss_bounds(), [0.5, 2.0]);
        assert!(c.take(&p(
            json!({"train_epoch": {"epoch": 1, "loss": 1.2, "score": 0.98, "metric": "accuracy"}})
        )));
        assert!(c.take(&p(
            json!({"train_epoch": {"epoch": 2, "loss": 0.6, "score": 0.97}})
        )));
        assert_eq!(c.metric, "accuracy");
        assert_eq!(c.epochs_text(5), "e1 98.00%↑ · e2 97.00%");
        assert!(!c.take(&p(json!({"slurm": {"job_id": "1", "state": "RUNNING"}}))));
    }

    #[test]
    fn a_restart_drops_the_later_steps_and_long_runs_are_thinned() {
        let mut c = TrainCurve::default();
        for s in 1..=10 {
            c.take(&step(1, s, 10, 1.0 / s as f64));
        }
        c.take(&step(1, 3, 10, 5.0));
        assert_eq!(c.steps.len(), 3);
        assert_eq!(c.last_loss(), Some(5.0));
        let mut long = TrainCurve::default();
        for s in 1..=(MAX_POINTS as u64 + 1) {
            long.take(&step(1, s, 100_000, 1.0));
        }
        assert!(long.steps.len() <= MAX_POINTS);
        assert_eq!(long.steps.first().map(|p| p.0), Some(1.0));
    }

    #[test]
    fn a_finished_jobs_result_gives_its_epoch_curve() {
        let summary = json!({"metric": "accuracy", "steps_per_epoch": 7, "epochs": [
            {"epoch": 1, "loss": 0.8, "score": 0.98, "seconds": 1.0},
            {"epoch": 2, "loss": 0.4, "score": 0.99, "seconds": 1.0}]});
        let outcome = JobOutcome::FineTune(serde_json::from_value(summary).unwrap());
        let c = TrainCurve::from_outcome(&outcome).unwrap();
        assert_eq!(c.steps, vec![(7.0, 0.8), (14.0, 0.4)]);
        assert_eq!(c.epochs_text(3), "e1 98.00%↑ · e2 99.00%↑");
        let untrained =
            JobOutcome::FineTune(serde_json::from_value(json!({"variant": 3})).unwrap());
        assert_eq!(TrainCurve::from_outcome(&untrained), None);
        // The external trainer's epochs: no score, one step each.
        let external =
            json!({"metric": "accuracy", "epochs": [{"epoch": 1, "loss": 0.5, "metric": null}]});
        let outcome = JobOutcome::ExternalFineTune(serde_json::from_value(external).unwrap());
        let c = TrainCurve::from_outcome(&outcome).unwrap();
        assert_eq!(c.steps, vec![(1.0, 0.5)]);
        assert_eq!(c.epochs[0].score, None);
    }

    #[test]
    fn steps_without_a_count_are_numbered_in_arrival_order() {
        let mut c = TrainCurve::default();
        c.take(&p(
            json!({"train_step": {"epoch": 1, "step": 10, "loss": 0.3}}),
        ));
        c.take(&p(
            json!({"train_step": {"epoch": 1, "step": 20, "loss": 0.2}}),
        ));
        assert_eq!(c.steps, vec![(1.0, 0.3), (2.0, 0.2)]);
        assert_eq!(c.step_bounds(), [1.0, 2.0]);
    }
}
