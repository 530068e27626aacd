//! A training job's live loss curve (braille line over the steps) with its latest loss
//! and the per-epoch evaluation scores, drawn in the jobs pane above the job's log.

use crate::tui::state::App;
use crate::tui::train_curve::TrainCurve;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

/// Rows the chart wants: a title line and at least three rows of curve.
pub const MIN_HEIGHT: u16 = 4;

pub fn draw(f: &mut Frame, area: Rect, app: &App, curve: &TrainCurve) {
    let t = &app.theme;
    let [title_area, chart_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let loss = curve.last_loss().map_or("–".into(), |l| format!("{l:.4}"));
    let metric = if curve.metric.is_empty() {
        "score"
    } else {
        curve.metric.as_str()
    };
    let width = area.width as usize;
    // Each epoch takes about 14 columns; keep the newest that fit.
    let room = width.saturating_sub(18 + metric.len()) / 14;
    let title = Line::from(vec![
        Span::styled(format!("loss {loss}  "), t.fg(t.accent)),
        Span::styled(format!("{metric}: "), t.dim()),
        Span::styled(curve.epochs_text(room.max(1)), t.fg(t.good)),
    ]);
    f.render_widget(Paragraph::new(title), title_area);
    if chart_area.height == 0 || curve.steps.is_empty() {
        return;
    }
    let [lo, hi] = curve.loss_bounds();
    let [x0, x1] = curve.step_bounds();
    let data = [Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(t.fg(t.accent))
        .data(&curve.steps)];
    let chart = Chart::new(data.to_vec())
        .x_axis(Axis::default().bounds([x0, x1]).style(t.dim()))
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels([format!("{lo:.2}"), format!("{hi:.2}")])
                .style(t.dim()),
        );
    f.render_widget(chart, chart_area);
}
