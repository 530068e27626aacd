//! Popups drawn over the panes: help, command palette, layer filter, the decision dialog,
//! and the quit confirmation.

use super::keys;
use super::state::{App, Decision, Popup, SUBSETS};
use super::update::palette_matches;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [c] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    c
}

fn boxed<'a>(app: &App, title: &str) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(true))
        .title(format!(" {title} "))
}

pub fn draw(f: &mut Frame, app: &App, popup: &Popup) {
    let area = f.area();
    match popup {
        Popup::Help => help(f, app, area),
        Popup::Palette { query, cursor } => palette(f, app, area, query, *cursor),
        Popup::Filter => {
            let r = centered(area, 50, 3);
            f.render_widget(Clear, r);
            let p = Paragraph::new(format!("/{}▏", app.layer_filter))
                .block(boxed(app, "filter layers (Enter keeps, Esc closes)"));
            f.render_widget(p, r);
        }
        Popup::Decision(d) => decision(f, app, area, d),
        Popup::ConfirmQuit => {
            let r = centered(area, 52, 4);
            f.render_widget(Clear, r);
            let text = format!(
                "{} job(s) still running. Quit anyway? (y / n)",
                app.active_jobs()
            );
            f.render_widget(Paragraph::new(text).block(boxed(app, "quit")), r);
        }
    }
}

fn help(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let binds = keys::active(app.focus);
    let h = (binds.len() as u16 + 3).min(area.height);
    let r = centered(area, 56, h);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(
        format!("keys in {}", app.focus.title()),
        t.header(),
    ))];
    for b in binds {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>8}  ", b.key), t.fg(t.accent)),
            Span::styled(b.what, t.text()),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines).block(boxed(app, "help (? or Esc closes)")),
        r,
    );
}

fn palette(f: &mut Frame, app: &App, area: Rect, query: &str, cursor: usize) {
    let t = &app.theme;
    let matches = palette_matches(query);
    let h = (matches.len() as u16 + 4).clamp(5, area.height);
    let r = centered(area, 56, h);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(format!(":{query}▏"), t.text()))];
    for (i, b) in matches
        .iter()
        .enumerate()
        .take(h.saturating_sub(3) as usize)
    {
        let line = Line::from(vec![
            Span::styled(format!("{:<34}", b.what), t.text()),
            Span::styled(b.key, t.fg(t.accent)),
        ]);
        lines.push(if i == cursor {
            line.style(t.selected())
        } else {
            line
        });
    }
    f.render_widget(
        Paragraph::new(lines).block(boxed(app, "command palette")),
        r,
    );
}

fn decision(f: &mut Frame, app: &App, area: Rect, d: &Decision) {
    let t = &app.theme;
    let h = (d.rows.len() as u16 + 9).min(area.height);
    let r = centered(area, 64, h);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(
        "pick candidates (Space), Tab to settings, Enter runs",
        t.dim(),
    ))];
    let room = h.saturating_sub(8) as usize;
    let top = d.cursor.saturating_sub(room.saturating_sub(1));
    for (i, (id, picked)) in d.rows.iter().enumerate().skip(top).take(room) {
        let v = app.variant(*id);
        let line = Line::from(vec![
            Span::styled(if *picked { "[x] " } else { "[ ] " }, t.fg(t.accent)),
            Span::styled(
                format!("{id:>3} {:<18}", v.map(|v| v.step.as_str()).unwrap_or("?")),
                t.text(),
            ),
            Span::styled(
                v.map(super::panes::variants::score_text)
                    .unwrap_or_default(),
                t.fg(t.good),
            ),
        ]);
        lines.push(if i == d.cursor && d.field == 0 {
            line.style(t.selected())
        } else {
            line
        });
    }
    lines.push(Line::from(""));
    let field = |i: usize, name: &str, value: String| {
        let l = Line::from(vec![
            Span::styled(format!("{name:<12}"), t.text()),
            Span::styled(format!("◂ {value} ▸"), t.fg(t.accent)),
        ]);
        if d.field == i {
            l.style(t.selected())
        } else {
            l
        }
    };
    lines.push(field(1, "samples", SUBSETS[d.subset].to_string()));
    lines.push(field(2, "batch size", d.batch_size.to_string()));
    lines.push(field(3, "threads", d.threads.to_string()));
    let data = app
        .data_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    lines.push(Line::from(Span::styled(format!("data: {data}"), t.dim())));
    f.render_widget(Paragraph::new(lines).block(boxed(app, &d.title)), r);
}
