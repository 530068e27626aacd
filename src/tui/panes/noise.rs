//! The layers pane's quant-noise table: per layer the output SQNR against FP32 with the
//! whole model quantized (cumulative, with a bar), with only that layer quantized
//! (isolated), the weights' and activations' shares, and the per-channel weight range
//! ratio — from the current variant's stored analysis.

use super::{bar, fit_middle};
use crate::tui::state::{App, Pane};
use qsteer::quant::analysis::{Analysis, LayerAnalysis, WIDE_RANGE_RATIO};
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

/// SQNR at which the bar is full: about what 8-bit quantization of a well-behaved layer
/// gives, so short bars are the layers worth a look.
const FULL_BAR_DB: f64 = 40.0;

/// The pane title's note: settings and the scores per mode.
pub fn title(a: &Analysis) -> String {
    let pct = |s: &qsteer::metrics::Score| {
        let scale = if s.is_fraction() { 100.0 } else { 1.0 };
        s.value()
            .map(|v| format!("{:.1}", scale * v))
            .unwrap_or_else(|| "-".into())
    };
    let s = &a.scores;
    let flagged = a.activations.iter().filter(|x| x.flagged).count();
    let kept = a
        .activations
        .iter()
        .filter(|x| x.kept_fp32.is_some())
        .count();
    format!(
        " · noise {} · FP32 {} W {} A {} W+A {}{}{}",
        short_settings(a),
        pct(&s.fp32),
        pct(&s.weights_only),
        pct(&s.activations_only),
        pct(&s.weights_and_activations),
        if flagged > 0 {
            format!(" · {flagged} wide-range tensor(s)")
        } else {
            String::new()
        },
        if kept > 0 {
            format!(" · {kept} mixed-range Concat(s) kept FP32")
        } else {
            String::new()
        }
    )
}

fn short_settings(a: &Analysis) -> String {
    let s = &a.settings;
    format!(
        "W{}A{} {}{}",
        s.w_bits,
        s.a_bits,
        if s.per_channel { "pc" } else { "pt" },
        if s.symmetric { " sym" } else { "" }
    )
}

fn db(v: Option<f64>) -> String {
    v.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into())
}

/// The colour of an SQNR: under 10 dB is damage, under 20 dB worth a look.
fn sqnr_style(app: &App, v: Option<f64>) -> Style {
    let t = &app.theme;
    match v {
        Some(d) if d < 10.0 => t.fg(t.bad),
        Some(d) if d < 20.0 => t.fg(t.warn),
        Some(_) => t.fg(t.good),
        None => t.dim(),
    }
}

/// The noise table's columns by width: the layer name and its SQNR always; then what
/// tells weights from activations (W only, A only) before the isolated SQNR, the ranges
/// and the op; the share bar narrows first.
#[derive(Clone, Copy, PartialEq)]
enum Tier {
    /// layer, op, W, SQNR + bar, iso, W only, A only, rng, act
    Wide,
    /// layer, SQNR + short bar, iso, W only, A only, rng, act
    Medium,
    /// layer, SQNR + short bar, W only, A only
    Narrow,
}

impl Tier {
    fn for_width(width: u16) -> Tier {
        if width >= 76 {
            Tier::Wide
        } else if width >= 60 {
            Tier::Medium
        } else {
            Tier::Narrow
        }
    }
}

pub fn draw_table(f: &mut Frame, area: Rect, app: &App, order: &[usize], top: usize) {
    let t = &app.theme;
    let cursor = app.cursor[Pane::Layers.index()];
    let visible = area.height.saturating_sub(1) as usize;
    let tier = Tier::for_width(area.width);
    let bar_w = if tier == Tier::Wide { 8 } else { 5 };
    let sqnr_w = 7 + bar_w as u16;
    let (header, widths): (Vec<&str>, Vec<u16>) = match tier {
        Tier::Wide => (
            vec![
                "layer", "op", "W", "SQNR dB", "iso", "W only", "A only", "rng", "act",
            ],
            vec![0, 6, 4, sqnr_w, 5, 6, 6, 5, 5],
        ),
        Tier::Medium => (
            vec!["layer", "SQNR dB", "iso", "W only", "A only", "rng", "act"],
            vec![0, sqnr_w, 5, 6, 6, 5, 5],
        ),
        Tier::Narrow => (
            vec!["layer", "SQNR dB", "W only", "A only"],
            vec![0, sqnr_w, 6, 6],
        ),
    };
    // The name takes what the other columns leave (one space between columns).
    let fixed: usize = widths.iter().map(|w| *w as usize).sum::<usize>() + widths.len() - 1;
    let name_w = (area.width as usize).saturating_sub(fixed).max(8);
    let rows: Vec<Row> = order
        .iter()
        .enumerate()
        .skip(top)
        .take(visible)
        .map(|(pos, &i)| {
            let l = &app.layers[i];
            let r: Option<&LayerAnalysis> = app.noise_row(&l.name);
            let sqnr = r.and_then(|r| r.sqnr_db);
            let iso = r.and_then(|r| r.sqnr_isolated_db);
            let fill = sqnr.map_or(0.0, |d| d / FULL_BAR_DB);
            let mut cells = vec![Cell::from(fit_middle(&l.name, name_w))];
            if tier == Tier::Wide {
                cells.push(Cell::from(l.kind.label()));
                cells.push(Cell::from(
                    r.and_then(|r| r.weight_bits)
                        .map(|b| format!("w{b}"))
                        .unwrap_or_else(|| "fp32".into()),
                ));
            }
            cells.push(Cell::from(Line::from(vec![
                Span::styled(format!("{:>6} ", db(sqnr)), sqnr_style(app, sqnr)),
                Span::styled(bar(fill, bar_w), t.fg(t.bar)),
            ])));
            if tier != Tier::Narrow {
                cells.push(Cell::from(Span::styled(db(iso), sqnr_style(app, iso))));
            }
            let w_only = r.and_then(|r| r.sqnr_weights_db);
            let a_only = r.and_then(|r| r.sqnr_activations_db);
            cells.push(Cell::from(Span::styled(
                db(w_only),
                sqnr_style(app, w_only),
            )));
            cells.push(Cell::from(Span::styled(
                db(a_only),
                sqnr_style(app, a_only),
            )));
            if tier != Tier::Narrow {
                cells.push(Cell::from(
                    r.map(|r| format!("{:.1}", r.weights.max_median_ratio))
                        .unwrap_or_else(|| "-".into()),
                ));
                let act = r
                    .and_then(|r| r.activation.as_ref())
                    .and_then(|a| a.act_rng);
                let style = match act {
                    Some(v) if v > WIDE_RANGE_RATIO => t.fg(t.bad),
                    Some(_) => t.text(),
                    None => t.dim(),
                };
                cells.push(Cell::from(Span::styled(
                    act.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()),
                    style,
                )));
            }
            let row = Row::new(cells);
            if pos == cursor && app.focus == Pane::Layers {
                row.style(t.selected())
            } else {
                row.style(t.text())
            }
        })
        .collect();
    let widths: Vec<Constraint> = widths
        .iter()
        .map(|&w| {
            if w == 0 {
                Constraint::Min(8)
            } else {
                Constraint::Length(w)
            }
        })
        .collect();
    let header = Row::new(header).style(t.header());
    f.render_widget(Table::new(rows, widths).header(header), area);
}
