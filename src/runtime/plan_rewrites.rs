//! Rewrites of tract's optimized plan where tract runs a construct far slower than it
//! needs to, applied after `into_optimized` (so tract's own passes cannot undo them).
//!
//! - **Softmax on an inner axis** (YOLOv8's DFL head: `[1, 16, 4, anchors]`, axis 1): tract
//!   has a vectorized path for softmax over the trailing axis only; any other axis goes
//!   through `Softmax::eval_t`'s slow path (tract-core `ops/nn/softmax/mod.rs`), one strided
//!   ndarray lane at a time — 230 ms of NudeNet's 540 ms per image, where ONNX Runtime
//!   spends 5 ms. Moving the axis last, taking the softmax there and moving it back costs
//!   two copies of the tensor. The values agree to float rounding (the fast path's exp and
//!   sum order differ in the last bits).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::nn::Softmax;

/// Every rewrite, in order.
pub fn rewrite(model: TypedModel) -> TractResult<TypedModel> {
    softmax_on_last_axis(model)
}

fn softmax_on_last_axis(mut model: TypedModel) -> TractResult<TypedModel> {
    let inner: Vec<(usize, usize, usize)> = model
        .nodes()
        .iter()
        .filter_map(|n| {
            let sm = n.op_as::<Softmax>()?;
            let fact = model.outlet_fact(*n.inputs.first()?).ok()?;
            let rank = fact.rank();
            let axis = *sm.axes.first()?;
            let plain_f32 = fact.datum_type == f32::datum_type() && sm.quant_output_dt.is_none();
            (plain_f32 && sm.axes.len() == 1 && axis + 1 < rank).then_some((n.id, axis, rank))
        })
        .collect();
    if inner.is_empty() {
        return Ok(model);
    }
    for (id, axis, rank) in inner {
        let node = model.node(id);
        let Some(sm) = node.op_as::<Softmax>() else {
            continue;
        };
        let last = Softmax {
            axes: tvec![rank - 1],
            ..sm.clone()
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(&model, node.inputs[0])?;
        let moved = patch.wire_node(
            format!("{name}.axis_last"),
            AxisOp::Move(axis, rank - 1),
            &[x],
        )?;
        let y = patch.wire_node(format!("{name}.on_last_axis"), last, &moved)?;
        let back = patch.wire_node(
            format!("{name}.axis_back"),
            AxisOp::Move(rank - 1, axis),
            &y,
        )?;
        patch.shunt_outside(&model, OutletId::new(id, 0), back[0])?;
        patch.apply(&mut model)?;
    }
    model.compact()?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use crate::model::builder::{attr_int, ProtoBuilder};
    use crate::model::Model;
    use crate::runtime::CompiledModel;
    use ndarray::{ArrayD, IxDyn};

    /// x [1, 16, 4, 50] → Softmax(axis) → y: YOLOv8's DFL softmax, smaller.
    fn softmax_model(axis: i64) -> Model {
        let mut b = ProtoBuilder::new(17);
        b.input("x", &[16, 4, 50]);
        b.node(
            "Softmax",
            "sm",
            &["x"],
            &["y"],
            vec![attr_int("axis", axis)],
        )
        .output("y");
        b.model("softmax.onnx").unwrap()
    }

    fn input() -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(&[1, 16, 4, 50]), |i| {
            ((i[1] * 37 + i[2] * 11 + i[3] * 5) % 23) as f32 * 0.37 - 4.0
        })
    }

    /// Softmax along axis 1 by hand, in f64.
    fn reference(x: &ArrayD<f32>) -> ArrayD<f32> {
        let mut y = x.clone();
        for k in 0..4 {
            for a in 0..50 {
                let lane: Vec<f64> = (0..16).map(|c| x[[0, c, k, a]] as f64).collect();
                let max = lane.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = lane.iter().map(|v| (v - max).exp()).sum();
                for c in 0..16 {
                    y[[0, c, k, a]] = ((lane[c] - max).exp() / sum) as f32;
                }
            }
        }
        y
    }

    #[test]
    fn inner_axis_softmax_runs_on_the_last_axis_with_the_same_values() {
        let model = softmax_model(1);
        let compiled = CompiledModel::compile(&model, &[vec![16, 4, 50]], 1, &[]).unwrap();
        let ops: Vec<String> = compiled.plan_op_names();
        assert!(ops.iter().any(|o| o.contains("Move")), "{ops:?}");
        let x = input();
        let y = compiled.run(&[x.view()]).unwrap().remove(0);
        let want = reference(&x);
        let worst = y
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "max |Δ| {worst}");
    }

    #[test]
    fn last_axis_softmax_is_left_alone() {
        let model = softmax_model(3);
        let compiled = CompiledModel::compile(&model, &[vec![16, 4, 50]], 1, &[]).unwrap();
        let ops = compiled.plan_op_names();
        assert!(!ops.iter().any(|o| o.contains("Move")), "{ops:?}");
    }
}
