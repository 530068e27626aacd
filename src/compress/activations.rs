//! Sampled layer activations for least-squares fits: a layer's input columns (im2col of a
//! few random output positions per image, seeded) taken from one model, and the values at
//! the same positions of a target value taken from another model (the FP32 parent), run
//! side by side over the calibration samples batch by batch. Only the sampled columns are
//! kept, never whole activation maps.

use super::calibration::CalibrationData;
use crate::cancel::CancelToken;
use crate::data::SplitMix64;
use crate::fixes::adaround::data_input;
use crate::fixes::adaround::linear::LinearOp;
use crate::model::graph::Producer;
use crate::model::{Layer, Model};
use crate::runtime::{run_together, CompiledModel};
use crate::{Error, Result};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis};

/// Output positions sampled per image (He et al. and AIMET use about ten).
pub const POSITIONS_PER_SAMPLE: usize = 10;

/// A layer's sampled inputs and the outputs it should produce on them.
#[derive(Debug, Clone)]
pub struct LayerSamples {
    /// Input columns per group, `[K, n]` (row `r` is [`LinearOp`]'s column `r`).
    pub cols: Vec<Array2<f32>>,
    /// Target outputs `[out, n]`, column `j` belonging to `cols[..][.., j]`.
    pub targets: Array2<f32>,
}

impl LayerSamples {
    pub fn len(&self) -> usize {
        self.targets.ncols()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.ncols() == 0
    }
}

/// Compile `model` for the calibration samples with `values` captured as extra outputs.
pub fn compile_capturing(
    model: &Model,
    data: &CalibrationData,
    values: &[String],
) -> Result<CompiledModel> {
    CompiledModel::compile(
        model,
        &data.shapes_for(model)?,
        data.options.batch_size,
        values,
    )
}

/// The output slot of `value` in a model compiled by [`compile_capturing`].
pub fn slot_of(compiled: &CompiledModel, value: &str) -> Result<usize> {
    compiled
        .output_names()
        .iter()
        .position(|o| o == value)
        .ok_or_else(|| Error::runtime(format!("value '{value}' was not captured")))
}

/// Sample `layer`'s input in `model` and the value at `target_slot` of `target` (a model
/// compiled for the same samples) at the same positions. The target must have the
/// layer's output layout (`[N, out, …]` for a conv, `[…, out]` for a dense layer);
/// `target_channels` picks the target's channels the layer still produces (a layer whose
/// outputs were winnowed matches only those of the original value).
pub fn sample_layer(
    model: &Model,
    layer: &Layer,
    target: &CompiledModel,
    target_slot: usize,
    target_channels: Option<&[usize]>,
    data: &CalibrationData,
    cancel: &CancelToken,
) -> Result<(LinearOp, LayerSamples)> {
    let op = LinearOp::of(model, layer)
        .map_err(|why| Error::input(format!("layer '{}': {why}", layer.name)))?;
    let graph_input = match model.index().producer(&layer.input) {
        Some(Producer::Input) => Some(data_input(model, &data.data, &layer.input)?),
        _ => None,
    };
    let source = match graph_input {
        Some(_) => None,
        None => Some(compile_capturing(
            model,
            data,
            std::slice::from_ref(&layer.input),
        )?),
    };
    let input_slot = match &source {
        Some(c) => Some(slot_of(c, &layer.input)?),
        None => None,
    };
    let mut sampler: Option<Sampler> = None;
    let n = data.len();
    let mut models: Vec<&CompiledModel> = vec![target];
    if let Some(c) = &source {
        models.push(c);
    }
    let context = |e: Error| Error::runtime(format!("layer '{}': {e}", layer.name));
    run_together(
        &models,
        &data.data,
        data.options,
        cancel,
        &|_, _| {},
        &mut |from, outs| {
            let y = &outs[0][target_slot];
            let batch = y.shape().first().copied().unwrap_or(0);
            let x: ArrayD<f32> = match (input_slot, graph_input) {
                (Some(slot), _) => outs[1][slot].clone(),
                (None, Some(i)) => data.data.inputs[i].data.read_range(from..from + batch)?,
                (None, None) => unreachable!("an input source is always set"),
            };
            if sampler.is_none() {
                sampler = Some(Sampler::new(&op, &x.shape()[1..], n).map_err(context)?);
            }
            let s = sampler.as_mut().expect("set above");
            for k in 0..batch {
                let y = y.index_axis(Axis(0), k);
                let y = match target_channels {
                    Some(c) => y.select(channel_axis(&op, y.ndim()), c),
                    None => y.to_owned(),
                };
                s.add(&op, from + k, x.index_axis(Axis(0), k), y.view(), data.seed)
                    .map_err(context)?;
            }
            Ok(())
        },
    )?;
    let s = sampler.ok_or_else(|| Error::runtime("no calibration samples ran"))?;
    Ok((op, s.samples))
}

/// The channel axis of one sample of a layer's output: first for a conv, last for a
/// dense layer.
fn channel_axis(op: &LinearOp, ndim: usize) -> Axis {
    match op {
        LinearOp::Conv(_) => Axis(0),
        _ => Axis(ndim.saturating_sub(1)),
    }
}

/// Fills the sample matrices image by image (batches may arrive in any order).
struct Sampler {
    positions: usize,
    per_sample: usize,
    /// All columns of one image, reused.
    scratch: Vec<Array2<f32>>,
    samples: LayerSamples,
}

impl Sampler {
    fn new(op: &LinearOp, sample: &[usize], n: usize) -> Result<Sampler> {
        op.check_sample(sample)?;
        let positions = op.positions(sample);
        let per_sample = positions.min(POSITIONS_PER_SAMPLE);
        let groups = op.groups();
        Ok(Sampler {
            positions,
            per_sample,
            // LinearOp fills one row per position; the samples keep one column per position.
            scratch: vec![Array2::zeros((positions, op.k())); groups],
            samples: LayerSamples {
                cols: vec![Array2::zeros((op.k(), n * per_sample)); groups],
                targets: Array2::zeros((op.out_channels(), n * per_sample)),
            },
        })
    }

    /// Sample image `index`: input `x` and target `y`, both without the batch axis.
    fn add(
        &mut self,
        op: &LinearOp,
        index: usize,
        x: ArrayViewD<f32>,
        y: ArrayViewD<f32>,
        seed: u64,
    ) -> Result<()> {
        op.fill_columns(x, &mut self.scratch, 0)?;
        let out = op.out_channels();
        if y.len() != out * self.positions {
            return Err(Error::runtime(format!(
                "target of shape {:?} does not match {out} outputs at {} positions",
                y.shape(),
                self.positions
            )));
        }
        let y = y.as_standard_layout();
        let flat = y.as_slice().expect("standard layout");
        // Conv outputs are channel-major ([out, positions]); dense ones position-major.
        let conv = matches!(op, LinearOp::Conv(_));
        let chosen = choose(self.positions, self.per_sample, seed, index);
        for (j, &p) in chosen.iter().enumerate() {
            let col = index * self.per_sample + j;
            for (g, scratch) in self.scratch.iter().enumerate() {
                self.samples.cols[g].column_mut(col).assign(&scratch.row(p));
            }
            let mut t = self.samples.targets.column_mut(col);
            for o in 0..out {
                t[o] = if conv {
                    flat[o * self.positions + p]
                } else {
                    flat[p * out + o]
                };
            }
        }
        Ok(())
    }
}

/// `m` distinct positions out of `p` for image `index` (partial Fisher–Yates), the same
/// for a given seed whatever the batch order.
fn choose(p: usize, m: usize, seed: u64, index: usize) -> Vec<usize> {
    if m >= p {
        return (0..p).collect();
    }
    let mut rng = SplitMix64(seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut all: Vec<usize> = (0..p).collect();
    for i in 0..m {
        let j = i + (rng.next_u64() % (p - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(m);
    all
}

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn chosen_positions_are_distinct_seeded_and_in_range() {
        let a = choose(256, 10, 7, 3);
        assert_eq!(a, choose(256, 10, 7, 3));
        assert_ne!(a, choose(256, 10, 7, 4));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
        assert!(a.iter().all(|&p| p < 256));
        assert_eq!(choose(4, 10, 7, 3), vec![0, 1, 2, 3]);
    }
}
