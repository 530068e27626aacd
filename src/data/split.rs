//! Calibration / evaluation split: explicit folders, or a seeded shuffle of one dataset.
//! The PRNG is our own (splitmix64) so a recorded seed reproduces the split on any version.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::images::{load_image_folder_with, looks_like_image_folder};
use super::preprocess::{Preprocess, PREPROCESS_FILE};
use super::{load_dataset, Dataset};
use crate::{Error, Result};

/// Sample indices of each subset, both ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub calibration: Vec<usize>,
    pub evaluation: Vec<usize>,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// `calibration/` and `evaluation/` folders, used as they are.
    Explicit,
    /// One dataset shuffled with `seed`.
    Seeded,
}

/// What the workspace records about a split, enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub kind: SplitKind,
    /// The shuffle seed (seeded splits only).
    pub seed: Option<u64>,
    /// The calibration size asked for; the seeded split caps it at half the samples.
    pub calibration_requested: usize,
    pub calibration: usize,
    pub evaluation: usize,
}

#[derive(Debug, Clone)]
pub struct DatasetPair {
    pub calibration: Dataset,
    pub evaluation: Dataset,
    pub split: SplitInfo,
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, well mixed, and fixed forever. Also the
/// source of synthetic weights in tests and benchmarks.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough index in `0..bound` (multiply-shift; bias < bound / 2^64).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in [-1, 1) (24 bits).
    pub fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Shuffle `0..n` with `seed` (Fisher–Yates); the first `calibration` indices (capped at `n`)
/// calibrate, the rest evaluate. Same `(n, calibration, seed)` → same split, always.
pub fn seeded_split(n: usize, calibration: usize, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let evaluation = order.split_off(calibration.min(n));
    let mut calibration = order;
    let mut evaluation = evaluation;
    calibration.sort_unstable();
    evaluation.sort_unstable();
    Split {
        calibration,
        evaluation,
        seed,
    }
}

/// Load calibration and evaluation data from `path`: its `calibration/` and `evaluation/`
/// subfolders when both exist, otherwise one dataset split with `seed` (calibration capped at
/// half of the samples so evaluation keeps at least as many).
pub fn load_split(path: &Path, calibration_size: usize, seed: u64) -> Result<DatasetPair> {
    let (cal_dir, eval_dir) = (path.join("calibration"), path.join("evaluation"));
    if cal_dir.is_dir() && eval_dir.is_dir() {
        let calibration = load_part(&cal_dir, path)?;
        let evaluation = load_part(&eval_dir, path)?;
        check_compatible(&calibration, &evaluation)?;
        let split = SplitInfo {
            kind: SplitKind::Explicit,
            seed: None,
            calibration_requested: calibration_size,
            calibration: calibration.len(),
            evaluation: evaluation.len(),
        };
        return Ok(DatasetPair {
            calibration,
            evaluation,
            split,
        });
    }

    let dataset = load_dataset(path)?;
    let n = dataset.len();
    if calibration_size > 0 && n < 2 {
        return Err(Error::input(format!(
            "{}: {n} sample(s) cannot be split into calibration and evaluation; need at least 2",
            dataset.name
        )));
    }
    let split = seeded_split(n, calibration_size.min(n / 2), seed);
    let info = SplitInfo {
        kind: SplitKind::Seeded,
        seed: Some(seed),
        calibration_requested: calibration_size,
        calibration: split.calibration.len(),
        evaluation: split.evaluation.len(),
    };
    Ok(DatasetPair {
        calibration: dataset.subset(&split.calibration),
        evaluation: dataset.subset(&split.evaluation),
        split: info,
    })
}

/// One half of an explicit split. An image folder without its own preprocess.json uses the
/// one next to `calibration/` and `evaluation/`, so the spec is written once.
fn load_part(dir: &Path, root: &Path) -> Result<Dataset> {
    let shared = root.join(PREPROCESS_FILE);
    if !dir.join(PREPROCESS_FILE).exists() && shared.is_file() && looks_like_image_folder(dir)? {
        return load_image_folder_with(dir, &Preprocess::load(root)?);
    }
    load_dataset(dir)
}

/// Both halves of an explicit split must feed the same model the same way.
fn check_compatible(cal: &Dataset, eval: &Dataset) -> Result<()> {
    let describe = |d: &Dataset| -> Vec<(Option<String>, Vec<usize>)> {
        d.inputs
            .iter()
            .map(|i| (i.name.clone(), i.data.sample_shape().to_vec()))
            .collect()
    };
    let (a, b) = (describe(cal), describe(eval));
    if a != b {
        return Err(Error::input(format!(
            "{} and {} disagree on inputs: {} vs {}",
            cal.name,
            eval.name,
            format_inputs(&a),
            format_inputs(&b)
        )));
    }
    if let (Some(c1), Some(c2)) = (&cal.classes, &eval.classes) {
        if c1 != c2 {
            return Err(Error::input(format!(
                "{} and {} have different class folders ({} vs {}); the same label index \
                 would mean different classes",
                cal.name,
                eval.name,
                c1.join(", "),
                c2.join(", ")
            )));
        }
    }
    Ok(())
}

fn format_inputs(inputs: &[(Option<String>, Vec<usize>)]) -> String {
    let parts: Vec<String> = inputs
        .iter()
        .map(|(name, shape)| format!("{} {shape:?}", name.as_deref().unwrap_or("inputs")))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::tests::write_png;
    use crate::data::npy::{npy_bytes, NpyArray};
    use ndarray::{Array, IxDyn};
    use std::collections::BTreeSet;

    #[test]
    fn seeded_split_is_deterministic_disjoint_and_sorted() {
        let a = seeded_split(100, 30, 7);
        assert_eq!(a, seeded_split(100, 30, 7));
        assert_ne!(a.calibration, seeded_split(100, 30, 8).calibration);
        assert_eq!((a.calibration.len(), a.evaluation.len()), (30, 70));
        assert!(a.calibration.windows(2).all(|w| w[0] < w[1]));
        assert!(a.evaluation.windows(2).all(|w| w[0] < w[1]));
        let all: BTreeSet<usize> = a.calibration.iter().chain(&a.evaluation).copied().collect();
        assert_eq!(all.len(), 100);
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        // Not simply the first 30.
        assert_ne!(a.calibration, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn seeded_split_pins_its_output() {
        // A change here changes every recorded split: don't.
        assert_eq!(seeded_split(10, 3, 42).calibration, vec![3, 6, 8]);
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs of the reference C implementation seeded with 0.
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn seeded_split_edge_cases() {
        assert_eq!(seeded_split(0, 5, 1).calibration, Vec::<usize>::new());
        let s = seeded_split(3, 10, 1);
        assert_eq!((s.calibration.len(), s.evaluation.len()), (3, 0));
        let s = seeded_split(5, 0, 1);
        assert_eq!(s.evaluation, vec![0, 1, 2, 3, 4]);
    }

    fn write_arrays(dir: &Path, n: usize, sample: &[usize]) {
        std::fs::create_dir_all(dir).unwrap();
        let mut shape = vec![n];
        shape.extend(sample);
        let x = Array::from_shape_fn(IxDyn(&shape), |i| i[0] as f32);
        std::fs::write(dir.join("inputs.npy"), npy_bytes(&NpyArray::F32(x))).unwrap();
        let y = Array::from_shape_fn(IxDyn(&[n]), |i| i[0] as i64);
        std::fs::write(dir.join("labels.npy"), npy_bytes(&NpyArray::I64(y))).unwrap();
    }

    #[test]
    fn load_split_seeded_caps_at_half() {
        let dir = tempfile::tempdir().unwrap();
        write_arrays(dir.path(), 10, &[2]);
        let pair = load_split(dir.path(), 100, 3).unwrap();
        assert_eq!(pair.split.kind, SplitKind::Seeded);
        assert_eq!((pair.split.calibration, pair.split.evaluation), (5, 5));
        assert_eq!(pair.split.calibration_requested, 100);
        // Labels travel with their samples (label i belongs to the sample filled with i).
        for d in [&pair.calibration, &pair.evaluation] {
            let x = d.inputs[0].data.read_all().unwrap();
            for (k, &label) in d.labels.as_ref().unwrap().iter().enumerate() {
                assert_eq!(x[[k, 0]], label as f32);
            }
        }
        let json = serde_json::to_value(&pair.split).unwrap();
        assert_eq!(json["kind"], "seeded");
        assert_eq!(json["seed"], 3);
    }

    #[test]
    fn load_split_explicit() {
        let dir = tempfile::tempdir().unwrap();
        write_arrays(&dir.path().join("calibration"), 4, &[2]);
        write_arrays(&dir.path().join("evaluation"), 6, &[2]);
        let pair = load_split(dir.path(), 100, 3).unwrap();
        assert_eq!(pair.split.kind, SplitKind::Explicit);
        assert_eq!(pair.split.seed, None);
        assert_eq!((pair.calibration.len(), pair.evaluation.len()), (4, 6));

        write_arrays(&dir.path().join("evaluation"), 6, &[3]);
        let e = load_split(dir.path(), 100, 3).unwrap_err().to_string();
        assert!(e.contains("disagree on inputs") && e.contains("[2]") && e.contains("[3]"));
    }

    #[test]
    fn load_split_explicit_image_folders_need_the_same_classes() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "calibration/cat/a.png", 2, 2, [0, 0, 0]);
        write_png(dir.path(), "evaluation/cat/a.png", 2, 2, [0, 0, 0]);
        write_png(dir.path(), "evaluation/dog/a.png", 2, 2, [0, 0, 0]);
        let e = load_split(dir.path(), 1, 0).unwrap_err().to_string();
        assert!(e.contains("different class folders"), "{e}");
    }

    #[test]
    fn explicit_image_split_shares_the_root_preprocess_json() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "calibration/cat/a.png", 4, 4, [0, 0, 0]);
        write_png(dir.path(), "evaluation/cat/a.png", 4, 4, [0, 0, 0]);
        std::fs::write(
            dir.path().join(PREPROCESS_FILE),
            r#"{"channel_order": "gray", "center_crop": {"height": 2, "width": 2}}"#,
        )
        .unwrap();
        let pair = load_split(dir.path(), 1, 0).unwrap();
        assert_eq!(pair.calibration.inputs[0].data.shape(), vec![1, 1, 2, 2]);
        assert_eq!(pair.evaluation.inputs[0].data.shape(), vec![1, 1, 2, 2]);
    }

    #[test]
    fn load_split_needs_two_samples() {
        let dir = tempfile::tempdir().unwrap();
        write_arrays(dir.path(), 1, &[2]);
        let e = load_split(dir.path(), 1, 0).unwrap_err().to_string();
        assert!(e.contains("at least 2"), "{e}");
        let pair = load_split(dir.path(), 0, 0).unwrap();
        assert_eq!((pair.split.calibration, pair.split.evaluation), (0, 1));
    }
}
