//! Drawing of the fine-tuning dialog.

use super::finetune_form::{blocker, Field, FineTuneForm, Trainer};
use super::popups::{boxed, centered, data_line, enter_line, form_fields, on_variant};
use super::state::App;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

pub fn form(f: &mut Frame, app: &App, area: Rect, form: &FineTuneForm) {
    let t = &app.theme;
    let r = centered(area, 68, Field::ALL.len() as u16 + 7);
    f.render_widget(Clear, r);
    let first = match form.variants.as_slice() {
        [one] => on_variant(app, *one),
        many => Line::from(Span::styled(
            format!(
                "on variants {} (one job each)",
                many.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            t.text(),
        )),
    };
    let mut lines = vec![first, Line::from("")];
    let fields: Vec<(&str, String)> = Field::ALL
        .iter()
        .map(|&f| (f.name(), form.value_text(f)))
        .collect();
    lines.extend(form_fields(app, form.field, &fields));
    lines.push(enter_line(app, blocker(app, form), || {
        let how = match (form.trainer, form.run_on.slurm) {
            (Trainer::External, false) => "with your command",
            (Trainer::External, true) => "with your command on Slurm",
            (_, false) => "on the CPU",
            (_, true) => "on Slurm",
        };
        format!(
            "Enter trains {} job(s) {how}; scored after every epoch",
            form.variants.len()
        )
    }));
    lines.push(Line::from(Span::styled(
        "↑↓ field  ◂▸/Space change  digits type  Esc closes",
        t.dim(),
    )));
    lines.push(data_line(app));
    f.render_widget(Paragraph::new(lines).block(boxed(app, "Fine-tune")), r);
}
