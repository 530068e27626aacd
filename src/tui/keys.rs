//! Every key binding, declared once. Dispatch looks keys up here and the help popup, the
//! footer and the command palette are generated from the same table, so a key is never
//! described in two places.

use super::action::Action;
use super::state::Pane;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Pane(Pane),
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub code: KeyCode,
    /// How the key is shown in help and the footer.
    pub key: &'static str,
    pub action: Action,
    /// What it does, as the help, footer and palette say it.
    pub what: &'static str,
    pub scope: Scope,
    /// Shown in the footer bar (the most used keys only).
    pub footer: bool,
}

const fn b(
    code: KeyCode,
    key: &'static str,
    action: Action,
    what: &'static str,
    scope: Scope,
    footer: bool,
) -> Binding {
    Binding {
        code,
        key,
        action,
        what,
        scope,
        footer,
    }
}

pub fn bindings() -> Vec<Binding> {
    use Action as A;
    use KeyCode as K;
    use Scope::{Global as G, Pane as P};
    vec![
        b(K::Tab, "Tab", A::FocusNext, "next pane", G, true),
        b(K::BackTab, "S-Tab", A::FocusPrev, "previous pane", G, false),
        b(
            K::Char('1'),
            "1",
            A::Focus(Pane::Graph),
            "graph pane",
            G,
            false,
        ),
        b(
            K::Char('2'),
            "2",
            A::Focus(Pane::Layers),
            "layers pane",
            G,
            false,
        ),
        b(
            K::Char('3'),
            "3",
            A::Focus(Pane::Variants),
            "variants pane",
            G,
            false,
        ),
        b(
            K::Char('4'),
            "4",
            A::Focus(Pane::Jobs),
            "jobs pane",
            G,
            false,
        ),
        b(
            K::Char('5'),
            "5",
            A::Focus(Pane::Compare),
            "compare A/B",
            G,
            false,
        ),
        b(K::Down, "↓/j", A::Down, "move down", G, true),
        b(K::Char('j'), "j", A::Down, "move down", G, false),
        b(K::Up, "↑/k", A::Up, "move up", G, false),
        b(K::Char('k'), "k", A::Up, "move up", G, false),
        b(K::PageDown, "PgDn", A::PageDown, "page down", G, false),
        b(K::PageUp, "PgUp", A::PageUp, "page up", G, false),
        b(K::Home, "Home/g", A::Top, "first row", G, false),
        b(K::Char('g'), "g", A::Top, "first row", G, false),
        b(K::End, "End/G", A::Bottom, "last row", G, false),
        b(K::Char('G'), "G", A::Bottom, "last row", G, false),
        b(
            K::Char('e'),
            "e",
            A::EvaluateDialog,
            "evaluate variants…",
            G,
            true,
        ),
        b(K::Char('s'), "s", A::QuantsimDialog, "quantsim…", G, true),
        b(
            K::Char('f'),
            "f",
            A::FixDialog,
            "fix (BN fold, CLE, BC, AdaRound)…",
            G,
            true,
        ),
        b(K::Char('c'), "c", A::CompressDialog, "compress…", G, true),
        b(
            K::Char('r'),
            "r",
            A::SweepDialog,
            "SSVD→CP sweep (recipe)…",
            G,
            true,
        ),
        b(K::Char('t'), "t", A::FineTuneDialog, "fine-tune…", G, true),
        b(
            K::Char('S'),
            "S",
            A::SlurmDialog,
            "Slurm settings (jobs sent to the cluster)…",
            G,
            false,
        ),
        b(
            K::Char('d'),
            "d",
            A::SweepDecision,
            "reopen the sweep decision",
            G,
            false,
        ),
        b(
            K::Char('x'),
            "x",
            A::Export,
            "export QDQ model + encodings (asks where)…",
            Scope::Pane(Pane::Variants),
            false,
        ),
        b(
            K::Char('R'),
            "R",
            A::RenameVariant,
            "rename the variant…",
            Scope::Pane(Pane::Variants),
            false,
        ),
        b(
            K::Char('N'),
            "N",
            A::NoteVariant,
            "note on the variant…",
            Scope::Pane(Pane::Variants),
            false,
        ),
        b(
            K::Char('T'),
            "T",
            A::TagVariant,
            "tag or untag the variant…",
            Scope::Pane(Pane::Variants),
            false,
        ),
        b(
            K::Char('D'),
            "D",
            A::DeleteVariant,
            "delete the variant (asks)…",
            Scope::Pane(Pane::Variants),
            false,
        ),
        b(
            K::Char('a'),
            "a",
            A::MarkA,
            "mark variant as A",
            Scope::Pane(Pane::Variants),
            true,
        ),
        b(
            K::Char('b'),
            "b",
            A::MarkB,
            "mark variant as B",
            Scope::Pane(Pane::Variants),
            true,
        ),
        b(
            K::Enter,
            "Enter",
            A::Confirm,
            "make variant current",
            P(Pane::Variants),
            false,
        ),
        b(
            K::Enter,
            "Enter/v",
            A::Confirm,
            "open the job: whole error, log",
            P(Pane::Jobs),
            false,
        ),
        b(
            K::Char('v'),
            "v",
            A::OpenJob,
            "open the job: whole error, log",
            P(Pane::Jobs),
            false,
        ),
        b(K::Char('='), "=", A::Compare, "compare A and B", G, true),
        b(
            K::Char('p'),
            "p",
            A::Plot,
            "plot: score vs MACs/size/latency, Pareto front, A/B, sweep candidates",
            G,
            false,
        ),
        b(
            K::Char('w'),
            "w",
            A::SwapAB,
            "swap A and B",
            P(Pane::Compare),
            false,
        ),
        b(
            K::Char('['),
            "[",
            A::StepA(-1),
            "step A up the tree",
            P(Pane::Compare),
            false,
        ),
        b(
            K::Char(']'),
            "]",
            A::StepA(1),
            "step A down the tree",
            P(Pane::Compare),
            false,
        ),
        b(
            K::Char('{'),
            "{",
            A::StepB(-1),
            "step B up the tree",
            P(Pane::Compare),
            false,
        ),
        b(
            K::Char('}'),
            "}",
            A::StepB(1),
            "step B down the tree",
            P(Pane::Compare),
            false,
        ),
        b(
            K::Char('x'),
            "x",
            A::CancelJob,
            "cancel the selected job",
            P(Pane::Jobs),
            true,
        ),
        b(
            K::Char('/'),
            "/",
            A::Filter,
            "filter layers by name",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('o'),
            "o",
            A::SortNext,
            "sort by next column",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('O'),
            "O",
            A::SortReverse,
            "reverse sort",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('n'),
            "n",
            A::ToggleNoise,
            "quant-noise table / costs table",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('h'),
            "h",
            A::ToggleHeat,
            "compress eval-score heat table",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('X'),
            "X",
            A::ExcludeLayer,
            "compress: leave the layer alone",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('F'),
            "F",
            A::KeepFp32,
            "quantsim: keep the layer FP32 (or quantize it)",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('F'),
            "F",
            A::KeepFp32,
            "quantsim: keep the node's quantizers FP32 (or quantize them)",
            P(Pane::Graph),
            false,
        ),
        b(
            K::Char('-'),
            "-",
            A::PinLayer(-1),
            "compress: pin the layer's ratio lower",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char('+'),
            "+",
            A::PinLayer(1),
            "compress: pin the layer's ratio higher (past 0.9: free)",
            P(Pane::Layers),
            false,
        ),
        b(
            K::Char(' '),
            "Space",
            A::Toggle,
            "collapse non-compute runs",
            P(Pane::Graph),
            false,
        ),
        b(K::Char('?'), "?", A::Help, "help for this pane", G, true),
        b(
            K::Char('m'),
            "m",
            A::Messages,
            "messages: the status line's history, whole",
            G,
            false,
        ),
        b(K::Char(':'), ":", A::Palette, "command palette", G, true),
        b(K::Esc, "Esc", A::Close, "close popup", G, false),
        b(K::Char('q'), "q", A::Quit, "quit", G, true),
    ]
}

/// The bindings active in `pane`: its own first, then the global ones.
/// The bindings help lists for `pane`: one line per description (the first binding, whose
/// key names its alternatives: `↓/j`, not `↓/j` and `j`).
pub fn help_entries(pane: Pane) -> Vec<Binding> {
    let mut seen: Vec<&str> = Vec::new();
    active(pane)
        .into_iter()
        .filter(|b| {
            let new = !seen.contains(&b.what);
            seen.push(b.what);
            new
        })
        .collect()
}

pub fn active(pane: Pane) -> Vec<Binding> {
    let all = bindings();
    let own = all.iter().filter(|b| b.scope == Scope::Pane(pane)).cloned();
    let global = all.iter().filter(|b| b.scope == Scope::Global).cloned();
    own.chain(global).collect()
}

/// The action for a key in `pane`, if any.
pub fn lookup(pane: Pane, key: &KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        };
    }
    active(pane)
        .into_iter()
        .find(|b| b.code == key.code)
        .map(|b| b.action)
}

/// Distinct actions by name, for the command palette (first binding of each).
pub fn palette_entries() -> Vec<Binding> {
    let mut seen: Vec<&'static str> = Vec::new();
    bindings()
        .into_iter()
        .filter(|b| {
            let fresh = !seen.contains(&b.what);
            seen.push(b.what);
            fresh
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pane_keys_shadow_nothing_and_globals_resolve_everywhere() {
        let q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        for p in Pane::ALL {
            assert_eq!(lookup(p, &q), Some(Action::Quit));
        }
        let x = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE);
        assert_eq!(lookup(Pane::Jobs, &x), Some(Action::CancelJob));
        assert_eq!(lookup(Pane::Graph, &x), None);
    }

    #[test]
    fn no_key_is_bound_twice_in_one_scope() {
        let all = bindings();
        for (i, a) in all.iter().enumerate() {
            for bnd in &all[i + 1..] {
                let overlap =
                    a.scope == bnd.scope || a.scope == Scope::Global || bnd.scope == Scope::Global;
                assert!(!(a.code == bnd.code && overlap), "{} bound twice", a.key);
            }
        }
    }
}
