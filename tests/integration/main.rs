//! The integration tests, one binary: each module drives the library or the real `qsteer`
//! binary on the shipped sample models and fixtures. One binary links once, which keeps
//! the test build short and small.

mod common;

mod adaround_cli;
mod analyze_cli;
mod bad_input;
mod bias_correct_cli;
mod cli;
mod compress_cli;
mod corruption;
mod detached;
mod e2e_loop;
mod e2e_tmux;
mod export_cli;
mod external_trainer;
mod finetune_cli;
mod fixes_cli;
mod fuzz;
mod images;
mod json_keys;
mod metrics_cli;
mod mixed_range_cli;
mod model_inputs;
mod model_load;
mod quantsim_cli;
mod real_exports;
mod run_job;
mod slurm;
mod streaming;
mod variants_cli;
mod workspace_guarantees;
