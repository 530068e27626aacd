//! AIMET encodings files as whole documents: writing 1.0.0 (the default) or 0.6.1, and reading
//! either. The per-tensor entries are [`super::aimet`]'s; this module only knows the layouts:
//!
//! - 1.0.0: `{"version": "1.0.0", "activation_encodings": [entry…], "param_encodings":
//!   [entry…], "excluded_layers": []}`, each entry naming its tensor;
//! - 0.6.1 (aimet_onnx): `{"version": "0.6.1", "activation_encodings": {tensor: [enc]},
//!   "param_encodings": {tensor: [enc per channel]}, "excluded_layers": []}`.
//!
//! The reader takes the version from the `version` field, or from the layout (lists or
//! objects) when a file has none. It checks each entry (positive finite scale, offset in
//! range, integer dtype) but not the model: [`super::import`] does that.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::aimet::{from_aimet_v1, to_aimet_v1, AimetTensorEncoding};
use super::aimet_bias::{
    bias_from_aimet_legacy, bias_from_aimet_v1, bias_to_aimet_legacy, bias_to_aimet_v1,
    is_bias_entry,
};
use super::bias::BiasGrid;
use super::encoding::Encoding;
use super::qdq::WeightEncodings;
use crate::{Error, Result};

const ACTIVATIONS: &str = "activation_encodings";
const PARAMS: &str = "param_encodings";

/// The layout of an encodings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncodingsVersion {
    /// `1.0.0`: lists of named entries, per-channel scales in arrays.
    #[default]
    #[serde(rename = "1.0.0")]
    V1,
    /// `0.6.1`: objects keyed by tensor name, one encoding object per channel.
    #[serde(rename = "0.6.1")]
    Legacy,
}

impl EncodingsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            EncodingsVersion::V1 => "1.0.0",
            EncodingsVersion::Legacy => "0.6.1",
        }
    }
}

impl fmt::Display for EncodingsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncodingsVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "1.0.0" | "1" => Ok(EncodingsVersion::V1),
            "0.6.1" => Ok(EncodingsVersion::Legacy),
            other => Err(Error::input(format!(
                "encodings version '{other}' is not supported (1.0.0 or 0.6.1)"
            ))),
        }
    }
}

/// The tensors of an encodings file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodingsFile {
    pub version: EncodingsVersion,
    pub activations: Vec<AimetTensorEncoding>,
    pub params: Vec<AimetTensorEncoding>,
    /// The int32 bias entries of `param_encodings` (32 bits; see [`super::aimet_bias`]).
    pub biases: Vec<BiasGrid>,
}

/// The document for weight and activation encodings in the given layout.
pub fn encodings_document(
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
    version: EncodingsVersion,
) -> Result<Value> {
    encodings_document_with_biases(weights, activations, &[], version)
}

/// [`encodings_document`] with the int32 bias grids as `param_encodings` entries, as AIMET
/// 2.x writes them.
pub fn encodings_document_with_biases(
    weights: &[WeightEncodings],
    activations: &BTreeMap<String, Encoding>,
    biases: &[BiasGrid],
    version: EncodingsVersion,
) -> Result<Value> {
    let (acts, mut params) = match version {
        EncodingsVersion::V1 => (
            Value::Array(
                activations
                    .iter()
                    .map(|(name, e)| to_aimet_v1(name, std::slice::from_ref(e), false))
                    .collect::<Result<_>>()?,
            ),
            Value::Array(
                weights
                    .iter()
                    .map(|w| to_aimet_v1(&w.weight, &w.encodings, w.axis.is_some()))
                    .collect::<Result<_>>()?,
            ),
        ),
        EncodingsVersion::Legacy => {
            let legacy = |encs: &[Encoding]| encs.iter().map(|e| e.to_aimet_legacy()).collect();
            (
                Value::Object(
                    activations
                        .iter()
                        .map(|(name, e)| (name.clone(), legacy(std::slice::from_ref(e))))
                        .collect(),
                ),
                Value::Object(
                    weights
                        .iter()
                        .map(|w| (w.weight.clone(), legacy(&w.encodings)))
                        .collect(),
                ),
            )
        }
    };
    for grid in biases {
        match &mut params {
            Value::Array(list) => list.push(bias_to_aimet_v1(grid)),
            Value::Object(map) => {
                map.insert(grid.bias.clone(), bias_to_aimet_legacy(grid));
            }
            _ => unreachable!("params are built as a list or an object above"),
        }
    }
    Ok(json!({
        "version": version.as_str(),
        ACTIVATIONS: acts,
        PARAMS: params,
        "excluded_layers": [],
    }))
}

/// Read an encodings file; errors name the file.
pub fn read_encodings_file(path: &Path) -> Result<EncodingsFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::input(format!(
            "{}: not a JSON encodings file ({e})",
            path.display()
        ))
    })?;
    parse_encodings(&value).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

/// Parse an encodings document of either version.
pub fn parse_encodings(value: &Value) -> Result<EncodingsFile> {
    let Some(doc) = value.as_object() else {
        return Err(Error::input("the document is not a JSON object"));
    };
    let version = detect_version(doc)?;
    let section = |key: &str, v: Option<&Value>| -> Result<Vec<AimetTensorEncoding>> {
        let read = match v {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(v) => match version {
                EncodingsVersion::V1 => read_v1_section(v),
                EncodingsVersion::Legacy => read_legacy_section(v),
            },
        };
        read.map_err(|e| Error::input(format!("{key}: {e}")))
    };
    let (params, biases) = split_biases(doc.get(PARAMS), version)
        .map_err(|e| Error::input(format!("{PARAMS}: {e}")))?;
    Ok(EncodingsFile {
        version,
        activations: section(ACTIVATIONS, doc.get(ACTIVATIONS))?,
        params: section(PARAMS, params.as_ref())?,
        biases,
    })
}

/// The parameter section without its 32-bit bias entries, and those entries read.
fn split_biases(
    params: Option<&Value>,
    version: EncodingsVersion,
) -> Result<(Option<Value>, Vec<BiasGrid>)> {
    let mut biases = Vec::new();
    let rest = match params {
        Some(Value::Array(list)) if version == EncodingsVersion::V1 => {
            let mut rest = Vec::new();
            for (i, e) in list.iter().enumerate() {
                if is_bias_entry(e) {
                    biases.push(
                        bias_from_aimet_v1(e)
                            .map_err(|err| Error::input(format!("entry {i}: {err}")))?,
                    );
                } else {
                    rest.push(e.clone());
                }
            }
            Some(Value::Array(rest))
        }
        Some(Value::Object(map)) if version == EncodingsVersion::Legacy => {
            let mut rest = Map::new();
            for (name, list) in map {
                match list.as_array() {
                    Some(l) if l.first().is_some_and(is_bias_entry) => {
                        biases.push(bias_from_aimet_legacy(name, l)?)
                    }
                    _ => {
                        rest.insert(name.clone(), list.clone());
                    }
                }
            }
            Some(Value::Object(rest))
        }
        other => other.cloned(),
    };
    Ok((rest, biases))
}

/// By the `version` field; a file without one by its layout (1.0.0 uses lists).
fn detect_version(doc: &Map<String, Value>) -> Result<EncodingsVersion> {
    let by_layout = [ACTIVATIONS, PARAMS]
        .iter()
        .find_map(|k| match doc.get(*k) {
            Some(Value::Array(_)) => Some(EncodingsVersion::V1),
            Some(Value::Object(_)) => Some(EncodingsVersion::Legacy),
            _ => None,
        });
    let declared = match doc.get("version") {
        None => None,
        Some(Value::String(s)) if s.starts_with("1.") => Some(EncodingsVersion::V1),
        // 0.4 to 0.6.1 share the layout.
        Some(Value::String(s)) if s.starts_with("0.") => Some(EncodingsVersion::Legacy),
        Some(other) => {
            return Err(Error::input(format!(
                "field 'version' is {other}; supported are 1.0.0 and 0.6.1"
            )))
        }
    };
    match (declared, by_layout) {
        (Some(d), Some(l)) if d != l => Err(Error::input(format!(
            "field 'version' says {d} but the encodings are laid out as {l} ({})",
            if l == EncodingsVersion::V1 {
                "lists of named entries"
            } else {
                "objects keyed by tensor name"
            }
        ))),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(Error::input(format!(
            "neither '{ACTIVATIONS}' nor '{PARAMS}' found: not an AIMET encodings file"
        ))),
    }
}

fn read_v1_section(v: &Value) -> Result<Vec<AimetTensorEncoding>> {
    let Some(entries) = v.as_array() else {
        return Err(Error::input("not a list of named encodings (1.0.0 layout)"));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| from_aimet_v1(e).map_err(|err| Error::input(format!("entry {i}: {err}"))))
        .collect()
}

/// 0.6.1: one object per channel; a single object is per tensor.
fn read_legacy_section(v: &Value) -> Result<Vec<AimetTensorEncoding>> {
    let Some(entries) = v.as_object() else {
        return Err(Error::input(
            "not an object keyed by tensor name (0.6.1 layout)",
        ));
    };
    entries
        .iter()
        .map(|(name, list)| {
            let context = |e: Error| Error::input(format!("'{name}': {e}"));
            let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                return Err(context(Error::input(
                    "not a non-empty list of encodings (the PyTorch layout keyed by layer and \
                     input/output is not supported)",
                )));
            };
            let encodings = list
                .iter()
                .map(Encoding::from_aimet_legacy)
                .collect::<Result<Vec<_>>>()
                .map_err(context)?;
            Ok(AimetTensorEncoding {
                name: name.clone(),
                per_channel: encodings.len() > 1,
                encodings,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<WeightEncodings>, BTreeMap<String, Encoding>) {
        let enc = |min, max, bits, sym| Encoding::from_range(min, max, bits, sym).unwrap();
        let weights = vec![
            WeightEncodings {
                layer: "conv".into(),
                weight: "conv.weight".into(),
                axis: Some(0),
                encodings: vec![enc(-1.0, 1.0, 4, true), enc(-0.1, 0.3, 4, true)],
            },
            WeightEncodings {
                layer: "fc".into(),
                weight: "fc.weight".into(),
                axis: None,
                encodings: vec![enc(-0.5, 2.0, 8, false)],
            },
        ];
        let acts = BTreeMap::from([
            ("input".to_string(), enc(0.0, 1.0, 8, false)),
            ("conv.out".to_string(), enc(-3.0, 5.0, 16, false)),
        ]);
        (weights, acts)
    }

    #[test]
    fn both_versions_round_trip_through_text() {
        let (weights, acts) = sample();
        for version in [EncodingsVersion::V1, EncodingsVersion::Legacy] {
            let doc = encodings_document(&weights, &acts, version).unwrap();
            assert_eq!(doc["version"], version.as_str());
            let text = serde_json::to_string_pretty(&doc).unwrap();
            let file = parse_encodings(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(file.version, version);
            let by_name: BTreeMap<_, _> = file
                .params
                .iter()
                .map(|p| (p.name.as_str(), (p.per_channel, p.encodings.clone())))
                .collect();
            assert_eq!(by_name["conv.weight"], (true, weights[0].encodings.clone()));
            assert_eq!(by_name["fc.weight"], (false, weights[1].encodings.clone()));
            let acts_back: BTreeMap<_, _> = file
                .activations
                .iter()
                .map(|a| (a.name.clone(), a.encodings[0]))
                .collect();
            assert_eq!(acts_back, acts);
        }
    }

    #[test]
    fn legacy_layout_is_keyed_by_tensor_with_aimet_offsets() {
        let (weights, acts) = sample();
        let doc = encodings_document(&weights, &acts, EncodingsVersion::Legacy).unwrap();
        let conv = doc["param_encodings"]["conv.weight"].as_array().unwrap();
        assert_eq!(conv.len(), 2);
        // Signed symmetric 4 bit: AIMET offset -8 (ONNX int zero point 0).
        assert_eq!(conv[0]["offset"], -8);
        assert_eq!(conv[0]["is_symmetric"], "True");
        let input = &doc["activation_encodings"]["input"][0];
        assert_eq!(input["offset"], 0);
        assert_eq!(input["bitwidth"], 8);
    }

    #[test]
    fn version_detected_from_layout_when_missing() {
        let (weights, acts) = sample();
        for version in [EncodingsVersion::V1, EncodingsVersion::Legacy] {
            let mut doc = encodings_document(&weights, &acts, version).unwrap();
            doc.as_object_mut().unwrap().remove("version");
            assert_eq!(parse_encodings(&doc).unwrap().version, version);
        }
    }

    #[test]
    fn bad_documents_name_the_field() {
        let (weights, acts) = sample();
        let v1 = encodings_document(&weights, &acts, EncodingsVersion::V1).unwrap();
        let err = |v: &Value| parse_encodings(v).unwrap_err().to_string();

        let mut wrong_version = v1.clone();
        wrong_version["version"] = json!("0.6.1");
        assert!(
            err(&wrong_version).contains("version"),
            "{}",
            err(&wrong_version)
        );
        let mut future = v1.clone();
        future["version"] = json!(2);
        assert!(err(&future).contains("'version' is 2"));
        assert!(err(&json!({"foo": 1})).contains("not an AIMET encodings file"));
        assert!(err(&json!([1])).contains("not a JSON object"));

        let mut negative = v1.clone();
        negative["param_encodings"][1]["scale"] = json!([-0.5]);
        let e = err(&negative);
        assert!(
            e.contains("param_encodings") && e.contains("fc.weight") && e.contains("-0.5"),
            "{e}"
        );

        let legacy = encodings_document(&weights, &acts, EncodingsVersion::Legacy).unwrap();
        let mut bad = legacy.clone();
        bad["activation_encodings"]["conv.out"][0]["offset"] = json!(4);
        let e = err(&bad);
        assert!(
            e.contains("activation_encodings") && e.contains("'conv.out'") && e.contains("offset"),
            "{e}"
        );
        let mut torch = legacy.clone();
        torch["activation_encodings"]["conv.out"] = json!({"output": {"0": {}}});
        assert!(err(&torch).contains("PyTorch layout"));
        assert!(matches!(
            parse_encodings(&torch).unwrap_err(),
            Error::Input(_)
        ));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.json");
        // JSON has no NaN: a writer that emits one produces an invalid file.
        std::fs::write(
            &path,
            br#"{"version": "1.0.0", "param_encodings": [{"scale": NaN}]}"#,
        )
        .unwrap();
        let e = read_encodings_file(&path).unwrap_err();
        assert!(matches!(e, Error::Input(_)));
        assert!(e.to_string().contains("enc.json"), "{e}");
        assert_eq!(
            "0.6.1".parse::<EncodingsVersion>().unwrap(),
            EncodingsVersion::Legacy
        );
        assert!("0.7".parse::<EncodingsVersion>().is_err());
    }
}
