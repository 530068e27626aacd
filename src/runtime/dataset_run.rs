//! Running a whole dataset through a compiled model on worker threads.

use super::CompiledModel;
use crate::cancel::CancelToken;
use crate::data::Dataset;
use crate::{Error, Result};
use ndarray::{concatenate, ArrayD, ArrayViewD, Axis, Slice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Samples per call into tract; the model is compiled for it (the file's fixed
    /// batch wins).
    pub batch_size: usize,
    /// Worker threads, each running its own batches on the shared plan.
    pub threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The outputs of a dataset run, each with all samples stacked on axis 0, in order.
pub struct RunOutput {
    pub outputs: Vec<ArrayD<f32>>,
    pub samples: usize,
    pub seconds: f64,
}

impl RunOutput {
    pub fn samples_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.samples as f64 / self.seconds
        } else {
            0.0
        }
    }
}

impl CompiledModel {
    /// Run every sample of `data` (batches of `self.batch()`; `options.batch_size` is
    /// fixed at compile time), calling `on_batch(start, outputs)` for each batch (from
    /// worker threads, one at a time, not necessarily in order) and `progress(done, total)`.
    /// Stops with `Error::Cancelled` at the next batch boundary once `cancel` is set.
    pub fn run_dataset_streaming(
        &self,
        data: &Dataset,
        options: RunOptions,
        cancel: &CancelToken,
        progress: &(dyn Fn(usize, usize) + Sync),
        on_batch: &mut (dyn FnMut(usize, Vec<ArrayD<f32>>) -> Result<()> + Send),
    ) -> Result<f64> {
        run_together(
            &[self],
            data,
            options,
            cancel,
            progress,
            &mut |from, mut outs| on_batch(from, outs.pop().unwrap_or_default()),
        )
    }

    /// Run samples `from..to`, each dataset input fed to the model input of its name (see
    /// [`Dataset::model_order`]); a last batch shorter than the compiled one is filled by
    /// repeating its last sample, and the extra outputs are dropped.
    pub(crate) fn run_slice(
        &self,
        data: &Dataset,
        from: usize,
        to: usize,
        batch: usize,
    ) -> Result<Vec<ArrayD<f32>>> {
        let pad = batch - (to - from);
        // Only this batch's samples are read (decoded, converted) from the dataset, then
        // handed to the model in its input order (named inputs by name).
        let indices: Vec<usize> = (from..to).chain(std::iter::repeat_n(to - 1, pad)).collect();
        let names: Vec<String> = self.inputs().iter().map(|i| i.name.clone()).collect();
        let mut gathered: Vec<Option<ArrayD<f32>>> =
            data.gather(&indices)?.into_iter().map(Some).collect();
        let inputs: Vec<ArrayD<f32>> = data
            .model_order(&names)?
            .into_iter()
            .filter_map(|i| gathered.get_mut(i).and_then(Option::take))
            .collect();
        let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
        let outputs = self.run(&views)?;
        Ok(outputs
            .into_iter()
            .map(|o| {
                if pad > 0 && o.ndim() > 0 && o.shape()[0] == batch {
                    o.slice_axis(Axis(0), Slice::from(0..to - from)).to_owned()
                } else {
                    o
                }
            })
            .collect())
    }

    /// Run every sample and keep the outputs, stacked in sample order.
    pub fn run_dataset(
        &self,
        data: &Dataset,
        options: RunOptions,
        cancel: &CancelToken,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<RunOutput> {
        let mut parts: Vec<(usize, Vec<ArrayD<f32>>)> = Vec::new();
        let seconds =
            self.run_dataset_streaming(data, options, cancel, progress, &mut |start, outs| {
                parts.push((start, outs));
                Ok(())
            })?;
        parts.sort_by_key(|p| p.0);
        let count = self.output_names().len();
        let mut outputs = Vec::with_capacity(count);
        for k in 0..count {
            let views: Vec<ArrayViewD<f32>> = parts
                .iter()
                .filter_map(|p| p.1.get(k).map(|a| a.view()))
                .collect();
            let stacked = concatenate(Axis(0), &views).map_err(|e| {
                Error::runtime(format!(
                    "output '{}' changes shape between batches: {e}",
                    self.output_names()[k]
                ))
            })?;
            outputs.push(stacked);
        }
        Ok(RunOutput {
            outputs,
            samples: data.len(),
            seconds,
        })
    }
}

/// Run every sample of `data` through several models compiled for the same batch, batch by
/// batch, so values of one sample in different models can be compared without holding the
/// dataset's activations: `on_batch(start, outputs)` gets each model's outputs for the batch
/// (in `models` order), from worker threads one at a time. Cancelled between batches.
pub fn run_together(
    models: &[&CompiledModel],
    data: &Dataset,
    options: RunOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
    on_batch: &mut (dyn FnMut(usize, Vec<Vec<ArrayD<f32>>>) -> Result<()> + Send),
) -> Result<f64> {
    let sink = Mutex::new(on_batch);
    let (_, seconds) = run_together_fold(
        models,
        data,
        options,
        cancel,
        progress,
        &|| (),
        &|_, from, outs| {
            let mut guard = sink
                .lock()
                .map_err(|_| Error::runtime("a worker thread failed"))?;
            (*guard)(from, outs)
        },
    )?;
    Ok(seconds)
}

/// Folds one batch (its start and each model's outputs) into a worker's state.
pub type BatchFold<'a, S> = dyn Fn(&mut S, usize, Vec<Vec<ArrayD<f32>>>) -> Result<()> + Sync + 'a;

/// [`run_together`] with the per-batch work done on the worker threads in parallel: each
/// worker folds its batches into its own state (made by `init`) with `fold(state, start,
/// outputs)`, and the states are returned (one per worker that ran, in no particular
/// order) for the caller to merge. Heavy per-batch statistics belong here rather than in
/// `run_together`'s serialized callback.
pub fn run_together_fold<S: Send>(
    models: &[&CompiledModel],
    data: &Dataset,
    options: RunOptions,
    cancel: &CancelToken,
    progress: &(dyn Fn(usize, usize) + Sync),
    init: &(dyn Fn() -> S + Sync),
    fold: &BatchFold<'_, S>,
) -> Result<(Vec<S>, f64)> {
    let Some(first) = models.first() else {
        return Err(Error::runtime("no model to run"));
    };
    let batch = first.batch();
    if let Some(m) = models.iter().find(|m| m.batch() != batch) {
        return Err(Error::runtime(format!(
            "{} runs batches of {}, {} of {batch}; models run together need one batch size",
            m.source,
            m.batch(),
            first.source
        )));
    }
    let n = data.len();
    let batches = n.div_ceil(batch);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failure = Mutex::new(None::<Error>);
    let states = Mutex::new(Vec::new());
    let workers = options.threads.clamp(1, batches.max(1));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut state = init();
                loop {
                    if cancel.is_cancelled() || failure.lock().map(|f| f.is_some()).unwrap_or(true)
                    {
                        break;
                    }
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= batches {
                        break;
                    }
                    let from = b * batch;
                    let to = (from + batch).min(n);
                    let outcome = models
                        .iter()
                        .map(|m| m.run_slice(data, from, to, batch))
                        .collect::<Result<Vec<_>>>()
                        .and_then(|outs| fold(&mut state, from, outs));
                    if let Err(e) = outcome {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                    let d = done.fetch_add(to - from, Ordering::SeqCst) + (to - from);
                    progress(d, n);
                }
                if let Ok(mut s) = states.lock() {
                    s.push(state);
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let error = failure
        .into_inner()
        .map_err(|_| Error::runtime("a worker thread failed"))?;
    if let Some(e) = error {
        return Err(e);
    }
    cancel.check()?;
    let states = states
        .into_inner()
        .map_err(|_| Error::runtime("a worker thread failed"))?;
    if states.len() != workers {
        return Err(Error::runtime("a worker thread failed"));
    }
    Ok((states, seconds))
}
