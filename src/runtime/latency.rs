//! Measured latency: one compiled plan, deterministic inputs, each call timed after a
//! warm-up, reported as median and 90th percentile. `threads` callers share the plan at
//! once (as a server with one worker per core would), each call timed on its own.

use super::CompiledModel;
use crate::cancel::CancelToken;
use crate::model::shapes::{declared_dims, is_scalar_input, InputType};
use crate::model::Model;
use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyOptions {
    /// Samples per call.
    pub batch: usize,
    /// Callers running the plan at the same time.
    pub threads: usize,
    /// Untimed calls first (caches, allocator).
    pub warmup: usize,
    /// Timed calls.
    pub runs: usize,
    /// Stop timing after this many seconds, even with fewer runs (at least one is timed).
    pub max_seconds: f64,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            batch: 1,
            threads: 1,
            warmup: 3,
            runs: 30,
            max_seconds: 5.0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Calls timed.
    pub runs: usize,
    pub batch: usize,
    pub threads: usize,
}

impl Latency {
    /// Measured with the same batch and callers as `opts` asks for.
    pub fn matches(&self, opts: &LatencyOptions) -> bool {
        self.batch == opts.batch.max(1) && self.threads == opts.threads.max(1)
    }
}

/// Time `model` on inputs of `sample_shapes` (per sample, model input order).
pub fn measure_latency(
    model: &Model,
    sample_shapes: &[Vec<usize>],
    opts: &LatencyOptions,
    cancel: &CancelToken,
) -> Result<Latency> {
    if opts.runs == 0 {
        return Err(Error::input("latency: --runs must be at least 1"));
    }
    let batch = opts.batch.max(1);
    let threads = opts.threads.max(1);
    let compiled = CompiledModel::compile(model, sample_shapes, batch, &[])?;
    let batch = compiled.batch();
    let inputs = pattern_inputs(&compiled, sample_shapes);
    let views: Vec<ArrayViewD<f32>> = inputs.iter().map(|a| a.view()).collect();
    for _ in 0..opts.warmup {
        cancel.check()?;
        compiled.run(&views)?;
    }
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let times = Mutex::new(Vec::with_capacity(opts.runs));
    let failure = Mutex::new(None::<Error>);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(opts.runs) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let out_of_time = k > 0 && started.elapsed().as_secs_f64() > opts.max_seconds;
                if k >= opts.runs || out_of_time || cancel.is_cancelled() {
                    return;
                }
                let t = Instant::now();
                match compiled.run(&views) {
                    // Whole nanoseconds, so the figure survives a trip through JSON.
                    Ok(_) => lock(&times).push(t.elapsed().as_nanos() as f64 / 1e6),
                    Err(e) => {
                        lock(&failure).get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = lock(&failure).take() {
        return Err(e);
    }
    cancel.check()?;
    let mut times = times.into_inner().unwrap_or_else(|e| e.into_inner());
    times.sort_by(f64::total_cmp);
    Ok(Latency {
        median_ms: percentile(&times, 0.5),
        p90_ms: percentile(&times, 0.9),
        runs: times.len(),
        batch,
        threads,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nearest-rank percentile of sorted values (`q` in 0..1).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Deterministic inputs for one call of `compiled` (its batch of `sample_shapes`).
pub(super) fn pattern_inputs(
    compiled: &CompiledModel,
    sample_shapes: &[Vec<usize>],
) -> Vec<ArrayD<f32>> {
    let batch = compiled.batch();
    sample_shapes
        .iter()
        .zip(compiled.inputs())
        .enumerate()
        .map(|(k, (s, spec))| match spec.elem {
            InputType::Float32 => pattern_input(batch, s, k),
            // ids and masks: 0 and 1 are valid for any; a scalar input gets one value
            _ if spec.shape.is_empty() => ArrayD::from_elem(IxDyn(&[batch]), 1.0),
            _ => pattern_input(batch, s, k).mapv(|v| f32::from(v > 0.0)),
        })
        .collect()
}

/// Values in [-1, 1) that vary along the tensor and never all vanish, so no kernel takes a
/// shortcut on zeros.
fn pattern_input(batch: usize, sample: &[usize], input: usize) -> ArrayD<f32> {
    let mut shape = vec![batch];
    shape.extend_from_slice(sample);
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| (((i * 7919 + input * 104_729) % 2001) as f32 / 1000.0) - 1.0 + 0.0005)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), values).expect("the shape's product is the length")
}

/// Per-sample input shapes the file declares (batch axis dropped); an input with another
/// unknown dimension is an error naming it.
pub fn declared_sample_shapes(model: &Model) -> Result<Vec<Vec<usize>>> {
    model
        .inputs()
        .iter()
        .map(|input| {
            if is_scalar_input(input) {
                return Ok(Vec::new());
            }
            let dims = declared_dims(input).unwrap_or_default();
            let sample: Option<Vec<usize>> = dims.iter().skip(1).copied().collect();
            match sample {
                Some(s) if !dims.is_empty() => Ok(s),
                _ => Err(Error::input(format!(
                    "{}: input '{}' has no fixed per-sample shape ({:?}); pass --data DIR so \
                     its samples fix it",
                    model.source(),
                    input.name,
                    dims
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn resnet() -> Model {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/resnet_digits.onnx");
        Model::load(&p).unwrap()
    }

    #[test]
    fn latency_is_positive_and_counts_its_runs() {
        let model = resnet();
        let shapes = declared_sample_shapes(&model).unwrap();
        let opts = LatencyOptions {
            runs: 7,
            warmup: 1,
            ..LatencyOptions::default()
        };
        let l = measure_latency(&model, &shapes, &opts, &CancelToken::new()).unwrap();
        assert_eq!(l.runs, 7);
        assert!(l.median_ms > 0.0 && l.p90_ms >= l.median_ms, "{l:?}");
        assert!(l.matches(&opts));
        assert_eq!((l.batch, l.threads), (1, 1));
    }

    #[test]
    fn two_callers_time_every_run_once() {
        let model = resnet();
        let shapes = declared_sample_shapes(&model).unwrap();
        let opts = LatencyOptions {
            runs: 6,
            warmup: 0,
            threads: 2,
            batch: 2,
            ..LatencyOptions::default()
        };
        let l = measure_latency(&model, &shapes, &opts, &CancelToken::new()).unwrap();
        assert_eq!((l.runs, l.batch, l.threads), (6, 2, 2));
    }

    #[test]
    fn cancel_stops_it() {
        let model = resnet();
        let shapes = declared_sample_shapes(&model).unwrap();
        let cancel = CancelToken::new();
        cancel.cancel();
        let err = measure_latency(&model, &shapes, &LatencyOptions::default(), &cancel);
        assert!(matches!(err, Err(Error::Cancelled)), "{err:?}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
    }
}
