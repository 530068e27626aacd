//! The pieces the dialogs' settings forms share: editing a number field from keys and
//! drawing one `name ◂ value ▸` line.

use super::action::Action;
use super::theme::Theme;
use ratatui::text::{Line, Span};

/// `value` moved by `delta`, kept in `lo..=hi`.
pub fn step(value: usize, delta: i64, lo: usize, hi: usize) -> usize {
    (value as i64 + delta).clamp(lo as i64, hi as i64) as usize
}

/// `value` with the digit `c` typed: appended, or starting a new number when `fresh`
/// (the first digit typed in a field) or when appending would pass `hi`. So "16" can be
/// typed over an 8 without erasing it first. The caller checks the lower bound on use.
pub fn type_digit(value: usize, c: char, hi: usize, fresh: bool) -> usize {
    let d = c.to_digit(10).unwrap_or(0) as usize;
    let appended = value.saturating_mul(10).saturating_add(d);
    if fresh || appended > hi {
        d.min(hi)
    } else {
        appended
    }
}

/// `value` with its last digit erased.
pub fn erase_digit(value: usize) -> usize {
    value / 10
}

/// Calibration sizes a form accepts; ◂▸ step by ten.
pub const CALIBRATION: (usize, usize) = (1, 100_000);

/// `size` stepped by ten samples per `delta`.
pub fn step_calibration(size: usize, delta: i64) -> usize {
    step(size, delta * 10, CALIBRATION.0, CALIBRATION.1)
}

/// The variant a dialog opens on: the one selected in the variants pane when it has the
/// focus, else the current one.
pub fn dialog_variant(app: &super::state::App) -> u32 {
    match app.focus {
        super::state::Pane::Variants => app.selected_variant().unwrap_or(app.current),
        _ => app.current,
    }
}

/// Why a job that needs data and an FP32 variant cannot start (`what`: "compress", …).
pub fn fp32_data_blocker(app: &super::state::App, variant: u32, what: &str) -> Option<String> {
    if app.data_path.is_none() {
        return Some(format!("no dataset: restart with --data DIR to {what}"));
    }
    app.variant(variant)
        .filter(|v| v.encodings_file.is_some())
        .map(|_| format!("variant {variant} is quantized: {what} an FP32 variant"))
}

/// Enter in a dialog that queues jobs on the dataset: when `blocker` says why it cannot,
/// show that and stay; else close the dialog, focus the jobs pane and give the data path.
pub fn launch(app: &mut super::state::App, blocker: Option<String>) -> Option<std::path::PathBuf> {
    if let Some(why) = blocker {
        app.status = why;
        return None;
    }
    let data = app.data_path.clone()?;
    app.popups.pop();
    Some(data)
}

/// A dialog's settings form: a field cursor, and values changed by keys.
pub trait Editable {
    /// The field cursor, whether no digit was typed in that field yet (the first one
    /// then replaces the value), and the number of fields.
    fn cursor(&mut self) -> (&mut usize, &mut bool, usize);
    /// Step the current field's value: numbers by one, choices to the next, flags flip.
    fn change(&mut self, delta: i64);
    /// The current field's number and its upper bound, when it is a number.
    fn number(&mut self) -> Option<(&mut usize, usize)>;
}

/// Apply an editing key (field moves, value changes, digits) to `form`; false when the
/// key is not one of those.
pub fn edit(form: &mut impl Editable, action: &Action) -> bool {
    let mut move_field = |delta: i64| {
        let (f, fresh, n) = form.cursor();
        *f = (*f as i64 + delta).rem_euclid(n as i64) as usize;
        *fresh = true;
    };
    match action {
        Action::Up | Action::FocusPrev => move_field(-1),
        Action::Down | Action::FocusNext => move_field(1),
        Action::Left => form.change(-1),
        Action::Right | Action::Toggle => form.change(1),
        Action::Char(c) if c.is_ascii_digit() => {
            let fresh = *form.cursor().1;
            if let Some((slot, hi)) = form.number() {
                *slot = type_digit(*slot, *c, hi, fresh);
                *form.cursor().1 = false;
            }
        }
        Action::Backspace => {
            if let Some((slot, _)) = form.number() {
                *slot = erase_digit(*slot);
                *form.cursor().1 = false;
            }
        }
        _ => return false,
    }
    true
}

/// One form line: the name in a fixed column, the value between arrows.
pub fn field_line<'a>(t: &Theme, selected: bool, name: &str, value: String) -> Line<'a> {
    let line = Line::from(vec![
        Span::styled(format!("{name:<12}"), t.text()),
        Span::styled(format!("◂ {value} ▸"), t.fg(t.accent)),
    ]);
    if selected {
        line.style(t.selected())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_append_restart_past_the_bound_and_erase() {
        assert_eq!(type_digit(1, '4', 256, false), 14);
        assert_eq!(type_digit(8, '4', 16, false), 4);
        assert_eq!(
            type_digit(type_digit(8, '1', 16, false), '6', 16, false),
            16
        );
        assert_eq!(type_digit(200, '5', 100_000, true), 5);
        assert_eq!(erase_digit(200), 20);
        assert_eq!(step(2, -1, 2, 16), 2);
        assert_eq!(step(15, 3, 2, 16), 16);
    }
}
