//! Fake-quant with the straight-through estimator, for quantization-aware training. The
//! forward value is exactly [`Encoding::fake_quant`] (per tensor, or per channel along an
//! axis); the gradient is the clipped identity: 1 where the value rounds onto the grid, 0
//! where the quantizer saturates (AIMET's STE without range learning; the grid is fixed).

use super::value::{physical, Value};
use crate::quant::Encoding;
use crate::{Error, Result};
use burn_tensor::{DType, Device, Tensor, TensorData};

/// One quantizer's grid as the interpreter applies it.
// One grid per quantizer of the model, built once: the size of the tensor variant is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Grid {
    Tensor {
        scale: f32,
        offset: i32,
        steps: u32,
    },
    /// One grid per slice along an axis: scale and offset shaped to broadcast over the value.
    Channels {
        scale: Tensor<4>,
        offset: Tensor<4>,
        steps: u32,
    },
}

impl Grid {
    pub fn tensor(e: &Encoding) -> Grid {
        Grid::Tensor {
            scale: e.scale,
            offset: e.offset,
            steps: e.num_steps(),
        }
    }

    /// Per-channel grids for a value of ONNX shape `shape`, channel `c` along `axis` with
    /// `encodings[c]`. All encodings must share one bitwidth.
    pub fn channels(
        encodings: &[Encoding],
        axis: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
        what: &str,
    ) -> Result<Grid> {
        if axis >= shape.len() || shape[axis] != encodings.len() {
            return Err(Error::input(format!(
                "{what}: {} per-channel encodings for axis {axis} of shape {shape:?}",
                encodings.len()
            )));
        }
        let steps = encodings[0].num_steps();
        if encodings.iter().any(|e| e.num_steps() != steps) {
            return Err(Error::input(format!(
                "{what}: per-channel encodings of different bitwidths"
            )));
        }
        let mut per = vec![1usize; shape.len()];
        per[axis] = encodings.len();
        let make = |v: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v, physical(&per)), (device, dtype))
        };
        Ok(Grid::Channels {
            scale: make(encodings.iter().map(|e| e.scale).collect()),
            offset: make(encodings.iter().map(|e| e.offset as f32).collect()),
            steps,
        })
    }
}

/// `fake_quant(x)` forward, clipped identity backward.
pub fn fake_quant_ste(x: &Value, grid: &Grid) -> Value {
    let xd = x.t.clone().detach();
    // r = round(x / scale) − offset: the grid index before clamping, computed in the same
    // order as Encoding::fake_quant so the values agree bit for bit.
    let (r, steps) = match grid {
        Grid::Tensor {
            scale,
            offset,
            steps,
        } => (
            xd.clone()
                .div_scalar(*scale as f64)
                .round()
                .sub_scalar(*offset as f64),
            *steps,
        ),
        Grid::Channels {
            scale,
            offset,
            steps,
        } => (
            xd.clone().div(scale.clone()).round().sub(offset.clone()),
            *steps,
        ),
    };
    let top = steps as f64;
    let inside = r
        .clone()
        .greater_equal_elem(0.0)
        .bool_and(r.clone().lower_equal_elem(top));
    let q = r.clamp(0.0, top);
    let fq = match grid {
        Grid::Tensor { scale, offset, .. } => {
            q.add_scalar(*offset as f64).mul_scalar(*scale as f64)
        }
        Grid::Channels { scale, offset, .. } => q.add(offset.clone()).mul(scale.clone()),
    };
    let mask = xd.zeros_like().mask_where(inside, xd.ones_like());
    // x·mask carries the gradient; the detached rest makes the value fq exactly (inside the
    // grid |fq − x| ≤ scale/2 with fq a grid value, so fq − x and x + (fq − x) are exact).
    let correction = fq.sub(xd.mul(mask.clone()));
    let t = x.t.clone().mul(mask).add(correction);
    Value::new(t, x.shape.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitMix64;

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn values(n: usize, seed: u64, spread: f32) -> Vec<f32> {
        let mut rng = SplitMix64(seed);
        (0..n).map(|_| spread * rng.symmetric()).collect()
    }

    fn value(v: &[f32], shape: &[usize], dev: &Device) -> Value {
        let t = Tensor::<4>::from_data(
            TensorData::new(v.to_vec(), physical(shape)),
            (dev, DType::F32),
        );
        Value::new(t, shape.to_vec())
    }

    /// Forward equals `Encoding::fake_quant`; backward of sum(out · r) is r where the
    /// value is on the grid, 0 where it saturates.
    fn check(x: &[f32], shape: &[usize], grid: &Grid, enc: &dyn Fn(usize) -> Encoding) {
        let dev = device();
        let leaf = value(x, shape, &dev);
        let leaf = Value::new(leaf.t.require_grad(), leaf.shape);
        let out = fake_quant_ste(&leaf, grid);
        let got: Vec<f32> = out.to_array().iter().copied().collect();
        let r = values(x.len(), 7, 1.0);
        let loss = out.t.mul(value(&r, shape, &dev).t).sum();
        let grads = loss.backward();
        let g: Vec<f32> = leaf
            .t
            .grad(&grads)
            .unwrap()
            .into_data_as::<f32>()
            .try_to_vec()
            .unwrap();
        let (mut inside, mut outside) = (0, 0);
        for i in 0..x.len() {
            let e = enc(i);
            assert_eq!(got[i].to_bits(), e.fake_quant(x[i]).to_bits(), "value {i}");
            let idx = (x[i] / e.scale).round_ties_even() - e.offset as f32;
            if (0.0..=e.num_steps() as f32).contains(&idx) {
                inside += 1;
                assert_eq!(g[i], r[i], "gradient {i} inside the grid");
            } else {
                outside += 1;
                assert_eq!(g[i], 0.0, "gradient {i} outside the grid");
            }
        }
        assert!(
            inside > 0 && outside > 0,
            "{inside} inside, {outside} outside"
        );
    }

    #[test]
    fn per_tensor_matches_encoding_and_clips_the_gradient() {
        // A 4-bit asymmetric grid over [-1, 2]; values spread over [-3, 3] so some saturate.
        let e = Encoding::from_range(-1.0, 2.0, 4, false).unwrap();
        let x = values(300, 1, 3.0);
        check(&x, &[3, 10, 10], &Grid::tensor(&e), &|_| e);
    }

    #[test]
    fn per_channel_matches_encoding_and_clips_the_gradient() {
        // Weight [4, 2, 3, 3], channel axis 0, a different symmetric 4-bit grid per channel.
        let encs: Vec<Encoding> = (0..4)
            .map(|c| {
                let m = 0.2 + 0.3 * c as f32;
                Encoding::from_range(-m, m, 4, true).unwrap()
            })
            .collect();
        let shape = [4, 2, 3, 3];
        let x = values(72, 2, 1.2);
        let grid = Grid::channels(&encs, 0, &shape, &device(), DType::F32, "w").unwrap();
        check(&x, &shape, &grid, &|i| encs[i / 18]);
    }

    #[test]
    fn channel_count_mismatch_is_an_error() {
        let e = Encoding::from_range(-1.0, 1.0, 8, false).unwrap();
        let err =
            Grid::channels(&[e; 3], 0, &[4, 2], &device(), DType::F32, "weight 'w'").unwrap_err();
        assert!(err.to_string().contains("weight 'w'"), "{err}");
    }
}
