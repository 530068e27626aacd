//! tract is a large library and some malformed models make it panic (a zero stride in a
//! shape computation, say). Calls into it go through `guarded`, which turns a panic into
//! an error naming the model, the node tract was analysing (from its trace log, followed
//! only inside `guarded`) and what went wrong, and keeps the panic message and the path of
//! tract's source on this machine off the user's terminal.

use crate::{Error, Result};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The node tract's analyser is at (`#12 "conv1" Conv`), while guarded.
    static NODE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// tract's analyser logs `Starting step for <node>` before each node and `analyse done`
/// at the end; this logger keeps the node, on guarded threads only, and formats nothing
/// else (tract's other trace lines stop at their first differing character).
struct NodeTracker;

const ANALYSER: &str = "tract_hir::infer::analyser";
const STEP: &str = "Starting step for ";
const DONE: &str = "analyse done";

impl log::Log for NodeTracker {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == ANALYSER && GUARDED.with(|g| g.get() > 0)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut w = Prefixed {
            text: String::new(),
        };
        if std::fmt::write(&mut w, *record.args()).is_err() {
            return;
        }
        let node = w.text.strip_prefix(STEP).map(str::to_string);
        if node.is_some() || w.text == DONE {
            NODE.with(|n| *n.borrow_mut() = node);
        }
    }

    fn flush(&self) {}
}

/// A writer that gives up (an error ends the formatting) as soon as the text can no longer
/// be one of the two lines the tracker wants, or grows past a node's description.
struct Prefixed {
    text: String,
}

impl std::fmt::Write for Prefixed {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        let n = self.text.len();
        let wanted =
            |p: &str| p.as_bytes()[..n.min(p.len())] == self.text.as_bytes()[..n.min(p.len())];
        if (!wanted(STEP) && !wanted(DONE)) || n > 300 {
            return Err(std::fmt::Error);
        }
        Ok(())
    }
}

static TRACKER: NodeTracker = NodeTracker;

/// `/…/.cargo/registry/src/<index>/tract-hir-0.23.9/src/x.rs` → `tract-hir-0.23.9/src/x.rs`:
/// where the source of a dependency sits on this machine says nothing to the user.
fn short_source(file: &str) -> &str {
    match file.find("/registry/src/") {
        Some(i) => {
            let rest = &file[i + "/registry/src/".len()..];
            rest.split_once('/')
                .map_or(rest, |(_, crate_path)| crate_path)
        }
        None => file,
    }
}

static INSTALL: Once = Once::new();

fn install_hook() {
    INSTALL.call_once(|| {
        // Only if no other logger is installed (the process has none of its own).
        if log::set_logger(&TRACKER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) > 0 {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    s.to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "unknown panic".to_string()
                };
                let at = info
                    .location()
                    .map(|l| format!(" (in {}:{})", short_source(l.file()), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Run `f`, converting a panic inside it into `Error::Input` with `what` as context.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    let outermost = GUARDED.with(|g| {
        g.set(g.get() + 1);
        g.get() == 1
    });
    if outermost {
        NODE.with(|n| n.borrow_mut().take());
    }
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    let node = if outermost {
        NODE.with(|n| n.borrow_mut().take())
    } else {
        NODE.with(|n| n.borrow().clone())
    };
    match out {
        Ok(r) => r,
        Err(_) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "unknown panic".into());
            let at = node.map(|n| format!(" at node {n}")).unwrap_or_default();
            Err(Error::input(format!(
                "{what}: the inference engine rejected the model{at}: {msg}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error() {
        let r: Result<()> = guarded("model x.onnx", || panic!("boom"));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("x.onnx") && e.contains("boom"), "{e}");
        assert!(e.contains("(in src/guard.rs:"), "{e}");
    }

    #[test]
    fn registry_paths_are_cut_to_the_crate() {
        let f = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tract-hir-0.23.9/src/ops/cnn/conv.rs";
        assert_eq!(short_source(f), "tract-hir-0.23.9/src/ops/cnn/conv.rs");
        assert_eq!(short_source("src/guard.rs"), "src/guard.rs");
    }

    /// The node tract's analyser was at when it panicked is named; a panic after the
    /// analysis finished names none.
    #[test]
    fn the_node_being_analysed_is_named() {
        let r: Result<()> = guarded("model y.onnx", || {
            log::trace!(target: ANALYSER, "Starting step for {}", "#3 \"conv1\" Conv");
            log::trace!(target: ANALYSER, "  Input  #0: {:?}", [1, 2]);
            let v: Vec<u8> = vec![];
            let _ = v[std::hint::black_box(1)];
            Ok(())
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("at node #3 \"conv1\" Conv: index out of bounds"),
            "{e}"
        );
        let r: Result<()> = guarded("model z.onnx", || {
            log::trace!(target: ANALYSER, "Starting step for {}", "#3 \"conv1\" Conv");
            log::trace!(target: ANALYSER, "analyse done");
            panic!("later")
        });
        let e = r.unwrap_err().to_string();
        assert!(!e.contains("at node"), "{e}");
    }
}
