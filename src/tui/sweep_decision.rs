//! The sweep's two decision points. After step 1: the spatial-SVD candidates with the
//! rule's pre-selection (and its advice when every candidate drops far more or far less
//! than tolerated); the user picks the ones to prune further, sets their fine-tuning, and
//! Enter queues step 2. After step 2: the final SSVD→CP table with the rule's pick marked;
//! Space marks another, Enter tags the marked one `picked` and puts it beside the base in
//! A/B.

use super::action::Action;
use super::state::{App, Pane, Popup};
use super::update::Effect;
use qsteer::compress::sweep::{SweepReport, SweepRow};
use qsteer::jobs::{JobId, JobKind, SweepStage};
use qsteer::metrics::Score;

/// The Ccp neighbours of step 2, in percent points of the ratio.
const NEIGHBOUR: (usize, usize) = (0, 20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Decision 1: which SSVD candidates go on to channel pruning.
    Ssvd,
    /// Decision 2: the final pick.
    Cp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepDecision {
    /// The stage job that produced the report: its settings carry over to step 2.
    pub job: JobKind,
    pub report: SweepReport,
    pub step: Step,
    /// Per row of the step's table: picked (step 1 several, step 2 exactly one).
    pub picked: Vec<bool>,
    pub cursor: usize,
    /// Step 1's settings for step 2: fine-tuning, Ccp neighbours in percent.
    pub reconstruct: bool,
    pub neighbour_pct: usize,
    /// Where step 2 runs: this machine or Slurm.
    pub run_on: super::run_on::RunOn,
    /// 0 = the table, 1 = fine-tune, 2 = neighbours, 3 = run on (step 1 only).
    pub field: usize,
    /// Fine-tune jobs training a candidate of this table (`t`), by the candidate's variant;
    /// when one finishes, its row becomes the trained variant.
    pub training: Vec<(JobId, u32)>,
}

impl SweepDecision {
    /// The decision a finished sweep stage asks for, or None when its result is not a
    /// sweep report (or has no candidate to decide on).
    pub fn from_result(job: &JobKind, summary: &serde_json::Value) -> Option<SweepDecision> {
        let JobKind::Sweep {
            reconstruct,
            neighbour,
            ..
        } = job
        else {
            return None;
        };
        let report: SweepReport = serde_json::from_value(summary.clone()).ok()?;
        let (step, picked) = if report.cp.is_empty() {
            let picked: Vec<bool> = report.ssvd.iter().map(|r| r.preselected).collect();
            (Step::Ssvd, picked)
        } else {
            let pick = report.pick.as_ref().map(|p| p.variant);
            let picked: Vec<bool> = report.cp.iter().map(|r| Some(r.variant) == pick).collect();
            (Step::Cp, picked)
        };
        if picked.is_empty() {
            return None;
        }
        let cursor = picked.iter().position(|&p| p).unwrap_or(0);
        Some(SweepDecision {
            job: job.clone(),
            report,
            step,
            picked,
            cursor,
            reconstruct: *reconstruct,
            neighbour_pct: (neighbour * 100.0).round() as usize,
            run_on: Default::default(),
            field: 0,
            training: vec![],
        })
    }

    pub fn rows(&self) -> &[SweepRow] {
        match self.step {
            Step::Ssvd => &self.report.ssvd,
            Step::Cp => &self.report.cp,
        }
    }

    pub fn title(&self) -> String {
        match self.step {
            Step::Ssvd => format!(
                "Sweep C={:.2} · decision 1: spatial-SVD candidates to prune",
                self.report.target
            ),
            Step::Cp => format!(
                "Sweep C={:.2} · decision 2: pick the result",
                self.report.target
            ),
        }
    }

    fn fields(&self) -> usize {
        match self.step {
            Step::Ssvd => 4,
            Step::Cp => 1,
        }
    }

    /// The picked rows' variant ids.
    pub fn picked_variants(&self) -> Vec<u32> {
        self.rows()
            .iter()
            .zip(&self.picked)
            .filter(|(_, p)| **p)
            .map(|(r, _)| r.variant)
            .collect()
    }

    /// Whether a candidate's fine-tuning (`t`) is still running.
    pub fn is_training(&self, variant: u32) -> bool {
        self.training.iter().any(|(_, v)| *v == variant)
    }

    /// Step 2 of the sweep for the picked SSVD candidates.
    pub fn next_job(&self) -> Option<JobKind> {
        let JobKind::Sweep {
            variant,
            data,
            target,
            cssvd,
            max_drop,
            candidates,
            calibration_size,
            seed,
            threads,
            ..
        } = &self.job
        else {
            return None;
        };
        let ssvd = self.picked_variants();
        (self.step == Step::Ssvd && !ssvd.is_empty()).then(|| JobKind::Sweep {
            variant: *variant,
            data: data.clone(),
            target: *target,
            cssvd: cssvd.clone(),
            max_drop: *max_drop,
            neighbour: self.neighbour_pct as f64 / 100.0,
            reconstruct: self.reconstruct,
            candidates: *candidates,
            stage: SweepStage::Cp { ssvd },
            calibration_size: *calibration_size,
            seed: *seed,
            threads: *threads,
            metric: None,
        })
    }
}

/// Apply `change` to the pending decision and to its open copy, if it is on top.
fn with_decision(app: &mut App, change: impl Fn(&mut SweepDecision)) {
    if let Some(d) = app.pending_decision.as_mut() {
        change(d);
    }
    if let Some(Popup::SweepDecision(d)) = app.popups.last_mut() {
        change(d);
    }
}

/// A job was queued: a fine-tune of a candidate of the pending decision is followed.
pub fn job_queued(app: &mut App, id: JobId, kind: &JobKind) {
    let JobKind::FineTune { variant, .. } = kind else {
        return;
    };
    let variant = *variant;
    with_decision(app, |d| {
        if d.rows().iter().any(|r| r.variant == variant) {
            d.training.push((id, variant));
        }
    });
}

/// A job ended (`summary` when it finished): a followed fine-tune puts its trained variant
/// and score in its candidate's row, so step 2 prunes (or the pick takes) the trained model.
pub fn job_ended(app: &mut App, id: JobId, summary: Option<&serde_json::Value>) {
    let trained = summary.and_then(|s| {
        let variant = s["variant"].as_u64()? as u32;
        let after: Score = serde_json::from_value(s["after"].clone()).ok()?;
        Some((variant, after))
    });
    with_decision(app, |d| {
        let Some(at) = d.training.iter().position(|(job, _)| *job == id) else {
            return;
        };
        let (_, candidate) = d.training.remove(at);
        if let Some((variant, after)) = trained.clone() {
            put_trained(d, candidate, variant, after);
        }
    });
}

/// Row `candidate` becomes its trained child `variant`, scored `after`.
fn put_trained(d: &mut SweepDecision, candidate: u32, variant: u32, after: Score) {
    let base = score_pct(&d.report.base_score);
    let by_labels = d.report.metric == "accuracy";
    let rows = match d.step {
        Step::Ssvd => &mut d.report.ssvd,
        Step::Cp => &mut d.report.cp,
    };
    if let Some(row) = rows.iter_mut().find(|r| r.variant == candidate) {
        row.variant = variant;
        // Agreement is measured against the trained model's parent, not the base.
        if let (true, Some(b), Some(a)) = (by_labels, base, score_pct(&after)) {
            row.drop_points = b - a;
        }
        row.score_before = row.score_after.clone().unwrap_or(row.score_before.clone());
        row.score_after = Some(after);
    }
}

/// Whether a recipe step trained its parent (built-in fine-tuning, QAT, the user's trainer).
fn is_training_step(step: &str) -> bool {
    ["finetune{", "qat{", "external{"]
        .iter()
        .any(|s| step.starts_with(s))
}

/// The newest scored variant trained from `id` (followed down: a trained child trained
/// again), from the workspace's records.
fn trained_descendant(app: &App, id: u32) -> Option<(u32, Score)> {
    let mut found = None;
    let mut at = id;
    while let Some(child) = (app.variants.iter().rev())
        .find(|v| v.parent == Some(at) && is_training_step(&v.step) && !v.results.is_empty())
    {
        let score = child.results.last().map(|r| r.score.clone())?;
        found = Some((child.id, score));
        at = child.id;
    }
    found
}

/// The decision offers a candidate's trained child, not the untrained candidate, however
/// the training ran (from the decision, the variants pane, or a job that outlived the app):
/// rows whose variant has a trained descendant in the workspace become it.
pub fn follow_trained(app: &mut App) {
    let ids: Vec<u32> = (app.pending_decision.iter())
        .chain(app.popups.iter().filter_map(|p| match p {
            Popup::SweepDecision(d) => Some(d.as_ref()),
            _ => None,
        }))
        .flat_map(|d| d.rows().iter().map(|r| r.variant))
        .collect();
    let trained: Vec<(u32, u32, Score)> = ids
        .into_iter()
        .filter_map(|id| trained_descendant(app, id).map(|(v, s)| (id, v, s)))
        .collect();
    if trained.is_empty() {
        return;
    }
    let apply = |d: &mut SweepDecision| {
        for (candidate, variant, after) in &trained {
            if !d.is_training(*candidate) {
                put_trained(d, *candidate, *variant, after.clone());
            }
        }
    };
    if let Some(d) = app.pending_decision.as_mut() {
        apply(d);
    }
    for p in &mut app.popups {
        if let Popup::SweepDecision(d) = p {
            apply(d);
        }
    }
}

/// A score in points of its metric (percent; dB for SQNR).
pub fn score_pct(s: &Score) -> Option<f64> {
    let scale = if s.is_fraction() { 100.0 } else { 1.0 };
    s.value().map(|v| scale * v)
}

/// Open the decision, unless another dialog is open: then it waits for `d`.
pub fn offer(app: &mut App, mut d: SweepDecision) {
    // Step 2 starts where the last dialog sent its jobs (normally the sweep itself).
    d.run_on = super::run_on::RunOn::from_app(app);
    // A candidate trained already (say, before a restart) is offered as its trained child.
    for row in d.rows().to_vec() {
        if let Some((variant, after)) = trained_descendant(app, row.variant) {
            put_trained(&mut d, row.variant, variant, after);
        }
    }
    let what = match d.step {
        Step::Ssvd => "decision 1",
        Step::Cp => "decision 2",
    };
    if app.popups.is_empty() {
        app.status = format!("sweep {what}: pick and press Enter");
        app.popups.push(Popup::SweepDecision(Box::new(d.clone())));
    } else {
        app.status = format!("sweep {what} is ready: press d to open it");
    }
    app.pending_decision = Some(d);
}

/// `d`: reopen the last sweep decision.
pub fn reopen(app: &mut App) {
    match app.pending_decision.clone() {
        Some(mut d) => {
            // The settings may have been edited (`S`) since; the choice stays.
            d.run_on.settings = app.slurm.settings.clone();
            app.popups.push(Popup::SweepDecision(Box::new(d)));
            follow_trained(app);
        }
        None => app.status = "no sweep decision pending: start a sweep with r".into(),
    }
}

/// A key in the open decision. The decision is the top popup's copy; the caller stores it
/// back.
pub fn action(app: &mut App, d: &mut SweepDecision, action: Action) -> Vec<Effect> {
    let n = d.rows().len();
    match action {
        Action::FocusNext => d.field = (d.field + 1) % d.fields(),
        Action::FocusPrev => d.field = (d.field + d.fields() - 1) % d.fields(),
        Action::Up if d.field == 0 => d.cursor = d.cursor.saturating_sub(1),
        Action::Down if d.field == 0 => d.cursor = (d.cursor + 1).min(n.saturating_sub(1)),
        Action::Toggle | Action::Char(' ') if d.field == 0 => match d.step {
            Step::Ssvd => d.picked[d.cursor] = !d.picked[d.cursor],
            Step::Cp => {
                d.picked.iter_mut().for_each(|p| *p = false);
                d.picked[d.cursor] = true;
            }
        },
        Action::Left | Action::Right | Action::Toggle | Action::Up | Action::Down => {
            let delta = if matches!(action, Action::Left | Action::Down) {
                -1
            } else {
                1
            };
            match d.field {
                1 => d.reconstruct = !d.reconstruct,
                2 => {
                    d.neighbour_pct =
                        super::form::step(d.neighbour_pct, delta, NEIGHBOUR.0, NEIGHBOUR.1)
                }
                3 => d.run_on.toggle(),
                _ => {}
            }
        }
        Action::Confirm => return confirm(app, d),
        Action::FineTuneDialog => {
            let picked = d.picked_variants();
            if picked.is_empty() {
                app.status = "pick candidates (Space) to fine-tune first".into();
            } else {
                app.pending_decision = Some(d.clone());
                super::finetune_form::open_on(app, picked);
            }
            return vec![];
        }
        _ => {}
    }
    app.pending_decision = Some(d.clone());
    vec![]
}

fn confirm(app: &mut App, d: &mut SweepDecision) -> Vec<Effect> {
    match d.step {
        Step::Ssvd => {
            let busy: Vec<String> = d
                .picked_variants()
                .into_iter()
                .filter(|v| d.is_training(*v))
                .map(|v| format!("v{v}"))
                .collect();
            if !busy.is_empty() {
                app.status = format!(
                    "{} still fine-tuning: press Enter when it has finished, to prune the \
                     trained model",
                    busy.join(", ")
                );
                return vec![];
            }
            let Some(job) = d.next_job() else {
                app.status = match &d.report.advice {
                    Some(a) => format!("pick at least one candidate (Space), or: {a}"),
                    None => "pick at least one candidate (Space)".into(),
                };
                return vec![];
            };
            app.popups.pop();
            app.pending_decision = None;
            let run_on = d.run_on.clone();
            app.status = format!(
                "sweep step 2 queued on {}: channel pruning of the picked candidates",
                if run_on.slurm {
                    "Slurm"
                } else {
                    "this machine"
                }
            );
            super::run_on::submit(app, &run_on, vec![job])
        }
        Step::Cp => {
            let Some(row) = d
                .rows()
                .iter()
                .zip(&d.picked)
                .find(|(_, p)| **p)
                .map(|(r, _)| r.clone())
            else {
                app.status = "pick one candidate (Space)".into();
                return vec![];
            };
            app.popups.pop();
            app.pending_decision = None;
            app.mark_a = Some(row.variant);
            app.mark_b = Some(d.report.base);
            app.focus = Pane::Compare;
            app.status = format!(
                "variant {} picked (MAC ratio {:.3}): A = the pick, B = the base",
                row.variant, row.overall_mac_ratio
            );
            // The stage job tagged the rule's pick; the user's pick replaces it.
            let untag = d.rows().iter().map(|r| r.variant).collect();
            vec![
                Effect::TagVariant {
                    id: row.variant,
                    tag: "picked".into(),
                    untag,
                },
                Effect::RefreshCompare,
            ]
        }
    }
}
