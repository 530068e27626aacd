//! The trainer command template: parsed once, so an unknown `{name}` is an error before
//! anything runs; filled in with shell-quoted values, so paths with spaces or quotes stay
//! one word each while the rest of the template is shell syntax the user wrote (pipes,
//! redirections, `${VAR}`).

use crate::{Error, Result};
use std::fmt::Write as _;

/// A value the job fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The model to train (a QDQ model for a quantized variant).
    Input,
    /// Where the trainer writes the trained ONNX model.
    Output,
    /// The dataset directory.
    Data,
    Epochs,
    Lr,
    /// The encodings file of a quantized variant; empty otherwise.
    Encodings,
    /// The job's work directory (also the command's working directory).
    Workdir,
}

impl Placeholder {
    pub const ALL: [Placeholder; 7] = [
        Placeholder::Input,
        Placeholder::Output,
        Placeholder::Data,
        Placeholder::Epochs,
        Placeholder::Lr,
        Placeholder::Encodings,
        Placeholder::Workdir,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Input => "input",
            Placeholder::Output => "output",
            Placeholder::Data => "data",
            Placeholder::Epochs => "epochs",
            Placeholder::Lr => "lr",
            Placeholder::Encodings => "encodings",
            Placeholder::Workdir => "workdir",
        }
    }

    fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

/// A parsed command template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// What the placeholders stand for in one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateValues {
    pub input: String,
    pub output: String,
    pub data: String,
    pub epochs: usize,
    pub lr: f64,
    pub encodings: String,
    pub workdir: String,
}

impl TemplateValues {
    fn get(&self, p: Placeholder) -> String {
        match p {
            Placeholder::Input => self.input.clone(),
            Placeholder::Output => self.output.clone(),
            Placeholder::Data => self.data.clone(),
            Placeholder::Epochs => self.epochs.to_string(),
            Placeholder::Lr => self.lr.to_string(),
            Placeholder::Encodings => self.encodings.clone(),
            Placeholder::Workdir => self.workdir.clone(),
        }
    }
}

fn known_names() -> String {
    Placeholder::ALL
        .iter()
        .map(|p| format!("{{{}}}", p.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Template {
    /// Parse `source`. `{name}` is a placeholder, `{{` and `}}` are literal braces, and
    /// `${…}` is left to the shell. The template must say where the model goes: `{output}`.
    pub fn parse(source: &str) -> Result<Template> {
        let bad = |what: String| {
            Error::input(format!(
                "trainer template '{source}': {what} (placeholders: {}; write {{{{ and }}}} for literal braces)",
                known_names()
            ))
        };
        if source.trim().is_empty() {
            return Err(Error::input("the trainer template is empty"));
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '$' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    // Shell parameter expansion: copied through to its closing brace.
                    text.push('$');
                    for (_, n) in chars.by_ref() {
                        text.push(n);
                        if n == '}' {
                            break;
                        }
                    }
                }
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &source[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(bad(format!("'{{' at byte {at} is never closed")));
                    };
                    let name = &rest[..end];
                    let p = Placeholder::from_name(name)
                        .ok_or_else(|| bad(format!("unknown placeholder {{{name}}}")))?;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Value(p));
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(bad(format!("'}}' at byte {at} closes nothing"))),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let t = Template {
            source: source.to_string(),
            pieces,
        };
        if !t.uses(Placeholder::Output) {
            return Err(bad(
                "it never says where to write the trained model: add {output}".into(),
            ));
        }
        Ok(t)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn uses(&self, p: Placeholder) -> bool {
        self.pieces.contains(&Piece::Value(p))
    }

    /// The shell command line with every placeholder replaced by its quoted value.
    pub fn render(&self, values: &TemplateValues) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Value(p) => {
                    let _ = write!(out, "{}", shell_quote(&values.get(*p)));
                }
            }
        }
        out
    }
}

/// One POSIX shell word for `s`: single quotes, with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            input: "/w/in put.onnx".into(),
            output: "/w/it's.onnx".into(),
            data: "/d".into(),
            epochs: 3,
            lr: 0.001,
            encodings: String::new(),
            workdir: "/w".into(),
        }
    }

    #[test]
    fn placeholders_are_replaced_by_quoted_values() {
        let t = Template::parse(
            "train {input} -o {output} --e={epochs} --lr {lr} {encodings} | tee {workdir}/log",
        )
        .unwrap();
        assert_eq!(
            t.render(&values()),
            r"train '/w/in put.onnx' -o '/w/it'\''s.onnx' --e='3' --lr '0.001' '' | tee '/w'/log"
        );
        assert!(t.uses(Placeholder::Input));
        assert!(!t.uses(Placeholder::Data));
    }

    #[test]
    fn an_unknown_placeholder_is_an_error_naming_it() {
        let e = Template::parse("train {input} {outptu}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown placeholder {outptu}"), "{e}");
        assert!(e.contains("{output}"), "lists the known ones: {e}");
    }

    #[test]
    fn braces_escape_and_shell_expansions_pass_through() {
        let t = Template::parse("awk '{{print}}' ${HOME}/x {output}").unwrap();
        assert_eq!(
            t.render(&values()),
            r"awk '{print}' ${HOME}/x '/w/it'\''s.onnx'"
        );
    }

    #[test]
    fn malformed_templates_are_errors() {
        for (source, says) in [
            ("train {input", "never closed"),
            ("train } {output}", "closes nothing"),
            ("train {input}", "add {output}"),
            ("  ", "empty"),
        ] {
            let e = Template::parse(source).unwrap_err().to_string();
            assert!(e.contains(says), "{source}: {e}");
        }
    }

    /// The rendered line, run by a real shell, hands each value over as one argument.
    #[test]
    fn quoted_values_survive_the_shell() {
        let t = Template::parse("printf '%s\\n' {input} {output} {encodings}").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(t.render(&values()))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "/w/in put.onnx\n/w/it's.onnx\n\n"
        );
    }
}
