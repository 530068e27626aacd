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
    let help = " ? help ";
    let tail = [
        (format!("· score {score} "), t.dim()),
        (format!("· MACs {} ", panes::human(app.macs_total)), t.dim()),
        (
            format!("· {jobs} job{} ", if jobs == 1 { "" } else { "s" }),
            t.fg(if jobs > 0 { t.warn } else { t.dim }),
        ),
    ];
    // Everything but the model name and the step label has a fixed width; those two share
    // what is left (the step goes first), so `? help` always shows at the right edge.
    let id = format!("· variant {} ", app.current);
    let fixed = " qsteer ".len()
        + 2 // the spaces around the model name
        + id.chars().count()
        + tail.iter().map(|(s, _)| s.chars().count()).sum::<usize>()
        + help.len();
    let room = (area.width as usize).saturating_sub(fixed);
    let model_len = app.model_name.chars().count();
    // The step needs its quotes and a space, and is worth showing from 4 characters on.
    let (model, step) = if room >= model_len + 3 + 4 {
        let step = format!("\"{}\" ", panes::fit(&step, room - model_len - 3));
        (app.model_name.clone(), step)
    } else {
        (panes::fit(&app.model_name, room.max(6)), String::new())
    };
    let mut spans = vec![
        Span::styled(" qsteer ", t.fg(t.accent)),
        Span::styled(format!(" {model} "), t.text()),
        Span::styled(format!("{id}{step}"), t.dim()),
    ];
    spans.extend(tail.into_iter().map(|(s, style)| Span::styled(s, style)));
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let filler = (area.width as usize).saturating_sub(used + help.len());
    spans.push(Span::raw(" ".repeat(filler)));
    spans.push(Span::styled(help, t.dim()));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let width = area.width as usize;
    // A status message (an error, a job's result) comes first: up to two thirds of the
    // line, cut with an ellipsis (`m` shows every message whole). The focused pane's
    // keys fill the rest, whole bindings only.
    let status = if app.status.is_empty() {
        String::new()
    } else {
        let room = (width * 2 / 3).saturating_sub(3);
        format!(" │ {}", panes::fit(&app.status, room))
    };
    let mut room = width.saturating_sub(status.chars().count());
    let mut spans = Vec::new();
    for b in keys::active(app.focus).into_iter().filter(|b| b.footer) {
        let key = format!(" {} ", b.key);
        let what = format!("{} ", footer_label(b.what));
        let w = key.chars().count() + what.chars().count();
        if w > room {
            break;
        }
        room -= w;
        spans.push(Span::styled(key, t.fg(t.accent)));
        spans.push(Span::styled(what, t.dim()));
    }
    if !status.is_empty() {
        spans.push(Span::styled(status, t.fg(t.warn)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A binding's footer label: its help text without the parenthesised detail
/// (`fix (BN fold, CLE, BC, AdaRound)…` → `fix…`), so more keys fit a narrow line.
fn footer_label(what: &str) -> String {
    match (what.find(" ("), what.find(')')) {
        (Some(open), Some(close)) if close > open => {
            format!("{}{}", &what[..open], &what[close + 1..])
        }
        _ => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::footer_label;

    #[test]
    fn footer_labels_drop_the_parenthesised_detail() {
        assert_eq!(footer_label("fix (BN fold, CLE, BC, AdaRound)…"), "fix…");
        assert_eq!(footer_label("SSVD→CP sweep (recipe)…"), "SSVD→CP sweep…");
        assert_eq!(footer_label("quantsim…"), "quantsim…");
    }
}
