use super::{frame, scroll_offset};
use crate::tui::quant_marks::SHORT_LEGEND;
use crate::tui::state::{App, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let rows = app.graph_rows();
    let t = &app.theme;
    let extra = if app.collapsed {
        " · collapsed".to_string()
    } else {
        String::new()
    };
    let marks = &app.quant_marks;
    let mut block = frame(app, Pane::Graph, extra);
    if !marks.is_empty() {
        // The short legend; the help popup spells it out.
        block = block.title_bottom(Line::from(Span::styled(SHORT_LEGEND, t.dim())));
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    let cursor = app.cursor[Pane::Graph.index()];
    let top = scroll_offset(cursor, inner.height as usize);
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(top)
        .take(inner.height as usize)
        .map(|(i, r)| {
            let mut op = r.op.clone();
            for folded in &r.folded {
                op.push('→');
                op.push_str(folded);
            }
            let mut spans = vec![Span::styled(format!("{} ", r.lanes), t.fg(t.accent))];
            if !marks.is_empty() {
                spans.push(Span::styled(format!("{} ", marks.mark(r)), t.fg(t.warn)));
            }
            spans.push(Span::styled(format!("{} ", r.name), t.text()));
            if app.keep_fp32.contains(&r.name) {
                spans.push(Span::styled("[fp32] ", t.fg(t.warn)));
            }
            spans.extend([
                Span::styled(format!("{op} "), t.fg(t.header)),
                Span::styled(r.shape.clone(), t.dim()),
            ]);
            let line = Line::from(spans);
            if i == cursor && app.focus == Pane::Graph {
                line.style(t.selected())
            } else {
                line
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}
