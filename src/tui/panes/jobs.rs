use super::{bar, frame, scroll_offset};
use crate::tui::state::{App, JobStatus, JobView, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

fn status_icon(j: &JobView) -> &'static str {
    match j.status {
        JobStatus::Queued => "·",
        JobStatus::Running => "▶",
        JobStatus::Finished => "✓",
        JobStatus::Failed(_) => "✗",
        JobStatus::Cancelled => "⊘",
        JobStatus::Interrupted => "!",
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let active = app.active_jobs();
    let extra = if active > 0 {
        format!(" · {active} active")
    } else {
        String::new()
    };
    let block = frame(app, Pane::Jobs, extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme;
    let list_h = (app.jobs.len() as u16).clamp(1, inner.height.saturating_sub(2).max(1) / 2 + 1);
    let [list_area, log_area] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(0)]).areas(inner);
    let cursor = app.cursor[Pane::Jobs.index()];
    let top = scroll_offset(cursor, list_area.height as usize);
    let width = list_area.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    if app.jobs.is_empty() {
        // Wrapped: the hint is for a newcomer, and the pane is narrow at 80 columns.
        let hint = "no jobs yet — e evaluates, s runs quantsim, r the SSVD→CP sweep";
        for part in crate::tui::popups::wrap_words(hint, list_area.width as usize) {
            lines.push(Line::from(Span::styled(part, t.dim())));
        }
    }
    for (i, j) in app
        .jobs
        .iter()
        .enumerate()
        .skip(top)
        .take(list_area.height as usize)
    {
        let colour = match j.status {
            JobStatus::Finished => t.good,
            JobStatus::Failed(_) | JobStatus::Interrupted => t.bad,
            JobStatus::Cancelled => t.warn,
            _ => t.accent,
        };
        let progress = if j.status == JobStatus::Running && j.total > 0 {
            let eta = j
                .eta()
                .map(|e| format!(" ETA {}", clock(e)))
                .unwrap_or_default();
            format!(
                "{} {}/{}{eta}",
                bar(j.done as f64 / j.total as f64, (width / 6).max(4)),
                j.done,
                j.total
            )
        } else {
            match &j.status {
                JobStatus::Interrupted => "interrupted (app was stopped)".into(),
                JobStatus::Failed(e) => e.chars().take(width.saturating_sub(30)).collect(),
                JobStatus::Queued => "queued".into(),
                _ => String::new(),
            }
        };
        let slurm = j
            .slurm
            .summary()
            .map(|s| format!("[{s}] "))
            .unwrap_or_default();
        let line = Line::from(vec![
            Span::styled(format!("{} ", status_icon(j)), t.fg(colour)),
            Span::styled(format!("#{} {} ", j.id, j.label), t.text()),
            Span::styled(slurm, t.fg(t.accent)),
            Span::styled(format!("{progress} "), t.fg(t.bar)),
            Span::styled(clock(j.seconds()), t.dim()),
        ]);
        lines.push(if i == cursor && app.focus == Pane::Jobs {
            line.style(t.selected())
        } else {
            line
        });
    }
    f.render_widget(Paragraph::new(lines), list_area);
    // A training job's curve takes the upper part of the log area when there is room.
    let curve = app.selected_job().and_then(|j| j.curve.as_ref());
    let log_area = match curve {
        Some(c) if log_area.height >= super::train_chart::MIN_HEIGHT + 2 => {
            let h = (log_area.height * 2 / 3).max(super::train_chart::MIN_HEIGHT);
            let [chart_area, rest] =
                Layout::vertical([Constraint::Length(h), Constraint::Min(0)]).areas(log_area);
            super::train_chart::draw(f, chart_area, app, c);
            rest
        }
        _ => log_area,
    };
    if log_area.height > 0 {
        let log: Vec<Line> = match app.selected_job() {
            Some(j) => j
                .log
                .iter()
                .rev()
                .take(log_area.height as usize)
                .rev()
                .map(|l| Line::from(Span::styled(format!("log: {l}"), t.dim())))
                .collect(),
            None => vec![],
        };
        f.render_widget(Paragraph::new(log), log_area);
    }
}
