//! The whole loop a newcomer does on the embedded default, in the real binary at 80×24 with
//! keys as typed: evaluate; quantsim W4A8 and its diagnosis; a fix chain built with Space;
//! the SSVD→CP sweep through both decisions with a fine-tune; A/B compare; a quantsim of the
//! pick and its export through the prompt; quit; start again — the current variant and
//! A/B are still there. Fresh HOME and XDG directories, so it starts as a first run does.
//! Jobs are waited for by polling the screen with generous deadlines.
//!
//! Step 2 of the sweep prunes one candidate (Space unticks the other two in decision 1):
//! with all three (the default) it builds three channel-pruning dictionaries and takes
//! about 4 minutes on the debug build; with one, about 1.5 minutes.

use super::e2e_tmux::{keys, quit, screen, start_cmd, wait_for, Session};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(20);
const JOB: Duration = Duration::from_secs(240);
const SWEEP_STEP: Duration = Duration::from_secs(900);

/// The app on the embedded default at 80×24 with `home` as HOME and XDG data directory.
fn start_at_home(home: &Path, tag: &str) -> Option<Session> {
    let bin = env!("CARGO_BIN_EXE_qsteer");
    let cmd = format!(
        "cd {h} && env -u QSTEER_DATA_DIR HOME={h} XDG_DATA_HOME={h}/.local/share \
         XDG_CONFIG_HOME={h}/.config {bin} ; sleep 60",
        h = home.display()
    );
    start_cmd(tag, 80, 24, &cmd)
}

/// The one workspace the app made under `home`.
fn workspace_dir(home: &Path) -> PathBuf {
    let root = home.join(".local/share/qsteer/workspaces");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn index(ws: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap()
}

/// Row of variant `id` in the variants tree as the app lists it (depth first, children in
/// the index's order), so the test can move the cursor onto it with `g` and `j`.
fn tree_row(ws: &serde_json::Value, id: u64) -> usize {
    fn walk(all: &[serde_json::Value], parent: Option<u64>, out: &mut Vec<u64>) {
        for v in all.iter().filter(|v| v["parent"].as_u64() == parent) {
            let id = v["id"].as_u64().unwrap();
            out.push(id);
            walk(all, Some(id), out);
        }
    }
    let mut order = Vec::new();
    walk(ws["variants"].as_array().unwrap(), None, &mut order);
    order
        .iter()
        .position(|&v| v == id)
        .unwrap_or_else(|| panic!("variant {id} in {order:?}"))
}

/// Focus the variants pane and put its cursor on variant `id`.
fn select_variant(s: &Session, ws: &Path, id: u64) {
    let row = tree_row(&index(ws), id);
    keys(s, &["3", "g"]);
    for _ in 0..row {
        keys(s, &["j"]);
    }
}

/// The newest variant's id.
fn newest(ws: &Path) -> u64 {
    let ix = index(ws);
    let ids = ix["variants"].as_array().unwrap().iter();
    ids.map(|v| v["id"].as_u64().unwrap()).max().unwrap()
}

#[test]
fn the_whole_loop_on_the_embedded_default_at_80x24() {
    let home = tempfile::tempdir().unwrap();
    let Some(s) = start_at_home(home.path(), "loop-a") else {
        return;
    };
    wait_for(&s, "Layers · MACs", Duration::from_secs(60));
    let ws = workspace_dir(home.path());

    // Evaluate the base.
    keys(&s, &["e"]);
    wait_for(&s, "Evaluate variants", SHORT);
    keys(&s, &["Enter"]);
    wait_for(&s, "✓ #1 evaluate", JOB);
    let ix = index(&ws);
    let accuracy = ix["variants"][0]["results"][0]["score"]["accuracy"].as_f64();
    let shown = format!(
        "score {:.2}%",
        accuracy.expect("a recorded accuracy") * 100.0
    );
    wait_for(&s, &shown, SHORT);

    // W4A8: the W bits field takes a typed digit; then its diagnosis (noise table).
    keys(&s, &["s"]);
    wait_for(&s, "Quantsim", SHORT);
    keys(&s, &["4"]);
    wait_for(&s, "W bits      ◂ 4 ▸", SHORT);
    keys(&s, &["Enter"]);
    wait_for(&s, "✓ #2 quantsim v0 W4A8", JOB);
    wait_for(&s, "1 W4A8 pt", SHORT);
    keys(&s, &["s"]);
    wait_for(&s, "Quantsim", SHORT);
    keys(&s, &["a"]);
    let noise = wait_for(&s, "✓ #3 analyze", JOB);
    let noise = if noise.contains("W only") {
        noise
    } else {
        wait_for(&s, "W only", SHORT)
    };
    assert!(noise.contains("noise W4A8"), "{noise}");
    assert!(noise.contains("SQNR dB"), "{noise}");

    // A fix chain ticked with Space: fold BN, CLE, bias correction, quantsim.
    keys(&s, &["f"]);
    wait_for(&s, "Enter runs", SHORT);
    for k in [
        "Space", "Down", "Space", "Down", "Down", "Space", "Down", "Down", "Space",
    ] {
        keys(&s, &[k]);
    }
    let chain = wait_for(&s, "Enter runs: fix chain v0", SHORT);
    for ticked in [
        "[x] fold BatchNorm",
        "[x] CLE + high-bias",
        "[x] bias correction",
        "[x] quantsim",
    ] {
        assert!(chain.contains(ticked), "{ticked}:\n{chain}");
    }
    keys(&s, &["Enter"]);
    wait_for(&s, "✓ #4 fix chain v0", JOB);
    let tree = wait_for(&s, "fold_bn", SHORT);
    assert!(tree.contains("W8A8"), "{tree}");

    // The SSVD→CP sweep with the dialog's defaults; decision 1 keeps Cssvd 0.65 only.
    keys(&s, &["r"]);
    wait_for(&s, "SSVD→CP sweep", SHORT);
    wait_for(&s, "reachable: down to", JOB);
    keys(&s, &["Enter"]);
    wait_for(&s, "decision 1: spatial-SVD candidates", SWEEP_STEP);
    keys(&s, &["Space", "Down", "Down", "Space"]);
    let one = screen(&s);
    let row = |text: &str, what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what}:\n{text}"))
            .to_string()
    };
    assert!(row(&one, "Cssvd 0.50").contains("[ ]"), "{one}");
    assert!(row(&one, "Cssvd 0.65").contains("[x]"), "{one}");
    assert!(row(&one, "Cssvd 0.75").contains("[ ]"), "{one}");
    keys(&s, &["Enter"]);
    let second = wait_for(&s, "decision 2: pick the result", SWEEP_STEP);
    assert!(second.contains("0.65×"), "{second}");
    assert!(second.contains("rule: v"), "{second}");

    // Fine-tune the rule's pick from the decision; its trained child takes its row.
    keys(&s, &["t"]);
    wait_for(&s, "Fine-tune", SHORT);
    let before = newest(&ws);
    keys(&s, &["Enter"]);
    // The decision stays open over the jobs pane: the new variant in the index says the
    // job ended, then its row in the decision shows it.
    let start = std::time::Instant::now();
    while newest(&ws) == before {
        assert!(
            start.elapsed() < JOB,
            "no trained variant; screen:\n{}",
            screen(&s)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let child = newest(&ws);
    let trained = wait_for(&s, &format!("v{child} "), SHORT);
    assert!(trained.contains("decision 2"), "{trained}");

    // Take it: A = the pick, B = the base, the compare pane shows both.
    keys(&s, &["Enter"]);
    let cmp = wait_for(&s, "Compare A/B", SHORT);
    let cmp = if cmp.contains("B: 0 base") {
        cmp
    } else {
        wait_for(&s, "B: 0 base", SHORT)
    };
    assert!(cmp.contains(&format!("A: {child} ")), "{cmp}");
    keys(&s, &["="]);
    wait_for(&s, &format!("A: {child} "), SHORT);

    // A W8A8 child of the pick (W bits typed as 8: the dialog remembers the W4 run), exported via the prompt.
    select_variant(&s, &ws, child);
    keys(&s, &["Enter"]);
    wait_for(&s, &format!("variant {child} is now current"), JOB);
    keys(&s, &["s"]);
    wait_for(&s, &format!("on variant {child} "), SHORT);
    keys(&s, &["8"]);
    wait_for(&s, "W bits      ◂ 8 ▸", SHORT);
    keys(&s, &["Enter"]);
    wait_for(&s, &format!("✓ #8 quantsim v{child} W8A8"), JOB);
    let deliverable = newest(&ws);
    select_variant(&s, &ws, deliverable);
    keys(&s, &["x"]);
    wait_for(&s, &format!("export variant {deliverable}"), SHORT);
    keys(&s, &["Enter"]);
    wait_for(&s, "exported", JOB);
    let exported = ws.join(format!("exports/resnet_digits_v{deliverable}.qdq.onnx"));
    assert!(exported.is_file(), "{} written", exported.display());
    assert!(ws
        .join(format!(
            "exports/resnet_digits_v{deliverable}.encodings.json"
        ))
        .is_file());

    // The deliverable is current; quit and start again.
    keys(&s, &["Enter"]);
    wait_for(&s, &format!("variant {deliverable} is now current"), JOB);
    quit(&s);
    drop(s);
    let Some(again) = start_at_home(home.path(), "loop-b") else {
        return;
    };
    let first = wait_for(
        &again,
        &format!("· variant {deliverable} "),
        Duration::from_secs(60),
    );
    assert!(first.contains("Layers · MACs"), "{first}");
    keys(&again, &["="]);
    let cmp = wait_for(&again, &format!("A: {child} "), SHORT);
    assert!(cmp.contains("B: 0 base"), "{cmp}");
    quit(&again);
    let view = &index(&ws)["settings"]["view"];
    assert_eq!(view["current"], deliverable, "{view}");
    assert_eq!(
        (view["a"].clone(), view["b"].clone()),
        (child.into(), 0.into())
    );
}
