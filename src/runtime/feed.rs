//! Turning a batch of float32 samples into the tensor a model input takes: datasets hold
//! float32, models also take int64 / int32 token ids and bool masks. Integer and bool values
//! are cast exactly, so a value that is not one (0.5 for an id, 2 for a mask) is an error
//! naming the input, never a silent rounding. A scalar input (rank 0, like a sample rate)
//! has no batch axis: a call is fed the one value its samples share.

use crate::model::shapes::{InputSpec, InputType};
use crate::{Error, Result};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use tract_onnx::prelude::*;

/// The tensor for `spec` from `batch` (the samples of one call on axis 0).
pub fn input_value(spec: &InputSpec, batch: &ArrayViewD<f32>, src: &str) -> Result<TValue> {
    let scalar;
    let values = if spec.shape.is_empty() && batch.ndim() == 1 {
        scalar = shared_value(spec, batch, src)?;
        scalar.view()
    } else if spec.batch_axis > 0 && spec.batch_axis < batch.ndim() {
        // A state `[layers, batch, hidden]`: the samples move from axis 0 to its batch axis.
        let mut axes: Vec<usize> = (1..batch.ndim()).collect();
        axes.insert(spec.batch_axis, 0);
        batch.view().permuted_axes(axes)
    } else {
        batch.view()
    };
    let what = |v: f32| {
        Error::input(format!(
            "{src}: input '{}' takes {} values; the data holds {v}",
            spec.name,
            spec.elem.name()
        ))
    };
    let tensor = match spec.elem {
        InputType::Float32 => values.as_standard_layout().into_owned().into_tensor(),
        InputType::Int64 => exact(&values, |v| {
            (v.fract() == 0.0 && v.abs() <= 9.0e15).then_some(v as i64)
        })
        .map_err(what)?
        .into_tensor(),
        InputType::Int32 => exact(&values, |v| {
            (v.fract() == 0.0 && (i32::MIN as f32..=i32::MAX as f32).contains(&v))
                .then_some(v as i32)
        })
        .map_err(what)?
        .into_tensor(),
        InputType::Bool => exact(&values, |v| match v {
            0.0 => Some(false),
            1.0 => Some(true),
            _ => None,
        })
        .map_err(what)?
        .into_tensor(),
    };
    Ok(tensor.into_tvalue())
}

/// Cast every value with `cast`, or return the first value it refuses.
fn exact<T: Clone>(
    values: &ArrayViewD<f32>,
    cast: impl Fn(f32) -> Option<T>,
) -> std::result::Result<ArrayD<T>, f32> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values.iter() {
        out.push(cast(v).ok_or(v)?);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(values.shape()), out).expect("same shape as the input"))
}

/// The value the samples of one call give a scalar input; they must agree.
fn shared_value(spec: &InputSpec, batch: &ArrayViewD<f32>, src: &str) -> Result<ArrayD<f32>> {
    let Some(&first) = batch.iter().next() else {
        return Err(Error::input(format!(
            "{src}: no sample for scalar input '{}'",
            spec.name
        )));
    };
    if let Some(&other) = batch.iter().find(|&&v| v != first) {
        return Err(Error::input(format!(
            "{src}: input '{}' is a scalar (one value per call), but samples run in one call \
             give it {first} and {other}; run one sample per call (--batch-size 1)",
            spec.name
        )));
    }
    Ok(ndarray::arr0(first).into_dyn())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dim;
    use ndarray::array;

    fn spec(elem: InputType, shape: Vec<Dim>) -> InputSpec {
        InputSpec {
            name: "ids".into(),
            shape,
            elem,
            batch_axis: 0,
        }
    }

    #[test]
    fn a_state_takes_its_samples_on_its_own_batch_axis() {
        // Two samples of a [layers 2, hidden 3] state fed to a [2, batch, 3] input.
        let samples =
            ndarray::Array::from_shape_fn((2, 2, 3), |(n, l, h)| (100 * n + 10 * l + h) as f32)
                .into_dyn();
        let mut state = spec(
            InputType::Float32,
            vec![Dim::Known(2), Dim::Batch, Dim::Known(3)],
        );
        state.batch_axis = 1;
        let t = input_value(&state, &samples.view(), "m")
            .unwrap()
            .into_tensor();
        let fed = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(fed.shape(), &[2, 2, 3]);
        for (l, n, h) in [(0, 1, 2), (1, 0, 1), (1, 1, 0)] {
            assert_eq!(fed[[l, n, h]], (100 * n + 10 * l + h) as f32);
        }
    }

    #[test]
    fn integers_and_bools_are_cast_exactly_or_refused_by_name() {
        let batch = vec![Dim::Batch, Dim::Known(3)];
        let x = array![[0.0f32, 7.0, 12.0]].into_dyn();
        let v = input_value(&spec(InputType::Int64, batch.clone()), &x.view(), "m").unwrap();
        let t = v.into_tensor();
        let ids: Vec<i64> = t
            .to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(ids, [0, 7, 12]);
        let v = input_value(&spec(InputType::Int32, batch.clone()), &x.view(), "m").unwrap();
        assert_eq!(v.datum_type(), i32::datum_type());
        let e = input_value(
            &spec(InputType::Int64, batch.clone()),
            &array![[1.5f32, 0.0, 0.0]].into_dyn().view(),
            "m.onnx",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "m.onnx: input 'ids' takes int64 values; the data holds 1.5"
        );
        let mask = array![[1.0f32, 0.0, 1.0]].into_dyn();
        let v = input_value(&spec(InputType::Bool, batch.clone()), &mask.view(), "m").unwrap();
        let t = v.into_tensor();
        let m: Vec<bool> = t
            .to_plain_array_view::<bool>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(m, [true, false, true]);
        let e = input_value(&spec(InputType::Bool, batch), &x.view(), "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes bool values; the data holds 7"), "{e}");
    }

    #[test]
    fn a_scalar_input_gets_the_value_its_samples_share() {
        let sr = spec(InputType::Int64, vec![]);
        let v = input_value(&sr, &array![16000.0f32, 16000.0].into_dyn().view(), "m").unwrap();
        let t = v.into_tensor();
        assert_eq!(t.rank(), 0);
        assert_eq!(t.to_plain_array_view::<i64>().unwrap().sum(), 16000);
        let e = input_value(&sr, &array![16000.0f32, 8000.0].into_dyn().view(), "m")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("16000 and 8000") && e.contains("--batch-size 1"),
            "{e}"
        );
    }
}
