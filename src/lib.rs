//! qsteer: the engine under the terminal app and the CLI. It knows nothing of terminals:
//! front ends call into it and render what it returns.

pub mod cancel;
pub mod data;
pub mod error;
pub mod experiment;
pub mod fsutil;
pub mod guard;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod samples;

pub use error::{Error, Result};
