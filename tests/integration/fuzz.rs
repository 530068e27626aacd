//! Structure-aware fuzzing (issue #22): seeded mutants of the sample models and fixtures
//! (see `fuzz/mutants.rs`) go through load, shape analysis and, for some, compile and run,
//! in this process. Each must end in `Ok` or in an error naming the model — no panic, and
//! no crash: what tract cannot survive (SIGSEGV, abort) must be refused by
//! `model::validate` before tract sees it, or this test process dies.
//!
//! A longer run, each mutant in a child process so a crash is caught and saved:
//! `cargo run --release --example fuzz_models -- --seed S --count N`.
//! Reproduce one case here: `FUZZ_CASE=<index> cargo test --test integration fuzz -- --nocapture`.

#[path = "fuzz/mutants.rs"]
mod mutants;

use crate::common::{assert_bad_input, digits, root, run, sample_model, stderr};
use mutants::{exercise, mutant, sources, Kind, KINDS};
use prost::Message;
use qsteer::model::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tract_onnx::pb::{AttributeProto, ModelProto, TensorProto};

const SEED: u64 = 0x22_f022;
const CASES: u64 = 320;
/// Compile and run every n-th mutant (if it analyses).
const RUN_EVERY: u64 = 3;

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    by_outcome: BTreeMap<&'static str, usize>,
}

fn run_cases(only: Option<u64>) -> BTreeMap<Kind, Tally> {
    let sources = sources(&root());
    let mut tallies: BTreeMap<Kind, Tally> = BTreeMap::new();
    for index in 0..CASES {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let m = mutant(&sources, SEED, index);
        let src = &sources[m.source];
        let name = format!("mutant-{index}.onnx");
        let label = format!("case {index} ({}): {}", src.name, m.edits.join("; "));
        if only.is_some() {
            println!("{label}");
        }
        // a case that takes long is worth knowing about, but timing is not asserted
        let started = Instant::now();
        let run = only.is_some() || index % RUN_EVERY == 0;
        let outcome = exercise(&m.bytes, &name, &src.sample_shape, run);
        if only.is_some() {
            println!("{outcome:?}");
        }
        if let Some(e) = outcome.error() {
            assert!(
                e.contains(&name),
                "{label}: the error does not name the model: {e}"
            );
        }
        let took = started.elapsed();
        if took > Duration::from_secs(5) {
            eprintln!("slow ({:.1} s): {label}", took.as_secs_f64());
        }
        let t = tallies.entry(m.kinds[0]).or_default();
        t.cases += 1;
        *t.by_outcome.entry(outcome.label()).or_default() += 1;
    }
    tallies
}

#[test]
fn mutated_models_fail_cleanly() {
    let started = Instant::now();
    let only = std::env::var("FUZZ_CASE")
        .ok()
        .map(|s| s.parse::<u64>().expect("FUZZ_CASE is a case index"));
    // no catch_unwind: a panic escaping qsteer fails the test with the case named
    let tallies = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(16 << 20)
        .spawn(move || run_cases(only))
        .unwrap()
        .join()
        .expect("no panic escapes (the case is printed above)");
    for (kind, t) in &tallies {
        println!("{kind:?}: {} cases, {:?}", t.cases, t.by_outcome);
    }
    println!(
        "{CASES} mutants in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if only.is_some() {
        return;
    }
    // the mutants must reach every stage, or the test proves little
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in KINDS {
        let t = tallies
            .get(&kind)
            .unwrap_or_else(|| panic!("no {kind:?} mutant"));
        assert!(t.cases >= 20, "{kind:?}");
        for (o, n) in &t.by_outcome {
            *all.entry(o).or_default() += n;
        }
    }
    for stage in ["load error", "analysis error", "ran"] {
        assert!(
            all.get(stage).copied().unwrap_or(0) > 0,
            "no mutant ended in {stage}: {all:?}"
        );
    }
}

// ------------------------------------------------- the crashes the fuzzer and the probe found

fn mbv2() -> ModelProto {
    ModelProto::decode(
        std::fs::read(sample_model("mbv2_digits"))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

/// mbv2 with node `node`'s input `slot` reading a new float weight of dims `dims`.
fn rewired(node: &str, slot: usize, dims: &[i64]) -> ModelProto {
    let mut p = mbv2();
    let g = p.graph.as_mut().unwrap();
    let n: i64 = dims.iter().product();
    g.initializer.push(TensorProto {
        name: "odd.weight".into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: vec![0.5; n as usize],
        ..Default::default()
    });
    let node = g.node.iter_mut().find(|n| n.name == node).unwrap();
    node.input[slot] = "odd.weight".into();
    p
}

fn load_err(p: ModelProto, name: &str) -> String {
    match Model::from_proto(p, name) {
        Ok(_) => panic!("{name}: loaded"),
        Err(e) => e.to_string(),
    }
}

fn write(dir: &Path, name: &str, p: &ModelProto) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, p.encode_to_vec()).unwrap();
    path
}

#[test]
fn low_rank_inputs_to_layout_ops_are_refused_at_load() {
    // Before model::validate these killed the process inside tract's inference rules
    // (SIGSEGV in release, an abort in debug builds): nothing to catch.
    for (node, slot, dims, needle) in [
        (
            "block2.dw.bn",
            0,
            &[][..],
            "input X 'odd.weight' has rank 0; BatchNormalization needs rank ≥ 2",
        ),
        (
            "stem.bn",
            0,
            &[4][..],
            "input X 'odd.weight' has rank 1; BatchNormalization needs rank ≥ 2",
        ),
        (
            "block3.dw.conv",
            0,
            &[][..],
            "input X 'odd.weight' has rank 0; Conv needs rank ≥ 3",
        ),
        (
            "block3.dw.conv",
            1,
            &[3, 3][..],
            "input W 'odd.weight' has rank 2; Conv needs rank ≥ 3",
        ),
    ] {
        let name = format!("low_rank_{node}_{slot}.onnx");
        let e = load_err(rewired(node, slot, dims), &name);
        assert!(
            e.contains(&name) && e.contains(&format!("node '{node}'")) && e.contains(needle),
            "{e}"
        );
    }
    // geometry attributes that do not fit the input
    let mut p = mbv2();
    let g = p.graph.as_mut().unwrap();
    let conv = g.node.iter_mut().find(|n| n.name == "stem.conv").unwrap();
    conv.attribute.retain(|a| a.name != "strides");
    conv.attribute.push(AttributeProto {
        name: "strides".into(),
        r#type: 7, // INTS
        ints: vec![1, 1, 1],
        ..Default::default()
    });
    let e = load_err(p, "strides3.onnx");
    assert!(
        e.contains("strides3.onnx") && e.contains("'stem.conv' (Conv)"),
        "{e}"
    );
    assert!(
        e.contains("strides [1, 1, 1]") && e.contains("2 spatial axes"),
        "{e}"
    );

    // the reported reproduction, through the binary: exit 2, one line, no crash
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bn_scalar.onnx",
        &rewired("block2.dw.bn", 0, &[]),
    );
    let p = path.to_str().unwrap();
    let d = digits();
    for args in [
        vec!["inspect", p],
        vec![
            "eval",
            p,
            "--data",
            d.to_str().unwrap(),
            "--no-workspace",
            "--json",
        ],
    ] {
        let o = run(home.path(), &args);
        let line = assert_bad_input(&o, &format!("{args:?}"));
        assert!(
            line.contains("bn_scalar.onnx") && line.contains("block2.dw.bn"),
            "{line}"
        );
    }
}

/// mbv2 with `block1.dw.conv`'s stride 1 → 2: its output no longer matches the residual
/// it is added to at `block1.add` (16×16 against 8×8).
fn strided_mbv2() -> ModelProto {
    let mut p = mbv2();
    let g = p.graph.as_mut().unwrap();
    let conv = g
        .node
        .iter_mut()
        .find(|n| n.name == "block1.dw.conv")
        .unwrap();
    let strides = conv
        .attribute
        .iter_mut()
        .find(|a| a.name == "strides")
        .unwrap();
    assert_eq!(strides.ints, vec![1, 1]);
    strides.ints = vec![2, 2];
    p
}

#[test]
fn inconsistent_shapes_fail_at_analysis_naming_the_node() {
    // it loads (the graph is well formed) but analysis refuses it, with and without a
    // dataset pinning the input; before, it passed and failed in tract's optimizer
    let model = Model::from_proto(strided_mbv2(), "strided.onnx").unwrap();
    for pinned in [None, Some(vec![vec![1, 16, 16]])] {
        let e = model.shapes(pinned.as_deref()).unwrap_err().to_string();
        assert!(
            e.contains("strided.onnx") && e.contains("node 'block1.add' (Add)"),
            "{e}"
        );
        assert!(e.contains("16×16") && e.contains("8×8"), "{e}");
    }
    // compile fails the same way, before optimizing
    let e = qsteer::runtime::CompiledModel::compile(&model, &[vec![1, 16, 16]], 1, &[])
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("node 'block1.add'"), "{e}");

    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "strided.onnx", &strided_mbv2());
    let p = path.to_str().unwrap();
    let d = digits();
    for args in [
        vec!["inspect", p],
        vec!["inspect", p, "--data", d.to_str().unwrap()],
        vec!["inspect", p, "--json"],
    ] {
        let o = run(home.path(), &args);
        let line = assert_bad_input(&o, &format!("{args:?}: {}", stderr(&o)));
        assert!(
            line.contains("strided.onnx") && line.contains("block1.add"),
            "{line}"
        );
    }
}
