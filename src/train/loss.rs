//! Training losses on `[B, C]` logits: cross-entropy with labels, and distillation (KL
//! divergence to the parent's outputs softened by a temperature, scaled by T² as in
//! Hinton et al. 2015 so gradients keep their size across temperatures).

use super::value::Value;
use crate::{Error, Result};
use burn_tensor::activation::log_softmax;
use burn_tensor::{DType, Tensor, TensorData};

fn rows(logits: &Value) -> Result<(usize, usize)> {
    match logits.shape.as_slice() {
        [b, c] => Ok((*b, *c)),
        s => Err(Error::input(format!(
            "the model's output has shape {s:?}; training needs [batch, classes] logits"
        ))),
    }
}

/// Mean cross-entropy of `logits` against `labels` (class indices).
pub fn cross_entropy(logits: &Value, labels: &[i64], dtype: DType) -> Result<Tensor<1>> {
    let (b, c) = rows(logits)?;
    if labels.len() != b {
        return Err(Error::runtime(format!(
            "{} labels for a batch of {b}",
            labels.len()
        )));
    }
    let mut onehot = vec![0f32; b * c];
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= c {
            return Err(Error::input(format!(
                "label {l} is outside the model's {c} classes"
            )));
        }
        onehot[i * c + l as usize] = 1.0;
    }
    let device = logits.t.device();
    let target = Tensor::<4>::from_data(TensorData::new(onehot, [1, 1, b, c]), (&device, dtype));
    let logp = log_softmax(logits.t.clone(), 3);
    Ok(logp.mul(target).sum().neg().div_scalar(b as f64))
}

/// `T² · mean_batch KL(softmax(teacher/T) ‖ softmax(student/T))`; `teacher` is `[B, C]`
/// row-major (the parent's logits).
pub fn distillation(
    logits: &Value,
    teacher: &[f32],
    temperature: f64,
    dtype: DType,
) -> Result<Tensor<1>> {
    let (b, c) = rows(logits)?;
    if teacher.len() != b * c {
        return Err(Error::runtime(format!(
            "{} teacher values for a [{b}, {c}] batch",
            teacher.len()
        )));
    }
    // Teacher probabilities and their entropy term on the host, in f64.
    let mut p = vec![0f32; b * c];
    let mut neg_entropy = 0f64;
    for r in 0..b {
        let row = &teacher[r * c..(r + 1) * c];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
        let e: Vec<f64> = row
            .iter()
            .map(|&x| ((x as f64 - max) / temperature).exp())
            .collect();
        let z: f64 = e.iter().sum();
        for (k, ek) in e.iter().enumerate() {
            let pk = ek / z;
            p[r * c + k] = pk as f32;
            if pk > 0.0 {
                neg_entropy += pk * pk.ln();
            }
        }
    }
    let device = logits.t.device();
    let target = Tensor::<4>::from_data(TensorData::new(p, [1, 1, b, c]), (&device, dtype));
    let logq = log_softmax(logits.t.clone().div_scalar(temperature), 3);
    let t2 = temperature * temperature;
    Ok(logq
        .mul(target)
        .sum()
        .neg()
        .add_scalar(neg_entropy)
        .mul_scalar(t2 / b as f64))
}
