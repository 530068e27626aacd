//! The selection on the sample ResNet with the zero-channels test double (it really edits
//! the model); scores come from running the edited models on real samples.

use super::dictionary::{Dictionary, DictionaryHeader};
use super::*;
use crate::compress::test_double::ZeroChannels;
use crate::compress::Method;
use crate::experiment::evaluate::{select_samples, Subset};
use crate::runtime::RunOptions;
use std::cell::Cell;
use std::path::PathBuf;

fn sample(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sample-models")
        .join(rel)
}

/// The sample ResNet, the double, and a scorer on 60 evaluation samples (one thread: the
/// machine is shared).
pub(super) fn setup() -> (Model, ZeroChannels, ModelScorer) {
    let model = Model::load(&sample("resnet_digits.onnx")).unwrap();
    let eval = select_samples(&sample("digits"), Subset::Evaluation, 200, 0).unwrap();
    let data = eval.data.subset(&(0..60).collect::<Vec<_>>());
    let options = RunOptions {
        batch_size: 1,
        threads: 1,
    };
    let scorer = ModelScorer::new(&model, data, options, &CancelToken::new()).unwrap();
    let shapes = scorer.sample_shapes().to_vec();
    (model, ZeroChannels { shapes }, scorer)
}

pub(super) fn request<'a>(
    model: &'a Model,
    double: &'a ZeroChannels,
    scorer: &'a ModelScorer,
    target: f64,
    candidates: usize,
    cache: &'a Path,
) -> GreedyRequest<'a> {
    GreedyRequest {
        model,
        compressor: double,
        scorer,
        target,
        candidates,
        pin: &NO_PINS,
        exclude: &[],
        cache_dir: Some(cache),
        settings: "zero-channels test double",
        changed_part_only: true,
    }
}

static NO_PINS: LayerRatios = LayerRatios::new();

#[test]
fn greedy_meets_the_target_resumes_after_a_cancel_and_reuses_its_dictionary() {
    let (model, double, scorer) = setup();
    assert_eq!(scorer.parent_score().agreement, Some(1.0));
    let dir = tempfile::tempdir().unwrap();
    let req = request(&model, &double, &scorer, 0.6, 4, dir.path());
    // 9 plain Convs × 3 candidates; cancel after the 4th computed entry.
    let cancel = CancelToken::new();
    let computed = Cell::new(0);
    let err = select_greedy(&req, &cancel, &|ev| {
        if let GreedyEvent::Entry { computed: true, .. } = ev {
            computed.set(computed.get() + 1);
            if computed.get() == 4 {
                cancel.cancel();
            }
        }
    });
    assert!(matches!(err, Err(Error::Cancelled)));
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "one cache file and its claims, no temp files: {files:?}"
    );
    assert!(
        files[0].ends_with(".claims") && files[1].ends_with(".json"),
        "{files:?}"
    );
    let claims = std::fs::read_dir(dir.path().join(&files[0]))
        .unwrap()
        .count();
    assert_eq!(
        claims, 1,
        "only the dictionary's lock file: no claim is left behind"
    );

    // The rerun continues: 4 entries reused, the other 23 computed.
    let progress = std::sync::Mutex::new(Vec::new());
    let sel = select_greedy(&req, &CancelToken::new(), &|ev| {
        if let GreedyEvent::Progress { what, .. } = ev {
            progress.lock().unwrap().push(what.to_string());
        }
    })
    .unwrap();
    assert_eq!((sel.dictionary.reused, sel.dictionary.computed), (4, 23));
    assert!(progress
        .lock()
        .unwrap()
        .contains(&"layer 2/9 ratio 0.5".to_string()));
    assert_eq!(sel.plan.searched.len(), 9);
    assert_eq!(sel.entries.len(), 27);
    // The double's savings add up: measured = predicted, and the target is met closely.
    let measured = sel.outcome.mac_ratio();
    assert!((measured - sel.search.predicted_mac_ratio).abs() < 1e-12);
    assert!(measured <= 0.6 + TOLERANCE, "{measured}");
    assert!(measured > 0.5, "{measured}");
    for (layer, r) in &sel.ratios {
        assert!([0.25, 0.5, 0.75].contains(r), "{layer} {r}");
    }
    // Compressing costs accuracy, and the threshold held for every searched layer's pick.
    let t = sel.search.threshold.unwrap();
    for e in &sel.entries {
        if sel.ratios.get(&e.layer) == Some(&e.ratio) && !sel.search.relaxed.contains(&e.layer) {
            assert!(e.score >= t, "{e:?} below {t}");
        }
    }
    let after = scorer
        .score(&sel.outcome.model, &CancelToken::new())
        .unwrap();
    assert!(after.agreement.unwrap() < 1.0);

    // Another target reuses every entry: no evaluation at all.
    let req = request(&model, &double, &scorer, 0.8, 4, dir.path());
    let sel = select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap();
    assert_eq!((sel.dictionary.reused, sel.dictionary.computed), (27, 0));
    assert!(sel.outcome.mac_ratio() <= 0.8 + TOLERANCE);
    assert!(sel.outcome.mac_ratio() > 0.7);

    // Other candidates are another dictionary.
    let header = DictionaryHeader {
        method: Method::ChannelPruning,
        metric: scorer.metric(),
        candidates: candidates(5).unwrap(),
        settings: "zero-channels test double".into(),
        model_hash: model.content_hash(),
        dataset_fingerprint: scorer.data().fingerprint().unwrap(),
    };
    assert!(Dictionary::open(Some(dir.path()), header)
        .entries()
        .is_empty());
}

#[test]
fn pins_exclusions_and_bad_names() {
    let (model, double, scorer) = setup();
    let dir = tempfile::tempdir().unwrap();
    let pin = LayerRatios::from([("layer1.conv1".to_string(), 0.5)]);
    let exclude = vec!["layer2.conv2".to_string(), "fc".to_string()];
    let mut req = request(&model, &double, &scorer, 0.7, 2, dir.path());
    req.pin = &pin;
    req.exclude = &exclude;
    let sel = select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap();
    assert_eq!(sel.plan.searched.len(), 7);
    assert_eq!(sel.dictionary.computed, 7);
    assert_eq!(sel.ratios["layer1.conv1"], 0.5);
    assert!(!sel.ratios.contains_key("layer2.conv2"));
    assert!(sel.outcome.mac_ratio() <= 0.7 + TOLERANCE);

    let err = |pin: LayerRatios, exclude: Vec<String>, target: f64| {
        let mut req = request(&model, &double, &scorer, target, 2, dir.path());
        req.pin = &pin;
        req.exclude = &exclude;
        select_greedy(&req, &CancelToken::new(), &|_| {})
            .err()
            .map(|e| (e.exit_code(), e.to_string()))
            .unwrap()
    };
    let (code, e) = err(LayerRatios::from([("nope".into(), 0.5)]), vec![], 0.7);
    assert!(
        code == 2 && e.contains("'nope'") && e.contains("stem.conv"),
        "{e}"
    );
    let (_, e) = err(LayerRatios::from([("fc".into(), 0.5)]), vec![], 0.7);
    assert!(e.contains("'fc'") && e.contains("not a plain Conv"), "{e}");
    let (_, e) = err(LayerRatios::from([("stem.conv".into(), 1.5)]), vec![], 0.7);
    assert!(e.contains("stem.conv") && e.contains("1.5"), "{e}");
    let (_, e) = err(LayerRatios::new(), vec!["layer9".into()], 0.7);
    assert!(e.contains("--exclude") && e.contains("'layer9'"), "{e}");
    // Every Conv at half its channels leaves ~half the MACs: 0.3 is out of reach.
    let (code, e) = err(LayerRatios::new(), vec![], 0.3);
    assert!(code == 2 && e.contains("0.300") && e.contains("0.5"), "{e}");
    let (_, e) = err(LayerRatios::new(), vec![], 1.0);
    assert!(e.contains("--target"), "{e}");
}

#[test]
fn manual_ratios_are_applied_as_given() {
    let (model, double, _) = setup();
    let ratios = LayerRatios::from([
        ("layer1.conv1".to_string(), 0.5),
        ("layer3.conv2".to_string(), 0.25),
    ]);
    let pin = LayerRatios::from([("stem.conv".to_string(), 0.75)]);
    let cancel = CancelToken::new();
    let (all, outcome) = select_manual(&model, &double, &ratios, &pin, &[], &cancel).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(outcome.changes.len(), 3);
    let saved: u64 = outcome
        .changes
        .iter()
        .map(|c| c.macs_before - c.macs_after)
        .sum();
    assert_eq!(outcome.macs_before - outcome.macs_after, saved);
    let excluded = vec!["layer1.conv1".to_string()];
    let e = select_manual(&model, &double, &ratios, &pin, &excluded, &cancel)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer1.conv1") && e.contains("excluded"), "{e}");
    let bad = LayerRatios::from([("layer1.conv1".to_string(), 0.0)]);
    let e = select_manual(&model, &double, &bad, &LayerRatios::new(), &[], &cancel)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer1.conv1") && e.contains("(0, 1]"), "{e}");
}

/// Array tasks fill disjoint shares into their own part files; the selection after them
/// finds every entry (computes none) and chooses what a plain run chooses.
#[test]
fn shares_filled_apart_make_the_dictionary_a_plain_run_makes() {
    use super::dictionary::Shard;
    let (model, double, scorer) = setup();
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = select_greedy(
        &request(&model, &double, &scorer, 0.6, 3, plain_dir.path()),
        &CancelToken::new(),
        &|_| {},
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = request(&model, &double, &scorer, 0.6, 3, dir.path());
    let mut computed = 0;
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let report = fill_share(&req, shard, &CancelToken::new(), &|_| {}).unwrap();
        computed += report.computed;
        // A part file holds its own share only.
        let part = dir
            .path()
            .join(format!("greedy-{}.part-{index}.json", &report.key[..16]));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&part).unwrap()).unwrap();
        assert_eq!(doc["entries"].as_array().unwrap().len(), report.computed);
    }
    assert_eq!(computed, plain.dictionary.computed, "each entry once");
    let after = select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap();
    assert_eq!(after.dictionary.computed, 0);
    assert_eq!(after.dictionary.reused, plain.dictionary.computed);
    assert_eq!(after.ratios, plain.ratios);

    for (text, want) in [
        ("2/8", Some((2, 8))),
        ("8/8", None),
        ("x", None),
        ("1/0", None),
    ] {
        let got = Shard::parse(text).ok().map(|s| (s.index, s.count));
        assert_eq!(got, want, "{text}");
    }
}

/// x → c1 → Relu → c2 → Relu → c3 → Relu → c4 → y, every conv 3×3: channel pruning c(k+1)
/// also winnows ck, so the savings the dictionary measures one layer at a time overlap and
/// their sum over-predicts what pruning them together saves.
#[test]
fn channel_pruning_lands_within_the_measured_tolerance_of_the_target() {
    use crate::compress::prune::{ChannelPruner, ChannelSelection};
    use crate::compress::testing::{conv, synthetic_data};
    use crate::data::SplitMix64;
    use crate::model::builder::ProtoBuilder;
    let mut rng = SplitMix64(23);
    let mut b = ProtoBuilder::new(17);
    b.input("x", &[3, 6, 6]).output("y");
    conv(&mut b, &mut rng, "c1", ["x", "c1.out"], [12, 3, 3, 3], 1);
    b.node("Relu", "r1", &["c1.out"], &["r1.out"], vec![]);
    conv(
        &mut b,
        &mut rng,
        "c2",
        ["r1.out", "c2.out"],
        [12, 12, 3, 3],
        1,
    );
    b.node("Relu", "r2", &["c2.out"], &["r2.out"], vec![]);
    conv(
        &mut b,
        &mut rng,
        "c3",
        ["r2.out", "c3.out"],
        [12, 12, 3, 3],
        1,
    );
    b.node("Relu", "r3", &["c3.out"], &["r3.out"], vec![]);
    conv(&mut b, &mut rng, "c4", ["r3.out", "y"], [4, 12, 3, 3], 1);
    let model = b.model("chain4").unwrap();
    let calibration = synthetic_data(&mut rng, &[3, 6, 6], 24);
    let options = RunOptions {
        batch_size: 1,
        threads: 1,
    };
    let scorer = ModelScorer::new(
        &model,
        calibration.data.subset(&(0..12).collect::<Vec<_>>()),
        options,
        &CancelToken::new(),
    )
    .unwrap();
    let pruner = ChannelPruner::new(calibration, ChannelSelection::Magnitude);
    let req = GreedyRequest {
        model: &model,
        compressor: &pruner,
        scorer: &scorer,
        target: 0.5,
        candidates: 10,
        pin: &NO_PINS,
        exclude: &[],
        cache_dir: None,
        settings: "chain",
        changed_part_only: true,
    };
    let sel = select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap();
    let measured = sel.outcome.mac_ratio();
    assert!(
        (measured - 0.5).abs() <= MEASURED_TOLERANCE,
        "measured MAC ratio {measured:.3} for target 0.5 (predicted {:.3})",
        sel.search.predicted_mac_ratio
    );
}

/// Two runs of the same dictionary at once (as two processes: each its own scorer and
/// files) share the work: every entry is evaluated once in all, and both select the same.
#[test]
fn concurrent_runs_of_one_dictionary_evaluate_each_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::sync::Barrier::new(2);
    let runs: Vec<GreedySelection> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (dir, start) = (dir.path(), &start);
                s.spawn(move || {
                    let (model, double, scorer) = setup();
                    let req = request(&model, &double, &scorer, 0.6, 4, dir);
                    // Both start together: neither finds the other's finished file.
                    start.wait();
                    select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (a, b) = (&runs[0], &runs[1]);
    let computed = a.dictionary.computed + b.dictionary.computed;
    assert_eq!(
        computed, 27,
        "9 layers × 3 candidates, each evaluated once in all"
    );
    assert_eq!(a.dictionary.computed + a.dictionary.reused, 27);
    assert_eq!(b.dictionary.computed + b.dictionary.reused, 27);
    assert_eq!(a.ratios, b.ratios);
    // The file holds every entry: neither writer dropped the other's.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.dictionary.file.as_ref().unwrap()).unwrap())
            .unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 27);
}

/// Both ways of filling the dictionary on `model`: the entries (scores, MACs) and the
/// selection are the same, and the changed-part way ran no whole model.
fn assert_changed_part_scores_as_whole(
    model: &Model,
    compressor: &dyn LayerCompressor,
    scorer: &ModelScorer,
    target: f64,
    candidates: usize,
) {
    let run = |changed_part_only| {
        let req = GreedyRequest {
            model,
            compressor,
            scorer,
            target,
            candidates,
            pin: &NO_PINS,
            exclude: &[],
            cache_dir: None,
            settings: "both ways",
            changed_part_only,
        };
        select_greedy(&req, &CancelToken::new(), &|_| {}).unwrap()
    };
    let (whole, part) = (run(false), run(true));
    assert_eq!(whole.dictionary.partial, 0);
    assert!(whole.dictionary.computed > 0);
    assert_eq!(part.dictionary.computed, whole.dictionary.computed);
    assert_eq!(
        part.dictionary.partial, part.dictionary.computed,
        "every candidate ran only its changed part"
    );
    assert_eq!(part.entries, whole.entries);
    assert_eq!(part.ratios, whole.ratios);
    assert_eq!(part.search, whole.search);
    assert_eq!(part.outcome.macs_after, whole.outcome.macs_after);
}

/// The sample ResNet (residual branches: the cut holds the skip's value too) with weight
/// SVD, two candidates side by side on two threads.
#[test]
fn the_changed_part_scores_weight_svd_as_the_whole_model() {
    let model = Model::load(&sample("resnet_digits.onnx")).unwrap();
    let eval = select_samples(&sample("digits"), Subset::Evaluation, 200, 0).unwrap();
    let data = eval.data.subset(&(0..40).collect::<Vec<_>>());
    let options = RunOptions {
        batch_size: 1,
        threads: 2,
    };
    let scorer = ModelScorer::new(&model, data, options, &CancelToken::new()).unwrap();
    let svd = crate::compress::WeightSvd::new(Some(scorer.sample_shapes().to_vec()));
    assert_changed_part_scores_as_whole(&model, &svd, &scorer, 0.7, 4);
}

/// Channel pruning winnows the layer before the pruned one: the cut starts above both.
#[test]
fn the_changed_part_scores_channel_pruning_as_the_whole_model() {
    use crate::compress::prune::{ChannelPruner, ChannelSelection};
    use crate::compress::testing::{conv, synthetic_data};
    use crate::data::SplitMix64;
    use crate::model::builder::ProtoBuilder;
    let mut rng = SplitMix64(5);
    let mut b = ProtoBuilder::new(17);
    b.input("x", &[3, 6, 6]).output("y");
    conv(&mut b, &mut rng, "c1", ["x", "c1.out"], [8, 3, 3, 3], 1);
    b.node("Relu", "r1", &["c1.out"], &["r1.out"], vec![]);
    conv(
        &mut b,
        &mut rng,
        "c2",
        ["r1.out", "c2.out"],
        [8, 8, 3, 3],
        1,
    );
    b.node("Relu", "r2", &["c2.out"], &["r2.out"], vec![]);
    conv(&mut b, &mut rng, "c3", ["r2.out", "y"], [4, 8, 3, 3], 1);
    let model = b.model("chain3").unwrap();
    let calibration = synthetic_data(&mut rng, &[3, 6, 6], 20);
    let options = RunOptions {
        batch_size: 1,
        threads: 2,
    };
    let scorer = ModelScorer::new(
        &model,
        calibration.data.clone(),
        options,
        &CancelToken::new(),
    )
    .unwrap();
    let pruner = ChannelPruner::new(calibration, ChannelSelection::Magnitude);
    assert_changed_part_scores_as_whole(&model, &pruner, &scorer, 0.6, 4);
}

/// The reachable ratio the dialogs show is the one the greedy refuses a lower target by.
#[test]
fn the_reachable_ratio_is_the_greedys_floor() {
    let (model, double, scorer) = setup();
    let cancel = CancelToken::new();
    let reach = reachable_mac_ratio(&double, &model, 10, &NO_PINS, &[], &cancel).unwrap();
    assert!(reach > 0.0 && reach < 1.0, "{reach}");
    // Fewer candidates: a larger smallest ratio, a higher floor.
    let coarse = reachable_mac_ratio(&double, &model, 2, &NO_PINS, &[], &cancel).unwrap();
    assert!(coarse > reach, "{coarse} vs {reach}");
    let cache = tempfile::tempdir().unwrap();
    let below = request(&model, &double, &scorer, reach - 0.05, 10, cache.path());
    let err = select_greedy(&below, &cancel, &|_| {})
        .err()
        .expect("refused");
    assert!(err.to_string().contains(&format!("{reach:.3}")), "{err}");
}
