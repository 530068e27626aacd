//! What Weight SVD and Spatial SVD share: a layer replaced by two whose cost is linear in a
//! rank. A method ([`Splitter`]) says which layers it can split, what a rank costs and
//! what the two layers are; this module turns ratios into ranks, checks the request,
//! rewrites the graph and reports the changes.
//!
//! The first new layer reads the original input and has no bias; the second keeps the
//! original's other inputs (its bias), attributes it is given, and the original output
//! value, so nothing downstream changes. Both are named after the layer
//! (`<layer>.svd0`, `<layer>.svd1`), made unique in the graph.

use super::cost::ModelCost;
use super::rank::SplitCost;
use super::{CompressOutcome, Eligibility, LayerChange, LayerRatios, Method};
use crate::cancel::CancelToken;
use crate::compress::ChangeDetail;
use crate::fixes::edit::{add_initializer, drop_stale_value_info, not_float32, prune_unused};
use crate::model::{Layer, Model};
use crate::quant::qdq::Names;
use crate::{Error, Result};
use ndarray::ArrayD;
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::pb::{AttributeProto, NodeProto};

/// One of the two layers a split makes.
#[derive(Debug, Clone)]
pub(crate) struct Half {
    pub op: &'static str,
    pub attributes: Vec<AttributeProto>,
    pub weight: ArrayD<f32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Split {
    pub first: Half,
    pub second: Half,
}

/// A factorization method.
pub(crate) trait Splitter {
    /// What the method learned about a layer while checking it (its geometry).
    type Plan;

    fn method(&self) -> Method;

    /// Whether the method can split `layer`, and how; `Err` is the reason it cannot.
    fn check(&self, model: &Model, layer: &Layer) -> std::result::Result<Self::Plan, String>;

    fn cost(&self, layer: &Layer, plan: &Self::Plan) -> SplitCost;

    /// The two layers at `rank` (1 ≤ rank ≤ full rank).
    fn split(&self, model: &Model, layer: &Layer, plan: &Self::Plan, rank: usize) -> Result<Split>;
}

/// What to split a layer to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// Fraction of the layer's MACs to keep.
    Ratio(f64),
    Rank(usize),
}

/// The checks every split needs, then the method's own.
fn checked<S: Splitter>(
    s: &S,
    model: &Model,
    layer: &Layer,
) -> std::result::Result<(S::Plan, SplitCost, u64), String> {
    let macs = layer
        .macs
        .ok_or("its MACs are unknown (a dimension is symbolic): give the dataset's sample shape")?;
    if let Some(reason) = not_float32(model, &layer.weight) {
        return Err(reason);
    }
    let plan = s.check(model, layer)?;
    let cost = s.cost(layer, &plan);
    if cost.macs(1) >= macs {
        return Err(format!(
            "splitting it costs more MACs than the layer at any rank ({} at rank 1, {macs} now)",
            cost.macs(1)
        ));
    }
    Ok((plan, cost, macs))
}

pub(crate) fn eligible<S: Splitter>(
    s: &S,
    model: &Model,
    sample_shapes: Option<&[Vec<usize>]>,
) -> Result<Vec<Eligibility>> {
    let shapes = model.shapes(sample_shapes)?;
    Ok(model
        .layers(&shapes)?
        .iter()
        .map(|l| Eligibility {
            layer: l.name.clone(),
            not_eligible: checked(s, model, l).err(),
        })
        .collect())
}

/// Ratios as targets; a ratio of 1 leaves the layer alone, anything outside (0, 1] is an
/// input error naming the layer.
pub(crate) fn ratio_targets(ratios: &LayerRatios) -> Result<BTreeMap<String, Target>> {
    let mut targets = BTreeMap::new();
    for (layer, &r) in ratios {
        if !(r.is_finite() && r > 0.0 && r <= 1.0) {
            return Err(Error::input(format!(
                "layer '{layer}': ratio {r} is outside (0, 1]"
            )));
        }
        if r < 1.0 {
            targets.insert(layer.clone(), Target::Ratio(r));
        }
    }
    Ok(targets)
}

/// A layer's split decided on, before the graph is rewritten.
struct Planned {
    layer: Layer,
    split: Split,
    change: LayerChange,
}

pub(crate) fn apply<S: Splitter>(
    s: &S,
    model: &Model,
    sample_shapes: Option<&[Vec<usize>]>,
    targets: &BTreeMap<String, Target>,
    cancel: &CancelToken,
) -> Result<CompressOutcome> {
    let src = model.source();
    let method = s.method().short();
    let shapes = model.shapes(sample_shapes)?;
    let layers = model.layers(&shapes)?;
    let before = ModelCost::of(model, &shapes)?;
    for name in targets.keys() {
        if !layers.iter().any(|l| &l.name == name) {
            return Err(Error::input(format!(
                "{src}: no layer named '{name}' to compress"
            )));
        }
    }
    let mut planned = Vec::new();
    for layer in layers.iter().filter(|l| targets.contains_key(&l.name)) {
        cancel.check()?;
        let (plan, cost, macs) = checked(s, model, layer).map_err(|reason| {
            Error::input(format!(
                "{src}: layer '{}' cannot be compressed by {method}: {reason}",
                layer.name
            ))
        })?;
        let (rank, ratio) = match targets[&layer.name] {
            Target::Ratio(r) => (cost.rank_for_ratio(macs, r), r),
            // A rank asked for directly reports the ratio it reaches.
            Target::Rank(r) if (1..=cost.full_rank).contains(&r) => {
                (r, cost.macs(r) as f64 / macs as f64)
            }
            Target::Rank(r) => {
                return Err(Error::input(format!(
                    "{src}: layer '{}': rank {r} is outside 1..={}",
                    layer.name, cost.full_rank
                )))
            }
        };
        let split = s.split(model, layer, &plan, rank)?;
        planned.push(Planned {
            change: LayerChange {
                layer: layer.name.clone(),
                ratio,
                macs_before: macs,
                macs_after: cost.macs(rank),
                params_before: layer.params,
                params_after: cost.params(rank),
                detail: ChangeDetail::Rank {
                    rank,
                    full_rank: cost.full_rank,
                },
                refit: vec![],
            },
            layer: layer.clone(),
            split,
        });
    }
    let edited = if planned.is_empty() {
        model.clone()
    } else {
        rewrite(model, &mut planned)?
    };
    let after = ModelCost::measure(&edited, sample_shapes)?;
    Ok(CompressOutcome {
        model: edited,
        changes: planned.into_iter().map(|p| p.change).collect(),
        skipped: vec![],
        macs_before: before.macs_total,
        macs_after: after.macs_total,
    })
}

/// Replace each planned layer's node by its two halves, in place in the node order, and
/// record the second half's name as the layer to refit.
fn rewrite(model: &Model, planned: &mut [Planned]) -> Result<Model> {
    let source = model.source().to_string();
    let mut proto = model.clone().into_proto();
    let g = proto.graph.as_mut().expect("graph checked at load");
    let mut names = Names::of(g);
    let by_node: HashMap<usize, usize> = planned
        .iter()
        .enumerate()
        .map(|(k, p)| (p.layer.node, k))
        .collect();
    let mut unused = HashSet::new();
    let mut nodes = Vec::with_capacity(g.node.len() + planned.len());
    for (i, node) in std::mem::take(&mut g.node).into_iter().enumerate() {
        let Some(&k) = by_node.get(&i) else {
            nodes.push(node);
            continue;
        };
        let p = &mut planned[k];
        let base = &p.layer.name;
        let first_name = names.fresh(&format!("{base}.svd0"));
        let second_name = names.fresh(&format!("{base}.svd1"));
        let mid = names.fresh(&format!("{first_name}.out"));
        let w0 = add_initializer(
            g,
            &mut names,
            &format!("{first_name}.weight"),
            &p.split.first.weight,
        );
        let w1 = add_initializer(
            g,
            &mut names,
            &format!("{second_name}.weight"),
            &p.split.second.weight,
        );
        unused.insert(node.input[1].clone());
        unused.insert(p.layer.weight.clone());
        nodes.push(NodeProto {
            name: first_name,
            op_type: p.split.first.op.into(),
            input: vec![node.input[0].clone(), w0],
            output: vec![mid.clone()],
            attribute: p.split.first.attributes.clone(),
            ..Default::default()
        });
        let mut second = node;
        second.name = second_name.clone();
        second.op_type = p.split.second.op.into();
        second.input[0] = mid;
        second.input[1] = w1;
        second.attribute = p.split.second.attributes.clone();
        nodes.push(second);
        p.change.refit = vec![second_name];
    }
    g.node = nodes;
    prune_unused(g, &unused);
    drop_stale_value_info(g);
    Model::from_proto(proto, &source)
}

/// The public face of a [`Splitter`] struct with a `sample_shapes` field: `new`,
/// `apply_ranks` and the [`LayerCompressor`](super::LayerCompressor) implementation.
macro_rules! compressor {
    ($t:ident, $method:expr) => {
        impl $t {
            /// `sample_shapes`: the dataset's per-input sample shapes, pinning symbolic
            /// dims (as [`Model::shapes`] takes them); `None` keeps the file's shapes.
            pub fn new(sample_shapes: Option<Vec<Vec<usize>>>) -> $t {
                $t { sample_shapes }
            }

            /// Split the named layers at the given ranks (1 ≤ rank ≤ full rank).
            pub fn apply_ranks(
                &self,
                model: &Model,
                ranks: &std::collections::BTreeMap<String, usize>,
                cancel: &CancelToken,
            ) -> Result<CompressOutcome> {
                let targets = ranks
                    .iter()
                    .map(|(l, &r)| (l.clone(), split::Target::Rank(r)))
                    .collect();
                split::apply(self, model, self.sample_shapes.as_deref(), &targets, cancel)
            }
        }

        impl LayerCompressor for $t {
            fn method(&self) -> Method {
                $method
            }

            fn eligible(&self, model: &Model) -> Result<Vec<Eligibility>> {
                split::eligible(self, model, self.sample_shapes.as_deref())
            }

            fn apply(
                &self,
                model: &Model,
                ratios: &LayerRatios,
                cancel: &CancelToken,
            ) -> Result<CompressOutcome> {
                let targets = split::ratio_targets(ratios)?;
                split::apply(self, model, self.sample_shapes.as_deref(), &targets, cancel)
            }
        }
    };
}
pub(crate) use compressor;
