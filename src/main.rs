//! The `qsteer` binary: the command line (and, later, the terminal app) over the engine.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
