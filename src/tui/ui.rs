//! The main screen: a header line, the panes, a footer with the keys of the focused pane
//! (from the same declarations as the help), and any popup on top.

use super::keys;
use super::panes;
use super::popups;
use super::state::{App, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &App) {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, app);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(body);
    if app.focus == Pane::Compare {
        panes::compare::draw(f, top, app);
    } else {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(36), Constraint::Percentage(64)]).areas(top);
        panes::graph::draw(f, left, app);
        panes::layers::draw(f, right, app);
    }
    // Narrow terminals give the variants their numbers first; the jobs pane opens whole (Enter).
    let variants_pct = if bottom.width < 120 { 55 } else { 45 };
    let [left, right] = Layout::horizontal([
        Constraint::Percentage(variants_pct),
        Constraint::Percentage(100 - variants_pct),
    ])
    .areas(bottom);
    panes::variants::draw(f, left, app);
    panes::jobs::draw(f, right, app);
    draw_footer(f, footer, app);
    if let Some(p) = app.popups.last() {
        popups::draw(f, app, p);
    }
}

fn draw_header(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let v = app.variant(app.current);
    let score = v.map(panes::variants::score_text).unwrap_or_default();
    let step = v.map(|v| v.step.clone()).unwrap_or_default();
    let jobs = app.active_jobs();
    let line = Line::from(vec![
        Span::styled(" qsteer ", t.fg(t.accent)),
        Span::styled(format!(" {} ", app.model_name), t.text()),
        Span::styled(
            format!("· variant {} \"{step}\" · score {score} ", app.current),
            t.dim(),
        ),
        Span::styled(format!("· MACs {} ", panes::human(app.macs_total)), t.dim()),
        Span::styled(
            format!("· {jobs} job{} ", if jobs == 1 { "" } else { "s" }),
            t.fg(if jobs > 0 { t.warn } else { t.dim }),
        ),
        Span::styled(" ? help", t.dim()),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut spans = Vec::new();
    for b in keys::active(app.focus).into_iter().filter(|b| b.footer) {
        spans.push(Span::styled(format!(" {} ", b.key), t.fg(t.accent)));
        spans.push(Span::styled(format!("{} ", b.what), t.dim()));
    }
    if !app.status.is_empty() {
        spans.push(Span::styled(format!(" │ {}", app.status), t.fg(t.warn)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
