//! Does a dataset fit a model's inputs? Checked once up front so a mismatch is a clear input
//! error, not an inference failure halfway through a job.

use super::{Dataset, NamedInput};
use crate::{Error, Result};

impl Dataset {
    /// For each model input (`names`, in the model's order), the index of the dataset input
    /// that feeds it: by name when the dataset names its inputs (`inputs.<name>.npy`, whose
    /// file order says nothing), else by position. An unknown name is an error naming the
    /// file and listing the model's inputs.
    pub fn model_order(&self, names: &[String]) -> Result<Vec<usize>> {
        if !self.inputs.iter().all(|i| i.name.is_some()) {
            return Ok((0..names.len().min(self.inputs.len())).collect());
        }
        if let Some(unknown) = self
            .inputs
            .iter()
            .find(|i| !names.iter().any(|n| Some(n) == i.name.as_ref()))
        {
            return Err(Error::input(format!(
                "dataset {}: input '{}' matches no model input (model inputs: {})",
                unknown.source,
                unknown.name.as_deref().unwrap_or_default(),
                names.join(", ")
            )));
        }
        names
            .iter()
            .map(|n| {
                self.inputs
                    .iter()
                    .position(|i| i.name.as_ref() == Some(n))
                    .ok_or_else(|| {
                        Error::input(format!(
                            "dataset {}: no inputs.{n}.npy for model input '{n}' (model inputs: {})",
                            self.name,
                            names.join(", ")
                        ))
                    })
            })
            .collect()
    }

    /// Check the dataset against the model's inputs: `(name, full shape)` with axis 0 the batch
    /// dimension (ignored) and `None` for symbolic dimensions (match anything). Inputs are
    /// matched by name when the dataset names them (`inputs.<name>.npy`), else by position.
    pub fn check_against_model(&self, expected: &[(String, Vec<Option<usize>>)]) -> Result<()> {
        if self.inputs.len() != expected.len() {
            let model_names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
            let sources: Vec<&str> = self.inputs.iter().map(|i| i.source.as_str()).collect();
            let hint = if expected.len() > 1 && self.inputs.len() == 1 {
                "; save one inputs.<model_input_name>.npy per model input"
            } else {
                ""
            };
            return Err(Error::input(format!(
                "dataset {} has {} input array(s) ({}) but the model has {} input(s) ({}){hint}",
                self.name,
                self.inputs.len(),
                sources.join(", "),
                expected.len(),
                model_names.join(", ")
            )));
        }
        let by_name = self.inputs.iter().all(|i| i.name.is_some());
        for (position, input) in self.inputs.iter().enumerate() {
            let model_input = if by_name {
                let name = input.name.as_deref().unwrap_or_default();
                expected.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
                    Error::input(format!(
                        "dataset {}: input '{name}' matches no model input (model inputs: {})",
                        input.source,
                        names.join(", ")
                    ))
                })?
            } else {
                expected.get(position).ok_or_else(|| {
                    Error::input(format!(
                        "dataset {}: no model input #{position}",
                        input.source
                    ))
                })?
            };
            check_shape(input, &model_input.0, &model_input.1)?;
        }
        Ok(())
    }
}

fn check_shape(input: &NamedInput, model_name: &str, model_shape: &[Option<usize>]) -> Result<()> {
    let sample = input.data.sample_shape();
    let fits = match model_shape.split_first() {
        Some((_batch, dims)) => {
            dims.len() == sample.len()
                && dims
                    .iter()
                    .zip(sample)
                    .all(|(d, s)| d.is_none_or(|d| d == *s))
        }
        None => false,
    };
    if fits {
        return Ok(());
    }
    Err(Error::input(format!(
        "dataset {}: sample shape {sample:?} does not match model input '{model_name}' {}",
        input.source,
        format_model_shape(model_shape)
    )))
}

/// `[N, 1, 16, 16]`: `N` for a symbolic batch, `?` for other symbolic dimensions.
fn format_model_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(axis, d)| match (axis, d) {
            (_, Some(d)) => d.to_string(),
            (0, None) => "N".to_string(),
            (_, None) => "?".to_string(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn input(name: Option<&str>, source: &str, shape: &[usize]) -> NamedInput {
        NamedInput::from_array(name.map(String::from), source, ArrayD::zeros(IxDyn(shape)))
    }

    fn dataset(inputs: Vec<NamedInput>) -> Dataset {
        Dataset::from_arrays("d", inputs, None).unwrap()
    }

    fn model(inputs: &[(&str, &[Option<usize>])]) -> Vec<(String, Vec<Option<usize>>)> {
        inputs
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn positional_match_ignores_batch_and_symbolic_dims() {
        let d = dataset(vec![input(None, "d/inputs.npy", &[5, 1, 16, 16])]);
        d.check_against_model(&model(&[("input", &[None, Some(1), Some(16), Some(16)])]))
            .unwrap();
        d.check_against_model(&model(&[("input", &[Some(1), Some(1), None, None])]))
            .unwrap();
    }

    #[test]
    fn shape_mismatch_message() {
        let d = dataset(vec![input(
            None,
            "sample-models/x/inputs.npy",
            &[5, 1, 8, 8],
        )]);
        let e = d
            .check_against_model(&model(&[("input", &[None, Some(1), Some(16), Some(16)])]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "dataset sample-models/x/inputs.npy: sample shape [1, 8, 8] does not match model \
             input 'input' [N, 1, 16, 16]"
        );
        let e = d
            .check_against_model(&model(&[("input", &[Some(1), Some(64)])]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[1, 64]"), "{e}");
    }

    #[test]
    fn named_inputs_match_by_name_in_any_order() {
        let d = dataset(vec![
            input(Some("a"), "d/inputs.a.npy", &[2, 3]),
            input(Some("b"), "d/inputs.b.npy", &[2, 4, 4]),
        ]);
        d.check_against_model(&model(&[
            ("b", &[None, Some(4), Some(4)]),
            ("a", &[None, Some(3)]),
        ]))
        .unwrap();
        let e = d
            .check_against_model(&model(&[("b", &[None, Some(4), Some(4)]), ("c", &[None])]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input 'a' matches no model input (model inputs: b, c)"),
            "{e}"
        );
    }

    #[test]
    fn count_mismatch_names_both_sides() {
        let d = dataset(vec![input(None, "d/inputs.npy", &[2, 3])]);
        let e = d
            .check_against_model(&model(&[("x", &[None, Some(3)]), ("y", &[None])]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 input array(s) (d/inputs.npy)") && e.contains("2 input(s) (x, y)"));
        assert!(e.contains("inputs.<model_input_name>.npy"), "{e}");
    }
}
