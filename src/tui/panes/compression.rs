//! The layers pane's costs for a compressed variant, from its compression record: per
//! changed layer the ratio chosen, the rank kept (SVD) or the input channels kept (channel
//! pruning), and the MACs before → after.

use super::human;
use crate::tui::state::App;
use qsteer::compress::record::CompressionRecord;
use qsteer::compress::ChangeDetail;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Row, Table};
use ratatui::Frame;

/// The pane title's note: method, target, the measured MAC ratio and, beside it, the
/// measured latency of the variant and its parent (fewer MACs need not mean faster).
pub fn title(r: &CompressionRecord, app: &App) -> String {
    let target = r.target.map_or("manual".into(), |t| format!("target {t}"));
    let mut s = format!(
        " · {} {target} · MACs {} → {} ({:.3})",
        r.method.short(),
        human(r.macs_before),
        human(r.macs_after),
        r.mac_ratio
    );
    let v = app.variant(app.current);
    let parent = v.and_then(|v| v.parent).and_then(|p| app.variant(p));
    if let (Some(a), Some(b)) = (
        parent.and_then(|p| p.latency.as_ref()),
        v.and_then(|v| v.latency.as_ref()),
    ) {
        s.push_str(&format!(
            " · latency {:.2} → {:.2} ms ({:.2})",
            a.median_ms,
            b.median_ms,
            b.median_ms / a.median_ms.max(1e-9)
        ));
    }
    s
}

/// `rank 5/16` or `12/32 ch`.
pub fn detail_text(d: &ChangeDetail) -> String {
    match d {
        ChangeDetail::Rank { rank, full_rank } => format!("rank {rank}/{full_rank}"),
        ChangeDetail::Channels { kept, total, .. } => format!("{}/{total} ch", kept.len()),
    }
}

pub fn draw_table(f: &mut Frame, area: Rect, app: &App, r: &CompressionRecord, top: usize) {
    let t = &app.theme;
    let header = Row::new(["layer", "ratio", "kept", "MACs"]).style(t.header());
    let visible = area.height.saturating_sub(1) as usize;
    let rows: Vec<Row> = r
        .changes
        .iter()
        .skip(top)
        .take(visible)
        .map(|c| {
            Row::new([
                c.layer.clone(),
                format!("{:.2}", c.ratio),
                detail_text(&c.detail),
                format!("{} → {}", human(c.macs_before), human(c.macs_after)),
            ])
            .style(t.text())
        })
        .collect();
    let widths = [
        Constraint::Min(14),
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(17),
    ];
    f.render_widget(Table::new(rows, widths).header(header), area);
}
