//! Closed-form least squares for one linear layer: the weights (and bias) that make its
//! output on given input columns closest to target outputs, per group for grouped convs.
//! Used by channel pruning (refit the pruned layer to the original outputs) and by
//! layer-wise reconstruction (refit a compressed layer to the parent's outputs).

use super::activations::LayerSamples;
use crate::fixes::adaround::linear::LinearOp;
use crate::fixes::bias_correction::with_biases;
use crate::model::{Layer, LayerKind, Model};
use crate::{Error, Result};
use faer::linalg::solvers::Solve;
use faer_ext::IntoFaer;
use ndarray::{s, Array1, Array2, ArrayD, Axis, IxDyn};

/// Ridge added to the normal equations, relative to their mean diagonal. Inputs are often
/// rank-deficient: channels a Relu keeps at zero, zero padding, fewer samples than
/// unknowns. The ridge makes the system positive definite (Cholesky never fails) and picks
/// small weights along directions the data does not see, while moving a well-posed fit by
/// about this relative amount only.
pub const RIDGE: f64 = 1e-6;

/// Fitted weights `[out, K]` (rows as [`LinearOp::weight_matrix`] lays them out) and bias.
#[derive(Debug, Clone)]
pub struct Fit {
    pub weight: Array2<f32>,
    pub bias: Option<Array1<f32>>,
}

/// Least-squares fit of `weight · cols[g] (+ bias)` to `samples.targets`, group by group
/// (output rows `g·per..(g+1)·per` read `cols[g]`).
pub fn fit_linear(samples: &LayerSamples, with_bias: bool) -> Result<Fit> {
    let groups = samples.cols.len().max(1);
    let out = samples.targets.nrows();
    if !out.is_multiple_of(groups) {
        return Err(Error::runtime(format!(
            "{out} outputs do not split into {groups} groups"
        )));
    }
    let per = out / groups;
    let k = samples.cols.first().map_or(0, |c| c.nrows());
    let mut weight = Array2::zeros((out, k));
    let mut bias = with_bias.then(|| Array1::zeros(out));
    for (g, cols) in samples.cols.iter().enumerate() {
        let y = samples.targets.slice(s![g * per..(g + 1) * per, ..]);
        let solution = solve_group(cols, &y.to_owned(), with_bias)?;
        weight
            .slice_mut(s![g * per..(g + 1) * per, ..])
            .assign(&solution.slice(s![..k, ..]).t().mapv(|v| v as f32));
        if let Some(b) = bias.as_mut() {
            b.slice_mut(s![g * per..(g + 1) * per])
                .assign(&solution.row(k).mapv(|v| v as f32));
        }
    }
    Ok(Fit { weight, bias })
}

/// Solve `(A Aᵀ + λI) Z = A Yᵀ` with `A = [X; 1]`; returns `Z` (`[K(+1), per]`).
fn solve_group(x: &Array2<f32>, y: &Array2<f32>, with_bias: bool) -> Result<Array2<f64>> {
    let (k, n) = x.dim();
    let unknowns = k + usize::from(with_bias);
    let x64 = x.mapv(f64::from);
    let y64 = y.mapv(f64::from);
    let mut gram = Array2::<f64>::zeros((unknowns, unknowns));
    let mut rhs = Array2::<f64>::zeros((unknowns, y.nrows()));
    gram.slice_mut(s![..k, ..k]).assign(&x64.dot(&x64.t()));
    rhs.slice_mut(s![..k, ..]).assign(&x64.dot(&y64.t()));
    if with_bias {
        let sums = x64.sum_axis(Axis(1));
        gram.slice_mut(s![..k, k]).assign(&sums);
        gram.slice_mut(s![k, ..k]).assign(&sums);
        gram[[k, k]] = n as f64;
        rhs.row_mut(k).assign(&y64.sum_axis(Axis(1)));
    }
    let mean_diag = gram.diag().sum() / unknowns.max(1) as f64;
    let ridge = (RIDGE * mean_diag).max(f64::MIN_POSITIVE.sqrt());
    gram.diag_mut().mapv_inplace(|d| d + ridge);
    let llt = gram
        .view()
        .into_faer()
        .llt(faer::Side::Lower)
        .map_err(|e| Error::runtime(format!("least squares: Cholesky failed ({e:?})")))?;
    llt.solve_in_place(rhs.view_mut().into_faer());
    Ok(rhs)
}

/// Mean squared error of `weight · cols (+ bias)` against the targets.
pub fn output_mse(weight: &Array2<f32>, bias: Option<&Array1<f32>>, samples: &LayerSamples) -> f64 {
    let groups = samples.cols.len().max(1);
    let out = samples.targets.nrows();
    let per = out / groups;
    let mut sum = 0.0f64;
    for (g, cols) in samples.cols.iter().enumerate() {
        let y = weight.slice(s![g * per..(g + 1) * per, ..]).dot(cols);
        for (r, row) in y.outer_iter().enumerate() {
            let o = g * per + r;
            let b = bias.map_or(0.0, |b| b[o]);
            for (v, t) in row.iter().zip(samples.targets.row(o)) {
                let d = f64::from(v + b) - f64::from(*t);
                sum += d * d;
            }
        }
    }
    sum / (out * samples.len()).max(1) as f64
}

/// The layer's current weight matrix and bias, as [`fit_linear`] returns them.
pub fn current(model: &Model, layer: &Layer, op: &LinearOp) -> Result<Fit> {
    let w = model
        .weight(&layer.weight)
        .ok_or_else(|| Error::input(format!("layer '{}' has no float weight", layer.name)))?;
    let bias = match &layer.bias {
        Some(b) => {
            let b = model
                .weight(b)
                .ok_or_else(|| Error::input(format!("layer '{}': no float bias", layer.name)))?;
            Some(b.iter().copied().collect::<Array1<f32>>())
        }
        None => None,
    };
    let context = |e: Error| Error::input(format!("layer '{}': {e}", layer.name));
    Ok(Fit {
        weight: op.weight_matrix(w).map_err(context)?,
        bias,
    })
}

/// Whether the layer's op takes a bias input (Conv and Gemm do, MatMul does not).
pub fn takes_bias(layer: &Layer) -> bool {
    layer.kind != LayerKind::MatMul
}

/// `model` with `fit` written into `layer` (a bias input is added if the layer had none).
pub fn write_fit(model: &Model, layer: &Layer, op: &LinearOp, fit: &Fit) -> Result<Model> {
    let context = |e: Error| Error::runtime(format!("layer '{}': {e}", layer.name));
    let mut edited = match (&fit.bias, &layer.bias) {
        (Some(_), None) => with_biases(model, std::slice::from_ref(layer))?,
        _ => model.clone(),
    };
    let tensor = op
        .weight_tensor(&fit.weight, &layer.weight_shape)
        .map_err(context)?;
    edited.set_weight(&layer.weight, tensor)?;
    if let Some(b) = &fit.bias {
        let node = &edited.graph().node[layer.node];
        let name = node
            .input
            .get(2)
            .filter(|n| !n.is_empty())
            .cloned()
            .ok_or_else(|| context(Error::runtime("no bias input after adding one")))?;
        let shape = edited
            .weight(&name)
            .map(|a| a.shape().to_vec())
            .ok_or_else(|| context(Error::runtime(format!("bias '{name}' is not stored"))))?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), b.to_vec())
            .map_err(|e| context(Error::runtime(format!("bias of shape {shape:?}: {e}"))))?;
        edited.set_weight(&name, array)?;
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitMix64;

    fn random(rng: &mut SplitMix64, shape: (usize, usize)) -> Array2<f32> {
        Array2::from_shape_fn(shape, |_| rng.symmetric())
    }

    #[test]
    fn least_squares_recovers_known_weights_and_bias() {
        let mut rng = SplitMix64(11);
        let (k, out, n) = (12, 5, 400);
        let cols = random(&mut rng, (k, n));
        let w = random(&mut rng, (out, k));
        let b = Array1::from_shape_fn(out, |_| rng.symmetric());
        let targets = w.dot(&cols) + b.view().insert_axis(Axis(1));
        let samples = LayerSamples {
            cols: vec![cols],
            targets,
        };
        let fit = fit_linear(&samples, true).unwrap();
        let dw = (&fit.weight - &w)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        let db = (fit.bias.as_ref().unwrap() - &b)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        assert!(dw < 1e-4 && db < 1e-4, "weights off by {dw}, bias by {db}");
        assert!(output_mse(&fit.weight, fit.bias.as_ref(), &samples) < 1e-9);
    }

    #[test]
    fn groups_are_fitted_separately() {
        let mut rng = SplitMix64(5);
        let (k, per, n) = (6, 3, 200);
        let cols: Vec<Array2<f32>> = (0..2).map(|_| random(&mut rng, (k, n))).collect();
        let w = random(&mut rng, (2 * per, k));
        let mut targets = Array2::zeros((2 * per, n));
        for (g, c) in cols.iter().enumerate() {
            targets
                .slice_mut(s![g * per..(g + 1) * per, ..])
                .assign(&w.slice(s![g * per..(g + 1) * per, ..]).dot(c));
        }
        let fit = fit_linear(&LayerSamples { cols, targets }, false).unwrap();
        assert!(fit.bias.is_none());
        let d = (&fit.weight - &w)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        assert!(d < 1e-4, "weights off by {d}");
    }

    #[test]
    fn rank_deficient_inputs_still_solve() {
        // A dead input row (a Relu channel that never fires) and fewer samples than unknowns.
        let mut rng = SplitMix64(3);
        let mut cols = random(&mut rng, (8, 5));
        cols.row_mut(2).fill(0.0);
        let targets = random(&mut rng, (2, 5));
        let samples = LayerSamples {
            cols: vec![cols],
            targets,
        };
        let fit = fit_linear(&samples, true).unwrap();
        assert!(fit.weight.iter().all(|v| v.is_finite()));
        assert!(fit.weight.column(2).iter().all(|v| v.abs() < 1e-3));
        // Underdetermined: the fit interpolates.
        assert!(output_mse(&fit.weight, fit.bias.as_ref(), &samples) < 1e-6);
    }
}
