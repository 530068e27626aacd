//! The `qsteer` binary: the terminal app (no subcommand) and the command line, both thin
//! front ends over the engine in the library.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
