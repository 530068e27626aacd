//! Colours, from small TOML files in `themes/` (compiled in, so the app finds them from any
//! directory; `--theme FILE.toml` loads a user file). A theme overrides only the colours it
//! names; the rest come from the default.

use qsteer::{Error, Result};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;
use std::str::FromStr;

const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("mono", include_str!("../../themes/mono.toml")),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    text: Option<String>,
    dim: Option<String>,
    accent: Option<String>,
    border: Option<String>,
    border_focused: Option<String>,
    title: Option<String>,
    selected_fg: Option<String>,
    selected_bg: Option<String>,
    good: Option<String>,
    warn: Option<String>,
    bad: Option<String>,
    mark_a: Option<String>,
    mark_b: Option<String>,
    bar: Option<String>,
    header: Option<String>,
    monochrome: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub text: Color,
    pub dim: Color,
    pub accent: Color,
    pub border: Color,
    pub border_focused: Color,
    pub title: Color,
    pub selected_fg: Color,
    pub selected_bg: Color,
    pub good: Color,
    pub warn: Color,
    pub bad: Color,
    pub mark_a: Color,
    pub mark_b: Color,
    pub bar: Color,
    pub header: Color,
    pub monochrome: bool,
}

impl Theme {
    /// A built-in theme by name, or a TOML file path.
    pub fn load(name_or_path: &str) -> Result<Theme> {
        let base = Theme::builtin("default")?;
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return base.overlay(text, name_or_path);
        }
        let path = std::path::Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            return base.overlay(&text, name_or_path);
        }
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        Err(Error::input(format!(
            "--theme {name_or_path}: no such theme (built in: {}; or give a .toml file)",
            names.join(", ")
        )))
    }

    /// The theme to start with: `mono` under NO_COLOR, else the named one.
    pub fn choose(requested: Option<&str>) -> Result<Theme> {
        // NO_COLOR (no-color.org) or a terminal that declares it has no colours.
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        match requested {
            Some(r) => Theme::load(r),
            None if no_color => Theme::load("mono"),
            None => Theme::load("default"),
        }
    }

    fn builtin(name: &str) -> Result<Theme> {
        let text = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| Error::input(format!("no built-in theme {name}")))?;
        let blank = Theme {
            name: name.into(),
            text: Color::Reset,
            dim: Color::Reset,
            accent: Color::Reset,
            border: Color::Reset,
            border_focused: Color::Reset,
            title: Color::Reset,
            selected_fg: Color::Reset,
            selected_bg: Color::Reset,
            good: Color::Reset,
            warn: Color::Reset,
            bad: Color::Reset,
            mark_a: Color::Reset,
            mark_b: Color::Reset,
            bar: Color::Reset,
            header: Color::Reset,
            monochrome: false,
        };
        blank.overlay(text, name)
    }

    fn overlay(mut self, text: &str, origin: &str) -> Result<Theme> {
        let f: ThemeFile = toml::from_str(text)
            .map_err(|e| Error::input(format!("theme {origin}: {}", e.message())))?;
        let colour = |v: &Option<String>, field: &str, slot: &mut Color| -> Result<()> {
            if let Some(v) = v {
                *slot = parse_colour(v).ok_or_else(|| {
                    Error::input(format!(
                        "theme {origin}: field '{field}': '{v}' is not a colour"
                    ))
                })?;
            }
            Ok(())
        };
        colour(&f.text, "text", &mut self.text)?;
        colour(&f.dim, "dim", &mut self.dim)?;
        colour(&f.accent, "accent", &mut self.accent)?;
        colour(&f.border, "border", &mut self.border)?;
        colour(
            &f.border_focused,
            "border_focused",
            &mut self.border_focused,
        )?;
        colour(&f.title, "title", &mut self.title)?;
        colour(&f.selected_fg, "selected_fg", &mut self.selected_fg)?;
        colour(&f.selected_bg, "selected_bg", &mut self.selected_bg)?;
        colour(&f.good, "good", &mut self.good)?;
        colour(&f.warn, "warn", &mut self.warn)?;
        colour(&f.bad, "bad", &mut self.bad)?;
        colour(&f.mark_a, "mark_a", &mut self.mark_a)?;
        colour(&f.mark_b, "mark_b", &mut self.mark_b)?;
        colour(&f.bar, "bar", &mut self.bar)?;
        colour(&f.header, "header", &mut self.header)?;
        if let Some(m) = f.monochrome {
            self.monochrome = m;
        }
        if let Some(n) = f.name {
            self.name = n;
        }
        Ok(self)
    }

    pub fn text(&self) -> Style {
        Style::default().fg(self.text)
    }

    pub fn dim(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default().fg(self.dim)
        }
    }

    pub fn fg(&self, c: Color) -> Style {
        Style::default().fg(c)
    }

    pub fn selected(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default().fg(self.selected_fg).bg(self.selected_bg)
        }
    }

    pub fn border(&self, focused: bool) -> Style {
        let s = Style::default().fg(if focused {
            self.border_focused
        } else {
            self.border
        });
        if focused && self.monochrome {
            s.add_modifier(Modifier::BOLD)
        } else {
            s
        }
    }

    pub fn header(&self) -> Style {
        Style::default()
            .fg(self.header)
            .add_modifier(Modifier::BOLD)
    }
}

fn parse_colour(v: &str) -> Option<Color> {
    if let Ok(i) = v.parse::<u8>() {
        return Some(Color::Indexed(i));
    }
    Color::from_str(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_load_and_light_overrides_default() {
        let d = Theme::load("default").unwrap();
        let l = Theme::load("light").unwrap();
        assert_eq!(d.text, Color::White);
        assert_eq!(l.text, Color::Black);
        assert!(Theme::load("mono").unwrap().monochrome);
    }

    #[test]
    fn a_user_theme_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.toml");
        std::fs::write(&p, "accent = \"#ff0000\"\n").unwrap();
        let t = Theme::load(p.to_str().unwrap()).unwrap();
        assert_eq!(t.accent, Color::Rgb(255, 0, 0));
        assert_eq!(t.text, Theme::load("default").unwrap().text);
    }

    #[test]
    fn bad_theme_files_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "accent = \"notacolour\"\n").unwrap();
        let e = Theme::load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("accent"), "{e}");
        std::fs::write(&p, "acent = \"red\"\n").unwrap();
        assert!(Theme::load(p.to_str().unwrap()).is_err());
        assert!(Theme::load("nosuch").is_err());
    }
}
