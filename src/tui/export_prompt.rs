//! `x` in the variants pane: where the export goes, asked before it runs. The directory is
//! shown and editable (the workspace's `exports/` the first time, then the last one used),
//! with the file names it will write; Enter queues the export job, whose finishing message
//! names the written file.

use super::action::Action;
use super::popups::{boxed, centered};
use super::state::{App, Popup};
use super::update::Effect;
use qsteer::jobs::JobKind;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;
use std::path::PathBuf;

/// The key of the export directory in the workspace's remembered dialog values.
const DIALOG: &str = "export";

#[derive(Debug, Clone, PartialEq)]
pub struct ExportPrompt {
    pub variant: u32,
    /// The output directory as typed.
    pub dir: String,
}

impl ExportPrompt {
    /// The directory the text names: `~/` is the home directory.
    pub fn path(&self) -> PathBuf {
        let typed = self.dir.trim();
        match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(typed),
        }
    }
}

/// The model file the export writes into its directory (`export_variant`'s naming).
fn file_name(app: &App, variant: u32) -> String {
    format!("{}_v{variant}.qdq.onnx", app.export_name)
}

/// Open the prompt on the variant selected in the variants pane, if it is quantized.
pub fn open(app: &mut App) {
    let Some(v) = app.selected_variant().and_then(|id| app.variant(id)) else {
        return;
    };
    let (variant, quantized) = (v.id, v.encodings_file.is_some());
    if !quantized {
        app.status = format!("variant {variant} is not quantized: nothing to export");
        return;
    }
    let remembered = super::dialog_memory::saved(app, DIALOG)
        .and_then(|s| s.get("dir"))
        .and_then(|d| d.as_str())
        .filter(|d| !d.trim().is_empty())
        .map(str::to_string);
    let dir = remembered.unwrap_or_else(|| app.workspace_dir.join("exports").display().to_string());
    app.popups
        .push(Popup::Export(ExportPrompt { variant, dir }));
}

/// A key in the open prompt. The prompt is the top popup's copy; the caller stores it back.
pub fn action(app: &mut App, p: &mut ExportPrompt, action: Action) -> Vec<Effect> {
    match action {
        Action::Char(c) => p.dir.push(c),
        Action::Backspace => {
            p.dir.pop();
        }
        Action::Confirm => {
            if p.dir.trim().is_empty() {
                app.status = "type the directory to export into".into();
                return vec![];
            }
            let out = p.path();
            app.popups.pop();
            app.status = format!(
                "exporting variant {} to {}",
                p.variant,
                out.join(file_name(app, p.variant)).display()
            );
            let remember = super::dialog_memory::remember(
                app,
                DIALOG,
                serde_json::json!({"dir": p.dir.trim()}),
            );
            return vec![
                Effect::Submit(JobKind::Export {
                    variant: p.variant,
                    out: Some(out),
                    version: Default::default(),
                }),
                remember,
            ];
        }
        _ => {}
    }
    vec![]
}

/// `text` cut from its start to `width` characters (a path's end is what differs).
fn tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return text.to_string();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(n - width.saturating_sub(1)));
    out
}

pub fn draw(f: &mut Frame, app: &App, area: Rect, p: &ExportPrompt) {
    let t = &app.theme;
    let r = centered(area, 76, 7);
    f.render_widget(Clear, r);
    let inner = usize::from(r.width.saturating_sub(2));
    let name = file_name(app, p.variant);
    let lines = vec![
        Line::from(Span::styled("directory:", t.dim())),
        Line::from(Span::styled(
            format!("{}▏", tail(&p.dir, inner.saturating_sub(1))),
            t.text(),
        )),
        Line::from(Span::styled(
            tail(&format!("writes {name} and its .encodings.json"), inner),
            t.dim(),
        )),
        Line::from(""),
        Line::from(Span::styled(
            "type to edit, Backspace deletes, Enter exports, Esc cancels",
            t.dim(),
        )),
    ];
    let title = format!("export variant {} (QDQ ONNX + encodings)", p.variant);
    f.render_widget(Paragraph::new(lines).block(boxed(app, &title)), r);
}
