//! The terminal app: a thin client of the engine. The UI task only renders state and
//! forwards input; jobs run on the engine's job runner and report back by channel.
//! Frames are drawn at a bounded rate, and only when something changed.

pub mod action;
mod compare;
mod compress_form;
mod dialog_memory;
mod export_prompt;
mod finetune_form;
mod finetune_popup;
mod fix_form;
mod form;
mod graph_rows;
mod heat;
pub mod init;
mod job_view;
mod keys;
mod layer_choice;
mod panes;
mod popups;
mod quant_marks;
mod quantsim_form;
mod reach;
mod run_on;
mod scatter;
mod scatter_view;
mod slurm_form;
mod slurm_view;
pub mod state;
mod sweep_decision;
mod sweep_form;
mod sweep_popup;
pub mod theme;
mod train_curve;
pub mod ui;
pub mod update;
mod variant_edit;

#[cfg(test)]
mod compress_tests;
#[cfg(test)]
mod dialog_memory_tests;
#[cfg(test)]
mod finetune_tests;
#[cfg(test)]
mod fix_tests;
#[cfg(test)]
mod heat_tests;
#[cfg(test)]
mod noise_tests;
#[cfg(test)]
mod quantsim_tests;
#[cfg(test)]
mod reach_tests;
#[cfg(test)]
mod scatter_tests;
#[cfg(test)]
mod slurm_tests;
#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod variant_edit_tests;
#[cfg(test)]
mod view_marks_tests;

use action::Action;
use crossterm::event::{Event, EventStream, KeyEventKind, MouseEventKind};
use futures::StreamExt;
use qsteer::jobs::{JobEvent, JobRunner, LocalJobs};
use qsteer::{Error, Result};
use state::{App, Pane, Popup};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use update::{update, Effect};

pub use theme::Theme;

/// Frame budget: at most this many draws per second.
const FPS: u64 = 30;
/// How long quitting with "cancel them" waits for the jobs to record their end.
const CANCEL_WAIT: Duration = Duration::from_secs(15);

pub struct AppOptions {
    pub model: PathBuf,
    pub data: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    pub theme: Option<String>,
    /// Heavy jobs allowed at once.
    pub max_jobs: usize,
    /// Per-sample input shapes (`--input-shape`) for a model that leaves sizes open.
    pub input_shapes: Option<Vec<Vec<usize>>>,
    /// Fixed input values (`--input-value`) an `If` of the model branches on.
    pub input_values: qsteer::model::specialise::InputValues,
}

pub fn run(opts: AppOptions) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Error::input(
            "the app needs a terminal; for scripts use a subcommand (qsteer --help)",
        ));
    }
    let theme = Theme::choose(opts.theme.as_deref())?;
    let opened = init::open_at(
        &opts.model,
        opts.data.clone(),
        opts.workspace.clone(),
        theme,
        opts.input_shapes.clone(),
        &opts.input_values,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
    let mut terminal = ratatui::init();
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    let result = rt.block_on(event_loop(&mut terminal, opened, opts.max_jobs));
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
    result
}

/// Translate a terminal event into an action for the current state.
fn to_action(app: &App, ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            use crossterm::event::KeyCode as K;
            // Text fields take printable keys before the key table does.
            let typing = app.popups.last().is_some_and(Popup::takes_text);
            let in_dialog = app.popups.last().is_some_and(Popup::is_dialog);
            let in_quantsim = matches!(app.popups.last(), Some(Popup::Quantsim(_)));
            match k.code {
                K::Esc => Some(Action::Close),
                K::Enter => Some(Action::Confirm),
                K::Backspace => Some(Action::Backspace),
                K::Left if in_dialog => Some(Action::Left),
                K::Right if in_dialog => Some(Action::Right),
                K::Char(c) if typing => Some(Action::Char(c)),
                K::Char(' ') if in_dialog => Some(Action::Toggle),
                K::Char(c) if in_dialog && c.is_ascii_digit() => Some(Action::Char(c)),
                // The quantsim dialog's "diagnosis set" key.
                K::Char('d') if in_quantsim => Some(Action::Char('d')),
                // …and its analyze keys (A: with the sensitivity sweep).
                K::Char(c @ ('a' | 'A')) if in_quantsim => Some(Action::Char(c)),
                K::Char(c @ ('y' | 'n' | 'l' | 'c' | 's'))
                    if matches!(
                        app.popups.last(),
                        Some(Popup::ConfirmQuit | Popup::ConfirmDelete(_))
                    ) =>
                {
                    Some(Action::Char(c))
                }
                _ => keys::lookup(app.focus, &k),
            }
        }
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollDown => Some(Action::Down),
            MouseEventKind::ScrollUp => Some(Action::Up),
            _ => None,
        },
        Event::Resize(_, _) => Some(Action::Resize),
        _ => None,
    }
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    opened: init::Opened,
    max_jobs: usize,
) -> Result<()> {
    let mut app = opened.app;
    let workspace = Arc::new(Mutex::new(opened.workspace));
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<JobEvent>();
    let runner = JobRunner::new(
        tokio::runtime::Handle::current(),
        workspace.clone(),
        max_jobs,
        job_tx,
    )?;
    // Local jobs run as detached `qsteer run-job` processes: they outlive the app (`q`,
    // a hangup over SSH), and a restarted app follows them again.
    runner.set_local_jobs(LocalJobs::Detached);
    let reattached = runner.reattach_detached();
    if !reattached.is_empty() {
        let ids: Vec<String> = reattached
            .iter()
            .map(|r| format!("#{} {}", r.id, r.kind.label()))
            .collect();
        let mut status = format!(
            "following again the job(s) still running since the app last stopped: {}",
            ids.join(", ")
        );
        let lost: Vec<String> = (runner.interrupted().iter())
            .map(|r| format!("#{}", r.id))
            .collect();
        if !lost.is_empty() {
            status.push_str(&format!("; interrupted: {}", lost.join(", ")));
        }
        app.status = status;
    }
    let (compare_tx, mut compare_rx) = mpsc::unbounded_channel::<compare::CompareData>();
    let (view_tx, mut view_rx) = mpsc::unbounded_channel::<Result<init::ModelView>>();
    let (analysis_tx, mut analysis_rx) = mpsc::unbounded_channel();
    let (actions_tx, mut actions_rx) = mpsc::unbounded_channel();
    let senders = Senders {
        actions: actions_tx,
        compare: compare_tx,
        analysis: analysis_tx,
        view: view_tx,
    };
    // Slurm: offered when its client is here; the partitions come from sinfo off the UI
    // thread (a slow or unreachable slurmctld must not hold the app up).
    app.slurm.available = qsteer::jobs::slurm_client_installed();
    if app.slurm.available {
        // Slurm jobs a previous run sent and did not see end: follow them to their end.
        let unfinished = match workspace.lock() {
            Ok(ws) => qsteer::jobs::unfinished_slurm_jobs(&ws),
            Err(_) => vec![],
        };
        if !unfinished.is_empty() {
            app.status = format!(
                "following {} Slurm job(s) sent before the restart (jobs pane)",
                unfinished.len()
            );
        }
        for kind in unfinished {
            runner.submit(kind);
        }
        let tx = senders.actions.clone();
        tokio::task::spawn_blocking(move || {
            let found = qsteer::jobs::slurm_partitions().map_err(|e| e.to_string());
            let _ = tx.send(Action::SlurmPartitions(found));
        });
    }
    // The variant the app showed when it last stopped (its A/B marks are already set).
    if let Some(id) = opened.resume {
        apply(
            &mut app,
            vec![
                Effect::LoadVariant(id),
                Effect::LoadAnalysis(id),
                Effect::LoadCompression(id),
                Effect::RefreshCompare,
            ],
            &runner,
            &workspace,
            &senders,
        );
    }
    let mut input = EventStream::new();
    let mut frame = tokio::time::interval(Duration::from_millis(1000 / FPS));
    frame.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    loop {
        tokio::select! {
            ev = input.next() => {
                let Some(ev) = ev else { break };
                let ev = ev.map_err(|e| Error::runtime(format!("terminal input: {e}")))?;
                if let Some(a) = to_action(&app, ev) {
                    let effects = update(&mut app, a);
                    apply(&mut app, effects, &runner, &workspace, &senders);
                    // Answer a key at once rather than at the next frame tick.
                    terminal
                        .draw(|f| ui::draw(f, &app))
                        .map_err(|e| Error::runtime(format!("drawing: {e}")))?;
                    dirty = false;
                }
            }
            Some(ev) = job_rx.recv() => {
                let effects = update(&mut app, Action::Job(ev));
                apply(&mut app, effects, &runner, &workspace, &senders);
                dirty = true;
            }
            Some((id, analysis)) = analysis_rx.recv() => {
                let analysis = match analysis {
                    Ok(a) => a,
                    Err(e) => {
                        app.status = format!("analysis not loaded: {e}");
                        None
                    }
                };
                update(&mut app, Action::Analysis(id, analysis.map(Box::new)));
                dirty = true;
            }
            Some(action) = actions_rx.recv() => {
                update(&mut app, action);
                dirty = true;
            }
            Some(data) = compare_rx.recv() => {
                app.compare = Some(data);
                dirty = true;
            }
            Some(view) = view_rx.recv() => {
                match view {
                    Ok(v) => {
                        app.status = format!("variant {} is now current", v.variant);
                        app.set_model_view(v);
                    }
                    Err(e) => app.status = format!("cannot load the variant: {e}"),
                }
                dirty = true;
            }
            _ = frame.tick() => {
                // Running jobs change their clocks and ETAs every second.
                if dirty || app.active_jobs() > 0 {
                    terminal
                        .draw(|f| ui::draw(f, &app))
                        .map_err(|e| Error::runtime(format!("drawing: {e}")))?;
                    dirty = false;
                }
            }
        }
        if app.should_quit {
            break;
        }
    }
    // Quitting with "cancel them": give the jobs a moment to stop and record it (a
    // detached job writes its own end; its follower here journals it).
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    while runner.cancelling() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Where background computations for the UI send their results.
struct Senders {
    /// Actions made off the UI thread (a compression record read, a tag written).
    actions: mpsc::UnboundedSender<Action>,
    compare: mpsc::UnboundedSender<compare::CompareData>,
    analysis: mpsc::UnboundedSender<(u32, Result<Option<qsteer::quant::analysis::Analysis>>)>,
    view: mpsc::UnboundedSender<Result<init::ModelView>>,
}

/// After a delete: marks on a variant that is gone are dropped (the workspace dropped its
/// stored ones) and the cursor stays in the tree.
fn after_delete(app: &mut App) {
    let known = |id: Option<u32>, app: &App| id.filter(|&i| app.variant(i).is_some());
    app.mark_a = known(app.mark_a, app);
    app.mark_b = known(app.mark_b, app);
    let rows = app.variant_tree().len();
    let c = &mut app.cursor[Pane::Variants.index()];
    *c = (*c).min(rows.saturating_sub(1));
}

/// Write to the workspace on a blocking thread; a failure is a notice naming `what`.
fn save_off_thread(
    workspace: &Arc<Mutex<qsteer::experiment::Workspace>>,
    tx: &mpsc::UnboundedSender<Action>,
    what: &'static str,
    save: impl FnOnce(&mut qsteer::experiment::Workspace) -> Result<()> + Send + 'static,
) {
    let ws = workspace.clone();
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(mut w) = ws.lock() else { return };
        if let Err(e) = save(&mut w) {
            let _ = tx.send(Action::Notice(format!("{what} not saved: {e}")));
        }
    });
}

/// Read from a copy of the workspace index on a blocking thread, so a job recording a
/// result never waits on the read, and send what `read` makes.
fn read_off_thread<T: Send + 'static>(
    workspace: &Arc<Mutex<qsteer::experiment::Workspace>>,
    tx: &mpsc::UnboundedSender<T>,
    read: impl FnOnce(&qsteer::experiment::Workspace) -> T + Send + 'static,
) {
    let ws = workspace.clone();
    let tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let snapshot = match ws.lock() {
            Ok(w) => w.clone(),
            Err(_) => return,
        };
        let _ = tx.send(read(&snapshot));
    });
}

fn apply(
    app: &mut App,
    effects: Vec<Effect>,
    runner: &JobRunner,
    workspace: &Arc<Mutex<qsteer::experiment::Workspace>>,
    senders: &Senders,
) {
    for e in effects {
        match e {
            Effect::Submit(kind) => {
                runner.submit(kind);
            }
            Effect::SubmitOn(kind, executor) => {
                runner.submit_on(kind, executor);
            }
            Effect::SaveSlurm(settings) => {
                let ws = workspace.clone();
                let tx = senders.actions.clone();
                tokio::task::spawn_blocking(move || {
                    let Ok(mut w) = ws.lock() else { return };
                    if let Err(e) = w.set_slurm(settings) {
                        let _ = tx.send(Action::Notice(format!("Slurm settings not saved: {e}")));
                    }
                });
            }
            Effect::EditVariant(edit) => {
                // One small index write (and a delete's few files): done here, so the tree
                // shows the change with the key's redraw.
                let Ok(mut ws) = workspace.lock() else {
                    continue;
                };
                app.status = match variant_edit::perform(&mut ws, &edit) {
                    Ok(done) => done,
                    Err(e) => format!("not done: {e}"),
                };
                app.variants = ws.variants().to_vec();
                let deleted = matches!(edit, variant_edit::VariantEdit::Delete(_));
                if deleted {
                    drop(ws);
                    after_delete(app);
                    if app.variant(app.current).is_none() {
                        let base = vec![
                            Effect::LoadVariant(0),
                            Effect::LoadAnalysis(0),
                            Effect::LoadCompression(0),
                        ];
                        apply(app, base, runner, workspace, senders);
                    }
                }
            }
            Effect::SaveCurrent(id) => {
                save_off_thread(workspace, &senders.actions, "current variant", move |w| {
                    w.set_current(id)
                })
            }
            Effect::SaveMarks { a, b } => {
                save_off_thread(workspace, &senders.actions, "A/B marks", move |w| {
                    w.set_marks(a, b)
                })
            }
            Effect::RememberDialog { dialog, values } => {
                let ws = workspace.clone();
                let tx = senders.actions.clone();
                tokio::task::spawn_blocking(move || {
                    let Ok(mut w) = ws.lock() else { return };
                    if let Err(e) = w.set_dialog(dialog, values) {
                        let _ = tx.send(Action::Notice(format!(
                            "the {dialog} dialog's values not saved: {e}"
                        )));
                    }
                });
            }
            Effect::ProbeReach(key) => {
                let (data, pinned) = (app.data_path.clone(), app.pinned.clone());
                let Some(data) = data else { continue };
                read_off_thread(workspace, &senders.actions, move |w| {
                    let found = reach::measure(w, key, data, pinned).map_err(|e| e.to_string());
                    Action::Reach(key, found)
                })
            }
            Effect::SaveMetric(metric) => {
                let ws = workspace.clone();
                let tx = senders.actions.clone();
                tokio::task::spawn_blocking(move || {
                    let Ok(mut w) = ws.lock() else { return };
                    if let Err(e) = w.set_metric(metric) {
                        let _ = tx.send(Action::Notice(format!("metric not saved: {e}")));
                    }
                });
            }
            Effect::Cancel(id) => {
                runner.cancel(id);
            }
            Effect::CancelAll => runner.cancel_all(),
            Effect::ReloadWorkspace => {
                if let Ok(ws) = workspace.lock() {
                    app.variants = ws.variants().to_vec();
                    app.trainer_command = ws.settings().trainer.clone();
                    app.train_data = ws.settings().train_data.clone();
                    app.metric = ws.settings().metric.clone().unwrap_or_default();
                }
                sweep_decision::follow_trained(app);
            }
            Effect::LoadVariant(id) => {
                let path = workspace
                    .lock()
                    .ok()
                    .and_then(|w| w.variant(id).map(|v| w.model_path(v)));
                let Some(path) = path else { continue };
                let pinned = app.pinned.clone();
                let tx = senders.view.clone();
                tokio::task::spawn_blocking(move || {
                    let view = qsteer::model::Model::load(&path)
                        .and_then(|m| init::model_view(id, &m, pinned.as_deref()));
                    let _ = tx.send(view);
                });
            }
            Effect::LoadCompression(id) => {
                read_off_thread(workspace, &senders.actions, move |w| {
                    // A damaged record reads as none here; the file stays for a look.
                    heat::load(w, id).unwrap_or(Action::Compression(id, None, None))
                })
            }
            Effect::LoadAnalysis(id) => {
                read_off_thread(workspace, &senders.analysis, move |w| (id, w.analysis(id)))
            }
            Effect::TagVariant { id, tag, untag } => {
                let ws = workspace.clone();
                let tx = senders.actions.clone();
                tokio::task::spawn_blocking(move || {
                    let written = match ws.lock() {
                        Ok(mut w) => untag
                            .iter()
                            .filter(|&&other| other != id)
                            .try_for_each(|&other| w.remove_tag(other, &tag))
                            .and_then(|_| w.add_tag(id, &tag)),
                        Err(_) => return,
                    };
                    let notice = match written {
                        Ok(()) => format!("variant {id} tagged {tag}"),
                        Err(e) => format!("variant {id} not tagged {tag}: {e}"),
                    };
                    let _ = tx.send(Action::Notice(notice));
                });
            }
            Effect::RefreshCompare => {
                if let (Some(a), Some(b)) = (app.mark_a, app.mark_b) {
                    if app.focus == Pane::Compare || app.compare.is_some() {
                        let ws = workspace.clone();
                        let tx = senders.compare.clone();
                        tokio::task::spawn_blocking(move || {
                            // Work on a copy so a job recording a result never waits on us.
                            let snapshot = match ws.lock() {
                                Ok(w) => w.clone(),
                                Err(_) => return,
                            };
                            let data = compare::compute(&snapshot, a, b);
                            let _ = tx.send(data);
                        });
                    }
                }
            }
        }
    }
}
