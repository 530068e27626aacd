//! The scatter view (`p`), full screen: every scored variant as a Braille point of score
//! against cost, the Pareto front drawn through its points, the current variant, A, B and
//! the sweep decision's candidates labelled on the chart, and the front's numbers below it.

use super::popups::{boxed, wrap_words};
use super::scatter::{Plot, XAxis};
use super::state::App;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Clear, Dataset, GraphType, Paragraph};
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &App, area: Rect, axis: XAxis) {
    let t = &app.theme;
    let plot = Plot::of(app, axis);
    f.render_widget(Clear, area);
    let metric = if plot.metric.is_empty() {
        "score"
    } else {
        plot.metric.as_str()
    };
    let block = boxed(
        app,
        &format!(
            "{metric} vs {} (Tab: MACs/size/latency, p or Esc closes)",
            axis.label()
        ),
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = usize::from(inner.width);
    let notes: Vec<Line> = notes(app, &plot)
        .into_iter()
        .flat_map(|(text, style)| {
            wrap_words(&text, width)
                .into_iter()
                .map(move |l| Line::from(Span::styled(l, style)))
        })
        .collect();
    // The chart keeps at least 6 rows; the notes take what is left, up to half.
    let note_rows = (notes.len() as u16).min(inner.height.saturating_sub(6).max(1));
    let [chart_area, notes_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(note_rows)]).areas(inner);
    f.render_widget(Paragraph::new(notes), notes_area);
    if plot.points.is_empty() {
        let empty = Paragraph::new(Line::from(Span::styled(
            match axis {
                XAxis::Latency => "no scored variant has a measured latency yet: Tab for MACs",
                _ => "no variant scored yet: evaluate some (e)",
            },
            t.dim(),
        )));
        f.render_widget(empty, chart_area);
        return;
    }
    chart(f, app, chart_area, &plot);
}

/// Bounds around `values` with a margin, so no point sits on an axis.
fn bounds(values: impl Iterator<Item = f64> + Clone) -> [f64; 2] {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        (hi.abs() * 0.05).max(0.05)
    };
    [lo - pad, hi + pad]
}

fn x_text(axis: XAxis, x: f64) -> String {
    match axis {
        XAxis::Macs => format!("{x:.2}"),
        XAxis::Size => format!("{x:.0}"),
        XAxis::Latency => format!("{x:.2}"),
    }
}

fn chart(f: &mut Frame, app: &App, area: Rect, plot: &Plot) {
    let t = &app.theme;
    let xb = bounds(plot.points.iter().map(|p| p.x));
    let yb = bounds(plot.points.iter().map(|p| p.y));
    let all: Vec<(f64, f64)> = plot.points.iter().map(|p| (p.x, p.y)).collect();
    let front: Vec<(f64, f64)> = (plot.front.iter())
        .filter_map(|id| plot.point(*id))
        .map(|p| (p.x, p.y))
        .collect();
    let datasets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(t.fg(t.accent))
            .data(&front),
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Scatter)
            .style(t.fg(t.good))
            .data(&all),
    ];
    let x_labels = [xb[0], (xb[0] + xb[1]) / 2.0, xb[1]].map(|x| x_text(plot.axis, x));
    let y_labels = [yb[0], (yb[0] + yb[1]) / 2.0, yb[1]].map(|y| format!("{y:.1}"));
    let label_w = y_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let first_x = x_labels[0].chars().count();
    let chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds(xb)
                .labels(x_labels)
                .labels_alignment(Alignment::Left)
                .style(t.dim()),
        )
        .y_axis(Axis::default().bounds(yb).labels(y_labels).style(t.dim()));
    f.render_widget(chart, area);
    // Where the chart put its graph (as ratatui lays out a chart with both axes labelled):
    // the label column and the axis line on the left, the axis and its labels below.
    let left = (label_w.max(first_x.saturating_sub(1)) as u16).min(area.width / 3) + 1;
    let graph = Rect {
        x: area.x + left,
        y: area.y,
        width: area.width.saturating_sub(left),
        height: area.height.saturating_sub(2),
    };
    if graph.width < 2 || graph.height < 2 {
        return;
    }
    for (id, label, style) in marks(app, plot) {
        let Some(p) = plot.point(id) else { continue };
        let fx = (p.x - xb[0]) / (xb[1] - xb[0]);
        let fy = (yb[1] - p.y) / (yb[1] - yb[0]);
        let col = graph.x + (fx * f64::from(graph.width - 1)).round() as u16;
        let row = graph.y + (fy * f64::from(graph.height - 1)).round() as u16;
        // Labels sit right of their point (left of it at the right edge).
        let w = label.chars().count() as u16;
        let col = if col + w > graph.right() {
            graph.right().saturating_sub(w)
        } else {
            col
        };
        f.buffer_mut().set_string(col, row, &label, style);
    }
}

/// Per marked point its label and style: `●` current, `A`, `B`, `◆` a sweep candidate.
fn marks(app: &App, plot: &Plot) -> Vec<(u32, String, ratatui::style::Style)> {
    let t = &app.theme;
    let mut out = Vec::new();
    for p in &plot.points {
        let mut label = String::new();
        let mut style = t.fg(t.warn);
        if p.id == app.current {
            label.push('●');
            style = t.fg(t.accent);
        }
        if app.mark_a == Some(p.id) {
            label.push('A');
            style = t.fg(t.mark_a);
        }
        if app.mark_b == Some(p.id) {
            label.push('B');
            style = t.fg(t.mark_b);
        }
        if label.is_empty() && plot.candidates.contains(&p.id) {
            label.push('◆');
        }
        if !label.is_empty() {
            out.push((p.id, label, style));
        }
    }
    out
}

/// The lines under the chart: the legend with what each mark stands for, the front's
/// points with their numbers, and the variants left out and why.
fn notes(app: &App, plot: &Plot) -> Vec<(String, ratatui::style::Style)> {
    let t = &app.theme;
    let ids = |v: &[u32]| {
        v.iter()
            .map(|id| format!("v{id}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut legend = format!("⠒ Pareto front · ● current v{}", app.current);
    if let Some(a) = app.mark_a {
        legend.push_str(&format!(" · A v{a}"));
    }
    if let Some(b) = app.mark_b {
        legend.push_str(&format!(" · B v{b}"));
    }
    if !plot.candidates.is_empty() {
        legend.push_str(&format!(" · ◆ sweep candidates {}", ids(&plot.candidates)));
    }
    let mut out = vec![(legend, t.dim())];
    if !plot.front.is_empty() {
        let unit = if plot.metric == "sqnr" { "dB" } else { "%" };
        let front: Vec<String> = (plot.front.iter())
            .filter_map(|id| plot.point(*id))
            .map(|p| format!("v{} {} {:.2}{unit}", p.id, x_text(plot.axis, p.x), p.y))
            .collect();
        out.push((
            format!(
                "front ({}, score): {}",
                plot.axis.label(),
                front.join(" · ")
            ),
            t.text(),
        ));
    }
    if !plot.unscored.is_empty() {
        out.push((
            format!(
                "not scored by {}: {} (e evaluates)",
                if plot.metric.is_empty() {
                    "any metric"
                } else {
                    &plot.metric
                },
                ids(&plot.unscored)
            ),
            t.dim(),
        ));
    }
    if !plot.unmeasured.is_empty() {
        out.push((
            format!("no {} for: {}", plot.axis.label(), ids(&plot.unmeasured)),
            t.dim(),
        ));
    }
    out
}
