//! ONNX `TensorProto` <-> `ArrayD<f32>`, and the size checks that keep a damaged file
//! from reaching tract (a tensor whose dims disagree with its data is rejected here).

use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::TensorProto;

/// Bytes per element for fixed-size types, `None` for strings and unknown codes.
fn element_size(data_type: i32) -> Option<usize> {
    let dt = DataType::try_from(data_type).ok()?;
    Some(match dt {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Uint8 | DataType::Int8 | DataType::Bool => 1,
        DataType::Uint16 | DataType::Int16 | DataType::Float16 | DataType::Bfloat16 => 2,
        DataType::Int64 | DataType::Double | DataType::Uint64 | DataType::Complex64 => 8,
        DataType::Complex128 => 16,
        DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz => 1,
        _ => return None,
    })
}

/// Name of an ONNX data type code for messages.
pub fn data_type_name(data_type: i32) -> String {
    DataType::try_from(data_type)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("unknown type code {data_type}"))
}

/// Shape of a tensor proto as `usize`, rejecting negative dims and overflowing products.
pub fn tensor_shape(t: &TensorProto, what: &str) -> Result<Vec<usize>> {
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(Error::input(format!(
                "{what}: negative dimension {d} in {:?}",
                t.dims
            )));
        }
        shape.push(d as usize);
    }
    element_count(&shape)
        .ok_or_else(|| Error::input(format!("{what}: dimensions {:?} overflow", t.dims)))?;
    Ok(shape)
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Check that a tensor's payload holds exactly as many elements as its dims say.
pub fn validate_tensor(t: &TensorProto, what: &str) -> Result<()> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(Error::input(format!(
            "{what}: weights stored in an external data file are read only for initializers \
             of a model loaded from its file (the data file beside it)"
        )));
    }
    if t.segment.is_some() {
        return Err(Error::input(format!(
            "{what}: segmented tensors are not supported"
        )));
    }
    let shape = tensor_shape(t, what)?;
    let n = element_count(&shape).unwrap_or(usize::MAX);
    let dt = t.data_type;
    if dt == DataType::String as i32 {
        return check_count(what, n, t.string_data.len());
    }
    let size = element_size(dt).ok_or_else(|| {
        Error::input(format!(
            "{what}: unsupported data type {}",
            data_type_name(dt)
        ))
    })?;
    if !t.raw_data.is_empty() {
        let expected = n.saturating_mul(size);
        if t.raw_data.len() != expected {
            return Err(Error::input(format!(
                "{what}: raw data holds {} bytes, dims {:?} of {} need {expected}",
                t.raw_data.len(),
                t.dims,
                data_type_name(dt)
            )));
        }
        return Ok(());
    }
    let found = match DataType::try_from(dt).unwrap_or(DataType::Undefined) {
        DataType::Float => t.float_data.len(),
        DataType::Complex64 => t.float_data.len() / 2,
        DataType::Double => t.double_data.len(),
        DataType::Complex128 => t.double_data.len() / 2,
        DataType::Int64 => t.int64_data.len(),
        DataType::Uint64 | DataType::Uint32 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    check_count(what, n, found)
}

fn check_count(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::input(format!(
            "{what}: holds {found} elements, its dims need {expected}"
        )))
    }
}

/// Read a float tensor (float32, float64 or float16) as `ArrayD<f32>`.
/// Returns `Ok(None)` for non-float tensors (shapes, indices), which are not weights.
pub fn to_array_f32(t: &TensorProto, what: &str) -> Result<Option<ArrayD<f32>>> {
    validate_tensor(t, what)?;
    let shape = tensor_shape(t, what)?;
    let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let values: Vec<f32> = match dt {
        DataType::Float if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::Float => t.float_data.clone(),
        DataType::Double if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        DataType::Double => t.double_data.iter().map(|&v| v as f32).collect(),
        DataType::Float16 if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        DataType::Float16 => t.int32_data.iter().map(|&v| f16_to_f32(v as u16)).collect(),
        _ => return Ok(None),
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map(Some)
        .map_err(|e| Error::input(format!("{what}: {e}")))
}

/// Write `array` into `t` as float32 raw data, keeping its name.
pub fn write_array_f32(t: &mut TensorProto, array: &ArrayD<f32>) {
    t.dims = array.shape().iter().map(|&d| d as i64).collect();
    t.data_type = DataType::Float as i32;
    t.float_data.clear();
    t.double_data.clear();
    t.int32_data.clear();
    // Sized up front: this runs on every weight a transform rewrites (100 MB on a ResNet-50).
    let mut raw = Vec::with_capacity(array.len() * 4);
    let mut put = |v: &f32| raw.extend_from_slice(&v.to_le_bytes());
    match array.as_slice() {
        Some(flat) => flat.iter().for_each(&mut put),
        None => array.iter().for_each(&mut put),
    }
    t.raw_data = raw;
}

/// A fresh float32 tensor proto named `name`.
pub fn tensor_from_array(name: &str, array: &ArrayD<f32>) -> TensorProto {
    let mut t = TensorProto {
        name: name.to_string(),
        ..Default::default()
    };
    write_array_f32(&mut t, array);
    t
}

/// Read an integer tensor (int64 or int32) as `Vec<i64>`: Reshape targets, axes, pads.
pub fn to_i64_vec(t: &TensorProto, what: &str) -> Result<Option<Vec<i64>>> {
    validate_tensor(t, what)?;
    let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    Ok(match dt {
        DataType::Int64 if !t.raw_data.is_empty() => Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect(),
        ),
        DataType::Int64 => Some(t.int64_data.clone()),
        DataType::Int32 if !t.raw_data.is_empty() => Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        DataType::Int32 => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
        _ => None,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // subnormal: value = frac * 2^-24
            let v = frac as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_round_trip_is_bit_exact() {
        let a = ArrayD::from_shape_vec(
            IxDyn(&[2, 3]),
            vec![1.0, -0.0, 3.5, f32::MIN_POSITIVE, 1e-30, 7.0],
        )
        .unwrap();
        let t = tensor_from_array("w", &a);
        let b = to_array_f32(&t, "w").unwrap().unwrap();
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn float_data_field_and_f16_are_read() {
        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Float as i32,
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        assert_eq!(
            to_array_f32(&t, "t").unwrap().unwrap().as_slice().unwrap(),
            &[1.0, 2.0]
        );
        // 0x3c00 = 1.0, 0xc000 = -2.0, 0x0001 = smallest subnormal
        let h = TensorProto {
            dims: vec![3],
            data_type: DataType::Float16 as i32,
            raw_data: [0x3c00u16, 0xc000, 0x0001]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        };
        let v = to_array_f32(&h, "h").unwrap().unwrap();
        assert_eq!(v[[0]], 1.0);
        assert_eq!(v[[1]], -2.0);
        assert_eq!(v[[2]], 2f32.powi(-24));
    }

    #[test]
    fn size_mismatch_and_negative_dims_are_errors() {
        let t = TensorProto {
            name: "conv.weight".into(),
            dims: vec![4, 4],
            data_type: DataType::Float as i32,
            raw_data: vec![0; 12],
            ..Default::default()
        };
        let e = to_array_f32(&t, "initializer 'conv.weight'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv.weight") && e.contains("64"), "{e}");
        let neg = TensorProto {
            dims: vec![-3],
            data_type: 1,
            ..Default::default()
        };
        assert!(validate_tensor(&neg, "x").is_err());
        let huge = TensorProto {
            dims: vec![i64::MAX, i64::MAX],
            data_type: 1,
            ..Default::default()
        };
        assert!(validate_tensor(&huge, "x").is_err());
    }

    #[test]
    fn integer_tensors_are_not_weights() {
        let t = TensorProto {
            dims: vec![2],
            data_type: DataType::Int64 as i32,
            int64_data: vec![1, -1],
            ..Default::default()
        };
        assert!(to_array_f32(&t, "shape").unwrap().is_none());
        assert_eq!(to_i64_vec(&t, "shape").unwrap().unwrap(), vec![1, -1]);
    }
}
