//! Drawing of the sweep's dialogs: the settings form and the decision tables (MAC ratio,
//! score before and after fine-tuning, drop, measured latency, size per candidate).

use super::form::field_line;
use super::popups::{boxed, centered, data_line, enter_line, form_fields, on_variant};
use super::state::App;
use super::sweep_decision::{score_pct, Step, SweepDecision};
use super::sweep_form::{blocker, Field, SweepForm};
use qsteer::compress::sweep::SweepRow;
use qsteer::compress::Method;
use qsteer::units::human;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

pub fn form(f: &mut Frame, app: &App, area: Rect, form: &SweepForm) {
    let t = &app.theme;
    let r = centered(area, 66, Field::ALL.len() as u16 + 10);
    f.render_widget(Clear, r);
    let mut lines = vec![on_variant(app, form.variant), Line::from("")];
    let fields = Field::ALL.map(|f| (f.name(), form.value_text(f)));
    let fields: Vec<(&str, String)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    lines.extend(form_fields(app, form.field, &fields));
    let key = (form.variant, Method::SpatialSvd, form.candidates);
    if let Some((text, ok)) = super::reach::line(app, key, &form.cssvd()) {
        lines.push(Line::from(Span::styled(
            text,
            t.fg(if ok { t.dim } else { t.bad }),
        )));
    }
    lines.push(enter_line(app, blocker(app, form), || {
        format!(
            "Enter runs spatial SVD at {} candidates{}; CP follows your pick",
            form.cssvd().len(),
            form.run_on.suffix()
        )
    }));
    lines.push(Line::from(Span::styled(
        "↑↓ field  ◂▸/Space change  digits type  Esc closes",
        t.dim(),
    )));
    lines.push(data_line(app));
    f.render_widget(Paragraph::new(lines).block(boxed(app, "SSVD→CP sweep")), r);
}

fn ms(row_latency: Option<f64>) -> String {
    row_latency.map_or("–".into(), |m| format!("{m:.2} ms"))
}

fn score(s: Option<f64>) -> String {
    s.map_or("–".into(), |v| format!("{v:.2}"))
}

/// One candidate: mark, id, requested ratio(s), MAC ratio, scores, drop, latency, size.
fn row_text(d: &SweepDecision, row: &SweepRow, picked: bool) -> String {
    let mark = match (d.step, picked) {
        (Step::Ssvd, true) => "[x]",
        (Step::Ssvd, false) => "[ ]",
        (Step::Cp, true) => "(•)",
        (Step::Cp, false) => "( )",
    };
    let what = match d.step {
        Step::Ssvd => format!("Cssvd {:.2}", row.requested),
        Step::Cp => {
            let cssvd = d
                .report
                .ssvd
                .iter()
                .find(|s| s.variant == row.parent)
                .map_or(f64::NAN, |s| s.requested);
            format!("{cssvd:.2}×{:.2}", row.requested)
        }
    };
    format!(
        "{mark} v{:<4}{what:<11} {:>6.3} {:>7} → {:>7} {:>6.2} {:>9} {:>7}",
        row.variant,
        row.overall_mac_ratio,
        score(score_pct(&row.score_before)),
        if d.is_training(row.variant) {
            "training".into()
        } else {
            score(row.score_after.as_ref().and_then(score_pct))
        },
        row.drop_points,
        ms(row.latency.as_ref().map(|l| l.median_ms)),
        format!("{}B", human(row.size_bytes)),
    )
}

pub fn decision(f: &mut Frame, app: &App, area: Rect, d: &SweepDecision) {
    let t = &app.theme;
    let rows = d.rows();
    // Base, header, rows, advice, the rule's pick, a blank, settings and keys, borders.
    let settings = if d.step == Step::Ssvd { 4 } else { 1 };
    let advice = d.report.advice.is_some() as u16;
    let rule = (d.step == Step::Cp && d.report.pick.is_some()) as u16;
    let h = (rows.len() as u16 + 5 + settings + advice + rule).min(area.height);
    let r = centered(area, 80, h);
    f.render_widget(Clear, r);
    let rep = &d.report;
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "base v{}: {} {} %, {}; tolerable drop {:.1} points",
            rep.base,
            rep.metric,
            score(score_pct(&rep.base_score)),
            ms(rep.base_latency.as_ref().map(|l| l.median_ms)),
            rep.max_drop
        ),
        t.text(),
    ))];
    lines.push(Line::from(Span::styled(
        format!(
            "    {:<16} {:>6} {:>7}   {:>7} {:>6} {:>9} {:>7}",
            "candidate", "MACs", "before", "after", "drop", "latency", "size"
        ),
        t.dim(),
    )));
    let fixed = lines.len() + 3 + (settings + advice + rule) as usize;
    let room = (h as usize).saturating_sub(fixed).max(1);
    let top = d.cursor.saturating_sub(room - 1);
    for (i, (row, picked)) in rows.iter().zip(&d.picked).enumerate().skip(top).take(room) {
        let within = row.drop_points <= rep.max_drop;
        let style = if within { t.text() } else { t.fg(t.bad) };
        let line = Line::from(Span::styled(row_text(d, row, *picked), style));
        lines.push(if i == d.cursor && d.field == 0 {
            line.style(t.selected())
        } else {
            line
        });
    }
    if let Some(a) = &rep.advice {
        lines.push(Line::from(Span::styled(a.clone(), t.fg(t.bad))));
    }
    if let Some(p) = rep.pick.as_ref().filter(|_| d.step == Step::Cp) {
        lines.push(Line::from(Span::styled(
            format!("rule: v{} — {}", p.variant, p.reason),
            t.dim(),
        )));
    }
    lines.push(Line::from(""));
    if d.step == Step::Ssvd {
        let fine_tune = if d.reconstruct {
            "layer-wise reconstruction"
        } else {
            "none"
        };
        lines.push(field_line(t, d.field == 1, "fine-tune", fine_tune.into()));
        lines.push(field_line(
            t,
            d.field == 2,
            "Ccp ±",
            format!("{:.2}", d.neighbour_pct as f64 / 100.0),
        ));
        lines.push(field_line(t, d.field == 3, "run on", d.run_on.text()));
        lines.push(Line::from(Span::styled(
            "Space pick  t train  Tab settings  Enter prune them  p plot  Esc later (d)",
            t.dim(),
        )));
    } else {
        lines.push(Line::from(Span::styled(
            "Space pick  t train  Enter take it (tag, A/B vs base)  p plot  Esc later (d)",
            t.dim(),
        )));
    }
    f.render_widget(Paragraph::new(lines).block(boxed(app, &d.title())), r);
}
