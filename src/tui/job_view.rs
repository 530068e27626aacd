//! One job full screen (Enter or `v` in the jobs pane): what was asked for, its status with
//! the whole error, and its whole log, wrapped to the terminal and scrolled with the usual
//! keys, so nothing the jobs pane cuts to one line is out of reach.

use super::panes::jobs::clock;
use super::popups::{scrolled, wrap_words};
use super::state::{App, JobStatus, JobView};
use qsteer::jobs::JobId;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Clear;
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &App, area: Rect, id: JobId) {
    f.render_widget(Clear, area);
    let width = usize::from(area.width.saturating_sub(2));
    let lines = match app.jobs.iter().find(|j| j.id == id) {
        Some(job) => lines(app, job, width),
        None => vec![Line::from(format!("job #{id} is no longer listed"))],
    };
    scrolled(
        f,
        app,
        area,
        &format!("job #{id} · lines"),
        "↓↑ PgDn PgUp Home End scroll, Esc closes",
        lines,
    );
}

/// The view's lines at `width` columns: every text wrapped, none cut.
fn lines<'a>(app: &App, job: &JobView, width: usize) -> Vec<Line<'a>> {
    let t = &app.theme;
    let mut out = Vec::new();
    let mut push = |text: &str, style: Style, indent: usize| {
        for part in wrap_words(text, width.saturating_sub(indent)) {
            out.push(Line::from(Span::styled(
                format!("{}{part}", " ".repeat(indent)),
                style,
            )));
        }
    };
    push(&format!("#{} {}", job.id, job.label), t.header(), 0);
    let status = match &job.status {
        JobStatus::Queued => "queued".to_string(),
        JobStatus::Running if job.total > 0 => format!(
            "running: {}/{} {}{}",
            job.done,
            job.total,
            job.what,
            job.eta()
                .map(|e| format!(" · ETA {}", clock(e)))
                .unwrap_or_default()
        ),
        JobStatus::Running => format!("running {}", job.what),
        JobStatus::Finished => "finished".to_string(),
        JobStatus::Failed(_) => "failed".to_string(),
        JobStatus::Cancelled => "cancelled".to_string(),
        JobStatus::Interrupted => "interrupted: the app was stopped while it ran".to_string(),
    };
    push(
        &format!("status: {status} · {}", clock(job.seconds())),
        t.text(),
        0,
    );
    if let JobStatus::Failed(error) = &job.status {
        push("error:", t.fg(t.bad), 0);
        for l in error.lines() {
            push(l, t.fg(t.bad), 2);
        }
    }
    if let Some(s) = job.slurm.summary() {
        push(&s, t.fg(t.accent), 0);
    }
    if let Some(kind) = &job.kind {
        push("settings:", t.header(), 0);
        let json = serde_json::to_string_pretty(kind).unwrap_or_else(|e| e.to_string());
        for l in json.lines() {
            // Keep the JSON's own indentation, then wrap what is past it.
            let depth = l.len() - l.trim_start().len();
            push(l.trim_start(), t.text(), 2 + depth);
        }
    }
    push(&format!("log ({} lines):", job.log.len()), t.header(), 0);
    for l in &job.log {
        push(l, t.dim(), 2);
    }
    out
}
