//! The layers pane's heat table of a greedy compress job's eval-score dictionary: a row
//! per layer, a column per candidate ratio, each cell the score with only that layer at
//! that ratio, coloured from the worst score so far to the best; `·` not computed yet,
//! the selection's choice in brackets.

use crate::tui::heat::HeatGrid;
use crate::tui::state::App;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

/// Width of the layer-name column.
const NAME_W: u16 = 18;
/// Width of one score column (`[0.987]`).
const CELL_W: u16 = 7;

/// The pane title's note: metric, baseline and how far the dictionary is.
pub fn title(g: &HeatGrid) -> String {
    let (done, all) = g.filled();
    let whose = match g.job {
        Some(j) => format!("job {j}"),
        None => "cached".into(),
    };
    format!(
        " · dictionary {done}/{all} · {} base {:.3} · {whose}",
        g.metric, g.baseline
    )
}

pub fn draw_table(f: &mut Frame, area: Rect, app: &App, g: &HeatGrid, top: usize) {
    let t = &app.theme;
    let range = g.range();
    // Columns that fit; the rest are cut at the right edge.
    let cols = ((area.width.saturating_sub(NAME_W + 1)) / (CELL_W + 1)) as usize;
    let cols = cols.min(g.ratios.len());
    let header = Row::new(
        std::iter::once(Cell::from("layer \\ ratio")).chain(
            g.ratios[..cols]
                .iter()
                .map(|r| Cell::from(format!("{r:>6.2}"))),
        ),
    )
    .style(t.header());
    let visible = area.height.saturating_sub(1) as usize;
    let rows: Vec<Row> = g
        .layers
        .iter()
        .enumerate()
        .skip(top)
        .take(visible)
        .map(|(l, name)| {
            let cells = (0..cols).map(|r| {
                let chosen = g.chosen[l] == Some(r);
                match g.scores[l][r] {
                    None => Cell::from(format!("{:>6}", "·")).style(t.dim()),
                    Some(s) => {
                        let text = if chosen {
                            format!("[{s:.3}]")
                        } else {
                            format!(" {s:.3}")
                        };
                        Cell::from(text).style(heat_style(t, s, range))
                    }
                }
            });
            Row::new(std::iter::once(Cell::from(fit(name))).chain(cells)).style(t.text())
        })
        .collect();
    let widths = std::iter::once(Constraint::Length(NAME_W))
        .chain((0..cols).map(|_| Constraint::Length(CELL_W)))
        .collect::<Vec<_>>();
    f.render_widget(Table::new(rows, widths).header(header), area);
}

fn fit(name: &str) -> String {
    let n = NAME_W as usize;
    if name.chars().count() <= n {
        name.to_string()
    } else {
        let tail: String = name.chars().skip(name.chars().count() + 1 - n).collect();
        format!("…{tail}")
    }
}

/// Worst third bad, middle warn, best third good (of the scores filled so far).
fn heat_style(t: &Theme, score: f64, range: Option<(f64, f64)>) -> Style {
    let Some((lo, hi)) = range.filter(|(lo, hi)| hi > lo) else {
        return t.fg(t.good);
    };
    let x = (score - lo) / (hi - lo);
    t.fg(if x < 1.0 / 3.0 {
        t.bad
    } else if x < 2.0 / 3.0 {
        t.warn
    } else {
        t.good
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_run_from_bad_to_good_over_the_range_so_far() {
        let t = Theme::load("default").unwrap();
        let range = Some((0.2, 0.8));
        assert_eq!(heat_style(&t, 0.2, range), t.fg(t.bad));
        assert_eq!(heat_style(&t, 0.5, range), t.fg(t.warn));
        assert_eq!(heat_style(&t, 0.8, range), t.fg(t.good));
        // One score so far: nothing to compare it with.
        assert_eq!(heat_style(&t, 0.3, Some((0.3, 0.3))), t.fg(t.good));
        assert_ne!(t.fg(t.bad), t.fg(t.good));
    }
}
