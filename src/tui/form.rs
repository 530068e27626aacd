//! The pieces the dialogs' settings forms share: editing a number field from keys and
//! drawing one `name ◂ value ▸` line.

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
