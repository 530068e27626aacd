//! qsteer: the engine under the terminal app and the CLI. The engine modules know nothing
//! of terminals; `tui` is the app, a client of them like the CLI in the binary.

// Lets the app's modules name the engine as `qsteer::…`, as an outside client would.
extern crate self as qsteer;

pub mod cancel;
pub mod compress;
pub mod data;
pub mod error;
pub mod experiment;
pub mod fixes;
pub mod fsutil;
pub mod guard;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod quant;
pub mod runtime;
pub mod samples;
pub mod train;
pub mod tui;
pub mod units;

pub use error::{Error, Result};
