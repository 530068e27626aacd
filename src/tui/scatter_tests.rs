//! The scatter view: `p` from the variants pane (through the terminal's key translation)
//! opens it, Tab changes the cost axis, the Pareto front's points and numbers are listed,
//! current / A / B are labelled on the chart, and over a sweep decision its candidates are
//! marked; snapshots at 80×24 and 120×40.

use super::quantsim_tests::result;
use super::scatter::XAxis;
use super::state::{App, Pane, Popup};
use super::sweep_tests::{finish, report, stage_job};
use super::tests::{press, render, sample_app};
use crossterm::event::KeyCode as K;
use qsteer::experiment::Variant;
use qsteer::jobs::SweepStage;

/// A variant of the base with its MAC ratio, size, latency and accuracy (None: not scored).
fn child(
    app: &App,
    id: u32,
    step: &str,
    ratio: f64,
    kb: u64,
    ms: f64,
    acc: Option<f64>,
) -> Variant {
    let base_macs = app.variant(0).and_then(|v| v.macs).unwrap();
    let mut v = Variant::new(id, Some(0), step, format!("variants/{id}.onnx"), kb * 1000);
    v.macs = Some((base_macs as f64 * ratio) as u64);
    v.latency = Some(qsteer::runtime::Latency {
        median_ms: ms,
        p90_ms: ms,
        runs: 10,
        batch: 1,
        threads: 1,
    });
    v.results.extend(acc.map(result));
    v
}

/// The base scored 99 %, a W8A8 child (same MACs, smaller, 98.5 %), two compressed ones
/// (0.50 at 97 %: on the front; 0.60 at 96 %: beaten by it) and one not evaluated.
fn app_with_variants() -> (App, tempfile::TempDir) {
    let (mut app, d) = sample_app();
    app.variants[0].results.push(result(0.99));
    let kids = [
        child(&app, 1, "quantsim W8A8", 1.0, 40, 0.9, Some(0.985)),
        child(&app, 2, "compress 0.5", 0.5, 70, 0.6, Some(0.97)),
        child(&app, 3, "compress 0.6", 0.6, 80, 0.7, Some(0.96)),
        child(&app, 4, "compress 0.4", 0.4, 60, 0.5, None),
    ];
    app.variants.extend(kids);
    app.mark_a = Some(2);
    app.mark_b = Some(0);
    app.focus = Pane::Variants;
    (app, d)
}

fn axis(app: &App) -> Option<XAxis> {
    match app.popups.last() {
        Some(Popup::Scatter(a)) => Some(*a),
        _ => None,
    }
}

#[test]
fn p_opens_the_plot_with_the_pareto_front_and_tab_changes_the_axis() {
    let (mut app, _d) = app_with_variants();
    press(&mut app, K::Char('p'));
    assert_eq!(axis(&app), Some(XAxis::Macs));
    let screen = render(&app, 80, 24);
    // The front by MACs: v2 (0.50, 97 %) then the base (1.00, 99 %); v1 and v3 are beaten.
    assert!(
        screen.contains("front (MAC ratio, score): v2 0.50 97.00% · v0 1.00 99.00%"),
        "{screen}"
    );
    assert!(
        screen.contains("not scored by accuracy: v4 (e evaluates)"),
        "{screen}"
    );
    // A (v2) and B (the base, also current) are labelled on the chart.
    assert!(screen.contains("A"), "{screen}");
    assert!(screen.contains("●B"), "{screen}");
    assert!(
        screen
            .chars()
            .any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
        "no braille: {screen}"
    );
    insta::assert_snapshot!("scatter_macs_80x24", screen);
    insta::assert_snapshot!("scatter_macs_120x40", render(&app, 120, 40));
    // Tab: by size the W8A8 child (40 kB) leads the front.
    press(&mut app, K::Tab);
    assert_eq!(axis(&app), Some(XAxis::Size));
    let screen = render(&app, 120, 40);
    assert!(
        screen.contains("front (size kB, score): v1 40 98.50%"),
        "{screen}"
    );
    insta::assert_snapshot!("scatter_size_120x40", screen);
    press(&mut app, K::Tab);
    assert_eq!(axis(&app), Some(XAxis::Latency));
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("front (latency ms, score): v2 0.60 97.00% · v1 0.90 98.50%"),
        "{screen}"
    );
    press(&mut app, K::Tab);
    assert_eq!(axis(&app), Some(XAxis::Macs));
    // p again (or Esc) closes it.
    press(&mut app, K::Char('p'));
    assert!(app.popups.is_empty());
}

#[test]
fn the_plot_over_a_sweep_decision_marks_its_candidates_and_esc_returns_to_it() {
    let (mut app, _d) = app_with_variants();
    app.mark_a = None;
    app.mark_b = None;
    finish(&mut app, 1, stage_job(SweepStage::Ssvd), report(false));
    assert!(matches!(app.popups.last(), Some(Popup::SweepDecision(_))));
    press(&mut app, K::Char('p'));
    assert_eq!(axis(&app), Some(XAxis::Macs));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("◆ sweep candidates v1 v2 v3"), "{screen}");
    assert!(screen.contains('◆'), "{screen}");
    insta::assert_snapshot!("scatter_sweep_candidates_80x24", screen);
    press(&mut app, K::Esc);
    assert!(matches!(app.popups.last(), Some(Popup::SweepDecision(_))));
}

#[test]
fn without_scores_the_plot_says_what_to_do() {
    let (mut app, _d) = sample_app();
    press(&mut app, K::Char('p'));
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains("no variant scored yet: evaluate some (e)"),
        "{screen}"
    );
    assert!(screen.contains("not scored by any metric: v0"), "{screen}");
}
