//! The per-tensor pieces of AIMET's encodings JSON; the file around them is written elsewhere.
//!
//! - 0.6.1 ("legacy"): a list of objects per tensor, one per channel:
//!   `{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "max": …, "min": …,
//!   "offset": -128, "scale": …}`.
//! - 1.0.0: one object per tensor: `{"name": …, "enc_type": "PER_TENSOR" | "PER_CHANNEL",
//!   "dtype": "INT", "bw": 8, "is_sym": false, "scale": [..], "offset": [..]}`.
//!
//! In both, `offset` is AIMET's (≤ 0), the negative of the ONNX unsigned zero point, and a
//! signed symmetric encoding has offset -2^(b-1). Readers accept the variants AIMET has
//! written over time (float offsets like `-128.0`, booleans as strings or JSON booleans, no
//! `dtype` in 0.4 files); float (`dtype: float`) and blockwise encodings are rejected.

use serde_json::{json, Map, Value};

use super::encoding::Encoding;
use crate::{Error, Result};

/// Encoding types in 1.0.0 files.
pub(super) const PER_TENSOR: &str = "PER_TENSOR";
pub(super) const PER_CHANNEL: &str = "PER_CHANNEL";

impl Encoding {
    /// The 0.6.1 object for this encoding (one entry of a tensor's list).
    pub fn to_aimet_legacy(&self) -> Value {
        json!({
            "bitwidth": self.bitwidth,
            "dtype": "int",
            "is_symmetric": if self.symmetric { "True" } else { "False" },
            "max": self.max as f64,
            "min": self.min as f64,
            "offset": self.offset,
            "scale": self.scale as f64,
        })
    }

    /// Reads a 0.6.1 (or 0.4/0.5) encoding object. `scale` and `offset` define the grid;
    /// `min`/`max` are re-derived from them.
    pub fn from_aimet_legacy(v: &Value) -> Result<Encoding> {
        let obj = object(v, "encoding")?;
        if let Some(dtype) = obj.get("dtype") {
            check_int_dtype(dtype)?;
        }
        let bitwidth = bitwidth(obj, "bitwidth")?;
        let symmetric = boolean(obj, "is_symmetric")?;
        let scale = number(field(obj, "scale")?, "scale")?;
        let offset = integer(field(obj, "offset")?, "offset")?;
        Encoding::from_scale_offset(bitwidth, symmetric, scale as f32, offset)
    }
}

/// A tensor's entry in a 1.0.0 file.
#[derive(Clone, Debug, PartialEq)]
pub struct AimetTensorEncoding {
    pub name: String,
    pub per_channel: bool,
    pub encodings: Vec<Encoding>,
}

/// The 1.0.0 object for a tensor. All encodings must share bitwidth and symmetry, and a
/// per-tensor entry has exactly one.
pub fn to_aimet_v1(name: &str, encodings: &[Encoding], per_channel: bool) -> Result<Value> {
    let Some(first) = encodings.first() else {
        return Err(Error::runtime(format!("no encodings for tensor '{name}'")));
    };
    if !per_channel && encodings.len() != 1 {
        return Err(Error::runtime(format!(
            "per-tensor encoding of '{name}' has {} entries",
            encodings.len()
        )));
    }
    if let Some(odd) = encodings
        .iter()
        .find(|e| e.bitwidth != first.bitwidth || e.symmetric != first.symmetric)
    {
        return Err(Error::runtime(format!(
            "encodings of '{name}' mix {}-bit {} and {}-bit {} channels",
            first.bitwidth,
            symmetry(first.symmetric),
            odd.bitwidth,
            symmetry(odd.symmetric)
        )));
    }
    Ok(json!({
        "name": name,
        "enc_type": if per_channel { PER_CHANNEL } else { PER_TENSOR },
        "dtype": "INT",
        "bw": first.bitwidth,
        "is_sym": first.symmetric,
        "scale": encodings.iter().map(|e| e.scale as f64).collect::<Vec<_>>(),
        "offset": encodings.iter().map(|e| e.offset).collect::<Vec<_>>(),
    }))
}

/// Reads a tensor's 1.0.0 object. Errors name the tensor when the object has a name.
pub fn from_aimet_v1(v: &Value) -> Result<AimetTensorEncoding> {
    let obj = object(v, "encoding")?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::input("encoding field 'name' is not a string")),
        None => return Err(Error::input("encoding has no 'name'")),
    };
    read_v1(obj, name.clone()).map_err(|e| Error::input(format!("encoding of '{name}': {e}")))
}

fn read_v1(obj: &Map<String, Value>, name: String) -> Result<AimetTensorEncoding> {
    check_int_dtype(field(obj, "dtype")?)?;
    let per_channel = match field(obj, "enc_type")?.as_str() {
        Some(PER_TENSOR) => false,
        Some(PER_CHANNEL) => true,
        Some(other) => {
            return Err(Error::input(format!(
                "enc_type '{other}' is not supported (only {PER_TENSOR} and {PER_CHANNEL})"
            )))
        }
        None => return Err(Error::input("field 'enc_type' is not a string")),
    };
    let bitwidth = bitwidth(obj, "bw")?;
    let symmetric = boolean(obj, "is_sym")?;
    let (scales, offsets) = scales_and_offsets(obj, per_channel)?;
    let encodings = scales
        .iter()
        .zip(offsets)
        .map(|(s, o)| {
            let scale = number(s, "scale")? as f32;
            Encoding::from_scale_offset(bitwidth, symmetric, scale, integer(o, "offset")?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AimetTensorEncoding {
        name,
        per_channel,
        encodings,
    })
}

/// An entry's `scale` and `offset` lists: as many of each, one for a per-tensor entry.
pub(super) fn scales_and_offsets(
    obj: &Map<String, Value>,
    per_channel: bool,
) -> Result<(&Vec<Value>, &Vec<Value>)> {
    let scales = array(obj, "scale")?;
    let offsets = array(obj, "offset")?;
    if scales.len() != offsets.len() || scales.is_empty() {
        return Err(Error::input(format!(
            "{} scales and {} offsets",
            scales.len(),
            offsets.len()
        )));
    }
    if !per_channel && scales.len() != 1 {
        return Err(Error::input(format!(
            "{PER_TENSOR} with {} scales",
            scales.len()
        )));
    }
    Ok((scales, offsets))
}

fn symmetry(symmetric: bool) -> &'static str {
    if symmetric {
        "symmetric"
    } else {
        "asymmetric"
    }
}

pub(super) fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| Error::input(format!("{what} is not a JSON object")))
}

pub(super) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| Error::input(format!("encoding field '{key}' is missing")))
}

pub(super) fn check_int_dtype(v: &Value) -> Result<()> {
    match v.as_str() {
        Some(s) if s.eq_ignore_ascii_case("int") => Ok(()),
        Some(s) => Err(Error::input(format!(
            "encoding dtype '{s}' is not supported (only integer encodings)"
        ))),
        None => Err(Error::input("encoding field 'dtype' is not a string")),
    }
}

fn bitwidth(obj: &Map<String, Value>, key: &str) -> Result<u8> {
    let bits = integer(field(obj, key)?, key)?;
    u8::try_from(bits).map_err(|_| Error::input(format!("bitwidth {bits} is not supported")))
}

/// AIMET writes booleans as "True"/"False" in 0.6.1 and as JSON booleans in 1.0.0.
pub(super) fn boolean(obj: &Map<String, Value>, key: &str) -> Result<bool> {
    match field(obj, key)? {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(Error::input(format!(
            "encoding field '{key}' is {other}, not a boolean"
        ))),
    }
}

pub(super) fn number(v: &Value, key: &str) -> Result<f64> {
    v.as_f64()
        .ok_or_else(|| Error::input(format!("encoding field '{key}' is {v}, not a number")))
}

/// An integer, also when written as a float with no fraction (`-128.0`).
fn integer(v: &Value, key: &str) -> Result<i32> {
    let n = number(v, key)?;
    if n.fract() != 0.0 || n.abs() > i32::MAX as f64 {
        return Err(Error::input(format!(
            "encoding field '{key}' is {v}, not an integer"
        )));
    }
    Ok(n as i32)
}

pub(super) fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>> {
    field(obj, key)?
        .as_array()
        .ok_or_else(|| Error::input(format!("encoding field '{key}' is not a list")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(min: f32, max: f32, bits: u8, symmetric: bool) -> Encoding {
        Encoding::from_range(min, max, bits, symmetric).unwrap()
    }

    #[test]
    fn legacy_fields_and_round_trip() {
        let e = enc(-1.0, 1.0, 8, false);
        let v = e.to_aimet_legacy();
        assert_eq!(v["bitwidth"], 8);
        assert_eq!(v["dtype"], "int");
        assert_eq!(v["is_symmetric"], "False");
        assert_eq!(v["offset"], -128);
        assert_eq!(v["scale"].as_f64().unwrap() as f32, e.scale);
        assert_eq!(v["min"].as_f64().unwrap() as f32, e.min);
        assert_eq!(v["max"].as_f64().unwrap() as f32, e.max);
        assert_eq!(Encoding::from_aimet_legacy(&v).unwrap(), e);
        // Through text, as a file would carry it.
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(Encoding::from_aimet_legacy(&back).unwrap(), e);

        let s = enc(-0.5, 0.7, 4, true);
        let v = s.to_aimet_legacy();
        assert_eq!(v["is_symmetric"], "True");
        assert_eq!(v["offset"], -8);
        assert_eq!(Encoding::from_aimet_legacy(&v).unwrap(), s);
    }

    #[test]
    fn reads_aimets_own_legacy_example() {
        // From AIMET's encoding format spec (0.4 PyTorch example): float offset, no dtype.
        let v = json!({
            "bitwidth": 8, "is_symmetric": "False", "max": 2.6086959838867188,
            "min": -2.109158515930176, "offset": -114.0, "scale": 0.018501389771699905
        });
        let e = Encoding::from_aimet_legacy(&v).unwrap();
        assert_eq!((e.bitwidth, e.symmetric, e.offset), (8, false, -114));
        assert_eq!(e.onnx_zero_point(), 114);
        assert!((e.min as f64 + 2.109158515930176).abs() < 1e-5);
        assert!((e.max as f64 - 2.6086959838867188).abs() < 1e-5);
    }

    #[test]
    fn legacy_rejects_bad_fields() {
        let good = enc(-1.0, 1.0, 8, false).to_aimet_legacy();
        let with = |key: &str, value: Value| {
            let mut v = good.clone();
            v[key] = value;
            Encoding::from_aimet_legacy(&v).unwrap_err().to_string()
        };
        assert!(with("dtype", json!("float")).contains("float"));
        assert!(with("bitwidth", json!(32)).contains("32"));
        assert!(with("offset", json!(-1.5)).contains("offset"));
        assert!(with("offset", json!(3)).contains("offset"));
        assert!(with("scale", json!(0.0)).contains("scale"));
        assert!(with("is_symmetric", json!("maybe")).contains("is_symmetric"));
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("scale");
        assert!(Encoding::from_aimet_legacy(&missing)
            .unwrap_err()
            .to_string()
            .contains("'scale' is missing"));
        assert!(Encoding::from_aimet_legacy(&json!([1, 2])).is_err());
    }

    #[test]
    fn v1_per_tensor_and_per_channel_round_trip() {
        let t = enc(-0.3, 2.2, 8, false);
        let v = to_aimet_v1("conv1.out", &[t], false).unwrap();
        assert_eq!(v["name"], "conv1.out");
        assert_eq!(v["enc_type"], "PER_TENSOR");
        assert_eq!(v["dtype"], "INT");
        assert_eq!(v["bw"], 8);
        assert_eq!(v["is_sym"], false);
        assert_eq!(v["offset"], json!([t.offset]));
        let back = from_aimet_v1(&v).unwrap();
        assert_eq!(
            back,
            AimetTensorEncoding {
                name: "conv1.out".into(),
                per_channel: false,
                encodings: vec![t],
            }
        );

        let chans = [enc(-1.0, 1.0, 4, true), enc(-0.2, 0.1, 4, true)];
        let v = to_aimet_v1("conv1.weight", &chans, true).unwrap();
        assert_eq!(v["enc_type"], "PER_CHANNEL");
        assert_eq!(v["is_sym"], true);
        assert_eq!(v["offset"], json!([-8, -8]));
        let text = serde_json::to_string(&v).unwrap();
        let back = from_aimet_v1(&serde_json::from_str(&text).unwrap()).unwrap();
        assert!(back.per_channel);
        assert_eq!(back.encodings, chans);
    }

    #[test]
    fn v1_rejects_inconsistent_entries() {
        let a = enc(-1.0, 1.0, 8, false);
        let b = enc(-1.0, 1.0, 4, false);
        assert!(to_aimet_v1("w", &[a, b], true).is_err());
        assert!(to_aimet_v1("w", &[a, a], false).is_err());
        assert!(to_aimet_v1("w", &[], true).is_err());

        let good = to_aimet_v1("w", &[a, a], true).unwrap();
        let with = |key: &str, value: Value| {
            let mut v = good.clone();
            v[key] = value;
            from_aimet_v1(&v).unwrap_err().to_string()
        };
        assert!(with("enc_type", json!("PER_BLOCK")).contains("PER_BLOCK"));
        assert!(with("offset", json!([-128])).contains("2 scales and 1 offsets"));
        assert!(with("dtype", json!("FLOAT")).contains("FLOAT"));
        assert!(with("bw", json!(1)).contains("bitwidth 1"));
        assert!(with("enc_type", json!("PER_TENSOR")).contains("PER_TENSOR with 2"));
        // Errors name the tensor.
        assert!(with("bw", json!(1)).contains("'w'"));
    }
}
