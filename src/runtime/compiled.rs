//! One model compiled by tract for a fixed per-sample input shape.

use crate::guard::guarded;
use crate::model::shapes::{chain, typed_model, InputSpec};
use crate::model::Model;
use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewD};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// The most elements one value may hold in one call. Far beyond any real model (16 GiB of
/// float32), far below what a damaged pad, stride or shape can ask for; running such a
/// model would exhaust memory or run for hours instead of failing.
pub const MAX_VALUE_ELEMENTS: u64 = 1 << 32;

/// Refuse a model whose analysed shapes ask for an absurd amount of memory.
fn check_value_sizes(model: &TypedModel, src: &str) -> Result<()> {
    for node in &model.nodes {
        for (slot, output) in node.outputs.iter().enumerate() {
            let Some(dims) = output.fact.shape.as_concrete() else {
                continue;
            };
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
            if elements.is_none_or(|n| n > MAX_VALUE_ELEMENTS) {
                let name = model
                    .outlet_label(OutletId::new(node.id, slot))
                    .unwrap_or(&node.name);
                return Err(Error::input(format!(
                    "{src}: value '{name}' would have shape {dims:?}, more than \
                     {MAX_VALUE_ELEMENTS} elements; the model's shapes or attributes look damaged"
                )));
            }
        }
    }
    Ok(())
}

pub struct CompiledModel {
    plan: Arc<TypedSimplePlan>,
    pub(crate) source: String,
    inputs: Vec<InputSpec>,
    sample_shapes: Vec<Vec<usize>>,
    output_names: Vec<String>,
    batch: usize,
    /// The loader fallback that was needed, if any.
    pub fallback: Option<String>,
}

impl CompiledModel {
    /// Compile `model` for batches of `batch` samples of the given per-sample shapes (a
    /// batch the file fixes wins). The outputs are the graph's outputs followed by the
    /// `capture`d intermediate values, in that order.
    pub fn compile(
        model: &Model,
        sample_shapes: &[Vec<usize>],
        batch: usize,
        capture: &[String],
    ) -> Result<CompiledModel> {
        Self::compile_with(model, sample_shapes, batch, capture, true)
    }

    /// [`compile`](Self::compile), optionally without qsteer's rewrites of tract's plan
    /// (`plan_rewrites`): the benchmarks' "before".
    pub fn compile_with(
        model: &Model,
        sample_shapes: &[Vec<usize>],
        batch: usize,
        capture: &[String],
        rewrite_plan: bool,
    ) -> Result<CompiledModel> {
        let mut output_names = model.output_names();
        for c in capture {
            if !output_names.contains(c) {
                output_names.push(c.clone());
            }
        }
        for name in capture {
            if model.index().producer(name).is_none() {
                return Err(Error::input(format!(
                    "{}: no value named '{name}' to capture",
                    model.source()
                )));
            }
        }
        let selected = if capture.is_empty() {
            None
        } else {
            Some(output_names.as_slice())
        };
        let typed = typed_model(model, Some(sample_shapes), Some(batch.max(1)), selected)?;
        let src = model.source().to_string();
        check_value_sizes(&typed.model, &src)?;
        let plan = guarded(&src, || {
            typed
                .model
                .into_optimized()
                .and_then(|m| {
                    if rewrite_plan {
                        super::plan_rewrites::rewrite(m)
                    } else {
                        Ok(m)
                    }
                })
                .and_then(|m| m.into_runnable())
                .map_err(|e| Error::runtime(format!("{src}: compiling failed: {}", chain(&e))))
        })?;
        Ok(CompiledModel {
            plan,
            source: src,
            inputs: typed.inputs,
            sample_shapes: sample_shapes.to_vec(),
            output_names,
            batch: typed.fixed_batch.unwrap_or(batch.max(1)),
            fallback: typed.fallback,
        })
    }

    /// tract's op names of the plan's nodes, in plan order (what the profile groups by).
    pub fn plan_op_names(&self) -> Vec<String> {
        let model = self.plan.model();
        self.plan
            .order_without_consts()
            .iter()
            .map(|&id| model.node(id).op().name().to_string())
            .collect()
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Per-sample input shapes the model was compiled for.
    pub fn sample_shapes(&self) -> &[Vec<usize>] {
        &self.sample_shapes
    }

    /// Samples per call the plan was compiled for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Run one batch: each input has the batch on axis 0 (a scalar input one value per
    /// sample), float32, cast to the input's type (see `feed`). Outputs are float32 (other
    /// types are converted) in `output_names()` order.
    pub fn run(&self, inputs: &[ArrayViewD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let values = self.input_values(inputs)?;
        let outputs = guarded(&self.source, || {
            self.plan.run(values).map_err(|e| {
                Error::runtime(format!("{}: inference failed: {}", self.source, chain(&e)))
            })
        })?;
        self.float_outputs(outputs)
    }

    /// Run one batch as [`run`](Self::run) does, timing each node of the plan:
    /// `on_node(node, seconds)` for every node evaluated, in plan order.
    pub fn run_timed(
        &self,
        inputs: &[ArrayViewD<f32>],
        on_node: &mut dyn FnMut(&TypedNode, f64),
    ) -> Result<Vec<ArrayD<f32>>> {
        let values = self.input_values(inputs)?;
        let outputs = guarded(&self.source, || {
            self.plan
                .spawn()
                .and_then(|mut state| {
                    state.run_plan_with_eval(values, |ctx, op_state, node, inputs| {
                        let started = std::time::Instant::now();
                        let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                        on_node(node, started.elapsed().as_secs_f64());
                        out
                    })
                })
                .map_err(|e| {
                    Error::runtime(format!("{}: inference failed: {}", self.source, chain(&e)))
                })
        })?;
        self.float_outputs(outputs)
    }

    fn input_values(&self, inputs: &[ArrayViewD<f32>]) -> Result<TVec<TValue>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::input(format!(
                "{}: {} input(s) given, the model takes {}",
                self.source,
                inputs.len(),
                self.inputs.len()
            )));
        }
        self.inputs
            .iter()
            .zip(inputs)
            .map(|(spec, a)| super::feed::input_value(spec, a, &self.source))
            .collect()
    }

    fn float_outputs(&self, outputs: TVec<TValue>) -> Result<Vec<ArrayD<f32>>> {
        outputs
            .into_iter()
            .zip(&self.output_names)
            .map(|(v, name)| {
                let t = v.into_tensor();
                let f = t
                    .cast_to::<f32>()
                    .map_err(|e| Error::runtime(format!("output '{name}': {e}")))?
                    .into_owned();
                f.into_plain_array::<f32>()
                    .map_err(|e| Error::runtime(format!("output '{name}': {e}")))
            })
            .collect()
    }
}
