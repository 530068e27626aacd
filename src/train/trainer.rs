//! One model in training: the interpreter graph on burn's CPU autodiff device, the
//! trainable values, the optimizer state. A step is forward, loss, backward, update.
//! QAT adds fake-quant with a straight-through gradient to the same graph ([`Trainer::set_quant`]).

use super::graph::TrainGraph;
use super::loss;
use super::optim::OptimState;
use super::params::{self, ParamSpec};
use super::settings::{FineTuneSettings, Loss};
use super::value::Value;
use crate::model::Model;
use crate::{Error, Result};
use burn_tensor::{DType, Device, Tensor};
use ndarray::ArrayViewD;

/// The targets of one batch: labels, or the parent's logits for distillation.
pub enum Targets<'a> {
    Labels(&'a [i64]),
    Teacher(&'a [f32]),
}

pub struct Trainer {
    graph: TrainGraph,
    specs: Vec<ParamSpec>,
    /// Current values, plain (non-autodiff) tensors.
    values: Vec<Value>,
    pub optim: OptimState,
    loss: Loss,
    dtype: DType,
}

/// burn's CPU device (the flex backend) with autodiff.
pub fn cpu_device() -> Device {
    Device::flex().autodiff()
}

impl Trainer {
    /// Trainer for `model` with `settings` (which layers, optimizer, loss), in `dtype`
    /// (f32 for training; the gradient checks use f64).
    pub fn new(model: &Model, settings: &FineTuneSettings, dtype: DType) -> Result<Trainer> {
        let specs = params::select(model, &settings.train_layers)?;
        let names: Vec<String> = specs.iter().map(|p| p.name.clone()).collect();
        let device = cpu_device();
        let graph = TrainGraph::build(model, &names, &device, dtype)?;
        let values = params::load_values(model, &specs, &device.clone().inner(), dtype)?;
        let optim = OptimState::new(
            settings.optimizer,
            settings.momentum,
            settings.weight_decay,
            specs.len(),
        );
        Ok(Trainer {
            graph,
            specs,
            values,
            optim,
            loss: settings.loss,
            dtype,
        })
    }

    /// Quantization-aware training with `encodings` (see [`TrainGraph::set_quant`]).
    pub fn set_quant(
        &mut self,
        model: &Model,
        encodings: &crate::quant::import::ModelEncodings,
    ) -> Result<()> {
        self.graph.set_quant(model, encodings)
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn set_values(&mut self, values: Vec<Value>) {
        self.values = values;
    }

    /// Trainable elements.
    pub fn param_count(&self) -> usize {
        params::count(&self.values)
    }

    fn input(&self, x: &ArrayViewD<f32>) -> Result<Value> {
        Value::from_array(
            &x.to_owned(),
            self.graph.device(),
            self.dtype,
            "the training batch",
        )
    }

    /// The model's output for one batch, without recording gradients.
    pub fn forward(&self, x: &ArrayViewD<f32>) -> Result<Value> {
        let params: Vec<Value> = self
            .values
            .iter()
            .map(|v| Value::new(v.t.clone().autodiff(), v.shape.clone()))
            .collect();
        self.graph.forward(&[self.input(x)?], &params)
    }

    /// The loss of one batch and the gradient of every parameter (for the checks).
    pub fn loss_and_grads(
        &self,
        x: &ArrayViewD<f32>,
        targets: &Targets,
    ) -> Result<(f64, Vec<Option<Tensor<4>>>)> {
        let leaves: Vec<Value> = self
            .values
            .iter()
            .map(|v| Value::new(v.t.clone().autodiff().require_grad(), v.shape.clone()))
            .collect();
        let out = self.graph.forward(&[self.input(x)?], &leaves)?;
        let loss = match (self.loss, targets) {
            (Loss::CrossEntropy, Targets::Labels(l)) => loss::cross_entropy(&out, l, self.dtype)?,
            (Loss::Distill { temperature }, Targets::Teacher(t)) => {
                loss::distillation(&out, t, temperature, self.dtype)?
            }
            _ => return Err(Error::runtime("the batch's targets do not match the loss")),
        };
        let value = loss.clone().inner().into_scalar::<f64>();
        if !value.is_finite() {
            return Err(Error::runtime(format!(
                "the training loss is {value}: lower the learning rate"
            )));
        }
        let grads = loss.backward();
        let g = leaves.iter().map(|l| l.t.grad(&grads)).collect();
        Ok((value, g))
    }

    /// One optimisation step at learning rate `lr`; returns the batch loss before it.
    pub fn step(&mut self, x: &ArrayViewD<f32>, targets: &Targets, lr: f64) -> Result<f64> {
        let (loss, grads) = self.loss_and_grads(x, targets)?;
        self.optim.step(&mut self.values, grads, lr);
        Ok(loss)
    }

    /// `model` with the current values written into its initializers.
    pub fn write_back(&self, model: &Model) -> Result<Model> {
        params::write_back(model, &self.specs, &self.values)
    }
}
