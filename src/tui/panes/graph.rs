use super::{fit_middle, frame, scroll_offset};
use crate::tui::graph_rows::GraphRow;
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
    let cursor = app.cursor[Pane::Graph.index()];
    let mut block = frame(app, Pane::Graph, extra);
    let inner = block.inner(area);
    let cells_of = |r: &GraphRow| {
        let mark = (!marks.is_empty()).then(|| format!("{} ", marks.mark(r)));
        RowCells::fit(
            inner.width as usize,
            &r.lanes,
            mark.as_deref().unwrap_or(""),
            &r.name,
            app.keep_fp32.contains(&r.name),
            &op_text(r),
            &r.shape,
        )
    };
    // A narrow pane drops shapes from its rows: the selected row's shape is on the bottom
    // border then (the help popup spells out the quantizer marks' legend).
    let dropped_shape = rows
        .get(cursor)
        .filter(|r| cells_of(r).shape.is_none())
        .map(|r| format!(" {} ", r.shape));
    if let Some(shape) = dropped_shape {
        block = block.title_bottom(Line::from(Span::styled(shape, t.dim())).right_aligned());
    } else if !marks.is_empty() {
        // The short legend; the help popup spells it out.
        block = block.title_bottom(Line::from(Span::styled(SHORT_LEGEND, t.dim())));
    }
    f.render_widget(block, area);
    let top = scroll_offset(cursor, inner.height as usize);
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(top)
        .take(inner.height as usize)
        .map(|(i, r)| {
            let fp32 = app.keep_fp32.contains(&r.name);
            let mark = (!marks.is_empty()).then(|| format!("{} ", marks.mark(r)));
            let cells = cells_of(r);
            let mut spans = vec![Span::styled(format!("{} ", r.lanes), t.fg(t.accent))];
            if let Some(m) = mark {
                spans.push(Span::styled(m, t.fg(t.warn)));
            }
            spans.push(Span::styled(format!("{} ", cells.name), t.text()));
            if fp32 {
                spans.push(Span::styled("[fp32] ", t.fg(t.warn)));
            }
            spans.push(Span::styled(format!("{} ", cells.op), t.fg(t.header)));
            if let Some(shape) = cells.shape {
                spans.push(Span::styled(shape, t.dim()));
            }
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

/// The row's op with the nodes folded into it: `Conv→BatchNormalization→Relu`.
fn op_text(r: &GraphRow) -> String {
    let mut op = r.op.clone();
    for folded in &r.folded {
        op.push('→');
        op.push_str(folded);
    }
    op
}

/// A graph row's name, op and shape fitted to the pane's width. Lanes, the quantizer mark
/// and `[fp32]` stay whole; the name gives way first (an ellipsis in its middle, down to
/// 10 characters), then the op's folded tail, and the shape goes last.
struct RowCells {
    name: String,
    op: String,
    shape: Option<String>,
}

impl RowCells {
    fn fit(
        width: usize,
        lanes: &str,
        mark: &str,
        name: &str,
        fp32: bool,
        op: &str,
        shape: &str,
    ) -> RowCells {
        const MIN_NAME: usize = 10;
        let len = |s: &str| s.chars().count();
        let fixed = len(lanes) + 1 + len(mark) + if fp32 { 7 } else { 0 };
        let room = width.saturating_sub(fixed);
        // name + ' ' + op + ' ' + shape
        let whole = len(name) + 1 + len(op) + 1 + len(shape);
        if whole <= room {
            return RowCells {
                name: name.into(),
                op: op.into(),
                shape: Some(shape.into()),
            };
        }
        let name_room = room.saturating_sub(len(op) + 1 + len(shape) + 1);
        if name_room >= MIN_NAME.min(len(name)) {
            return RowCells {
                name: fit_middle(name, name_room),
                op: op.into(),
                shape: Some(shape.into()),
            };
        }
        // The op shortens next: a folded tail to a count (`Conv→BatchNormalization→Relu` →
        // `Conv+2`), a long op name to its usual short form.
        let short_op = short_op(op);
        let name_room = room.saturating_sub(len(&short_op) + 1 + len(shape) + 1);
        if name_room >= MIN_NAME.min(len(name)) {
            return RowCells {
                name: fit_middle(name, name_room),
                op: short_op,
                shape: Some(shape.into()),
            };
        }
        // Then the shape goes, and what is left is shared: the name first, then the op.
        let name_w = room
            .saturating_sub(len(&short_op) + 1)
            .max(MIN_NAME.min(room.saturating_sub(4)));
        let name = fit_middle(name, name_w);
        let op_room = room.saturating_sub(len(&name) + 1);
        RowCells {
            op: super::fit(&short_op, op_room),
            name,
            shape: None,
        }
    }
}

/// `op` as a narrow row shows it: a folded tail as a count, long op types abbreviated.
fn short_op(op: &str) -> String {
    let parts: Vec<&str> = op.split('→').collect();
    let head = match parts[0] {
        "BatchNormalization" => "BN",
        "InstanceNormalization" => "InstNorm",
        "LayerNormalization" => "LayerNorm",
        "GlobalAveragePool" => "GAvgPool",
        "GlobalMaxPool" => "GMaxPool",
        "ConvTranspose" => "ConvT",
        "DequantizeLinear" => "DQ",
        "QuantizeLinear" => "Q",
        other => other,
    };
    match parts.len() {
        1 => head.to_string(),
        n => format!("{head}+{}", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::RowCells;

    fn line(c: &RowCells) -> String {
        format!(
            "{} {} {}",
            c.name,
            c.op,
            c.shape.clone().unwrap_or_default()
        )
    }

    #[test]
    fn a_row_that_fits_is_whole() {
        let c = RowCells::fit(40, "│", "", "conv1", false, "Conv→Relu", "1×16×8×8");
        assert_eq!(line(&c), "conv1 Conv→Relu 1×16×8×8");
    }

    #[test]
    fn a_narrow_row_keeps_the_shape_and_cuts_the_name_in_its_middle() {
        // 26 columns: an 80-column terminal's graph pane.
        let c = RowCells::fit(
            26,
            "│",
            "",
            "layer2.downsample.conv",
            false,
            "Conv",
            "1×32×8×8",
        );
        assert_eq!(c.shape.as_deref(), Some("1×32×8×8"));
        assert!(
            c.name.contains('…') && c.name.ends_with("conv"),
            "{}",
            c.name
        );
        assert!(2 + line(&c).chars().count() <= 26, "{}", line(&c));
    }

    #[test]
    fn a_long_op_is_abbreviated_and_nothing_passes_the_edge() {
        // The 80-column pane: lanes, a blank quantizer mark, then `stem.bn BatchNormalization`.
        let c = RowCells::fit(
            26,
            "●  ",
            "   ",
            "stem.bn",
            false,
            "BatchNormalization",
            "1×16×8×8",
        );
        assert_eq!(c.op, "BN");
        assert_eq!(c.shape.as_deref(), Some("1×16×8×8"));
        for name in [
            "layer1.downsample.bn",
            "a_very_long_layer_name_from_an_exporter",
        ] {
            let c = RowCells::fit(
                26,
                "│ ● ",
                "◆a ",
                name,
                true,
                "GlobalAveragePool→Flatten",
                "1×64",
            );
            let used = 5 + 3 + 7 + line(&c).trim_end().chars().count();
            assert!(used <= 26, "{used}: {}", line(&c));
        }
    }

    #[test]
    fn the_folded_tail_shortens_before_the_shape_goes() {
        let c = RowCells::fit(
            30,
            "│",
            "",
            "layer1.0.conv1",
            false,
            "Conv→BatchNormalization→Relu",
            "1×16×8×8",
        );
        assert_eq!(c.op, "Conv+2");
        assert_eq!(c.shape.as_deref(), Some("1×16×8×8"));
        assert!(2 + line(&c).chars().count() <= 30, "{}", line(&c));
    }
}
