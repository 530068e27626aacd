//! `--input-shape NAME=3x320x320`: per-sample input sizes for models whose inputs leave
//! sizes open (a detector's H and W). Every command opens a model at the same shapes: these,
//! else the dataset's (`--data`), else the ones the workspace's data had.

use super::Common;
use qsteer::model::Model;
use qsteer::{Error, Result};

/// One `--input-shape` value: an optional input name and the per-sample dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputShape {
    pub input: Option<String>,
    pub dims: Vec<usize>,
}

/// Parse `NAME=3x320x320` or `3x320x320` (one input); `×` and `,` also separate dims.
pub fn parse_input_shape(s: &str) -> std::result::Result<InputShape, String> {
    let (input, dims) = match s.rsplit_once('=') {
        Some((name, dims)) if !name.is_empty() => (Some(name.to_string()), dims),
        Some(_) => return Err(format!("'{s}': the input name before '=' is empty")),
        None => (None, s),
    };
    let dims = dims
        .split(['x', 'X', '×', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| {
                    format!(
                        "'{s}': '{d}' is not a size; write the per-sample dims without the \
                         batch, e.g. images=3x320x320"
                    )
                })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(InputShape { input, dims })
}

/// The per-sample shapes of every model input from `--input-shape`, in the model's input
/// order; `None` when the flag was not given.
pub fn from_flags(model: &Model, given: &[InputShape]) -> Result<Option<Vec<Vec<usize>>>> {
    if given.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = model.inputs().iter().map(|i| i.name.clone()).collect();
    let src = model.source();
    if given.len() == 1 && given[0].input.is_none() {
        if names.len() != 1 {
            return Err(Error::input(format!(
                "{src}: the model has {} inputs ({}); name each: --input-shape NAME=DIMS",
                names.len(),
                names.join(", ")
            )));
        }
        return Ok(Some(vec![given[0].dims.clone()]));
    }
    let mut shapes = vec![None; names.len()];
    for g in given {
        let Some(name) = &g.input else {
            return Err(Error::input(format!(
                "--input-shape {}: name the input when giving several (NAME=DIMS)",
                dims_text(&g.dims)
            )));
        };
        let i = names.iter().position(|n| n == name).ok_or_else(|| {
            Error::input(format!(
                "--input-shape {name}=…: {src} has no input '{name}' (inputs: {})",
                names.join(", ")
            ))
        })?;
        shapes[i] = Some(g.dims.clone());
    }
    let inputs = model.inputs();
    shapes
        .into_iter()
        .zip(&names)
        .zip(inputs)
        .map(|((s, name), input)| {
            // a scalar input (a sample rate) has no per-sample dims to give
            let scalar = qsteer::model::shapes::is_scalar_input(input).then(Vec::new);
            s.or(scalar).ok_or_else(|| {
                Error::input(format!(
                    "--input-shape: no shape for input '{name}' of {src}; give one per input"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// The shapes to open `model` at: `--input-shape`, else `data_shapes` (the dataset's),
/// else the workspace's remembered ones.
pub fn pins_for(
    model: &Model,
    common: &Common,
    data_shapes: Option<Vec<Vec<usize>>>,
    workspace_shapes: Option<&[Vec<usize>]>,
) -> Result<Option<Vec<Vec<usize>>>> {
    if let Some(p) = from_flags(model, &common.input_shape)? {
        return Ok(Some(p));
    }
    Ok(data_shapes.or_else(|| workspace_shapes.map(|s| s.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_bare_shapes() {
        let s = parse_input_shape("images=3x320x320").unwrap();
        assert_eq!(s.input.as_deref(), Some("images"));
        assert_eq!(s.dims, vec![3, 320, 320]);
        assert_eq!(
            parse_input_shape("1×48×192").unwrap().dims,
            vec![1, 48, 192]
        );
        assert!(parse_input_shape("x=3x0x4").unwrap_err().contains("'0'"));
        assert!(parse_input_shape("=3x4").is_err());
        assert!(parse_input_shape("x=3xHx4").unwrap_err().contains("'H'"));
    }
}
