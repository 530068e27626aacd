//! The `qsteer` binary: the terminal app (no subcommand) and the command line, both thin
//! front ends over the engine in the library.

mod cli;

fn main() {
    restore_default_sigpipe();
    std::process::exit(cli::main());
}

/// `qsteer … --json | head` must end quietly when the reader goes away, as other command-line
/// tools do, not panic in `println!`: Rust ignores SIGPIPE, so put back the default action.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
