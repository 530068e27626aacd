//! Per-layer compression choices made in the layers pane: leave a layer alone (`X`) or pin
//! it at a ratio of its MACs (`+`/`-` in steps of 0.1). The compress dialog sends them with
//! the job: the greedy selection keeps pinned layers at their ratio and skips excluded ones;
//! manual mode compresses exactly the pinned layers.

use qsteer::compress::LayerRatios;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChoice {
    Exclude,
    /// Kept fraction of the layer's MACs, in tenths (1..=9).
    Pin(u8),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerChoices(BTreeMap<String, LayerChoice>);

impl LayerChoices {
    /// Excluded ↔ free (a pinned layer becomes excluded).
    pub fn toggle_exclude(&mut self, layer: &str) {
        match self.0.get(layer) {
            Some(LayerChoice::Exclude) => {
                self.0.remove(layer);
            }
            _ => {
                self.0.insert(layer.to_string(), LayerChoice::Exclude);
            }
        }
    }

    /// `+` raises the pinned ratio, `-` lowers it; `-` on a free layer pins it at 0.9,
    /// `+` past 0.9 frees it again.
    pub fn step_pin(&mut self, layer: &str, delta: i8) {
        let next = match self.0.get(layer) {
            Some(LayerChoice::Pin(t)) => *t as i8 + delta,
            _ if delta < 0 => 9,
            _ => return,
        };
        if (1..=9).contains(&next) {
            self.0
                .insert(layer.to_string(), LayerChoice::Pin(next as u8));
        } else if next > 9 {
            self.0.remove(layer);
        }
    }

    pub fn get(&self, layer: &str) -> Option<LayerChoice> {
        self.0.get(layer).copied()
    }

    pub fn pinned(&self) -> LayerRatios {
        self.0
            .iter()
            .filter_map(|(l, c)| match c {
                LayerChoice::Pin(t) => Some((l.clone(), *t as f64 / 10.0)),
                LayerChoice::Exclude => None,
            })
            .collect()
    }

    pub fn excluded(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, c)| **c == LayerChoice::Exclude)
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// Forget the choices for layers the model no longer has (another variant loaded).
    pub fn retain_layers<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: Vec<&str> = names.into_iter().collect();
        self.0.retain(|l, _| keep.contains(&l.as_str()));
    }

    /// The layers pane's mark beside a layer name.
    pub fn marker(&self, layer: &str) -> Option<String> {
        self.get(layer).map(|c| match c {
            LayerChoice::Exclude => "[skip]".to_string(),
            LayerChoice::Pin(t) => format!("[pin 0.{t}]"),
        })
    }

    /// e.g. `2 pinned, 1 excluded`, or `none` when empty.
    pub fn summary(&self) -> String {
        let (p, x) = (self.pinned().len(), self.excluded().len());
        match (p, x) {
            (0, 0) => "none".into(),
            _ => format!("{p} pinned, {x} excluded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_step_by_tenths_and_exclusion_toggles() {
        let mut c = LayerChoices::default();
        c.step_pin("a", 1);
        assert_eq!(c.get("a"), None, "+ on a free layer does nothing");
        c.step_pin("a", -1);
        c.step_pin("a", -1);
        assert_eq!(c.get("a"), Some(LayerChoice::Pin(8)));
        for _ in 0..10 {
            c.step_pin("a", -1);
        }
        assert_eq!(c.get("a"), Some(LayerChoice::Pin(1)), "0.1 is the floor");
        c.toggle_exclude("b");
        assert_eq!(c.pinned(), LayerRatios::from([("a".to_string(), 0.1)]));
        assert_eq!(c.excluded(), ["b"]);
        assert_eq!(c.summary(), "1 pinned, 1 excluded");
        c.toggle_exclude("a");
        c.toggle_exclude("b");
        assert_eq!(
            (c.marker("a").as_deref(), c.get("b")),
            (Some("[skip]"), None)
        );
        c.retain_layers(["b"]);
        assert_eq!(c.summary(), "none");
    }
}
