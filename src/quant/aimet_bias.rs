//! Bias encodings in AIMET's encodings JSON. AIMET 2.x (aimet_onnx
//! `_concretize_int32_bias_quantizers`) exports the bias of a Conv / ConvTranspose / Gemm
//! whose input and weight are quantized as a `param_encodings` entry of its own: 32 bits,
//! symmetric, AIMET offset −2^31 (ONNX zero point 0), scale `s_input · s_weight` per tensor,
//! or per output channel when the weight is per channel. qsteer's biases are on that grid
//! ([`super::bias`]), so the entry is written the same way and read back:
//!
//! - 1.0.0: `{"name": b, "enc_type": "PER_TENSOR" | "PER_CHANNEL", "dtype": "INT", "bw": 32,
//!   "is_sym": true, "scale": [..], "offset": [-2147483648, ..]}`;
//! - 0.6.1: `b: [{"bitwidth": 32, "dtype": "int", "is_symmetric": "True", "min", "max",
//!   "offset": -2147483648, "scale"}, ..]`, one object per channel.
//!
//! A 32-bit parameter entry is a bias entry; weights stay 2..=16 bits.

use serde_json::{json, Map, Value};

use super::aimet::{
    boolean, check_int_dtype, field, number, object, scales_and_offsets, PER_CHANNEL, PER_TENSOR,
};
use super::bias::BiasGrid;
use crate::{Error, Result};

/// The bitwidth of an int32 bias entry.
pub const BIAS_BITS: i64 = 32;
/// AIMET's offset of a signed symmetric 32-bit grid.
const BIAS_OFFSET: i64 = -(1i64 << 31);

/// Whether a `param_encodings` entry (either layout's object) is a 32-bit bias entry.
pub fn is_bias_entry(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    ["bw", "bitwidth"]
        .iter()
        .any(|k| obj.get(*k).and_then(Value::as_f64) == Some(BIAS_BITS as f64))
}

/// The 1.0.0 entry for a bias grid.
pub fn bias_to_aimet_v1(grid: &BiasGrid) -> Value {
    json!({
        "name": grid.bias,
        "enc_type": if grid.scales.len() > 1 { PER_CHANNEL } else { PER_TENSOR },
        "dtype": "INT",
        "bw": BIAS_BITS,
        "is_sym": true,
        "scale": grid.scales.iter().map(|&s| s as f64).collect::<Vec<_>>(),
        "offset": vec![BIAS_OFFSET; grid.scales.len()],
    })
}

/// The 0.6.1 list for a bias grid (one object per channel).
pub fn bias_to_aimet_legacy(grid: &BiasGrid) -> Value {
    Value::Array(
        grid.scales
            .iter()
            .map(|&s| {
                let s = s as f64;
                json!({
                    "bitwidth": BIAS_BITS,
                    "dtype": "int",
                    "is_symmetric": "True",
                    "max": s * ((1i64 << 31) - 1) as f64,
                    "min": s * BIAS_OFFSET as f64,
                    "offset": BIAS_OFFSET,
                    "scale": s,
                })
            })
            .collect(),
    )
}

/// Reads a 1.0.0 bias entry.
pub fn bias_from_aimet_v1(v: &Value) -> Result<BiasGrid> {
    let obj = object(v, "encoding")?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Error::input("bias encoding has no string 'name'")),
    };
    let read = || -> Result<BiasGrid> {
        check_int_dtype(field(obj, "dtype")?)?;
        let per_channel = match field(obj, "enc_type")?.as_str() {
            Some(PER_TENSOR) => false,
            Some(PER_CHANNEL) => true,
            _ => {
                return Err(Error::input(format!(
                    "enc_type is {}, expected {PER_TENSOR} or {PER_CHANNEL}",
                    obj["enc_type"]
                )))
            }
        };
        check_symmetric(obj, "is_sym")?;
        let (scales, offsets) = scales_and_offsets(obj, per_channel)?;
        offsets.iter().try_for_each(check_offset)?;
        grid(name.clone(), scales)
    };
    read().map_err(|e| Error::input(format!("bias encoding of '{name}': {e}")))
}

/// Reads a 0.6.1 bias entry (`name` is its key).
pub fn bias_from_aimet_legacy(name: &str, list: &[Value]) -> Result<BiasGrid> {
    let read = || -> Result<BiasGrid> {
        let mut scales = Vec::with_capacity(list.len());
        for v in list {
            let obj = object(v, "encoding")?;
            if let Some(dtype) = obj.get("dtype") {
                check_int_dtype(dtype)?;
            }
            check_symmetric(obj, "is_symmetric")?;
            check_offset(field(obj, "offset")?)?;
            scales.push(field(obj, "scale")?.clone());
        }
        grid(name.to_string(), &scales)
    };
    read().map_err(|e| Error::input(format!("bias encoding of '{name}': {e}")))
}

fn check_symmetric(obj: &Map<String, Value>, key: &str) -> Result<()> {
    if boolean(obj, key)? {
        Ok(())
    } else {
        Err(Error::input(
            "a 32-bit bias grid must be symmetric (int32, zero point 0)",
        ))
    }
}

fn check_offset(v: &Value) -> Result<()> {
    match number(v, "offset")? {
        o if o == BIAS_OFFSET as f64 => Ok(()),
        o => Err(Error::input(format!(
            "offset {o}: a 32-bit bias grid has offset {BIAS_OFFSET} (zero point 0)"
        ))),
    }
}

fn grid(bias: String, scales: &[Value]) -> Result<BiasGrid> {
    let scales = scales
        .iter()
        .map(|s| {
            let x = number(s, "scale")? as f32;
            if x.is_normal() && x > 0.0 {
                Ok(x)
            } else {
                Err(Error::input(format!(
                    "scale {s} is not a positive finite number"
                )))
            }
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok(BiasGrid { bias, scales })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_round_trip_and_bad_entries_name_the_bias() {
        let g = BiasGrid {
            bias: "conv.bias".into(),
            scales: vec![0.3f32 * 0.01, 0.3f32 * 0.02],
        };
        let v1 = bias_to_aimet_v1(&g);
        assert_eq!(v1["bw"], 32);
        assert_eq!(v1["enc_type"], "PER_CHANNEL");
        assert_eq!(v1["offset"], json!([-2147483648i64, -2147483648i64]));
        assert!(is_bias_entry(&v1));
        let text = serde_json::to_string(&v1).unwrap();
        assert_eq!(
            bias_from_aimet_v1(&serde_json::from_str(&text).unwrap()).unwrap(),
            g
        );
        let legacy = bias_to_aimet_legacy(&g);
        assert!(is_bias_entry(&legacy[0]));
        let back = bias_from_aimet_legacy("conv.bias", legacy.as_array().unwrap()).unwrap();
        assert_eq!(back, g);
        // Weights are not bias entries.
        assert!(!is_bias_entry(&json!({"bw": 8})));
        let mut odd = v1.clone();
        odd["offset"] = json!([0, -2147483648i64]);
        let err = bias_from_aimet_v1(&odd).unwrap_err().to_string();
        assert!(err.contains("conv.bias") && err.contains("offset"), "{err}");
        let mut asym = v1;
        asym["is_sym"] = json!(false);
        let err = bias_from_aimet_v1(&asym).unwrap_err().to_string();
        assert!(err.contains("symmetric"), "{err}");
    }
}
