//! Built-in fine-tuning: backpropagation on the CPU through a runtime interpreter of the
//! ONNX graph on burn's autodiff backend, with the trained weights written back into the
//! same graph (same names) for tract to run. BatchNormalization runs in inference mode:
//! its stored running statistics normalise and only its scale and bias train.

pub mod augment;
pub mod checkpoint;
pub mod external;
pub mod fake_quant;
pub mod fit;
pub mod graph;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod params;
pub mod settings;
pub mod trainer;
pub mod value;

#[cfg(test)]
mod fit_tests;
#[cfg(test)]
mod grad_tests;

pub use augment::Augment;
pub use fit::{fine_tune, Event, FineTuneRun, Outcome};
pub use settings::{FineTuneSettings, Loss, Optimizer, Schedule, TrainLayers};
pub use trainer::{Targets, Trainer};
