use super::{frame, human, variants::score_text};
use crate::tui::state::{App, Pane};
use qsteer::experiment::Variant;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

/// The measured latency when there is one (median of timed runs), else the evaluation's
/// throughput per sample.
fn latency(v: &Variant) -> String {
    if let Some(l) = &v.latency {
        return format!(
            "{:.2} ms median (p90 {:.2}, batch {}, {} thr)",
            l.median_ms, l.p90_ms, l.batch, l.threads
        );
    }
    match v.results.last() {
        Some(r) if r.samples_per_second > 0.0 => format!(
            "{:.2} ms/sample ({:.0}/s, {} thr)",
            1000.0 * r.threads as f64 / r.samples_per_second,
            r.samples_per_second,
            r.threads
        ),
        _ => "–".into(),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let block = frame(app, Pane::Compare, String::new());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme;
    let (Some(a), Some(b)) = (
        app.mark_a.and_then(|id| app.variant(id)),
        app.mark_b.and_then(|id| app.variant(id)),
    ) else {
        let msg = "Mark two variants: select one in the variants pane (3) and press a, another and press b.";
        f.render_widget(Paragraph::new(Span::styled(msg, t.dim())), inner);
        return;
    };
    let data = app.compare.as_ref().filter(|c| c.a == a.id && c.b == b.id);
    let macs = |m: Option<u64>| m.map(human).unwrap_or_else(|| "–".into());
    let mut rows = vec![
        Row::new(vec![
            "variant".to_string(),
            format!("A: {} {}", a.id, a.step),
            format!("B: {} {}", b.id, b.step),
        ])
        .style(t.header()),
        Row::new(vec!["score".to_string(), score_text(a), score_text(b)]),
        Row::new(vec![
            "MACs".to_string(),
            macs(data.and_then(|d| d.macs_a).or(a.macs)),
            macs(data.and_then(|d| d.macs_b).or(b.macs)),
        ]),
        Row::new(vec!["params".to_string(), macs(a.params), macs(b.params)]),
        Row::new(vec![
            "file size".to_string(),
            format!("{}B", human(a.size_bytes)),
            format!("{}B", human(b.size_bytes)),
        ]),
        Row::new(vec!["latency".to_string(), latency(a), latency(b)]),
    ];
    let disagree = match data.and_then(|d| d.disagreement) {
        Some((n, d)) => format!(
            "{d} of {n} samples ({:.2}%)",
            100.0 * d as f64 / n.max(1) as f64
        ),
        None => data
            .and_then(|d| d.note.clone())
            .unwrap_or_else(|| "computing…".into()),
    };
    rows.push(Row::new(vec![
        "disagree".to_string(),
        disagree,
        String::new(),
    ]));
    if let Some(d) = data.filter(|d| !d.classes.is_empty()) {
        let classes: Vec<String> = d
            .classes
            .iter()
            .take(6)
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        rows.push(Row::new(vec![
            "by class".to_string(),
            classes.join("  "),
            String::new(),
        ]));
    }
    let head_h = rows.len() as u16;
    let widths = [
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ];
    let top = Rect {
        height: head_h.min(inner.height),
        ..inner
    };
    f.render_widget(
        Table::new(rows.into_iter().map(|r| r.style(t.text())), widths),
        top,
    );
    // Per-layer MAC differences below.
    let rest = Rect {
        y: inner.y + top.height,
        height: inner.height.saturating_sub(top.height),
        ..inner
    };
    if rest.height < 2 {
        return;
    }
    let Some(d) = data else { return };
    let mut lines = sqnr_lines(app, d, rest.height as usize / 2);
    let room = (rest.height as usize).saturating_sub(lines.len() + 1);
    lines.extend(range_lines(app, d, room, rest.width as usize));
    let changed: Vec<&crate::tui::compare::LayerDiff> =
        d.layers.iter().filter(|l| l.macs_a != l.macs_b).collect();
    lines.push(Line::from(Span::styled(
        format!(
            "per-layer MACs: {} of {} layers differ",
            changed.len(),
            d.layers.len()
        ),
        t.header(),
    )));
    let room = (rest.height as usize).saturating_sub(lines.len());
    for l in changed.iter().take(room) {
        lines.push(Line::from(Span::styled(
            format!(
                "{:<24} {:>8} → {:>8}",
                l.name,
                macs(l.macs_a),
                macs(l.macs_b)
            ),
            t.text(),
        )));
    }
    f.render_widget(Paragraph::new(lines), rest);
}

/// Per-layer SQNR of A and B where both variants have an analysis, largest change first.
fn sqnr_lines<'a>(
    app: &App,
    d: &'a crate::tui::compare::CompareData,
    room: usize,
) -> Vec<Line<'a>> {
    let t = &app.theme;
    let mut both: Vec<(&str, f64, f64)> = d
        .layers
        .iter()
        .filter_map(|l| Some((l.name.as_str(), l.sqnr_a?, l.sqnr_b?)))
        .collect();
    if both.is_empty() || room < 2 {
        return vec![];
    }
    both.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "per-layer SQNR dB, A → B (Δ), {} layers, largest change first",
            both.len()
        ),
        t.header(),
    ))];
    for (name, a, b) in both.into_iter().take(room - 1) {
        let delta = b - a;
        let style = if delta < -1.0 {
            t.fg(t.bad)
        } else if delta > 1.0 {
            t.fg(t.good)
        } else {
            t.text()
        };
        lines.push(Line::from(Span::styled(
            format!("{name:<24} {a:>6.1} → {b:>6.1}  ({delta:+.1})"),
            style,
        )));
    }
    lines
}

/// A layer's name, its ranges in A and B, and their max/median ratios.
type RangePair<'a> = (&'a str, &'a [f32], &'a [f32], f64, f64);

/// Per-channel weight ranges of the layers whose weights differ between A and B (CLE
/// before │ after), side by side with each one's max/median ratio; the layers whose ratio
/// fell most first.
fn range_lines<'a>(
    app: &App,
    d: &'a crate::tui::compare::CompareData,
    room: usize,
    width: usize,
) -> Vec<Line<'a>> {
    use super::ranges::{max_median_ratio, spark, squeeze};
    let t = &app.theme;
    let mut changed: Vec<RangePair> = d
        .layers
        .iter()
        .filter(|l| !l.ranges_a.is_empty() && !l.ranges_b.is_empty() && l.ranges_a != l.ranges_b)
        .map(|l| {
            let (a, b) = (&l.ranges_a[..], &l.ranges_b[..]);
            (
                l.name.as_str(),
                a,
                b,
                max_median_ratio(a),
                max_median_ratio(b),
            )
        })
        .collect();
    if changed.is_empty() || room < 2 {
        return vec![];
    }
    changed.sort_by(|x, y| (y.3 - y.4).total_cmp(&(x.3 - x.4)));
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "per-channel weight range A │ B (max/median), {} layers changed",
            changed.len()
        ),
        t.header(),
    ))];
    // name, two ratios and the separator take 20 + 2 × 6 + 3 columns.
    let chart = width.saturating_sub(35) / 2;
    let shown = room - 1;
    for (name, a, b, ra, rb) in changed.iter().take(shown) {
        let name: String = name.chars().take(19).collect();
        lines.push(Line::from(vec![
            Span::styled(format!("{name:<20}{ra:>5.1} "), t.text()),
            Span::styled(
                format!("{:<chart$}", spark(&squeeze(a, chart), chart)),
                t.fg(t.bar),
            ),
            Span::styled(format!(" │{rb:>5.1} "), t.text()),
            Span::styled(spark(&squeeze(b, chart), chart), t.fg(t.good)),
        ]));
    }
    if changed.len() > shown {
        if let Some(last) = lines.last_mut() {
            *last = Line::from(Span::styled(
                format!("… {} more layers", changed.len() - shown + 1),
                t.dim(),
            ));
        }
    }
    lines
}
