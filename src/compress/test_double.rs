//! A test double for [`LayerCompressor`] that really edits the model: at ratio r it zeroes
//! the last output channels of a plain Conv (keeping round(r × Cout)) and reports the MACs
//! removing them would leave. Tests of the selection and the compress job use it; it is not
//! a compression method.

use crate::cancel::CancelToken;
use crate::compress::{
    ChangeDetail, CompressOutcome, Eligibility, LayerChange, LayerCompressor, LayerRatios, Method,
};
use crate::model::{LayerKind, Model};
use crate::{Error, Result};
use ndarray::{Axis, Slice};

pub(crate) struct ZeroChannels {
    pub(crate) shapes: Vec<Vec<usize>>,
}

impl LayerCompressor for ZeroChannels {
    fn method(&self) -> Method {
        Method::ChannelPruning
    }

    fn eligible(&self, model: &Model) -> Result<Vec<Eligibility>> {
        let shapes = model.shapes(Some(&self.shapes))?;
        Ok(model
            .layers(&shapes)?
            .into_iter()
            .map(|l| Eligibility {
                not_eligible: (l.kind != LayerKind::Conv).then(|| "not a plain Conv".into()),
                layer: l.name,
            })
            .collect())
    }

    fn apply(
        &self,
        model: &Model,
        ratios: &LayerRatios,
        cancel: &CancelToken,
    ) -> Result<CompressOutcome> {
        let shapes = model.shapes(Some(&self.shapes))?;
        let layers = model.layers(&shapes)?;
        let macs_before: u64 = layers.iter().filter_map(|l| l.macs).sum();
        let mut out = model.clone();
        let mut changes = Vec::new();
        for (name, &ratio) in ratios {
            cancel.check()?;
            let l = layers
                .iter()
                .find(|l| &l.name == name && l.kind == LayerKind::Conv)
                .ok_or_else(|| Error::input(format!("no plain Conv '{name}'")))?;
            if ratio >= 1.0 {
                continue;
            }
            let kept = ((ratio * l.out_channels as f64).round() as usize).max(1);
            for w in std::iter::once(&l.weight).chain(&l.bias) {
                let mut a = out.weight(w).expect("layer weight").clone();
                a.slice_axis_mut(Axis(0), Slice::from(kept..)).fill(0.0);
                out.set_weight(w, a)?;
            }
            let macs = l.macs.unwrap_or(0);
            changes.push(LayerChange {
                layer: name.clone(),
                ratio,
                macs_before: macs,
                macs_after: macs * kept as u64 / l.out_channels as u64,
                params_before: l.params,
                params_after: l.params * kept as u64 / l.out_channels as u64,
                detail: ChangeDetail::Channels {
                    kept: (0..kept).collect(),
                    total: l.out_channels,
                    winnowed: vec![],
                },
                refit: vec![name.clone()],
            });
        }
        let saved: u64 = changes.iter().map(|c| c.macs_before - c.macs_after).sum();
        Ok(CompressOutcome {
            model: out,
            changes,
            skipped: vec![],
            macs_before,
            macs_after: macs_before - saved,
        })
    }
}
