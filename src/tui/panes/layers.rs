use super::{bar, fit_middle, frame, human, scroll_offset};
use crate::tui::state::{App, Pane};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let order = app.layer_order();
    let heat = app.shown_heat();
    let noise = app
        .current_analysis()
        .filter(|_| app.noise_view && heat.is_none());
    // A compressed variant's costs are its record's per-layer choices.
    let compressed = app
        .current_compression()
        .filter(|_| heat.is_none() && noise.is_none());
    let mut extra = match (heat, noise, compressed) {
        (Some(g), _, _) => super::heat::title(g),
        (_, Some(a), _) => super::noise::title(a),
        (_, _, Some(r)) => super::compression::title(r, app),
        _ => String::new(),
    };
    // The heat table keeps the dictionary's layer order and ignores the filter.
    if heat.is_none() && compressed.is_none() {
        extra.push_str(&format!(
            " · sorted: {}{}",
            app.layer_sort.label(),
            if app.layer_sort_desc { " ↓" } else { "" }
        ));
    }
    if !app.layer_filter.is_empty() && heat.is_none() {
        extra.push_str(&format!(" · /{}", app.layer_filter));
    }
    let block = frame(app, Pane::Layers, extra);
    let inner = block.inner(area);
    f.render_widget(block, area);
    // The selected layer's per-channel weight ranges go below the table when there is room.
    let detail_h = if inner.height >= 14 { 5 } else { 0 };
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(detail_h)]).areas(inner);
    let t = &app.theme;
    let cursor = app.cursor[Pane::Layers.index()];
    let visible = table_area.height.saturating_sub(1) as usize;
    let top = scroll_offset(cursor, visible);
    if let Some(g) = heat {
        super::heat::draw_table(f, table_area, app, g, top);
        return;
    }
    if let Some(r) = compressed {
        super::compression::draw_table(f, table_area, app, r, top);
        return;
    }
    if noise.is_some() {
        super::noise::draw_table(f, table_area, app, &order, top);
        if detail_h > 0 {
            draw_detail(f, detail_area, app, order.get(cursor).copied());
        }
        return;
    }
    let total = app.macs_total.max(1) as f64;
    // Narrow terminals drop the share bar so the layer name keeps its room.
    let bar_w = if table_area.width >= 100 { 8 } else { 0 };
    let wide = table_area.width >= 66;
    let (header, widths) = if wide {
        (
            vec!["layer", "op", "kernel", "ch", "params", "MACs", "share"],
            vec![
                Constraint::Min(12),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(7 + bar_w as u16),
            ],
        )
    } else {
        (
            vec!["layer", "op", "ch", "MACs", "share"],
            vec![
                Constraint::Min(10),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(6),
            ],
        )
    };
    // The name column is what the others leave (ratatui puts one space between columns);
    // a longer name is cut in its middle with an ellipsis instead of losing its end.
    let others: u16 = widths
        .iter()
        .skip(1)
        .map(|c| match c {
            Constraint::Length(n) => *n,
            _ => 0,
        })
        .sum();
    let name_w = (table_area.width as usize)
        .saturating_sub(others as usize + widths.len() - 1)
        .max(6);
    let rows: Vec<Row> = order
        .iter()
        .enumerate()
        .skip(top)
        .take(visible)
        .map(|(pos, &i)| {
            let l = &app.layers[i];
            let kernel = if l.kernel.is_empty() {
                "-".to_string()
            } else {
                l.kernel
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join("×")
            };
            let share = l.macs.map_or(0.0, |m| m as f64 / total);
            let mut suffix = match app.layer_choices.marker(&l.name) {
                Some(m) => format!(" {m}"),
                None => String::new(),
            };
            if app.keep_fp32.contains(&l.name) {
                suffix.push_str(" [fp32]");
            }
            let name_room = name_w.saturating_sub(suffix.chars().count()).max(6);
            let name = format!("{}{suffix}", fit_middle(&l.name, name_room));
            let mut cells = vec![name, l.kind.label().to_string()];
            if wide {
                cells.push(kernel);
            }
            cells.push(format!("{}→{}", l.in_channels, l.out_channels));
            if wide {
                cells.push(human(l.params));
            }
            cells.push(l.macs.map(human).unwrap_or_else(|| "?".into()));
            cells.push(format!("{:>5.1}% {}", share * 100.0, bar(share, bar_w)));
            let row = Row::new(cells);
            if pos == cursor && app.focus == Pane::Layers {
                row.style(t.selected())
            } else {
                row.style(t.text())
            }
        })
        .collect();
    let header = Row::new(header).style(t.header());
    f.render_widget(Table::new(rows, widths).header(header), table_area);
    if detail_h > 0 {
        draw_detail(f, detail_area, app, order.get(cursor).copied());
    }
}

fn draw_detail(f: &mut Frame, area: Rect, app: &App, layer: Option<usize>) {
    let t = &app.theme;
    let Some(i) = layer else { return };
    let l = &app.layers[i];
    let ranges = app.channel_ranges.get(i).cloned().unwrap_or_default();
    let width = area.width as usize;
    let spark = super::ranges::spark(&ranges, width);
    let ratio = super::ranges::max_median_ratio(&ranges);
    let mut lines = vec![
        Line::from(Span::styled(
            format!(
                "{} · per-channel weight range ({} channels, max/median {:.1})",
                l.name,
                ranges.len(),
                ratio
            ),
            t.header(),
        )),
        Line::from(Span::styled(spark, t.fg(t.bar))),
        Line::from(Span::styled(
            format!(
                "weight {:?}  in {}  out {}",
                l.weight_shape,
                shape(&l.input_shape),
                shape(&l.output_shape)
            ),
            t.dim(),
        )),
    ];
    if let Some(a) = app.noise_row(&l.name).and_then(|r| r.activation.as_ref()) {
        let enc = a
            .encoding
            .map(|e| {
                format!(
                    " · a{} [{:.3}, {:.3}] scale {:.4} offset {}",
                    e.bitwidth, e.min, e.max, e.scale, e.offset
                )
            })
            .unwrap_or_else(|| " · output not quantized".into());
        lines.push(Line::from(Span::styled(
            format!(
                "output observed [{:.3}, {:.3}]{enc}",
                a.observed_min, a.observed_max
            ),
            t.dim(),
        )));
    }
    if let Some(a) = app.current_analysis().filter(|_| app.noise_view) {
        let flagged: Vec<String> = a
            .activations
            .iter()
            .filter(|x| x.flagged)
            .map(|x| {
                format!(
                    "{} {:.0}×",
                    x.node.as_deref().unwrap_or(&x.value),
                    x.act_rng.unwrap_or(0.0)
                )
            })
            .collect();
        if !flagged.is_empty() {
            lines.push(Line::from(Span::styled(
                format!(
                    "wide-range tensors (keep FP32 or per-channel; F on the node in the graph \
                     pane): {}",
                    flagged.join(", ")
                ),
                t.fg(t.warn),
            )));
        }
        let kept: Vec<String> = a
            .activations
            .iter()
            .filter(|x| x.kept_fp32.is_some())
            .map(|x| {
                format!(
                    "{} {:.0}×",
                    x.node.as_deref().unwrap_or(&x.value),
                    x.act_rng.unwrap_or(0.0)
                )
            })
            .collect();
        if !kept.is_empty() {
            lines.push(Line::from(Span::styled(
                format!(
                    "kept FP32, mixed-range Concat at the output (its inputs keep their own \
                     encodings; \"mixed range\" in the quantsim dialog): {}",
                    kept.join(", ")
                ),
                t.dim(),
            )));
        }
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn shape(s: &Option<qsteer::model::Shape>) -> String {
    s.as_ref()
        .map(|s| qsteer::model::shapes::format_shape(s))
        .unwrap_or_else(|| "?".into())
}
