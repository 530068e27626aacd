//! Peak memory of `qsteer eval` on data sets far bigger than memory should allow: an image
//! folder of ~17 000 PNGs at 224×224×3 (10 GB as float32 once decoded) and, unless
//! `QSTEER_BENCH_SKIP_NPY` is set, a 10 GB float32 `inputs.npy` (memory-mapped; a sparse file
//! of zeros, so it takes no disk). A tiny conv
//! classifier built in code keeps the model's share small, so the number is the data path's.
//! Each eval runs as a child process; its peak resident set (wait4's ru_maxrss) must stay under
//! 1 GB. Prints time and peak. Not part of `cargo test`: `cargo bench --bench eval_memory`.
//!
//! `QSTEER_BENCH_GB` (default 10) scales both sets; `QSTEER_BENCH_DIR` keeps the generated image
//! folder there for the next run (the .npy is always deleted after its run);
//! `QSTEER_BENCH_SKIP_IMAGES` / `QSTEER_BENCH_SKIP_NPY` skip one of the two.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use image::{Rgb, RgbImage};
use ndarray::{ArrayD, IxDyn};
use qsteer::data::SplitMix64;
use qsteer::model::builder::{attr_int, attr_ints, ProtoBuilder};

const SIDE: usize = 224;
const CLASSES: usize = 10;
const LIMIT_BYTES: u64 = 1 << 30;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: do no work then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gb: f64 = std::env::var("QSTEER_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let sample_bytes = (SIDE * SIDE * 3 * 4) as f64;
    let samples = (gb * 1e9 / sample_bytes).ceil() as usize;
    let tmp = tempfile::tempdir().expect("temp dir");
    let model = tmp.path().join("tiny.onnx");
    tiny_classifier(&model);

    let mut failed = false;
    if std::env::var_os("QSTEER_BENCH_SKIP_IMAGES").is_none() {
        failed |= !images_run(&tmp, &model, samples, sample_bytes);
    }
    if std::env::var_os("QSTEER_BENCH_SKIP_NPY").is_none() {
        let npy = tmp.path().join("npy");
        let began = Instant::now();
        npy_set(&npy, samples);
        println!(
            "npy set: inputs.npy [{samples}, 3, 224, 224] float32 (sparse) made in {:.0} s",
            began.elapsed().as_secs_f64()
        );
        failed |= !measure("memory-mapped npy", &model, &npy, samples);
        let _ = std::fs::remove_dir_all(&npy);
    }
    if failed {
        std::process::exit(1);
    }
}

/// Generate (or reuse) the image folder and measure eval on it.
fn images_run(tmp: &tempfile::TempDir, model: &Path, samples: usize, sample_bytes: f64) -> bool {
    let images = match std::env::var_os("QSTEER_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("images"),
    };
    let began = Instant::now();
    let made = image_folder(&images, samples);
    println!(
        "image folder: {samples} images 224x224x3 ({:.1} GB as float32) at {} ({} written in {:.0} s)",
        samples as f64 * sample_bytes / 1e9,
        images.display(),
        made,
        began.elapsed().as_secs_f64()
    );
    measure("image folder", model, &images, samples)
}

/// Conv 3→8 (3×3, stride 4) → Relu → global pool → Gemm 8→10.
fn tiny_classifier(path: &Path) {
    let mut rng = SplitMix64(7);
    let mut random = |shape: &[usize]| ArrayD::from_shape_fn(IxDyn(shape), |_| rng.symmetric());
    let mut b = ProtoBuilder::new(13);
    b.input("input", &[3, SIDE, SIDE])
        .initializer("conv.w", &random(&[8, 3, 3, 3]))
        .node(
            "Conv",
            "conv",
            &["input", "conv.w"],
            &["conv"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[4, 4]),
                attr_int("group", 1),
            ],
        )
        .node("Relu", "relu", &["conv"], &["relu"], vec![])
        .node("GlobalAveragePool", "gap", &["relu"], &["gap"], vec![])
        .node("Flatten", "flat", &["gap"], &["flat"], vec![])
        .initializer("fc.w", &random(&[CLASSES, 8]))
        .initializer("fc.b", &random(&[CLASSES]))
        .node(
            "Gemm",
            "fc",
            &["flat", "fc.w", "fc.b"],
            &["logits"],
            vec![attr_int("transB", 1)],
        )
        .output("logits");
    b.model("tiny").expect("model").save(path).expect("save");
}

/// `samples` PNGs in `CLASSES` class folders; files already there are kept. Returns how many
/// were written. Smooth gradients with a per-image tint: PNG keeps them small on disk.
fn image_folder(root: &Path, samples: usize) -> usize {
    let mut written = 0;
    for i in 0..samples {
        let path = root.join(format!("c{}/{i:06}.png", i % CLASSES));
        if path.is_file() {
            continue;
        }
        std::fs::create_dir_all(path.parent().expect("parent")).expect("class dir");
        let tint = (i * 37 % 256) as u32;
        let img = RgbImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
            Rgb([(x + tint) as u8, (y + tint) as u8, ((x + y) / 2) as u8])
        });
        img.save(&path).expect("png");
        written += 1;
    }
    written
}

/// `inputs.npy` [samples, 3, 224, 224] float32 and `labels.npy`. The inputs are a sparse
/// file (a header, then a hole read as zeros): the mapping and the reads are those of a real
/// 10 GB file, without taking 10 GB of a shared disk.
fn npy_set(dir: &Path, samples: usize) {
    std::fs::create_dir_all(dir).expect("npy dir");
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({samples}, 3, {SIDE}, {SIDE}), }}"
    );
    let prefix = npy_prefix(&header);
    let mut file = std::fs::File::create(dir.join("inputs.npy")).expect("inputs.npy");
    file.write_all(&prefix).expect("write");
    let total = prefix.len() + samples * SIDE * SIDE * 3 * 4;
    file.set_len(total as u64).expect("set_len");
    let labels: Vec<i64> = (0..samples as i64).map(|i| i % CLASSES as i64).collect();
    let header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({samples},), }}");
    let mut bytes = npy_prefix(&header);
    labels.iter().for_each(|l| bytes.extend(l.to_le_bytes()));
    std::fs::write(dir.join("labels.npy"), bytes).expect("labels.npy");
}

/// Magic, version 1.0, header padded to 64 bytes.
fn npy_prefix(header: &str) -> Vec<u8> {
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend(((total - 10) as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Run `qsteer eval` on `data` as a child, print its time and peak RSS; false over the limit.
// The child is reaped by wait4 (which reports its own rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(what: &str, model: &Path, data: &Path, samples: usize) -> bool {
    let began = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_qsteer"))
        .args(["eval", "--data"])
        .arg(data)
        .arg(model)
        .args([
            "--split",
            "all",
            "--batch-size",
            "8",
            "--no-workspace",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qsteer eval");
    let pid = child.id() as libc::pid_t;
    let stdout = std::io::read_to_string(child.stdout.expect("stdout")).unwrap_or_default();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps this one child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = began.elapsed().as_secs_f64();
    assert_eq!(waited, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "qsteer eval failed on {what}: {stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("eval --json");
    assert_eq!(json["samples"].as_u64(), Some(samples as u64), "{stdout}");
    // ru_maxrss is in KiB on Linux.
    let peak = usage.ru_maxrss as u64 * 1024;
    let ok = peak < LIMIT_BYTES;
    println!(
        "{what}: eval of {samples} samples in {seconds:.1} s ({:.0} samples/s), peak RSS {:.0} MB \
         (limit {:.0} MB) {}",
        samples as f64 / seconds,
        peak as f64 / 1e6,
        LIMIT_BYTES as f64 / 1e6,
        if ok { "ok" } else { "OVER" }
    );
    ok
}
