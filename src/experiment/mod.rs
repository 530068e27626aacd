//! The experiment workspace: the variants of one model (the base and everything made
//! from it), their results, and the job log. See DESIGN.md §2 "Workspace".

pub mod evaluate;
pub mod export;
mod predictions;
pub mod quantsim;
mod variant;
mod variant_edit;
mod workspace;

pub use predictions::{load_predictions, save_predictions, Predictions};
pub use variant::{EvalRecord, Variant};
pub use workspace::{
    default_workspace_dir, load_model_as, now, qsteer_data_dir, repair, Adopted, DetachedJobEntry,
    RepairReport, SlurmJobEntry, ViewMarks, Workspace, WorkspaceFile, FORMAT_VERSION,
};
