//! One module per pane; each draws from `App` into its area and nothing else.

pub mod compare;
pub mod compression;
pub mod graph;
pub mod heat;
pub mod jobs;
pub mod layers;
pub mod noise;
pub mod ranges;
pub mod train_chart;
pub mod variants;

use super::state::{App, Pane};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};

/// The focused pane's title starts with this mark instead of a space: the focus shows
/// without colour too (mono theme, colour-blind users), at no cost in width.
pub const FOCUS_MARK: char = '»';

/// The pane's frame: title with its number key, highlighted and marked when focused.
pub fn frame<'a>(app: &App, pane: Pane, extra: String) -> Block<'a> {
    let focused = app.focus == pane;
    let lead = if focused { FOCUS_MARK } else { ' ' };
    let title = format!("{lead}{} {}{} ", pane.index() + 1, pane.title(), extra);
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(focused))
        .title(Line::from(Span::styled(
            title,
            app.theme.fg(app.theme.title),
        )))
}

/// First visible row so that `cursor` stays in a window of `height` rows.
pub fn scroll_offset(cursor: usize, height: usize) -> usize {
    if height == 0 {
        0
    } else {
        cursor.saturating_sub(height - 1)
    }
}

pub use qsteer::units::human;

/// `text` cut to `width` characters, with an ellipsis at the end when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `name` cut to `width` characters by an ellipsis in the middle: layer names share their
/// beginnings (`layer2.…`) and differ at both ends, so both stay readable.
pub fn fit_middle(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width {
        return name.to_string();
    }
    if width < 5 {
        return fit(name, width);
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut cut: String = chars[..head].iter().collect();
    cut.push('…');
    cut.extend(&chars[chars.len() - tail..]);
    cut
}

/// A bar of `width` cells filled to `fraction`, with eighth-block resolution.
pub fn bar(fraction: f64, width: usize) -> String {
    const EIGHTHS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let f = fraction.clamp(0.0, 1.0) * width as f64;
    let full = f.floor() as usize;
    let part = ((f - full as f64) * 8.0).round() as usize;
    let mut s: String = "█".repeat(full.min(width));
    if full < width {
        s.push(EIGHTHS[part.min(8)]);
        s.push_str(&" ".repeat(width - full - 1));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_with_an_ellipsis_and_keep_both_ends() {
        assert_eq!(fit("layer2.downsample.conv", 10), "layer2.do…");
        assert_eq!(fit_middle("layer2.downsample.conv", 12), "layer2….conv");
        assert_eq!(fit_middle("layer2.downsample.conv", 12).chars().count(), 12);
        assert_eq!(fit_middle("conv1", 12), "conv1");
        assert_eq!(fit_middle("abcdefgh", 4), "abc…");
    }
}
