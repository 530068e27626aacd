//! Fine-tuning with the user's own trainer (DESIGN.md §3, path 3): a command template
//! filled in with the job's files and settings and run through `sh -c`, and the JSON-lines
//! progress protocol its stdout speaks. The job that runs it is `jobs::external_finetune`.

pub mod process;
pub mod protocol;
pub mod template;

pub use process::{run_trainer, TrainerExit, TrainerLine, TrainerOutcome, TrainerRun};
pub use protocol::{parse_line, Line, Progress};
pub use template::{Placeholder, Template, TemplateValues};
