//! `qsteer inspekt`: the top-level MODEL argument takes any word, so a mistyped subcommand
//! would be opened as a model file. A MODEL that does not exist, looks like a word rather
//! than a path, and is a near miss of a subcommand's name gets clap's suggestion instead.

use clap::CommandFactory;

/// The clap error for a MODEL that is a mistyped subcommand, if it is one.
pub(crate) fn mistyped_subcommand(model: &std::path::Path) -> Option<clap::Error> {
    let word = model.to_str()?;
    let looks_like_a_word = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !looks_like_a_word || model.exists() {
        return None;
    }
    let mut cmd = super::Cli::command();
    let best = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .map(|name| (distance(word, &name), name))
        .filter(|(d, name)| *d > 0 && *d <= (name.len() / 3).max(1))
        .min()?
        .1;
    Some(cmd.error(
        clap::error::ErrorKind::InvalidSubcommand,
        format!(
            "unrecognized subcommand '{word}'\n\n  tip: a similar subcommand exists: '{best}'\n  \
             (a model file named '{word}' does not exist either)"
        ),
    ))
}

/// Edit distance (insertions, deletions, substitutions, adjacent swaps).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn near_misses_are_suggested_and_paths_left_alone() {
        let msg = |w: &str| mistyped_subcommand(Path::new(w)).map(|e| e.to_string());
        assert!(msg("inspekt").unwrap().contains("'inspect'"));
        assert!(msg("qunatsim").unwrap().contains("'quantsim'"));
        assert!(msg("evl").unwrap().contains("'eval'"));
        assert_eq!(msg("model.onnx"), None);
        assert_eq!(msg("dir/inspekt"), None);
        assert_eq!(msg("resnet50"), None);
        assert_eq!(distance("inspekt", "inspect"), 1);
    }
}
