//! `update` on its own (action in, state out) and snapshots of every pane and popup at
//! 80×24 and 160×48, rendered with ratatui's `TestBackend`.

use super::action::Action;
use super::init;
use super::state::{App, JobStatus, Pane, Popup};
use super::theme::Theme;
use super::ui;
use super::update::{update, Effect};
use qsteer::jobs::{JobEvent, JobId, JobKind};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::PathBuf;

pub(super) fn sample_app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opened = init::open(
        &PathBuf::from("sample-models/mbv2_digits.onnx"),
        Some(PathBuf::from("sample-models/digits")),
        Some(dir.path().join("ws")),
        Theme::load("mono").unwrap(),
    )
    .unwrap();
    let mut app = opened.app;
    app.cores = 2; // snapshots must not depend on the machine
    (app, dir)
}

pub(super) fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn eval_kind(variant: u32) -> JobKind {
    JobKind::evaluate(variant, PathBuf::from("sample-models/digits"))
}

/// A finished and a running job, so the jobs pane has something to show.
fn with_jobs(app: &mut App) {
    update(
        app,
        Action::Job(JobEvent::Queued {
            id: JobId(1),
            kind: eval_kind(0),
        }),
    );
    update(app, Action::Job(JobEvent::Started { id: JobId(1) }));
    update(
        app,
        Action::Job(JobEvent::Log {
            id: JobId(1),
            line: "evaluating variant 0".into(),
        }),
    );
    update(
        app,
        Action::Job(JobEvent::Finished {
            id: JobId(1),
            summary: serde_json::json!({"accuracy": 0.99}),
        }),
    );
    update(
        app,
        Action::Job(JobEvent::Queued {
            id: JobId(2),
            kind: eval_kind(0),
        }),
    );
    update(app, Action::Job(JobEvent::Started { id: JobId(2) }));
    update(
        app,
        Action::Job(JobEvent::Progress {
            id: JobId(2),
            done: 100,
            total: 400,
            what: "samples".into(),
        }),
    );
    // Fixed clocks keep the snapshots stable.
    for j in &mut app.jobs {
        j.started = None;
        j.elapsed = Some(1.0);
    }
}

#[test]
fn tab_cycles_panes_and_number_keys_jump() {
    let (mut app, _d) = sample_app();
    assert_eq!(app.focus, Pane::Layers);
    update(&mut app, Action::FocusNext);
    assert_eq!(app.focus, Pane::Variants);
    update(&mut app, Action::FocusPrev);
    update(&mut app, Action::FocusPrev);
    assert_eq!(app.focus, Pane::Graph);
    update(&mut app, Action::Focus(Pane::Jobs));
    assert_eq!(app.focus, Pane::Jobs);
}

#[test]
fn cursor_stays_in_bounds() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::Up);
    assert_eq!(app.cursor[Pane::Layers.index()], 0);
    update(&mut app, Action::Bottom);
    assert_eq!(app.cursor[Pane::Layers.index()], app.layers.len() - 1);
    update(&mut app, Action::PageDown);
    assert_eq!(app.cursor[Pane::Layers.index()], app.layers.len() - 1);
}

#[test]
fn sorting_and_filtering_layers() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::SortNext); // name
    update(&mut app, Action::SortNext); // op
    update(&mut app, Action::SortNext); // kernel
    update(&mut app, Action::SortNext); // channels
    let order = app.layer_order();
    let outs: Vec<usize> = order.iter().map(|&i| app.layers[i].out_channels).collect();
    assert!(outs.windows(2).all(|w| w[0] <= w[1]), "{outs:?}");
    update(&mut app, Action::SortNext); // params
    update(&mut app, Action::SortNext); // MACs
    update(&mut app, Action::SortReverse);
    let order = app.layer_order();
    let macs: Vec<u64> = order.iter().map(|&i| app.layers[i].macs.unwrap()).collect();
    assert!(macs.windows(2).all(|w| w[0] >= w[1]), "{macs:?}");
    update(&mut app, Action::Filter);
    for c in "dw".chars() {
        update(&mut app, Action::Char(c));
    }
    update(&mut app, Action::Confirm);
    assert!(app.popups.is_empty());
    assert_eq!(app.layer_order().len(), 5);
}

#[test]
fn evaluate_dialog_submits_one_job_per_picked_variant() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::EvaluateDialog);
    assert!(matches!(app.popups.last(), Some(Popup::Decision(_))));
    update(&mut app, Action::FocusNext); // to the "samples" field
    update(&mut app, Action::Right); // calibration
    update(&mut app, Action::FocusNext); // batch size
    update(&mut app, Action::Char('4'));
    let effects = update(&mut app, Action::Confirm);
    assert_eq!(effects.len(), 1);
    match &effects[0] {
        Effect::Submit(JobKind::Evaluate {
            variant,
            batch_size,
            subset,
            ..
        }) => {
            assert_eq!(*variant, 0);
            assert_eq!(*batch_size, 14);
            assert_eq!(*subset, qsteer::experiment::evaluate::Subset::Calibration);
        }
        other => panic!("{other:?}"),
    }
    assert!(app.popups.is_empty());
    assert_eq!(app.focus, Pane::Layers, "the focus stays where it was");
}

/// The dialog's metric field: a changed metric is saved as the workspace's default and
/// the evaluations score by it; the variants pane names a metric that is not accuracy.
#[test]
fn the_evaluate_dialog_chooses_the_metric_and_scores_name_it() {
    use qsteer::metrics::{MetricChoice, MetricSpec, Score};
    let (mut app, _d) = sample_app();
    update(&mut app, Action::EvaluateDialog);
    for _ in 0..4 {
        update(&mut app, Action::FocusNext); // samples, batch size, threads, metric
    }
    update(&mut app, Action::Right); // auto → top1
    update(&mut app, Action::Right); // → per_position
    let rendered = render(&app, 80, 24);
    assert!(rendered.contains("per_position"), "{rendered}");
    let effects = update(&mut app, Action::Confirm);
    let per_position = MetricSpec {
        choice: MetricChoice::PerPosition,
        command: None,
    };
    assert_eq!(effects[0], Effect::SaveMetric(Some(per_position.clone())));
    match &effects[1] {
        Effect::Submit(JobKind::Evaluate { metric, .. }) => {
            assert_eq!(metric.as_ref(), Some(&per_position))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.metric, per_position);
    // The saved external command is offered next time, and the dialog starts on the
    // workspace's metric.
    app.metric = MetricSpec::external("sh map.sh {outputs}");
    update(&mut app, Action::EvaluateDialog);
    let Some(Popup::Decision(d)) = app.popups.last() else {
        panic!("no dialog")
    };
    assert_eq!(d.metric, MetricChoice::ALL.len() - 1);
    assert!(render(&app, 80, 24).contains("external (sh map.sh"));
    let score = |metric: &str, v: f64| Score {
        metric: Some(metric.into()),
        metric_value: Some(v),
        agreement: Some(v),
        samples: 10,
        ..Score::default()
    };
    use super::panes::variants::metric_text;
    assert_eq!(metric_text(&score("per_position", 0.968)), "pos 96.8%");
    assert_eq!(metric_text(&score("map_agreement", 0.9)), "map 90.0%");
    assert_eq!(metric_text(&score("sqnr", 31.26)), "31.3dB");
    assert_eq!(metric_text(&score("external", 0.734)), "ext 0.734");
    assert_eq!(
        metric_text(&score("agreement+map_agreement", 0.5)),
        "min 50.0%"
    );
}

#[test]
fn unpicking_every_candidate_submits_nothing() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::EvaluateDialog);
    update(&mut app, Action::Toggle);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(!app.popups.is_empty());
}

#[test]
fn job_events_drive_the_job_list_and_cancel_targets_the_selected_job() {
    let (mut app, _d) = sample_app();
    with_jobs(&mut app);
    assert_eq!(app.jobs[0].status, JobStatus::Finished);
    assert_eq!(app.jobs[1].status, JobStatus::Running);
    assert_eq!(app.active_jobs(), 1);
    app.focus = Pane::Jobs;
    app.cursor[Pane::Jobs.index()] = 1;
    assert_eq!(
        update(&mut app, Action::CancelJob),
        vec![Effect::Cancel(JobId(2))]
    );
    app.cursor[Pane::Jobs.index()] = 0;
    assert!(
        update(&mut app, Action::CancelJob).is_empty(),
        "a finished job cannot be cancelled"
    );
}

#[test]
fn quit_asks_while_jobs_run() {
    let (mut app, _d) = sample_app();
    with_jobs(&mut app);
    update(&mut app, Action::Quit);
    assert!(!app.should_quit);
    assert_eq!(app.popups.last(), Some(&Popup::ConfirmQuit));
    update(&mut app, Action::Char('n'));
    assert!(app.popups.is_empty() && !app.should_quit);
    update(&mut app, Action::Quit);
    update(&mut app, Action::Char('y'));
    assert!(app.should_quit);
}

/// The quit prompt through the terminal's keys: Enter or l leaves the jobs running (they
/// are detached processes) and quits, c cancels them and quits, Esc or s stays.
#[test]
fn the_quit_prompt_leaves_cancels_or_stays() {
    use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
    let key = |c| Event::Key(KeyEvent::new(c, KeyModifiers::NONE));
    let press = |app: &mut App, c| {
        let action = super::to_action(app, key(c)).expect("the key means something here");
        update(app, action)
    };
    let running = |app: &mut App| {
        update(
            app,
            Action::Job(JobEvent::Queued {
                id: JobId(7),
                kind: eval_kind(0),
            }),
        );
        update(app, Action::Job(JobEvent::Started { id: JobId(7) }));
    };
    for (keys, quits, cancels) in [
        (vec![KeyCode::Enter], true, false),
        (vec![KeyCode::Char('l')], true, false),
        (vec![KeyCode::Char('c')], true, true),
        (vec![KeyCode::Esc], false, false),
        (vec![KeyCode::Char('s')], false, false),
    ] {
        let (mut app, _d) = sample_app();
        running(&mut app);
        press(&mut app, KeyCode::Char('q'));
        assert_eq!(app.popups.last(), Some(&Popup::ConfirmQuit));
        let screen = render(&app, 120, 40);
        assert!(screen.contains("1 job(s) still running."), "{screen}");
        assert!(screen.contains("leave them running and quit"), "{screen}");
        assert!(screen.contains("c  cancel them and quit"), "{screen}");
        let mut effects = vec![];
        for k in keys {
            effects = press(&mut app, k);
        }
        assert_eq!(app.should_quit, quits, "{effects:?}");
        assert_eq!(effects.contains(&Effect::CancelAll), cancels, "{effects:?}");
        assert_eq!(app.popups.is_empty(), !quits);
    }
}

#[test]
fn marks_swap_and_palette_runs_actions() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Variants;
    update(&mut app, Action::MarkA);
    assert_eq!(app.mark_a, Some(0));
    update(&mut app, Action::SwapAB);
    assert_eq!((app.mark_a, app.mark_b), (None, Some(0)));
    update(&mut app, Action::Palette);
    for c in "help".chars() {
        update(&mut app, Action::Char(c));
    }
    update(&mut app, Action::Confirm);
    assert_eq!(app.popups.last(), Some(&Popup::Help));
}

#[test]
fn snapshots_of_every_pane_and_popup() {
    let (mut app, _d) = sample_app();
    with_jobs(&mut app);
    app.mark_a = Some(0);
    app.mark_b = Some(0);
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        for pane in Pane::ALL {
            app.focus = pane;
            insta::assert_snapshot!(
                format!("pane_{pane:?}_{w}x{h}").to_lowercase(),
                render(&app, w, h)
            );
        }
        app.focus = Pane::Layers;
        for (name, popup) in [
            ("help", Popup::Help),
            (
                "palette",
                Popup::Palette {
                    query: "a".into(),
                    cursor: 0,
                },
            ),
            ("confirm_quit", Popup::ConfirmQuit),
        ] {
            app.popups = vec![popup];
            insta::assert_snapshot!(format!("popup_{name}_{w}x{h}"), render(&app, w, h));
        }
        app.popups.clear();
        update(&mut app, Action::EvaluateDialog);
        insta::assert_snapshot!(format!("popup_decision_{w}x{h}"), render(&app, w, h));
        app.popups.clear();
        app.collapsed = true;
        app.focus = Pane::Graph;
        insta::assert_snapshot!(format!("graph_collapsed_{w}x{h}"), render(&app, w, h));
        app.collapsed = false;
    }
}

#[test]
fn a_job_left_running_by_a_killed_app_is_reported_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        init::open(
            &PathBuf::from("sample-models/mbv2_digits.onnx"),
            Some(PathBuf::from("sample-models/digits")),
            Some(dir.path().join("ws")),
            Theme::load("mono").unwrap(),
        )
        .unwrap()
        .app
    };
    let first = open();
    assert!(first.jobs.is_empty());
    // What a kill mid-job leaves behind: a job journalled as started, never ended.
    let kind = serde_json::to_value(eval_kind(0)).unwrap();
    let mut journal = String::new();
    for state in ["queued", "started"] {
        journal.push_str(
            &serde_json::json!({"id": 1, "state": state, "time": 1.0, "kind": kind}).to_string(),
        );
        journal.push('\n');
    }
    std::fs::write(dir.path().join("ws/logs/jobs.jsonl"), journal).unwrap();
    let app = open();
    assert_eq!(app.jobs.len(), 1);
    assert_eq!(app.jobs[0].status, JobStatus::Interrupted);
    assert!(app.status.contains("#1 evaluate v0"), "{}", app.status);
    let screen = render(&app, 120, 30);
    assert!(screen.contains("interrupted"), "{screen}");
}

#[test]
fn help_lists_each_key_once_wraps_and_scrolls_to_its_last_line_at_80x24() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Graph;
    update(&mut app, Action::Help);
    let first = render(&app, 80, 24);
    assert!(first.contains("help 1–22 of"), "{first}");
    assert!(first.contains("↓/j  move down"), "{first}");
    assert!(!first.contains("      j  move down"), "{first}");
    assert!(!first.contains("q  quit"), "{first}");
    update(&mut app, Action::Bottom);
    let last = render(&app, 80, 24);
    assert!(last.contains("q  quit"), "{last}");
    assert!(!last.contains("keys in"), "{last}");
    update(&mut app, Action::Top);
    assert_eq!(render(&app, 80, 24), first);
    // Scrolled a line at a time, the popup shows every description whole.
    let mut seen = String::new();
    for _ in 0..60 {
        seen.push_str(&render(&app, 80, 24));
        update(&mut app, Action::Down);
    }
    for b in super::keys::help_entries(Pane::Graph) {
        for part in super::popups::wrap_words(b.what, 64) {
            assert!(seen.contains(&part), "'{part}' of '{}' never shown", b.what);
        }
    }
}

#[test]
fn words_wrap_at_the_width_and_a_long_word_is_cut() {
    use super::popups::wrap_words;
    assert_eq!(
        wrap_words("keep the node's quantizers FP32", 12),
        ["keep the", "node's", "quantizers", "FP32"]
    );
    assert_eq!(wrap_words("abcdefgh", 3), ["abc", "def", "gh"]);
    assert_eq!(wrap_words("", 5), [""]);
}

/// A key as the terminal delivers it, through the app's own translation.
pub(super) fn press(app: &mut App, code: crossterm::event::KeyCode) {
    let key = crossterm::event::KeyEvent::new(code, crossterm::event::KeyModifiers::NONE);
    if let Some(action) = super::to_action(app, crossterm::event::Event::Key(key)) {
        update(app, action);
    }
}

#[test]
fn a_failed_jobs_whole_error_and_log_open_full_screen_at_80x24() {
    use crossterm::event::KeyCode as K;
    let (mut app, _d) = sample_app();
    let id = JobId(7);
    update(
        &mut app,
        Action::Job(JobEvent::Queued {
            id,
            kind: eval_kind(0),
        }),
    );
    update(&mut app, Action::Job(JobEvent::Started { id }));
    for i in 0..40 {
        update(
            &mut app,
            Action::Job(JobEvent::Log {
                id,
                line: format!("batch {i} of 40 scored on the evaluation samples"),
            }),
        );
    }
    let error = "target MAC ratio 0.500 cannot be reached with ssvd: the layers it may \
                 factor reach 0.981 at most (mbv2_digits is mostly 1×1 and depthwise \
                 convolutions); try a higher target or add channel pruning";
    update(
        &mut app,
        Action::Job(JobEvent::Failed {
            id,
            error: error.into(),
        }),
    );
    app.jobs[0].elapsed = Some(1.0);
    update(&mut app, Action::Focus(Pane::Jobs));
    let pane = render(&app, 80, 24);
    assert!(
        !pane.contains("add channel pruning"),
        "the pane cuts it:\n{pane}"
    );

    press(&mut app, K::Enter);
    assert_eq!(app.popups.last(), Some(&Popup::Job(id)));
    let tail = render(&app, 80, 24);
    assert!(tail.contains("batch 39 of 40"), "opens at the end:\n{tail}");
    press(&mut app, K::Char('g'));
    let head = render(&app, 80, 24);
    assert!(head.contains("job #7 · lines 1–22 of"), "{head}");
    assert!(head.contains("status: failed"), "{head}");
    for part in super::popups::wrap_words(error, 76) {
        assert!(head.contains(&part), "'{part}' not shown whole:\n{head}");
    }
    press(&mut app, K::Esc);
    assert!(app.popups.is_empty());
    press(&mut app, K::Char('v'));
    assert_eq!(app.popups.last(), Some(&Popup::Job(id)));
    press(&mut app, K::Char('v'));
    assert!(app.popups.is_empty());
}

/// At 80×24 nothing runs off the edge: the header keeps `? help` at its end whatever the
/// step label, the footer cuts a long message with an ellipsis, and `m` (typed as a user
/// types it) shows the message whole.
#[test]
fn a_long_message_is_cut_in_the_footer_and_whole_under_m_at_80x24() {
    use crossterm::event::KeyCode as K;
    let (mut app, _d) = sample_app();
    let long = "cannot read the calibration folder sample-models/missing/calibration: \
                no such file or directory (os error 2); choose another split";
    // As a dialog's validation sets it; the next update keeps it for the messages view.
    app.status = long.to_string();
    update(&mut app, Action::Char('z'));
    let screen = render(&app, 80, 24);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[0].ends_with("? help"), "header: {}", lines[0]);
    let footer = lines[23];
    assert!(
        footer.contains("cannot read") && footer.ends_with('…'),
        "{footer}"
    );
    assert!(footer.chars().count() <= 80);

    press(&mut app, K::Char('m'));
    let screen = render(&app, 80, 24);
    let joined: String = screen
        .lines()
        .map(|l| l.trim_matches(|c| c == '│' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ");
    let joined = joined.replace("• ", "");
    assert!(
        joined.contains("(os error 2); choose another split"),
        "{screen}"
    );
    press(&mut app, K::Char('m'));
    assert!(app.popups.is_empty(), "m closes the messages view");
}

/// A job started from a dialog leaves the focus where it was (the jobs pane is one key
/// away), and the focused pane's title is marked, not only coloured.
#[test]
fn starting_a_job_keeps_the_focus_and_the_focused_title_is_marked() {
    use crossterm::event::KeyCode as K;
    let (mut app, _d) = sample_app();
    app.focus = Pane::Variants;
    press(&mut app, K::Char('e'));
    assert!(matches!(app.popups.last(), Some(Popup::Decision(_))));
    let effects = update(&mut app, Action::Confirm);
    let Some(Effect::Submit(kind)) = effects.last().cloned() else {
        panic!("no job: {effects:?}")
    };
    update(
        &mut app,
        Action::Job(JobEvent::Queued { id: JobId(1), kind }),
    );
    update(&mut app, Action::Job(JobEvent::Started { id: JobId(1) }));
    assert_eq!(app.focus, Pane::Variants);
    for (w, h) in [(80, 24), (120, 40)] {
        let screen = render(&app, w, h);
        assert!(screen.contains("»3 Variants"), "{screen}");
        assert_eq!(
            screen.matches(super::panes::FOCUS_MARK).count(),
            1,
            "{screen}"
        );
    }
    press(&mut app, K::Char('4'));
    assert!(render(&app, 80, 24).contains("»4 Jobs"));
}

/// A finished job's log ends in a readable line (its top-level figures), not raw JSON.
#[test]
fn a_finished_jobs_log_line_is_readable() {
    let (mut app, _d) = sample_app();
    let id = JobId(3);
    update(
        &mut app,
        Action::Job(JobEvent::Queued {
            id,
            kind: eval_kind(0),
        }),
    );
    update(&mut app, Action::Job(JobEvent::Started { id }));
    let summary = serde_json::json!({
        "accuracy": 0.991234567, "samples": 400, "variant": 0, "per_class": [1, 2],
        "split": {"seed": 0}
    });
    update(&mut app, Action::Job(JobEvent::Finished { id, summary }));
    let last = app.jobs[0].log.last().cloned().unwrap_or_default();
    assert_eq!(last, "finished: accuracy 0.9912 · samples 400 · variant 0");
    app.focus = Pane::Jobs;
    update(&mut app, Action::OpenJob);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("accuracy 0.9912 · samples 400"), "{screen}");
    assert!(!screen.contains("\"accuracy\""), "{screen}");
}
