//! The sweep job (DESIGN.md §3 "SSVD→CP sweep"): SSVD candidates of a variant at each
//! Cssvd (decision 1: pre-selection and advice), then CP candidates on the picked ones at
//! C / Cssvd and its neighbours (decision 2: the pick). Every candidate is a compress job's
//! child variant, made by the compress job's own body. The report is written to
//! `sweeps/<key16>.json` after every candidate; a rerun reuses the candidates it lists.

use super::compress::{compress_one, Factory};
use super::exec::JobCtx;
use super::kind::{JobKind, SweepStage};
use super::latency::known_or_measured;
use super::lock;
use super::outcome::SlurmRun;
use super::sweep_rows::{candidate_row, compressed_ancestor, Base};
use super::{sweep_slurm, SlurmSettings};
use crate::compress::build::build_compressor;
use crate::compress::greedy::{candidates as candidate_ratios, check_target};
use crate::compress::scorer::ModelScorer;
use crate::compress::sweep::report::{load_report, report_path, save_report, sweep_key};
use crate::compress::sweep::{
    advise, ccp_candidates, default_cssvd, normalize_ratios, pick, preselected, stop_advice,
    SweepReport, SweepRow,
};
use crate::compress::{LayerRatios, Method};
use crate::experiment::evaluate::{sample_shapes, select_samples, Subset};
use crate::experiment::quantsim::float_variant_path;
use crate::experiment::Workspace;
use crate::runtime::RunOptions;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// What an SSVD→CP sweep job reports (the core of `qsteer sweep --json`): its report (the
/// candidates, advice and pick) and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepOutcome {
    #[serde(flatten)]
    pub report: SweepReport,
    /// The picked variant, once the sweep made its pick.
    #[serde(default)]
    pub variant: Option<u32>,
    /// The picked variant's file.
    #[serde(default)]
    pub output: Option<String>,
    /// The stage it ran (`ssvd` or `full`).
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub report_file: String,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub workspace: String,
    #[serde(default)]
    pub result: String,
    /// Which samples selected, scored and refit the candidates.
    #[serde(default)]
    pub samples_used: Value,
    /// Set when the job ran on a Slurm node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRun>,
}

pub(crate) fn run(ctx: &JobCtx, workspace: &Mutex<Workspace>) -> Result<SweepOutcome> {
    run_with(ctx, workspace, &build_compressor, None)
}

/// The sweep with its candidates made by Slurm jobs (all of a step submitted at once); the
/// decisions, scoring and report stay in this process.
pub(crate) fn run_on_slurm(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    settings: &SlurmSettings,
) -> Result<SweepOutcome> {
    run_with(ctx, workspace, &build_compressor, Some(settings))
}

/// One candidate to make: the compress job from `parent` by `method` at `requested`.
struct Spec {
    parent: u32,
    method: Method,
    requested: f64,
    parent_overall: f64,
}

/// The sweep's settings, checked.
struct Plan<'a> {
    base: u32,
    data: &'a Path,
    target: f64,
    cssvd: Vec<f64>,
    max_drop: f64,
    neighbour: f64,
    reconstruct: bool,
    candidates: usize,
    stage: &'a SweepStage,
    calibration_size: usize,
    seed: u64,
    threads: usize,
    metric: Option<&'a crate::metrics::MetricSpec>,
}

fn plan(kind: &JobKind) -> Result<Plan<'_>> {
    let JobKind::Sweep {
        variant,
        data,
        target,
        cssvd,
        max_drop,
        neighbour,
        reconstruct,
        candidates,
        stage,
        calibration_size,
        seed,
        threads,
        metric,
    } = kind
    else {
        return Err(Error::runtime(
            "the sweep job was handed another kind of job",
        ));
    };
    check_target(*target)?;
    candidate_ratios(*candidates)?;
    if let Some(c) = cssvd
        .iter()
        .find(|c| !(c.is_finite() && **c > 0.0 && **c < 1.0))
    {
        return Err(Error::input(format!(
            "sweep: --cssvd value {c} is not a MAC ratio in (0, 1)"
        )));
    }
    if !(max_drop.is_finite() && *max_drop >= 0.0) {
        return Err(Error::input(format!(
            "sweep: --max-drop is {max_drop}; give the tolerable drop in points, ≥ 0"
        )));
    }
    if !(neighbour.is_finite() && (0.0..0.5).contains(neighbour)) {
        return Err(Error::input(format!(
            "sweep: --neighbour is {neighbour}; expected a step in [0, 0.5)"
        )));
    }
    if matches!(stage, SweepStage::Cp { ssvd } if ssvd.is_empty()) {
        return Err(Error::input(
            "sweep: the CP step needs at least one picked SSVD candidate (--ssvd-picks)",
        ));
    }
    let cssvd = if cssvd.is_empty() {
        default_cssvd(*target)
    } else {
        normalize_ratios(cssvd.iter().copied())
    };
    Ok(Plan {
        base: *variant,
        data,
        target: *target,
        cssvd,
        max_drop: *max_drop,
        neighbour: *neighbour,
        reconstruct: *reconstruct,
        candidates: *candidates,
        stage,
        calibration_size: *calibration_size,
        seed: *seed,
        threads: *threads,
        metric: metric.as_ref(),
    })
}

impl Plan<'_> {
    /// What the candidates depend on besides the model and the samples (not Cssvd or X:
    /// another list reuses the candidates it shares, X only changes the decisions).
    fn settings(&self) -> String {
        format!(
            "target={};neighbour={};reconstruct={};candidates={};calibration={};seed={}",
            self.target,
            self.neighbour,
            self.reconstruct,
            self.candidates,
            self.calibration_size,
            self.seed
        ) + &self
            .metric
            .filter(|m| **m != crate::metrics::MetricSpec::default())
            .map_or(String::new(), |m| format!(";metric={}", m.label()))
    }

    /// The compress job of one candidate.
    fn compress(&self, parent: u32, method: Method, requested: f64) -> JobKind {
        JobKind::Compress {
            variant: parent,
            data: self.data.to_path_buf(),
            method,
            target: Some(requested),
            ratios: None,
            pin: LayerRatios::new(),
            exclude: vec![],
            candidates: self.candidates,
            selection: None,
            reconstruct: self.reconstruct,
            calibration_size: self.calibration_size,
            seed: self.seed,
            threads: self.threads,
            metric: self.metric.cloned(),
        }
    }
}

/// The state one run carries from candidate to candidate.
struct Sweep<'a> {
    ctx: &'a JobCtx<'a>,
    workspace: &'a Mutex<Workspace>,
    factory: Factory<'a>,
    /// Make candidates through Slurm instead of in this process.
    slurm: Option<&'a SlurmSettings>,
    plan: Plan<'a>,
    base: Base<'a>,
    report: SweepReport,
    path: PathBuf,
    key: String,
    /// Candidates this run has gone through, and how many it will.
    done: usize,
    total: usize,
}

pub(crate) fn run_with(
    ctx: &JobCtx,
    workspace: &Mutex<Workspace>,
    factory: Factory,
    slurm: Option<&SlurmSettings>,
) -> Result<SweepOutcome> {
    let plan = plan(ctx.kind)?;
    let started = Instant::now();
    let (model_path, ws_dir) = {
        let ws = lock(workspace);
        (
            float_variant_path(&ws, plan.base, "a sweep")?,
            ws.dir().to_path_buf(),
        )
    };
    let model = super::load_model(workspace, &model_path)?;
    let mut options = RunOptions::default();
    if plan.threads > 0 {
        options.threads = plan.threads;
    }
    let eval = select_samples(
        plan.data,
        Subset::Evaluation,
        plan.calibration_size,
        plan.seed,
    )?;
    let shapes = sample_shapes(&model, &eval.data)?;
    let key = sweep_key(
        &model.content_hash(),
        &eval.data.fingerprint()?,
        &plan.settings(),
    );
    let metric = super::job_metric(workspace, ctx.kind)?;
    let scoring =
        crate::experiment::evaluate::scoring_for(plan.data, &eval, Subset::Evaluation, &metric);
    let scorer = ModelScorer::with_scoring(&model, eval.data, options, scoring, ctx.cancel)?;
    let base_latency = known_or_measured(ctx, workspace, plan.base, &model, &shapes)?;
    let path = report_path(&ws_dir, &key);
    let mut report = load_report(&path, &key).unwrap_or_else(|| SweepReport {
        base: plan.base,
        target: plan.target,
        max_drop: plan.max_drop,
        metric: String::new(),
        base_score: scorer.parent_score().clone(),
        base_latency: None,
        ssvd: vec![],
        advice: None,
        cp: vec![],
        pick: None,
    });
    forget_missing(&mut report, workspace);
    report.max_drop = plan.max_drop;
    report.metric = scorer.metric().name().to_string();
    report.base_score = scorer.parent_score().clone();
    report.base_latency = Some(base_latency);
    ctx.log(format!(
        "{} of v{}: Cssvd {:?}, tolerable drop {} points of {}, report {}",
        ctx.kind.label(),
        plan.base,
        plan.cssvd,
        plan.max_drop,
        report.metric,
        path.display()
    ));
    let total = match plan.stage {
        SweepStage::Cp { ssvd } => ssvd.len() * 3,
        _ => plan.cssvd.len(),
    };
    let mut sweep = Sweep {
        ctx,
        workspace,
        factory,
        slurm,
        base: Base {
            id: plan.base,
            scorer: &scorer,
        },
        plan,
        report,
        path,
        key,
        done: 0,
        total,
    };
    let result = sweep.run()?;
    finish(&sweep, result, started, &ws_dir)
}

/// Drop rows whose variant is gone from the workspace (deleted since): they are made again.
fn forget_missing(report: &mut SweepReport, workspace: &Mutex<Workspace>) {
    let ws = lock(workspace);
    report.ssvd.retain(|r| ws.variant(r.variant).is_some());
    report.cp.retain(|r| ws.variant(r.variant).is_some());
}

/// This run's rows, advice and pick (the file keeps every row the sweep ever made).
struct Outcome {
    ssvd: Vec<SweepRow>,
    advice: Option<String>,
    cp: Vec<SweepRow>,
    pick: Option<crate::compress::sweep::SweepPick>,
}

impl Sweep<'_> {
    fn run(&mut self) -> Result<Outcome> {
        let ssvd = match self.plan.stage {
            SweepStage::Cp { ssvd } => {
                let ids = ssvd.clone();
                ids.iter()
                    .map(|id| self.picked_ssvd(*id))
                    .collect::<Result<Vec<_>>>()?
            }
            _ => self.step_one()?,
        };
        let drops: Vec<(f64, f64)> = ssvd.iter().map(|r| (r.requested, r.drop_points)).collect();
        let advice = advise(&drops, self.plan.max_drop).map(|a| a.text(self.plan.max_drop));
        let parents: Vec<SweepRow> = match self.plan.stage {
            SweepStage::Ssvd => {
                return Ok(Outcome {
                    ssvd,
                    advice,
                    cp: vec![],
                    pick: None,
                })
            }
            SweepStage::Cp { .. } => ssvd.clone(),
            SweepStage::Full => ssvd.iter().filter(|r| r.preselected).cloned().collect(),
        };
        if parents.is_empty() {
            let advice = stop_advice(&drops, self.plan.max_drop);
            self.ctx
                .log(format!("stopping before the CP step: {advice}"));
            return Ok(Outcome {
                ssvd,
                advice: Some(advice),
                cp: vec![],
                pick: None,
            });
        }
        let cp = self.step_two(&parents)?;
        let pick = pick(&cp, self.plan.target);
        Ok(Outcome {
            ssvd,
            advice,
            cp,
            pick,
        })
    }

    /// Step 1: one SSVD candidate per Cssvd.
    fn step_one(&mut self) -> Result<Vec<SweepRow>> {
        let specs: Vec<Spec> = (self.plan.cssvd.iter())
            .map(|&requested| Spec {
                parent: self.plan.base,
                method: Method::SpatialSvd,
                requested,
                parent_overall: 1.0,
            })
            .collect();
        self.rows(&specs, "ssvd", |row, plan| {
            preselected(row.drop_points, plan.max_drop)
        })
    }

    /// The rows of `specs`, each kept in the report as it is scored. Here each candidate is
    /// made and kept before the next (a cancel or failure stops the sweep there); through
    /// Slurm all are made at once, and one that failed does not stop the others: their rows
    /// are kept and the first error is returned after.
    fn rows(
        &mut self,
        specs: &[Spec],
        stage: &str,
        preselect: impl Fn(&SweepRow, &Plan) -> bool,
    ) -> Result<Vec<SweepRow>> {
        let mut on_slurm = match self.slurm {
            Some(slurm) => self.make_on_slurm(specs, slurm).into_iter(),
            None => Vec::new().into_iter(),
        };
        let mut rows = vec![];
        let mut first_error = None;
        for spec in specs {
            let id = match self.slurm {
                None => self.candidate(spec.parent, spec.method, spec.requested)?,
                Some(_) => match on_slurm.next() {
                    Some(Ok(id)) => id,
                    Some(Err(e)) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                    None => break,
                },
            };
            let mut row = candidate_row(
                self.workspace,
                &self.base,
                id,
                spec.requested,
                spec.parent_overall,
                self.ctx.cancel,
            )?;
            row.preselected = preselect(&row, &self.plan);
            self.keep(&row, stage)?;
            rows.push(row);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// The variants of `specs` made by Slurm jobs submitted at once (those an earlier run
    /// of this sweep made are reused), in the order of `specs`.
    fn make_on_slurm(&mut self, specs: &[Spec], slurm: &SlurmSettings) -> Vec<Result<u32>> {
        let mut out: Vec<Option<Result<u32>>> = specs
            .iter()
            .map(|s| (self.report.find(s.parent, s.method, s.requested)).map(|r| Ok(r.variant)))
            .collect();
        let jobs: Vec<(usize, JobKind, String)> = (specs.iter().enumerate())
            .filter(|(i, _)| out[*i].is_none())
            .map(|(i, s)| {
                let label = format!("candidate {} {}", s.method.short(), s.requested);
                (
                    i,
                    self.plan.compress(s.parent, s.method, s.requested),
                    label,
                )
            })
            .collect();
        let reused = specs.len() - jobs.len();
        if reused > 0 {
            self.ctx
                .log(format!("{reused} candidate(s) reused from an earlier run"));
        }
        let made = sweep_slurm::make_all(self.ctx, self.workspace, slurm, &jobs);
        for ((i, _, _), id) in jobs.iter().zip(made) {
            out[*i] = Some(id);
        }
        self.done += specs.len();
        out.into_iter().flatten().collect()
    }

    /// Step 2: CP candidates on each SSVD parent at C / Cssvd ± the neighbour step.
    fn step_two(&mut self, parents: &[SweepRow]) -> Result<Vec<SweepRow>> {
        let plans: Vec<(SweepRow, Vec<f64>)> = parents
            .iter()
            .map(|p| {
                let ccp = ccp_candidates(self.plan.target, p.mac_ratio, self.plan.neighbour);
                if ccp.is_empty() {
                    self.ctx.log(format!(
                        "note: v{} is already at MAC ratio {:.4} ≤ C: no CP step on it",
                        p.variant, p.mac_ratio
                    ));
                }
                (p.clone(), ccp)
            })
            .collect();
        self.total = self.done + plans.iter().map(|p| p.1.len()).sum::<usize>();
        let specs: Vec<Spec> = (plans.iter())
            .flat_map(|(parent, ccp)| {
                ccp.iter().map(|&requested| Spec {
                    parent: parent.variant,
                    method: Method::ChannelPruning,
                    requested,
                    parent_overall: parent.overall_mac_ratio,
                })
            })
            .collect();
        self.rows(&specs, "cp", |row, plan| {
            row.drop_points <= plan.max_drop && row.overall_mac_ratio <= plan.target + 0.01
        })
    }

    /// A picked SSVD variant for the CP step: a row of this sweep, or a child of the base
    /// made by spatial SVD.
    fn picked_ssvd(&mut self, id: u32) -> Result<SweepRow> {
        if let Some(r) = self.report.ssvd.iter().find(|r| r.variant == id) {
            let mut r = r.clone();
            r.preselected = preselected(r.drop_points, self.plan.max_drop);
            return Ok(r);
        }
        let (parent, record) = {
            let ws = lock(self.workspace);
            let (compressed, record) = compressed_ancestor(&ws, self.plan.base, id)?;
            (ws.variant(compressed).and_then(|v| v.parent), record)
        };
        let requested = match parent {
            Some(p) if p == self.plan.base && record.method == Method::SpatialSvd => {
                record.target.unwrap_or(record.mac_ratio)
            }
            _ => {
                return Err(Error::input(format!(
                    "sweep: variant {id} is not an SSVD candidate of variant {} (a spatial-SVD \
                     child of it, or a fine-tuned descendant of one)",
                    self.plan.base
                )))
            }
        };
        let mut row = candidate_row(
            self.workspace,
            &self.base,
            id,
            requested,
            1.0,
            self.ctx.cancel,
        )?;
        row.preselected = preselected(row.drop_points, self.plan.max_drop);
        Ok(row)
    }

    /// The candidate of `method` at `requested` from `parent`: reused from an earlier run
    /// of this sweep, or made now by the compress job's body.
    fn candidate(&mut self, parent: u32, method: Method, requested: f64) -> Result<u32> {
        self.ctx.cancel.check()?;
        self.done += 1;
        let label = format!(
            "candidate {}/{} {} {requested}",
            self.done,
            self.total.max(self.done),
            method.short()
        );
        self.ctx
            .progress(self.done - 1, self.total.max(self.done), &label);
        if let Some(r) = self.report.find(parent, method, requested) {
            self.ctx.log(format!("{label}: reusing v{}", r.variant));
            return Ok(r.variant);
        }
        let kind = self.plan.compress(parent, method, requested);
        let made = compress_one(&self.ctx.step(&kind, &label), self.workspace, self.factory)?;
        Ok(made.id)
    }

    /// Put the row in the report file and show it.
    fn keep(&mut self, row: &SweepRow, stage: &str) -> Result<()> {
        self.report.upsert(row.clone());
        save_report(&self.path, &self.key, &self.report)?;
        self.ctx.log(format!(
            "{stage} v{} ({} {}): MAC ratio {:.4}, overall {:.4}, drop {:.2} points{}",
            row.variant,
            row.method.short(),
            row.requested,
            row.mac_ratio,
            row.overall_mac_ratio,
            row.drop_points,
            if row.preselected {
                ", pre-selected"
            } else {
                ""
            }
        ));
        self.ctx.partial(super::event::Partial::SweepRow {
            sweep_row: Box::new(row.clone()),
            stage: stage.to_string(),
        });
        Ok(())
    }
}

/// Tag the pick, save the report, and build the job's result.
fn finish(
    sweep: &Sweep,
    outcome: Outcome,
    started: Instant,
    ws_dir: &Path,
) -> Result<SweepOutcome> {
    let mut file = sweep.report.clone();
    file.advice = outcome.advice.clone();
    file.pick = outcome.pick.clone();
    save_report(&sweep.path, &sweep.key, &file)?;
    let output = match &outcome.pick {
        Some(p) => {
            let mut ws = lock(sweep.workspace);
            ws.add_tag(p.variant, "picked")?;
            sweep
                .ctx
                .log(format!("pick: v{} — {}", p.variant, p.reason));
            ws.variant(p.variant).map(|v| ws.model_path(v))
        }
        None => None,
    };
    let report = SweepReport {
        ssvd: outcome.ssvd,
        cp: outcome.cp,
        advice: outcome.advice,
        pick: outcome.pick,
        ..file
    };
    Ok(SweepOutcome {
        variant: report.pick.as_ref().map(|p| p.variant),
        output: output.map(|p| p.display().to_string()),
        stage: sweep.plan.stage.name().to_string(),
        report_file: sweep.path.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
        workspace: ws_dir.display().to_string(),
        result: result_line(&report),
        samples_used: samples_used(sweep),
        report,
        slurm: None,
    })
}

/// Which samples selected, scored and refit the candidates (DESIGN.md §2: every result
/// says). The evaluation subset does both the greedy selection and the scores, so the pick's
/// score is not on unseen data: score it with `qsteer eval` on a held-out set.
fn samples_used(sweep: &Sweep) -> Value {
    let data = sweep.plan.data.display().to_string();
    let evaluation = json!({
        "subset": "evaluation",
        "dataset": data,
        "samples": sweep.base.scorer.data().len(),
    });
    json!({
        "train": Value::Null,
        "refit": if sweep.plan.reconstruct {
            json!({"subset": "calibration", "dataset": data,
                   "samples_requested": sweep.plan.calibration_size})
        } else {
            Value::Null
        },
        "selection": evaluation,
        "score": evaluation,
        "note": "the same samples select the ratios and the pick and score them; score the \
                 pick on held-out data (qsteer eval) and fine-tune it on a training set \
                 (qsteer finetune --train-data)",
    })
}

/// The job's one-line result for the log: candidates made and what comes next.
fn result_line(r: &SweepReport) -> String {
    let pre = r.ssvd.iter().filter(|row| row.preselected).count();
    let mut line = format!("{} SSVD candidates ({pre} pre-selected)", r.ssvd.len());
    if !r.cp.is_empty() {
        line.push_str(&format!(", {} CP candidates", r.cp.len()));
    }
    match (&r.pick, &r.advice) {
        (Some(p), _) => line.push_str(&format!("; pick v{}", p.variant)),
        (None, Some(a)) => line.push_str(&format!("; {a}")),
        (None, None) => {}
    }
    line
}
