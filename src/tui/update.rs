//! `update`: the only place state changes. An action goes in, the state changes, and the
//! side effects the shell must perform (start or cancel a job, reload the workspace) come
//! out as data, so this is tested without a terminal or a runtime.

use super::action::Action;
use super::compress_form;
use super::finetune_form;
use super::fix_form;
use super::form;
use super::keys;
use super::quantsim_form;
use super::state::{App, Decision, JobStatus, JobView, LayerSort, Pane, Popup, SUBSETS};
use super::sweep_decision;
use super::sweep_form;
use qsteer::experiment::evaluate::Subset;
use qsteer::jobs::{CompressionOutcome, JobOutcome, Partial};
use qsteer::jobs::{JobEvent, JobId, JobKind};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
// A few effects a key press makes, moved once: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Effect {
    Submit(JobKind),
    /// Queue a job on an executor (a dialog's "run on" field).
    SubmitOn(JobKind, qsteer::jobs::Executor),
    /// Store the Slurm settings in the workspace.
    SaveSlurm(qsteer::jobs::SlurmSettings),
    /// Store what a dialog launched with, for it to open with next time.
    RememberDialog {
        dialog: &'static str,
        values: serde_json::Value,
    },
    /// Measure the smallest MAC ratio a method reaches on a variant (the compress and
    /// sweep dialogs show it).
    ProbeReach(super::reach::ReachKey),
    /// Store the workspace's default metric (`None`: `auto`).
    SaveMetric(Option<qsteer::metrics::MetricSpec>),
    Cancel(JobId),
    /// Cancel every queued and running job (quitting with "cancel them").
    CancelAll,
    /// A job changed the workspace: re-read variants and results.
    ReloadWorkspace,
    /// A and B changed: recompute the comparison.
    RefreshCompare,
    /// Analyse a variant's model and show it in the graph and layer panes.
    LoadVariant(u32),
    /// Read a variant's stored quantization analysis (the layers pane's noise table).
    LoadAnalysis(u32),
    /// Read a variant's compression record and its cached dictionary (the layers pane's
    /// compression and heat tables).
    LoadCompression(u32),
    /// Rename, note, tag or delete a variant in the workspace.
    EditVariant(super::variant_edit::VariantEdit),
    /// Store the variant the app shows, for it to open on next time.
    SaveCurrent(u32),
    /// Store the A and B marks, for the next start.
    SaveMarks {
        a: Option<u32>,
        b: Option<u32>,
    },
    /// Give a variant a user tag and take it off others (the `picked` candidate of a
    /// sweep's last decision, over the rule's pick).
    TagVariant {
        id: u32,
        tag: String,
        untag: Vec<u32>,
    },
}

const PAGE: usize = 10;
const LOG_LINES_KEPT: usize = 500;

pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    let marks = (app.mark_a, app.mark_b);
    let mut effects = apply(app, action);
    effects.extend(view_to_save(app, marks, &effects));
    remember_status(app);
    effects.extend(super::reach::wanted(app));
    effects
}

/// What of the view a restart should find again: the marks when they changed, the
/// variant asked to be current.
fn view_to_save(app: &App, marks: (Option<u32>, Option<u32>), effects: &[Effect]) -> Vec<Effect> {
    let mut out: Vec<Effect> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::LoadVariant(id) => Some(Effect::SaveCurrent(*id)),
            _ => None,
        })
        .collect();
    if (app.mark_a, app.mark_b) != marks {
        out.push(Effect::SaveMarks {
            a: app.mark_a,
            b: app.mark_b,
        });
    }
    out
}

/// Messages kept for the messages view: enough for a long session, not unbounded.
const MESSAGES_KEPT: usize = 500;

/// Keep the status line's message, when it is new, for the messages view.
fn remember_status(app: &mut App) {
    if !app.status.is_empty() && app.messages.last() != Some(&app.status) {
        app.messages.push(app.status.clone());
        if app.messages.len() > MESSAGES_KEPT {
            app.messages.remove(0);
        }
    }
}

fn apply(app: &mut App, action: Action) -> Vec<Effect> {
    if let Action::Job(ev) = action {
        return job_event(app, ev);
    }
    // Data arriving from background reads applies whatever popup is open.
    let arrived = matches!(
        action,
        Action::Notice(_)
            | Action::Compression(..)
            | Action::Analysis(..)
            | Action::SlurmPartitions(_)
            | Action::Reach(..)
    );
    if let Some(top) = app.popups.last().cloned().filter(|_| !arrived) {
        return popup_action(app, top, action);
    }
    let pane = app.focus;
    let pi = pane.index();
    match action {
        Action::FocusNext => app.focus = Pane::ALL[(pi + 1) % Pane::ALL.len()],
        Action::FocusPrev => app.focus = Pane::ALL[(pi + Pane::ALL.len() - 1) % Pane::ALL.len()],
        Action::Focus(p) => {
            app.focus = p;
            if p == Pane::Compare {
                return vec![Effect::RefreshCompare];
            }
        }
        Action::Up => move_cursor(app, pane, -1),
        Action::Down => move_cursor(app, pane, 1),
        Action::PageUp => move_cursor(app, pane, -(PAGE as i64)),
        Action::PageDown => move_cursor(app, pane, PAGE as i64),
        Action::Top => app.cursor[pi] = 0,
        Action::Bottom => app.cursor[pi] = app.rows_in(pane).saturating_sub(1),
        Action::Confirm if pane == Pane::Variants => {
            if let Some(id) = app.selected_variant() {
                app.status = format!("loading variant {id}…");
                return vec![
                    Effect::LoadVariant(id),
                    Effect::LoadAnalysis(id),
                    Effect::LoadCompression(id),
                ];
            }
        }
        Action::Toggle if pane == Pane::Graph => {
            app.collapsed = !app.collapsed;
            app.cursor[pi] = app.cursor[pi].min(app.rows_in(pane).saturating_sub(1));
        }
        Action::Help => {
            app.popup_scroll = 0;
            app.popups.push(Popup::Help);
        }
        Action::Plot => app.popups.push(Popup::Scatter(super::scatter::XAxis::Macs)),
        Action::Messages => {
            // Opened at the end, where the newest message is.
            app.popup_scroll = usize::MAX;
            app.popups.push(Popup::Messages);
        }
        Action::OpenJob | Action::Confirm if pane == Pane::Jobs => {
            if let Some(id) = app.selected_job().map(|j| j.id) {
                // Opened at the end, where a job's latest lines and its error are.
                app.popup_scroll = usize::MAX;
                app.popups.push(Popup::Job(id));
            }
        }
        Action::Palette => app.popups.push(Popup::Palette {
            query: String::new(),
            cursor: 0,
        }),
        Action::Filter if pane == Pane::Layers => app.popups.push(Popup::Filter),
        Action::SortNext => {
            let i = LayerSort::ALL
                .iter()
                .position(|s| *s == app.layer_sort)
                .unwrap_or(0);
            app.layer_sort = LayerSort::ALL[(i + 1) % LayerSort::ALL.len()];
            app.status = format!("layers sorted by {}", app.layer_sort.label());
        }
        Action::SortReverse => app.layer_sort_desc = !app.layer_sort_desc,
        Action::ToggleNoise => {
            app.noise_view = !app.noise_view;
            app.status = match (app.noise_view, app.current_analysis().is_some()) {
                (true, true) => "layers: quant-noise table".into(),
                (true, false) => format!(
                    "variant {} has no analysis yet: run one from the quantsim dialog (s, then a)",
                    app.current
                ),
                (false, _) => "layers: costs table".into(),
            };
        }
        Action::ToggleHeat => {
            app.heat_view = !app.heat_view;
            app.status = match (app.heat_view, app.heat.is_some()) {
                (true, true) => "layers: compress eval-score heat table".into(),
                (true, false) => "no compress dictionary yet: run one with c".into(),
                (false, _) => "layers: costs table".into(),
            };
        }
        Action::Compression(id, record, grid) => {
            app.compression = record.map(|r| (id, *r));
            // A grid read from a record replaces another read one, never a live job's.
            match grid {
                Some(g) => app.heat = Some(g),
                None if app.heat.as_ref().is_some_and(|g| g.job.is_none()) => app.heat = None,
                None => {}
            }
        }
        Action::Notice(line) => app.status = line,
        Action::Reach(key, found) => app.reaches.set(key, found),
        Action::ExcludeLayer | Action::PinLayer(_) => choose_layer(app, &action),
        Action::KeepFp32 => toggle_keep_fp32(app),
        Action::Analysis(id, analysis) => {
            // Worst layers first the first time a noise table appears.
            if analysis.is_some() && app.layer_sort == LayerSort::Order && app.analysis.is_none() {
                app.layer_sort = LayerSort::Sqnr;
                app.layer_sort_desc = false;
            }
            app.analysis = analysis.map(|a| (id, *a));
        }
        Action::Export => super::export_prompt::open(app),
        Action::RenameVariant => super::variant_edit::open(app, super::variant_edit::Field::Name),
        Action::NoteVariant => super::variant_edit::open(app, super::variant_edit::Field::Note),
        Action::TagVariant => super::variant_edit::open(app, super::variant_edit::Field::Tag),
        Action::DeleteVariant => super::variant_edit::ask_delete(app),
        Action::MarkA | Action::MarkB => {
            if let Some(id) = app.selected_variant() {
                let a = action == Action::MarkA;
                if a {
                    app.mark_a = Some(id);
                } else {
                    app.mark_b = Some(id);
                }
                app.status = format!("variant {id} marked {}", if a { "A" } else { "B" });
                return vec![Effect::RefreshCompare];
            }
        }
        Action::SwapAB => {
            std::mem::swap(&mut app.mark_a, &mut app.mark_b);
            return vec![Effect::RefreshCompare];
        }
        Action::StepA(d) | Action::StepB(d) => {
            let tree: Vec<u32> = app.variant_tree().iter().map(|(_, v)| v.id).collect();
            let slot = if matches!(action, Action::StepA(_)) {
                &mut app.mark_a
            } else {
                &mut app.mark_b
            };
            let pos = slot
                .and_then(|id| tree.iter().position(|&t| t == id))
                .unwrap_or(0) as i64;
            let next = (pos + d as i64).clamp(0, tree.len().saturating_sub(1) as i64) as usize;
            *slot = tree.get(next).copied();
            return vec![Effect::RefreshCompare];
        }
        Action::Compare => {
            app.focus = Pane::Compare;
            if app.mark_a.is_none() || app.mark_b.is_none() {
                app.status = "mark two variants with a and b in the variants pane".into();
            }
            return vec![Effect::RefreshCompare];
        }
        Action::CancelJob => {
            if let Some(id) = app.selected_job().filter(|j| j.is_active()).map(|j| j.id) {
                app.status = format!("cancelling job {id}");
                return vec![Effect::Cancel(id)];
            }
        }
        Action::EvaluateDialog => open_evaluate_dialog(app),
        Action::QuantsimDialog => quantsim_form::open(app),
        Action::FixDialog => fix_form::open(app),
        Action::CompressDialog => compress_form::open(app),
        Action::SweepDialog => sweep_form::open(app),
        Action::SweepDecision => sweep_decision::reopen(app),
        Action::FineTuneDialog => finetune_form::open(app),
        Action::SlurmDialog => super::slurm_form::open(app),
        Action::SlurmPartitions(found) => match found {
            Ok(p) => app.slurm.partitions = p,
            Err(e) => app.status = slurm_unusable(&e),
        },
        Action::Quit => {
            if app.active_jobs() > 0 {
                app.popups.push(Popup::ConfirmQuit);
            } else {
                app.should_quit = true;
            }
        }
        _ => {}
    }
    vec![]
}

/// The one short line a failed `sinfo` at start-up leaves (Slurm's client installed but not
/// set up is common on workstations): sinfo's last, fatal line, not its whole report.
pub(super) fn slurm_unusable(error: &str) -> String {
    const KEPT: usize = 56;
    let last = error.lines().rev().map(str::trim).find(|l| !l.is_empty());
    let mut reason = last.unwrap_or("sinfo failed");
    for prefix in ["sinfo -h -o %P:", "sinfo:", "fatal:", "error:"] {
        reason = reason.strip_prefix(prefix).unwrap_or(reason).trim_start();
    }
    let reason: String = if reason.chars().count() > KEPT {
        reason.chars().take(KEPT - 1).chain(['…']).collect()
    } else {
        reason.to_string()
    };
    format!("Slurm unusable: {reason}")
}

/// `F`: keep the selected graph node or layer FP32 in the next quantsim, or quantize it again.
fn toggle_keep_fp32(app: &mut App) {
    let name = match app.focus {
        Pane::Graph => app
            .graph_rows()
            .get(app.cursor[Pane::Graph.index()])
            .map(|r| r.name.clone()),
        Pane::Layers => app
            .layer_order()
            .get(app.cursor[Pane::Layers.index()])
            .map(|&i| app.layers[i].name.clone()),
        _ => None,
    };
    let Some(name) = name else { return };
    let kept = if app.keep_fp32.remove(&name) {
        false
    } else {
        app.keep_fp32.insert(name.clone())
    };
    app.status = format!(
        "{name}: {} in the next quantsim · {} node(s) kept FP32",
        if kept { "kept FP32" } else { "quantized" },
        app.keep_fp32.len()
    );
}

/// Pin or exclude the layer under the cursor of the costs or noise table.
fn choose_layer(app: &mut App, action: &Action) {
    if app.shown_heat().is_some() || app.current_compression().is_some() {
        app.status = "pin or exclude layers in the costs table (h hides the heat table; \
                      the base variant's layers)"
            .into();
        return;
    }
    let Some(&i) = app.layer_order().get(app.cursor[Pane::Layers.index()]) else {
        return;
    };
    let name = app.layers[i].name.clone();
    match action {
        Action::ExcludeLayer => app.layer_choices.toggle_exclude(&name),
        Action::PinLayer(d) => app.layer_choices.step_pin(&name, *d),
        _ => return,
    }
    app.status = format!(
        "{name}: {} · compress: {}",
        app.layer_choices
            .marker(&name)
            .unwrap_or_else(|| "free".into()),
        app.layer_choices.summary()
    );
}

fn move_cursor(app: &mut App, pane: Pane, delta: i64) {
    let n = app.rows_in(pane);
    let c = &mut app.cursor[pane.index()];
    *c = (*c as i64 + delta).clamp(0, n.saturating_sub(1) as i64) as usize;
}

fn open_evaluate_dialog(app: &mut App) {
    if app.data_path.is_none() {
        app.status = "no dataset: restart with --data DIR to evaluate".into();
        return;
    }
    let picked = app.selected_variant().unwrap_or(app.current);
    let rows = app
        .variant_tree()
        .iter()
        .map(|(_, v)| (v.id, v.id == picked))
        .collect();
    let cursor = app
        .variant_tree()
        .iter()
        .position(|(_, v)| v.id == picked)
        .unwrap_or(0);
    app.popups.push(Popup::Decision(Decision {
        title: "Evaluate variants".into(),
        rows,
        cursor,
        subset: 0,
        batch_size: 1,
        threads: app.cores,
        metric: Decision::metrics(app)
            .iter()
            .position(|m| *m == app.metric)
            .unwrap_or(0),
        field: 0,
    }));
}

/// Lines a page key scrolls a scrolling popup by.
const SCROLL_PAGE: usize = 10;

/// Move a scrolling popup (help, a job's view) within the bound its last drawing set.
fn scroll(app: &mut App, action: &Action) {
    let max = app.popup_scroll_max.get();
    let at = app.popup_scroll.min(max);
    app.popup_scroll = match action {
        Action::Down => (at + 1).min(max),
        Action::Up => at.saturating_sub(1),
        Action::PageDown => (at + SCROLL_PAGE).min(max),
        Action::PageUp => at.saturating_sub(SCROLL_PAGE),
        Action::Top => 0,
        Action::Bottom => max,
        _ => app.popup_scroll,
    };
}

fn popup_action(app: &mut App, top: Popup, action: Action) -> Vec<Effect> {
    if action == Action::Close {
        app.popups.pop();
        return vec![];
    }
    // The plot opens over a sweep decision, to see its candidates among the variants.
    if action == Action::Plot && matches!(top, Popup::SweepDecision(_)) {
        app.popups.push(Popup::Scatter(super::scatter::XAxis::Macs));
        return vec![];
    }
    match top {
        Popup::Scatter(axis) => {
            match action {
                Action::FocusNext | Action::Toggle | Action::Right => {
                    app.popups.pop();
                    app.popups.push(Popup::Scatter(axis.next()));
                }
                Action::Plot | Action::Confirm | Action::Quit => {
                    app.popups.pop();
                }
                _ => {}
            }
            vec![]
        }
        Popup::Help | Popup::Job(_) | Popup::Messages => {
            let closes = match top {
                Popup::Help => Action::Help,
                Popup::Messages => Action::Messages,
                _ => Action::OpenJob,
            };
            if matches!(action, Action::Confirm | Action::Quit) || action == closes {
                app.popups.pop();
            } else {
                scroll(app, &action);
            }
            vec![]
        }
        Popup::ConfirmDelete(id) => super::variant_edit::confirm_delete(app, id, action),
        Popup::EditVariant(mut p) => {
            let effects = super::variant_edit::action(app, &mut p, action);
            if let Some(Popup::EditVariant(open)) = app.popups.last_mut() {
                *open = p;
            }
            effects
        }
        // Leave them running (the default), cancel them, or stay.
        Popup::ConfirmQuit => match action {
            Action::Char('y' | 'l') | Action::Confirm => {
                app.should_quit = true;
                vec![]
            }
            Action::Char('c') => {
                app.should_quit = true;
                vec![Effect::CancelAll]
            }
            _ => {
                app.popups.pop();
                vec![]
            }
        },
        Popup::Filter => {
            match action {
                Action::Char(c) => app.layer_filter.push(c),
                Action::Backspace => {
                    app.layer_filter.pop();
                }
                Action::Confirm => {
                    app.popups.pop();
                }
                _ => {}
            }
            app.cursor[Pane::Layers.index()] = 0;
            vec![]
        }
        Popup::Palette {
            mut query,
            mut cursor,
        } => {
            let matches = palette_matches(&query);
            match action {
                Action::Char(c) => {
                    query.push(c);
                    cursor = 0;
                }
                Action::Backspace => {
                    query.pop();
                    cursor = 0;
                }
                Action::Up => cursor = cursor.saturating_sub(1),
                Action::Down => cursor = (cursor + 1).min(matches.len().saturating_sub(1)),
                Action::Confirm => {
                    app.popups.pop();
                    return match matches.get(cursor) {
                        Some(b) => update(app, b.action.clone()),
                        None => vec![],
                    };
                }
                _ => {}
            }
            if let Some(Popup::Palette {
                query: q,
                cursor: c,
            }) = app.popups.last_mut()
            {
                *q = query;
                *c = cursor;
            }
            vec![]
        }
        Popup::Decision(mut d) => {
            let effects = decision_action(app, &mut d, action);
            if let Some(Popup::Decision(slot)) = app.popups.last_mut() {
                *slot = d;
            }
            effects
        }
        Popup::Quantsim(mut form) => {
            let effects = quantsim_form::action(app, &mut form, action);
            if let Some(Popup::Quantsim(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
        Popup::Compress(mut form) => {
            let effects = compress_form::action(app, &mut form, action);
            if let Some(Popup::Compress(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
        Popup::Sweep(mut form) => {
            let effects = sweep_form::action(app, &mut form, action);
            if let Some(Popup::Sweep(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
        Popup::SweepDecision(mut d) => {
            let effects = sweep_decision::action(app, &mut d, action);
            if let Some(Popup::SweepDecision(slot)) = app.popups.last_mut() {
                *slot = d;
            }
            effects
        }
        Popup::FineTune(mut form) => {
            let effects = finetune_form::action(app, &mut form, action);
            if let Some(Popup::FineTune(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
        Popup::Slurm(mut form) => {
            let effects = super::slurm_form::action(app, &mut form, action);
            if let Some(Popup::Slurm(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
        Popup::Export(mut p) => {
            let effects = super::export_prompt::action(app, &mut p, action);
            if let Some(Popup::Export(slot)) = app.popups.last_mut() {
                *slot = p;
            }
            effects
        }
        Popup::Fix(mut form) => {
            let effects = fix_form::action(app, &mut form, action);
            if let Some(Popup::Fix(slot)) = app.popups.last_mut() {
                *slot = form;
            }
            effects
        }
    }
}

/// Palette entries whose description or key contains the query.
pub fn palette_matches(query: &str) -> Vec<keys::Binding> {
    let q = query.to_lowercase();
    keys::palette_entries()
        .into_iter()
        .filter(|b| b.action != Action::Palette && b.action != Action::Close)
        .filter(|b| q.is_empty() || b.what.to_lowercase().contains(&q) || b.key.to_lowercase() == q)
        .collect()
}

const FIELDS: usize = 4;

fn decision_action(app: &mut App, d: &mut Decision, action: Action) -> Vec<Effect> {
    match action {
        Action::FocusNext => d.field = (d.field + 1) % (FIELDS + 1),
        Action::FocusPrev => d.field = (d.field + FIELDS) % (FIELDS + 1),
        Action::Up if d.field == 0 => d.cursor = d.cursor.saturating_sub(1),
        Action::Down if d.field == 0 => {
            d.cursor = (d.cursor + 1).min(d.rows.len().saturating_sub(1))
        }
        Action::Toggle | Action::Char(' ') if d.field == 0 => {
            if let Some(r) = d.rows.get_mut(d.cursor) {
                r.1 = !r.1;
            }
        }
        Action::Left | Action::Right | Action::Up | Action::Down => {
            let step: i64 = if matches!(action, Action::Left | Action::Down) {
                -1
            } else {
                1
            };
            match d.field {
                1 => d.subset = (d.subset as i64 + step).rem_euclid(SUBSETS.len() as i64) as usize,
                2 => d.batch_size = form::step(d.batch_size, step, 1, 256),
                3 => d.threads = form::step(d.threads, step, 1, 256),
                4 => {
                    let n = Decision::metrics(app).len() as i64;
                    d.metric = (d.metric as i64 + step).rem_euclid(n) as usize;
                }
                _ => {}
            }
        }
        Action::Char(c) if c.is_ascii_digit() && (2..=3).contains(&d.field) => {
            let slot = if d.field == 2 {
                &mut d.batch_size
            } else {
                &mut d.threads
            };
            *slot = form::type_digit(*slot, c, 256, false).max(1);
        }
        Action::Backspace if (2..=3).contains(&d.field) => {
            let slot = if d.field == 2 {
                &mut d.batch_size
            } else {
                &mut d.threads
            };
            *slot = form::erase_digit(*slot).max(1);
        }
        Action::Confirm => {
            let picked: Vec<u32> = d.rows.iter().filter(|r| r.1).map(|r| r.0).collect();
            if picked.is_empty() {
                app.status = "pick at least one variant (Space)".into();
                return vec![];
            }
            let Some(data) = app.data_path.clone() else {
                return vec![];
            };
            app.popups.pop();
            app.status = format!("{} evaluation job(s) queued", picked.len());
            let subset = [Subset::Evaluation, Subset::Calibration, Subset::All][d.subset];
            let metric = Decision::metrics(app)
                .get(d.metric)
                .cloned()
                .unwrap_or_default();
            let mut effects = Vec::new();
            if metric != app.metric {
                // The choice becomes the workspace's default: every later job scores by it.
                app.metric = metric.clone();
                effects.push(Effect::SaveMetric(
                    (metric != Default::default()).then(|| metric.clone()),
                ));
            }
            effects.extend(picked.into_iter().map(|variant| {
                Effect::Submit(JobKind::Evaluate {
                    variant,
                    data: data.clone(),
                    subset,
                    batch_size: d.batch_size,
                    threads: d.threads,
                    calibration_size: 200,
                    seed: 0,
                    reference: None,
                    reference_model: None,
                    save_outputs: None,
                    metric: Some(metric.clone()),
                })
            }));
            return effects;
        }
        _ => {}
    }
    vec![]
}

/// A job's result as one readable line for its log: the top-level numbers, words and flags
/// as `name value` (`accuracy 0.99 · samples 400`), numbers rounded; nested parts (tables,
/// reports) are left to the panes that show them.
fn readable(summary: &serde_json::Value) -> String {
    use serde_json::Value;
    let Value::Object(fields) = summary else {
        return summary.to_string();
    };
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(name, v)| {
            let text = match v {
                Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => u.to_string(),
                    (_, Some(i), _) => i.to_string(),
                    (_, _, Some(f)) => format!("{f:.4}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string(),
                    _ => return None,
                },
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some(format!("{} {text}", name.replace('_', " ")))
        })
        .collect();
    if parts.is_empty() {
        "done".into()
    } else {
        parts.join(" · ")
    }
}

fn job_mut(app: &mut App, id: JobId) -> Option<&mut JobView> {
    app.jobs.iter_mut().find(|j| j.id == id)
}

fn job_event(app: &mut App, ev: JobEvent) -> Vec<Effect> {
    match ev {
        JobEvent::Queued { id, kind } => {
            if job_mut(app, id).is_none() {
                app.jobs.push(JobView {
                    id,
                    label: kind.label(),
                    status: JobStatus::Queued,
                    done: 0,
                    total: 0,
                    what: String::new(),
                    started: None,
                    elapsed: None,
                    log: vec![],
                    kind: Some(kind.clone()),
                    curve: None,
                    slurm: Default::default(),
                });
                app.cursor[Pane::Jobs.index()] = app.jobs.len() - 1;
                sweep_decision::job_queued(app, id, &kind);
            }
        }
        JobEvent::Started { id } => {
            if let Some(j) = job_mut(app, id) {
                j.status = JobStatus::Running;
                j.started = Some(Instant::now());
            }
        }
        JobEvent::Progress {
            id,
            done,
            total,
            what,
        } => {
            if let Some(j) = job_mut(app, id) {
                j.done = done;
                j.total = total;
                j.what = what;
            }
        }
        JobEvent::Log { id, line } => {
            if let Some(j) = job_mut(app, id) {
                j.log.push(line);
                if j.log.len() > LOG_LINES_KEPT {
                    j.log.remove(0);
                }
            }
        }
        JobEvent::Partial { id, result } => match &result {
            Partial::Slurm { slurm } => {
                if let Some(j) = job_mut(app, id) {
                    j.slurm.take(slurm);
                }
            }
            Partial::TrainStep { .. } | Partial::TrainEpoch { .. } => {
                if let Some(j) = job_mut(app, id) {
                    j.curve.get_or_insert_with(Default::default).take(&result);
                }
            }
            // A compress job's dictionary: the plan starts a grid (shown at once), entries
            // fill it.
            Partial::DictionaryPlan { dictionary } => {
                app.heat = Some(super::heat::HeatGrid::from_plan(id, dictionary));
                app.heat_view = true;
            }
            Partial::DictionaryEntry {
                dictionary_entry, ..
            } => {
                if let Some(g) = app.heat.as_mut().filter(|g| g.job == Some(id)) {
                    g.fill(dictionary_entry);
                }
            }
            // The sweep's rows are in its report, which the app reads at the end.
            Partial::SweepRow { .. } => {}
        },
        JobEvent::Finished { id, summary } => {
            if let Some(g) = app.heat.as_mut().filter(|g| g.job == Some(id)) {
                // The grid follows a compress job: its summary is a compress outcome.
                if let Ok(o) = serde_json::from_value::<CompressionOutcome>(summary.clone()) {
                    g.choose(&o.ratios);
                }
            }
            if let Some(j) = job_mut(app, id) {
                j.status = JobStatus::Finished;
                j.elapsed = Some(j.seconds());
                j.done = j.total;
                // A job that states its result in a line (quantsim) is shown by it.
                // Read by the job's kind; a summary that does not parse still shows.
                let outcome = (j.kind.as_ref())
                    .and_then(|k| JobOutcome::from_summary(k, summary.clone()).ok())
                    .unwrap_or_else(|| JobOutcome::Untyped(summary.clone()));
                match outcome.result_line() {
                    Some(result) => {
                        j.log.push(format!("finished: {result}"));
                        app.status = format!("job {id} finished: {result}");
                    }
                    None => {
                        j.log.push(format!("finished: {}", readable(&summary)));
                        app.status = format!("job {id} finished");
                    }
                }
            }
            // A sweep stage ends at a decision point (after the status line, which it sets).
            let decision = job_mut(app, id)
                .and_then(|j| j.kind.as_ref())
                .and_then(|k| sweep_decision::SweepDecision::from_result(k, &summary));
            if let Some(d) = decision {
                sweep_decision::offer(app, d);
            }
            sweep_decision::job_ended(app, id, Some(&summary));
            return vec![
                Effect::ReloadWorkspace,
                Effect::RefreshCompare,
                Effect::LoadAnalysis(app.current),
                Effect::LoadCompression(app.current),
            ];
        }
        JobEvent::Failed { id, error } => {
            if let Some(j) = job_mut(app, id) {
                j.elapsed = Some(j.seconds());
                j.log.push(format!("failed: {error}"));
                j.status = JobStatus::Failed(error);
                app.status = format!("job {id} failed");
            }
            sweep_decision::job_ended(app, id, None);
        }
        JobEvent::Cancelled { id } => {
            if let Some(j) = job_mut(app, id) {
                j.elapsed = Some(j.seconds());
                j.status = JobStatus::Cancelled;
                j.log.push("cancelled".into());
            }
            sweep_decision::job_ended(app, id, None);
        }
    }
    vec![]
}
