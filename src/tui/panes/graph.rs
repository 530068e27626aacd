use super::{frame, scroll_offset};
use crate::tui::state::{App, Pane};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let rows = app.graph_rows();
    let extra = if app.collapsed {
        " · collapsed".to_string()
    } else {
        String::new()
    };
    let block = frame(app, Pane::Graph, extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let cursor = app.cursor[Pane::Graph.index()];
    let top = scroll_offset(cursor, inner.height as usize);
    let t = &app.theme;
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
            let line = Line::from(vec![
                Span::styled(format!("{} ", r.lanes), t.fg(t.accent)),
                Span::styled(format!("{} ", r.name), t.text()),
                Span::styled(format!("{op} "), t.fg(t.header)),
                Span::styled(r.shape.clone(), t.dim()),
            ]);
            if i == cursor && app.focus == Pane::Graph {
                line.style(t.selected())
            } else {
                line
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}
