//! Where the fixed input values a specialisation needs come from (see `specialise`): the
//! user's `--input-value NAME=VALUE`, else the one value every sample of the dataset holds,
//! else what the workspace recorded when the model was first specialised.

use super::specialise::{self, InputValues, Specialisation};
use super::Model;
use crate::{Error, Result};
use ndarray::ArrayD;
use std::collections::BTreeMap;
use std::path::Path;

/// The metadata key under which a specialised model lists its input values (`sr=16000`,
/// `;`-separated), so a workspace can record them and an export says what it assumes.
pub const VALUES_KEY: &str = "qsteer.input_values";

/// Parse `NAME=VALUE` (`sr=16000`) or `NAME=V1,V2,…` (a vector).
pub fn parse_input_value(s: &str) -> std::result::Result<(String, ArrayD<f64>), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!("'{s}': write NAME=VALUE, e.g. sr=16000"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("'{s}': the input name before '=' is empty"));
    }
    let text = value.trim().trim_start_matches('[').trim_end_matches(']');
    let items = text
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("'{s}': '{}' is not a number", v.trim()))
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    let array = if items.len() == 1 && !value.trim().starts_with('[') {
        ndarray::arr0(items[0]).into_dyn()
    } else {
        ndarray::Array1::from(items).into_dyn()
    };
    Ok((name.to_string(), array))
}

/// `sr=16000;x=[1,2]`: the values as [`VALUES_KEY`] and the workspace record them.
pub fn format_values(values: &InputValues) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={}", specialise::value_text(v)))
        .collect::<Vec<_>>()
        .join(";")
}

/// The inverse of [`format_values`].
pub fn parse_values(text: &str) -> std::result::Result<InputValues, String> {
    text.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(parse_input_value)
        .collect()
}

/// The values a specialised model was made with (its [`VALUES_KEY`] metadata), if any.
pub fn recorded_in(model: &Model) -> Option<String> {
    model
        .proto()
        .metadata_props
        .iter()
        .find(|p| p.key == VALUES_KEY)
        .map(|p| p.value.clone())
}

/// Specialise `model` on the values its value-`If`s need: `given` first, then the dataset at
/// `data` (an input whose samples all hold one value), then `recorded`. A model without such
/// an `If` is returned as it is.
pub fn specialise_with(
    model: Model,
    given: &InputValues,
    data: Option<&Path>,
    recorded: &InputValues,
    pinned: Option<&[Vec<usize>]>,
) -> Result<(Model, Vec<Specialisation>)> {
    let ifs = specialise::value_ifs(model.graph());
    if ifs.is_empty() {
        return Ok((model, Vec::new()));
    }
    let src = model.source().to_string();
    let names = model.input_names();
    for name in given.keys() {
        if !names.contains(name) {
            return Err(Error::input(format!(
                "--input-value {name}=…: {src} has no input '{name}' (inputs: {})",
                names.join(", ")
            )));
        }
    }
    let mut values = given.clone();
    let wanted: Vec<String> = ifs
        .iter()
        .flat_map(|i| i.inputs.iter().cloned())
        .filter(|i| !values.contains_key(i))
        .collect();
    let mut data_shapes = None;
    if let Some(dir) = data {
        let dataset = crate::data::load_dataset(dir)?;
        values.extend(from_dataset(&names, &wanted, &dataset)?);
        data_shapes = Some(crate::experiment::evaluate::sample_shapes(
            &model, &dataset,
        )?);
    }
    for (k, v) in recorded {
        values.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let (model, mut done) = specialise::specialise(model, &values)?;
    if done.is_empty() {
        return Ok((model, done));
    }
    if let Some(shapes) = pinned.map(|p| p.to_vec()).or(data_shapes) {
        let (folded, more) = specialise::fold_shape_ifs(model, &shapes, &values)?;
        done.extend(more);
        return finish(folded, values, done, &src);
    }
    finish(model, values, done, &src)
}

/// Record the values the specialisations used in the model's metadata ([`VALUES_KEY`]).
fn finish(
    model: Model,
    values: InputValues,
    done: Vec<Specialisation>,
    src: &str,
) -> Result<(Model, Vec<Specialisation>)> {
    let used: InputValues = values
        .into_iter()
        .filter(|(k, _)| {
            done.iter()
                .any(|d| d.on.iter().any(|o| o.starts_with(&format!("{k}="))))
        })
        .collect();
    let mut proto = model.into_proto();
    proto.metadata_props.retain(|p| p.key != VALUES_KEY);
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: VALUES_KEY.into(),
            value: format_values(&used),
        });
    Ok((Model::from_proto(proto, src)?, done))
}

/// The one value each of `wanted` takes in every sample of the dataset at `dir`; an input
/// whose samples differ is an error naming two of its values and the flag.
fn from_dataset(
    names: &[String],
    wanted: &[String],
    dataset: &crate::data::Dataset,
) -> Result<InputValues> {
    let order = dataset.model_order(names)?;
    let mut values = BTreeMap::new();
    for name in wanted {
        let Some(&k) = names
            .iter()
            .position(|n| n == name)
            .and_then(|i| order.get(i))
        else {
            continue;
        };
        let input = &dataset.inputs[k];
        // a value that decides a branch is a scalar or a short vector, never an image
        if input.data.sample_size() > 64 || input.data.is_empty() {
            continue;
        }
        let all = input.data.read_range(0..input.data.len())?;
        let first = all.index_axis(ndarray::Axis(0), 0).to_owned();
        for (i, sample) in all.outer_iter().enumerate() {
            if sample != first {
                return Err(Error::input(format!(
                    "dataset {}: input '{name}' decides an If's branch, but its samples differ \
                     (sample 0: {}, sample {i}: {}); pass --input-value {name}=VALUE and data \
                     that hold that value",
                    input.source,
                    specialise::value_text(&first.mapv(f64::from)),
                    specialise::value_text(&sample.mapv(f64::from))
                )));
            }
        }
        values.insert(name.clone(), first.mapv(f64::from));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars_and_vectors() {
        let (n, v) = parse_input_value("sr=16000").unwrap();
        assert_eq!((n.as_str(), v.ndim(), v[[]]), ("sr", 0, 16000.0));
        let (_, v) = parse_input_value("w=1,2.5").unwrap();
        assert_eq!(v.shape(), &[2]);
        assert!(parse_input_value("sr").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_input_value("sr=abc").unwrap_err().contains("'abc'"));
        let values = parse_values("sr=16000;w=[1,2.5]").unwrap();
        assert_eq!(format_values(&values), "sr=16000;w=[1,2.5]");
    }
}
