//! A value flowing through the interpreter: a rank-4 burn tensor plus the ONNX shape it
//! stands for. Every value is stored left-padded with 1s to rank 4, which keeps ONNX's
//! (numpy) broadcasting exact and lets one tensor type carry every rank up to 4.

use crate::{Error, Result};
use burn_tensor::{DType, Device, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};

/// The highest ONNX rank the interpreter carries.
pub const MAX_RANK: usize = 4;

#[derive(Debug, Clone)]
pub struct Value {
    pub t: Tensor<4>,
    /// The ONNX (logical) shape; the tensor's shape is this left-padded with 1s.
    pub shape: Vec<usize>,
}

/// `shape` left-padded with 1s to rank 4.
pub fn physical(shape: &[usize]) -> [usize; 4] {
    let mut p = [1usize; 4];
    let off = MAX_RANK - shape.len();
    p[off..].copy_from_slice(shape);
    p
}

impl Value {
    pub fn new(t: Tensor<4>, shape: Vec<usize>) -> Value {
        Value { t, shape }
    }

    /// An ndarray as a value on `device`, stored as `dtype`.
    pub fn from_array(a: &ArrayD<f32>, device: &Device, dtype: DType, what: &str) -> Result<Value> {
        let shape = a.shape().to_vec();
        if shape.len() > MAX_RANK {
            return Err(Error::input(format!(
                "{what} has rank {}; the training interpreter handles ranks up to {MAX_RANK}",
                shape.len()
            )));
        }
        let data = TensorData::new(a.iter().copied().collect::<Vec<f32>>(), physical(&shape));
        Ok(Value {
            t: Tensor::from_data(data, (device, dtype)),
            shape,
        })
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The physical axis of ONNX axis `axis` (negative counts from the end).
    pub fn axis(&self, axis: i64, what: &str) -> Result<usize> {
        let r = self.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(Error::input(format!(
                "{what}: axis {axis} is out of range for a rank-{r} value"
            )));
        }
        Ok(MAX_RANK - self.rank() + a as usize)
    }

    /// The same elements under another ONNX shape.
    pub fn reshaped(self, shape: Vec<usize>) -> Value {
        let t = self.t.reshape(physical(&shape));
        Value { t, shape }
    }

    /// The value as f32 ndarray, in its ONNX shape.
    pub fn to_array(&self) -> ArrayD<f32> {
        let data = self.t.clone().into_data_as::<f32>();
        let v: Vec<f32> = data.try_to_vec().unwrap_or_default();
        ArrayD::from_shape_vec(IxDyn(&self.shape), v).expect("element count matches the shape")
    }
}

/// The broadcast shape of two ONNX shapes, or `None` when they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}
