//! Popups drawn over the panes: help, command palette, layer filter, the decision dialog,
//! and the quit confirmation.

use super::compress_form::CompressForm;
use super::form::field_line;
use super::keys;
use super::quantsim_form::{blocker, Field, QuantsimForm};
use super::state::{App, Decision, Pane, Popup, SUBSETS};
use super::update::palette_matches;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

pub(super) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [c] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    c
}

pub(super) fn boxed<'a>(app: &App, title: &str) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(true))
        .title(format!(" {title} "))
}

pub fn draw(f: &mut Frame, app: &App, popup: &Popup) {
    let area = f.area();
    match popup {
        Popup::Help => help(f, app, area),
        Popup::Messages => messages(f, app, area),
        Popup::Scatter(axis) => super::scatter_view::draw(f, app, area, *axis),
        Popup::Export(p) => super::export_prompt::draw(f, app, area, p),
        Popup::EditVariant(p) => super::variant_edit::draw_prompt(f, app, area, p),
        Popup::ConfirmDelete(id) => super::variant_edit::draw_confirm(f, app, area, *id),
        Popup::Job(id) => super::job_view::draw(f, app, area, *id),
        Popup::Palette { query, cursor } => palette(f, app, area, query, *cursor),
        Popup::Filter => {
            let r = centered(area, 50, 3);
            f.render_widget(Clear, r);
            let p = Paragraph::new(format!("/{}▏", app.layer_filter))
                .block(boxed(app, "filter layers (Enter keeps, Esc closes)"));
            f.render_widget(p, r);
        }
        Popup::Decision(d) => decision(f, app, area, d),
        Popup::Quantsim(form) => quantsim(f, app, area, form),
        Popup::Fix(form) => fix(f, app, area, form),
        Popup::Compress(form) => compress(f, app, area, form),
        Popup::Sweep(form) => super::sweep_popup::form(f, app, area, form),
        Popup::SweepDecision(d) => super::sweep_popup::decision(f, app, area, d),
        Popup::FineTune(form) => super::finetune_popup::form(f, app, area, form),
        Popup::Slurm(form) => super::slurm_form::draw(f, app, area, form),
        Popup::ConfirmQuit => {
            // Running jobs outlive the app (detached processes, Slurm jobs): say so, they
            // are not lost; queued ones have not started and do not.
            let on_slurm = app
                .jobs
                .iter()
                .filter(|j| j.is_active() && !j.slurm.0.is_empty())
                .count();
            let queued = (app.jobs.iter())
                .filter(|j| j.status == super::state::JobStatus::Queued)
                .count();
            let r = centered(area, 66, 6 + u16::from(on_slurm > 0));
            f.render_widget(Clear, r);
            let mut lines = vec![Line::from(format!(
                "{} job(s) still running{}.",
                app.active_jobs() - queued,
                match queued {
                    0 => String::new(),
                    n => format!(", {n} queued (not started: they do not run)"),
                }
            ))];
            lines.push(Line::from(Span::styled(
                "Enter/l  leave them running and quit: they go on, the app",
                app.theme.dim(),
            )));
            lines.push(Line::from(Span::styled(
                "         follows them on restart (qsteer jobs --follow)",
                app.theme.dim(),
            )));
            if on_slurm > 0 {
                lines.push(Line::from(Span::styled(
                    format!("         ({on_slurm} of them on Slurm)"),
                    app.theme.dim(),
                )));
            }
            lines.push(Line::from("c  cancel them and quit     Esc/s  stay"));
            f.render_widget(Paragraph::new(lines).block(boxed(app, "quit")), r);
        }
    }
}

/// The status line's messages, whole: wrapped, newest last, scrolled like a job's view.
fn messages(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    f.render_widget(Clear, area);
    let width = usize::from(area.width.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    for m in &app.messages {
        for (k, part) in wrap_words(m, width.saturating_sub(2))
            .into_iter()
            .enumerate()
        {
            let lead = if k == 0 { "• " } else { "  " };
            lines.push(Line::from(Span::styled(format!("{lead}{part}"), t.text())));
        }
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("no messages yet", t.dim())));
    }
    scrolled(
        f,
        app,
        area,
        "messages",
        "↓↑ PgDn PgUp scroll, m or Esc closes",
        lines,
    );
}

/// A full-area popup of `lines` from `app.popup_scroll` on, as far as the area shows; its
/// title names `what`, the lines shown and `keys`. Sets the scroll bound for the keys.
pub(super) fn scrolled(
    f: &mut Frame,
    app: &App,
    area: Rect,
    what: &str,
    keys: &str,
    lines: Vec<Line>,
) {
    let visible = usize::from(area.height.saturating_sub(2));
    let max = lines.len().saturating_sub(visible);
    app.popup_scroll_max.set(max);
    let top = app.popup_scroll.min(max);
    let title = format!(
        "{what} {}–{} of {} ({keys})",
        top + 1,
        (top + visible).min(lines.len()),
        lines.len()
    );
    let shown: Vec<Line> = lines.into_iter().skip(top).take(visible).collect();
    f.render_widget(Paragraph::new(shown).block(boxed(app, &title)), area);
}

fn help(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    // As wide as the terminal allows (up to 76 columns), so descriptions wrap rarely.
    let w = area.width.saturating_sub(4).clamp(24, 76);
    let text_w = usize::from(w.saturating_sub(2));
    let mut lines = vec![Line::from(Span::styled(
        format!("keys in {}", app.focus.title()),
        t.header(),
    ))];
    // The graph pane's marks are explained where its keys are.
    if app.focus == Pane::Graph && !app.quant_marks.is_empty() {
        for l in wrap_words(super::quant_marks::LEGEND, text_w) {
            lines.push(Line::from(Span::styled(l, t.text())));
        }
    }
    for b in keys::help_entries(app.focus) {
        for (k, part) in wrap_words(b.what, text_w.saturating_sub(10))
            .into_iter()
            .enumerate()
        {
            let key = if k == 0 { b.key } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{key:>8}  "), t.fg(t.accent)),
                Span::styled(part, t.text()),
            ]));
        }
    }
    let h = (lines.len() as u16 + 2).min(area.height);
    let visible = usize::from(h.saturating_sub(2));
    let max = lines.len().saturating_sub(visible);
    app.popup_scroll_max.set(max);
    let top = app.popup_scroll.min(max);
    let title = if max > 0 {
        format!(
            "help {}–{} of {} (↓↑ PgDn PgUp scroll, ? or Esc closes)",
            top + 1,
            (top + visible).min(lines.len()),
            lines.len()
        )
    } else {
        "help (? or Esc closes)".to_string()
    };
    let r = centered(area, w, h);
    f.render_widget(Clear, r);
    let shown: Vec<Line> = lines.into_iter().skip(top).take(visible).collect();
    f.render_widget(Paragraph::new(shown).block(boxed(app, &title)), r);
}

/// `text` in lines of at most `width` characters, broken between words (a word longer
/// than the width is cut across lines).
pub(crate) fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line = word.into_iter().collect();
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn palette(f: &mut Frame, app: &App, area: Rect, query: &str, cursor: usize) {
    let t = &app.theme;
    let matches = palette_matches(query);
    let h = (matches.len() as u16 + 4).clamp(5, area.height);
    let r = centered(area, 56, h);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(format!(":{query}▏"), t.text()))];
    for (i, b) in matches
        .iter()
        .enumerate()
        .take(h.saturating_sub(3) as usize)
    {
        let line = Line::from(vec![
            Span::styled(format!("{:<34}", b.what), t.text()),
            Span::styled(b.key, t.fg(t.accent)),
        ]);
        lines.push(if i == cursor {
            line.style(t.selected())
        } else {
            line
        });
    }
    f.render_widget(
        Paragraph::new(lines).block(boxed(app, "command palette")),
        r,
    );
}

fn decision(f: &mut Frame, app: &App, area: Rect, d: &Decision) {
    let t = &app.theme;
    let h = (d.rows.len() as u16 + 10).min(area.height);
    let r = centered(area, 64, h);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(
        "pick candidates (Space), Tab to settings, Enter runs",
        t.dim(),
    ))];
    let room = h.saturating_sub(9) as usize;
    let top = d.cursor.saturating_sub(room.saturating_sub(1));
    for (i, (id, picked)) in d.rows.iter().enumerate().skip(top).take(room) {
        let v = app.variant(*id);
        let line = Line::from(vec![
            Span::styled(if *picked { "[x] " } else { "[ ] " }, t.fg(t.accent)),
            Span::styled(
                format!(
                    "{id:>3} {:<18}",
                    v.map(super::panes::variants::step_text)
                        .unwrap_or_else(|| "?".into())
                ),
                t.text(),
            ),
            Span::styled(
                v.map(super::panes::variants::score_text)
                    .unwrap_or_default(),
                t.fg(t.good),
            ),
        ]);
        lines.push(if i == d.cursor && d.field == 0 {
            line.style(t.selected())
        } else {
            line
        });
    }
    lines.push(Line::from(""));
    let field = |i: usize, name: &str, value: String| field_line(t, d.field == i, name, value);
    lines.push(field(1, "samples", SUBSETS[d.subset].to_string()));
    lines.push(field(2, "batch size", d.batch_size.to_string()));
    lines.push(field(3, "threads", d.threads.to_string()));
    lines.push(field(
        4,
        "metric",
        Decision::metrics(app)
            .get(d.metric)
            .map(|m| m.label())
            .unwrap_or_default(),
    ));
    let data = app
        .data_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    lines.push(Line::from(Span::styled(format!("data: {data}"), t.dim())));
    f.render_widget(Paragraph::new(lines).block(boxed(app, &d.title)), r);
}

fn quantsim(f: &mut Frame, app: &App, area: Rect, form: &QuantsimForm) {
    let t = &app.theme;
    let r = centered(area, 64, Field::ALL.len() as u16 + 10);
    f.render_widget(Clear, r);
    let mut lines = vec![on_variant(app, form.variant)];
    lines.push(Line::from(""));
    let fields = Field::ALL.map(|f| (f.name(), form.value_text(f)));
    lines.extend(form_fields(app, form.field, &fields));
    let kept = match form.keep_fp32.as_slice() {
        [] => "none (F on a node in the graph or layers pane)".to_string(),
        names => {
            let mut s = names.join(", ");
            if s.chars().count() > 40 {
                s = format!("{} nodes", names.len());
            }
            s
        }
    };
    lines.push(Line::from(Span::styled(
        format!("keep FP32: {kept}"),
        t.text(),
    )));
    lines.push(enter_line(app, blocker(app, form), || {
        format!(
            "Enter runs {}",
            qsteer::experiment::quantsim::settings_label(&form.settings())
        )
    }));
    lines.push(Line::from(Span::styled(
        "d: FP32, W+A, W-only, A-only runs · a: analyze · A: +sweep",
        t.text(),
    )));
    lines.push(Line::from(Span::styled(
        "↑↓ field  ◂▸/Space change  digits type  Esc closes",
        t.dim(),
    )));
    lines.push(data_line(app));
    f.render_widget(Paragraph::new(lines).block(boxed(app, "Quantsim")), r);
}

/// A settings form's lines (`cursor` on one), then a blank line.
pub(super) fn form_fields<'a>(
    app: &App,
    cursor: usize,
    fields: &[(&str, String)],
) -> Vec<Line<'a>> {
    let mut lines: Vec<Line> = fields
        .iter()
        .enumerate()
        .map(|(i, (name, value))| field_line(&app.theme, cursor == i, name, value.clone()))
        .collect();
    lines.push(Line::from(""));
    lines
}

/// What Enter does, or why it cannot (in the warning colour).
pub(super) fn enter_line<'a>(
    app: &App,
    blocker: Option<String>,
    runs: impl FnOnce() -> String,
) -> Line<'a> {
    let t = &app.theme;
    match blocker {
        Some(p) => Line::from(Span::styled(p, t.fg(t.bad))),
        None => Line::from(Span::styled(runs(), t.text())),
    }
}

/// A dialog's first line: the variant it acts on, its step and score.
pub(super) fn on_variant<'a>(app: &App, id: u32) -> Line<'a> {
    let t = &app.theme;
    let v = app.variant(id);
    Line::from(vec![
        Span::styled(format!("on variant {id} "), t.text()),
        Span::styled(
            v.map(super::panes::variants::step_text).unwrap_or_default(),
            t.dim(),
        ),
        Span::styled(
            format!(
                " {}",
                v.map(super::panes::variants::score_text)
                    .unwrap_or_default()
            ),
            t.fg(t.good),
        ),
    ])
}

/// A dialog's last line: the dataset its jobs run on.
pub(super) fn data_line<'a>(app: &App) -> Line<'a> {
    let data = app
        .data_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".into());
    Line::from(Span::styled(format!("data: {data}"), app.theme.dim()))
}

fn compress(f: &mut Frame, app: &App, area: Rect, form: &CompressForm) {
    use super::compress_form::{blocker, Field};
    let t = &app.theme;
    let r = centered(area, 64, Field::ALL.len() as u16 + 10);
    f.render_widget(Clear, r);
    let mut lines = vec![on_variant(app, form.variant), Line::from("")];
    let fields = Field::ALL.map(|f| (f.name(), form.value_text(f)));
    lines.extend(form_fields(app, form.field, &fields));
    let key = (form.variant, form.method(), form.candidates);
    lines.push(match super::reach::line(app, key, &[form.target()]) {
        Some((text, ok)) => Line::from(Span::styled(text, t.fg(if ok { t.dim } else { t.bad }))),
        None => Line::from(Span::styled(
            "reachable MAC ratio: measured by the job (cp needs the data)",
            t.dim(),
        )),
    });
    lines.push(Line::from(Span::styled(
        format!(
            "layers: {} (layers pane: X skip, + − pin)",
            app.layer_choices.summary()
        ),
        t.dim(),
    )));
    lines.push(enter_line(app, blocker(app, form), || {
        format!(
            "Enter runs greedy {} to {:.2} of the MACs{}",
            form.method().short(),
            form.target(),
            form.run_on.suffix()
        )
    }));
    lines.push(Line::from(Span::styled(
        "↑↓ field  ◂▸/Space change  digits type  Esc closes",
        t.dim(),
    )));
    lines.push(data_line(app));
    f.render_widget(Paragraph::new(lines).block(boxed(app, "Compress")), r);
}

fn fix(f: &mut Frame, app: &App, area: Rect, form: &super::fix_form::FixForm) {
    use super::fix_form::{job, FIXES};
    let t = &app.theme;
    // Reasons wrap to two lines in a narrow terminal.
    let r = centered(area, 72, (FIXES.len() + 2 * form.reasons.len()) as u16 + 8);
    f.render_widget(Clear, r);
    let mut lines = vec![Line::from(Span::styled(
        if form.from == form.target {
            format!("on variant {}", form.target)
        } else {
            format!(
                "on variant {} (the FP32 parent of {}), for {}",
                form.target,
                form.from,
                qsteer::experiment::quantsim::settings_label(&form.settings)
            )
        },
        t.text(),
    ))];
    for reason in &form.reasons {
        lines.push(Line::from(Span::styled(
            format!("· {reason}"),
            t.fg(t.warn),
        )));
    }
    lines.push(Line::from(""));
    for i in 0..FIXES.len() {
        let marker = if i == form.cursor { "▶" } else { " " };
        let check = if form.chosen[i] { "[x]" } else { "[ ]" };
        let style = if i == form.cursor {
            t.selected()
        } else {
            t.text()
        };
        lines.push(Line::from(Span::styled(
            format!("{marker}{check} {}", form.row_label(i)),
            style,
        )));
    }
    lines.push(Line::from(""));
    let (text, style) = match job(app, form) {
        Ok(kind) => (format!("Enter runs: {}", kind.label()), t.text()),
        Err(why) => (why, t.fg(t.bad)),
    };
    lines.push(Line::from(Span::styled(text, style)));
    lines.push(Line::from(Span::styled(
        "↑↓ move  Space pick a step  ◂▸ mode  Enter run  Esc closes",
        t.dim(),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(boxed(app, "Fix")),
        r,
    );
}
