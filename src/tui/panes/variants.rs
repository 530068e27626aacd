use super::{fit, frame, human, scroll_offset};
use crate::tui::state::{App, Pane};
use qsteer::experiment::quantsim::bits_label;
use qsteer::experiment::Variant;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The score shown for a variant: its latest score by its metric, the metric named where
/// it is not accuracy (`agr 97.0%` top-1 agreement, `pos` per position, `map` thresholded
/// map, `min` several outputs, `cos 0.999`, `31.2dB`, `ext 0.734` the user's command).
pub fn score_text(v: &Variant) -> String {
    match v.results.last() {
        Some(r) => metric_text(&r.score),
        None => "–".into(),
    }
}

/// A score by its metric, compactly (see [`score_text`]).
pub fn metric_text(s: &qsteer::metrics::Score) -> String {
    let (Some(metric), Some(v)) = (s.metric_name(), s.value()) else {
        return "-".into();
    };
    match metric {
        "accuracy" => format!("{:.2}%", v * 100.0),
        "agreement" => format!("agr {:.1}%", v * 100.0),
        "per_position" => format!("pos {:.1}%", v * 100.0),
        "map_agreement" => format!("map {:.1}%", v * 100.0),
        "cosine" => format!("cos {v:.3}"),
        "sqnr" => format!("{v:.1}dB"),
        "external" => format!("ext {v:.3}"),
        m if m.contains("sqnr") => format!("min {v:.1}dB"),
        _ => format!("min {:.1}%", v * 100.0),
    }
}

/// The change of a variant's score against its parent's on the same data, in points
/// (`+0.25`, `−3.10`): a fine-tuned child's before → after, a quantized one's cost.
pub fn delta_text(app: &App, v: &Variant) -> Option<String> {
    let mine = v.results.last()?;
    let parent = app
        .variant(v.parent?)?
        .latest_result(&mine.dataset_fingerprint)?;
    let points = |s: &qsteer::metrics::Score| {
        let scale = if s.is_fraction() { 100.0 } else { 1.0 };
        s.value().map(|x| scale * x)
    };
    // Scores by different metrics, or fidelity to different references, do not compare.
    if mine.score.metric_name() != parent.score.metric_name() {
        return None;
    }
    let fidelity = !matches!(mine.score.metric_name(), Some("accuracy" | "external"));
    if fidelity && mine.reference != parent.reference {
        return None;
    }
    let d = points(&mine.score)? - points(&parent.score)?;
    Some(if d < 0.0 {
        format!("−{:.2}", -d)
    } else {
        format!("+{d:.2}")
    })
}

/// A variant's recipe step as the tree shows it: a quantsim step compactly (`W8A8 pt tf_enh`,
/// `W4 pc sym minmax`), any other as written.
pub fn step_text(v: &Variant) -> String {
    use qsteer::quant::Scheme;
    if let Some(name) = &v.name {
        return name.clone();
    }
    let Some(s) = &v.quantsim else {
        return v.step.clone();
    };
    let mut parts = vec![bits_label(s)];
    if s.mode.weights() {
        parts.push(if s.per_channel { "pc" } else { "pt" }.into());
    }
    if s.symmetric {
        parts.push("sym".into());
    }
    let short = |scheme: Scheme| match scheme {
        Scheme::Minmax => "minmax".to_string(),
        Scheme::TfEnhanced => "tf_enh".into(),
        Scheme::Percentile(p) => format!("p{p}"),
        Scheme::Mse => "mse".into(),
    };
    // A weight scheme the user chose (not `auto` or `same`), where it differs.
    let chosen = match s.weight_scheme {
        qsteer::quant::weight_scheme::WeightScheme::Fixed(w) if s.mode.weights() => Some(w),
        _ => None,
    };
    parts.push(match (chosen, s.mode.activations()) {
        (Some(w), true) if w != s.scheme => format!("{}/w {}", short(s.scheme), short(w)),
        (Some(w), false) => short(w),
        _ => short(s.scheme),
    });
    if !s.overrides.is_empty() {
        parts.push(format!("+{}", s.overrides.len()));
    }
    parts.join(" ")
}

/// The tree drawing in front of row `i` of a pre-order listing with these `depths`: `├ ` for
/// a child with siblings below it, `└ ` for the last, and `│ ` where an ancestor's later
/// siblings continue the line.
fn tree_prefix(depths: &[usize], i: usize) -> String {
    // Whether a row at `depth` follows row `i` before the listing climbs above `depth`.
    let continues = |depth: usize| {
        depths[i + 1..]
            .iter()
            .take_while(|&&d| d >= depth)
            .any(|&d| d == depth)
    };
    let depth = depths[i];
    let mut prefix = String::new();
    for level in 1..depth {
        prefix.push_str(if continues(level) { "│ " } else { "  " });
    }
    if depth > 0 {
        prefix.push_str(if continues(depth) { "├ " } else { "└ " });
    }
    prefix
}

/// Below this inner width the rows drop their labels (the title names the columns) and the
/// score change and latency, keeping score, MAC ratio, size and the marks.
const WIDE: u16 = 64;

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let narrow = area.width.saturating_sub(2) < WIDE;
    let columns = if narrow { " · score MACs size" } else { "" };
    let block = frame(app, Pane::Variants, columns.to_string());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let t = &app.theme;
    let base_macs = app.variant(0).and_then(|v| v.macs);
    let cursor = app.cursor[Pane::Variants.index()];
    let top = scroll_offset(cursor, inner.height as usize);
    let tree = app.variant_tree();
    let depths: Vec<usize> = tree.iter().map(|(d, _)| *d).collect();
    let lines: Vec<Line> = tree
        .into_iter()
        .enumerate()
        .skip(top)
        .take(inner.height as usize)
        .map(|(i, (_, v))| {
            let indent = tree_prefix(&depths, i);
            let ratio = match (v.macs, base_macs) {
                (Some(m), Some(b)) if b > 0 => format!("{:.2}", m as f64 / b as f64),
                _ => "-".into(),
            };
            let head = format!("{indent}{} ", v.id);
            let mut spans = if narrow {
                // id, step, score (8), ratio (4), size (8), marks (up to 4): the step takes the rest.
                let fixed = head.chars().count() + 9 + 5 + 9 + 4;
                let step_width = (inner.width as usize).saturating_sub(fixed).max(6);
                vec![
                    Span::styled(head, t.dim()),
                    Span::styled(
                        format!("{:<w$} ", fit(&step_text(v), step_width), w = step_width),
                        t.text(),
                    ),
                    Span::styled(format!("{:>8} ", score_text(v)), t.fg(t.good)),
                    Span::styled(format!("{ratio:>4} "), t.dim()),
                    Span::styled(format!("{:>7}B ", human(v.size_bytes)), t.dim()),
                ]
            } else {
                vec![
                    Span::styled(head, t.dim()),
                    Span::styled(format!("{:<14} ", fit(&step_text(v), 14)), t.text()),
                    Span::styled(format!("{:>8} ", score_text(v)), t.fg(t.good)),
                    Span::styled(format!("MACs {ratio:<5} "), t.dim()),
                    Span::styled(format!("{}B ", human(v.size_bytes)), t.dim()),
                ]
            };
            if !narrow {
                if let Some(d) = delta_text(app, v) {
                    spans.insert(3, Span::styled(format!("{d:>6} "), t.dim()));
                }
                if let Some(l) = &v.latency {
                    spans.push(Span::styled(format!("{:.2}ms ", l.median_ms), t.dim()));
                }
            }
            let sep = if narrow { "" } else { " " };
            let marks = [
                (v.tags.iter().any(|t| t == "picked"), "★", t.accent),
                (v.id == app.current, "●", t.accent),
                (app.mark_a == Some(v.id), "A", t.mark_a),
                (app.mark_b == Some(v.id), "B", t.mark_b),
            ];
            for (on, mark, colour) in marks {
                if on {
                    spans.push(Span::styled(format!("{mark}{sep}"), t.fg(colour)));
                }
            }
            let line = Line::from(spans);
            if i == cursor && app.focus == Pane::Variants {
                line.style(t.selected())
            } else {
                line
            }
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tree_tests {
    use super::tree_prefix;

    #[test]
    fn siblings_are_joined_and_the_last_child_closes_its_branch() {
        // 0 ┬ 1 ┬ 2
        //   │   └ 3
        //   └ 4
        let depths = [0, 1, 2, 2, 1];
        let prefixes: Vec<String> = (0..depths.len()).map(|i| tree_prefix(&depths, i)).collect();
        assert_eq!(prefixes, ["", "├ ", "│ ├ ", "│ └ ", "└ "]);
    }
}
