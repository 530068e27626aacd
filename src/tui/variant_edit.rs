//! Renaming, noting, tagging and deleting a variant from the variants pane (`R`, `N`, `T`,
//! `D`). A one-line prompt asks for the text; delete asks first and is refused at once for
//! the base, a variant with children or one a job of this session still runs on (the
//! engine checks again under the workspace lock, for jobs of other processes).

use super::action::Action;
use super::popups::{boxed, centered};
use super::state::{App, Popup};
use super::update::Effect;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Note,
    Tag,
}

/// The open text prompt: which variant, which field, the text as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct EditPrompt {
    pub variant: u32,
    pub field: Field,
    pub text: String,
}

/// One change to a variant, performed on the workspace.
#[derive(Debug, Clone, PartialEq)]
pub enum VariantEdit {
    Rename(u32, String),
    Note(u32, String),
    /// Add the tag, or take it off when the variant has it.
    ToggleTag(u32, String),
    Delete(u32),
}

/// Open the prompt for `field` on the selected variant, with its present text.
pub fn open(app: &mut App, field: Field) {
    let Some(v) = app.selected_variant().and_then(|id| app.variant(id)) else {
        return;
    };
    let text = match field {
        Field::Name => v.name.clone().unwrap_or_default(),
        Field::Note => v.notes.clone(),
        Field::Tag => String::new(),
    };
    let variant = v.id;
    app.popups.push(Popup::EditVariant(EditPrompt {
        variant,
        field,
        text,
    }));
}

/// A key in the open prompt (the caller stores the prompt back while it stays open).
pub fn action(app: &mut App, p: &mut EditPrompt, action: Action) -> Vec<Effect> {
    match action {
        Action::Char(c) => p.text.push(c),
        Action::Backspace => {
            p.text.pop();
        }
        Action::Confirm => {
            app.popups.pop();
            let text = p.text.trim().to_string();
            let edit = match p.field {
                Field::Name => VariantEdit::Rename(p.variant, text),
                Field::Note => VariantEdit::Note(p.variant, text),
                Field::Tag if text.is_empty() || text.contains(char::is_whitespace) => {
                    app.status = "a tag is one word".into();
                    return vec![];
                }
                Field::Tag => VariantEdit::ToggleTag(p.variant, text),
            };
            return vec![Effect::EditVariant(edit)];
        }
        _ => {}
    }
    vec![]
}

/// `D`: ask before deleting the selected variant, or say at once why it cannot go.
pub fn ask_delete(app: &mut App) {
    let Some(id) = app.selected_variant() else {
        return;
    };
    if let Some(why) = why_not_deleted(app, id) {
        app.status = why;
        return;
    }
    app.popups.push(Popup::ConfirmDelete(id));
}

/// Why variant `id` cannot be deleted, as far as the app knows.
fn why_not_deleted(app: &App, id: u32) -> Option<String> {
    let v = app.variant(id)?;
    if v.parent.is_none() {
        return Some(format!(
            "variant {id} is the base model: it cannot be deleted"
        ));
    }
    let children: Vec<String> = (app.variants.iter())
        .filter(|c| c.parent == Some(id))
        .map(|c| c.id.to_string())
        .collect();
    if !children.is_empty() {
        return Some(format!(
            "variant {id} has children ({}): delete them first",
            children.join(", ")
        ));
    }
    let on_it = |j: &&super::state::JobView| j.kind.as_ref().and_then(|k| k.variant()) == Some(id);
    let busy = (app.jobs.iter()).find(|j| j.is_active() && on_it(j));
    busy.map(|j| {
        format!(
            "variant {id}: job #{} runs on it; wait for it or cancel it",
            j.id
        )
    })
}

/// The delete question's answer: `y` or Enter deletes, anything else keeps it.
pub fn confirm_delete(app: &mut App, id: u32, action: Action) -> Vec<Effect> {
    app.popups.pop();
    if matches!(action, Action::Char('y') | Action::Confirm) {
        return vec![Effect::EditVariant(VariantEdit::Delete(id))];
    }
    app.status = format!("variant {id} kept");
    vec![]
}

/// Perform `edit` on the workspace; the message for the status line.
pub fn perform(
    ws: &mut qsteer::experiment::Workspace,
    edit: &VariantEdit,
) -> qsteer::Result<String> {
    Ok(match edit {
        VariantEdit::Rename(id, name) => {
            ws.rename_variant(*id, name)?;
            match name.is_empty() {
                true => format!("variant {id}: name taken off"),
                false => format!("variant {id} renamed {name}"),
            }
        }
        VariantEdit::Note(id, note) => {
            ws.set_note(*id, note)?;
            format!("variant {id} note: {note}")
        }
        VariantEdit::ToggleTag(id, tag) => {
            let has = ws.variant(*id).is_some_and(|v| v.tags.contains(tag));
            if has {
                ws.remove_tag(*id, tag)?;
                format!("variant {id}: tag {tag} taken off")
            } else {
                ws.add_tag(*id, tag)?;
                format!("variant {id} tagged {tag}")
            }
        }
        VariantEdit::Delete(id) => {
            let removed = ws.delete_variant(*id)?;
            format!("variant {id} deleted with its {} file(s)", removed.len())
        }
    })
}

pub fn draw_prompt(f: &mut Frame, app: &App, area: Rect, p: &EditPrompt) {
    let t = &app.theme;
    let r = centered(area, 64, 5);
    f.render_widget(Clear, r);
    let inner = usize::from(r.width.saturating_sub(3));
    let n = p.text.chars().count();
    // The end of a long text, where the cursor is.
    let shown: String = p.text.chars().skip(n.saturating_sub(inner)).collect();
    let title = match p.field {
        Field::Name => format!("rename variant {} (empty: its step again)", p.variant),
        Field::Note => format!("note on variant {}", p.variant),
        Field::Tag => format!("tag variant {} (a tag it has comes off)", p.variant),
    };
    let lines = vec![
        Line::from(Span::styled(format!("{shown}▏"), t.text())),
        Line::from(""),
        Line::from(Span::styled("Enter saves, Esc cancels", t.dim())),
    ];
    f.render_widget(Paragraph::new(lines).block(boxed(app, &title)), r);
}

pub fn draw_confirm(f: &mut Frame, app: &App, area: Rect, id: u32) {
    let t = &app.theme;
    let r = centered(area, 60, 5);
    f.render_widget(Clear, r);
    let lines = vec![
        Line::from(Span::styled(
            format!("Delete variant {id} and its files?"),
            t.text(),
        )),
        Line::from(""),
        Line::from(Span::styled(
            "y or Enter deletes, any other key keeps it",
            t.dim(),
        )),
    ];
    f.render_widget(Paragraph::new(lines).block(boxed(app, "delete")), r);
}
