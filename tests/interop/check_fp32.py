#!/usr/bin/env python3
"""FP32 interop check: qsteer's evaluation outputs vs ONNX Runtime on the same inputs.

    python3 tests/interop/check_fp32.py --qsteer target/release/qsteer
    (normally through tests/interop/run.sh, which provides a venv with onnxruntime + numpy)

Cases: each sample model (sample-models/*.onnx) on sample-models/digits/evaluation, each
fixture tests/fixtures/<name>.onnx that has tests/fixtures/<name>/ort_outputs.npy, on that
directory, compressed sample models (Weight SVD, Spatial SVD, channel pruning with
winnowing through BN / Relu6 / depthwise convs) that `qsteer compress --ratios` writes first,
and sample models fine-tuned for one epoch by `qsteer finetune`.
For each case the qsteer binary is run as

    BIN eval MODEL --data DATASET_DIR --split all --save-outputs OUT.npy --json

which must exit 0, print exactly one JSON document on stdout, and write OUT.npy: float32, the
model's first output for every sample, in dataset order. ONNX Runtime (CPU,
ORT_DISABLE_ALL) runs the model on the same inputs.npy. A case fails when

  * qsteer fails, prints something other than one JSON document, or writes no / a
    differently shaped OUT.npy,
  * rel_diff = max|out - ref| / max(1, max|ref|) > --tol (1e-3), or any value is non-finite,
  * the output is a classifier output ([N, K], K > 1) and any sample's argmax differs,
  * the JSON reports an `accuracy` (anywhere in the document) that differs from the accuracy
    of qsteer's own saved outputs against labels.npy.

A table goes to stdout (or a JSON report with --json); exit 0 if every case passed, 1 if any
failed, 2 on bad arguments (e.g. binary not found).
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

from interop_common import fmt, resolve_qsteer, scratch_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def discover_cases():
    cases = []
    digits = os.path.join(ROOT, "sample-models", "digits", "evaluation")
    for model in sorted(glob.glob(os.path.join(ROOT, "sample-models", "*.onnx"))):
        cases.append((os.path.basename(model)[:-5], model, digits))
    for ref in sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "*", "ort_outputs.npy"))):
        d = os.path.dirname(ref)
        model = d + ".onnx"
        if os.path.exists(model):
            cases.append(("fixtures/" + os.path.basename(d), model, d))
    return cases


# (case, sample model, method, {layer: ratio}): manual ratios so the models are quick to make.
COMPRESSED = [
    ("resnet_digits.wsvd", "resnet_digits", "wsvd", {"layer1.conv1": 0.5, "layer3.conv2": 0.4, "fc": 0.5}),
    ("resnet_digits.ssvd", "resnet_digits", "ssvd", {"layer2.conv1": 0.5, "layer3.conv1": 0.6}),
    ("resnet_digits.cp", "resnet_digits", "cp", {"layer2.conv2": 0.5, "layer3.conv2": 0.3}),
    ("mbv2_digits.ssvd", "mbv2_digits", "ssvd", {"stem.conv": 0.5}),
    ("mbv2_digits.cp", "mbv2_digits", "cp", {"block2.project.conv": 0.5, "block4.project.conv": 0.4}),
]


def compressed_cases(bin_path, tmp, timeout):
    """Make the COMPRESSED models with qsteer; (cases, errors) where errors are failed cases."""
    digits = os.path.join(ROOT, "sample-models", "digits")
    cases, failed = [], []
    for name, sample, method, ratios in COMPRESSED:
        ratios_file = os.path.join(tmp, name + ".ratios.json")
        with open(ratios_file, "w") as f:
            json.dump(ratios, f)
        out = os.path.join(tmp, name + ".onnx")
        cmd = [bin_path, "compress", os.path.join(ROOT, "sample-models", sample + ".onnx"),
               "--data", digits, "--method", method, "--ratios", ratios_file, "--out", out,
               "--workspace", os.path.join(tmp, "ws-" + sample), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0 or not os.path.exists(out):
            tail = (p.stderr or "").strip().splitlines()[-3:]
            failed.append({"case": name, "ok": False, "warnings": [],
                           "errors": [f"qsteer compress: exit code {p.returncode}: {' | '.join(tail)}"]})
            continue
        cases.append((name, out, os.path.join(digits, "evaluation")))
    return cases, failed


# Fine-tuned sample models (`qsteer finetune`, one epoch): the trained weights written back into
# the same graph must run in ONNX Runtime as in tract.
FINETUNED = [("resnet_digits.finetuned", "resnet_digits"), ("mbv2_digits.finetuned", "mbv2_digits")]


def finetuned_cases(bin_path, tmp, timeout):
    """Make the FINETUNED models with qsteer; (cases, errors) as compressed_cases."""
    digits = os.path.join(ROOT, "sample-models", "digits")
    cases, failed = [], []
    for name, sample in FINETUNED:
        out = os.path.join(tmp, name + ".onnx")
        cmd = [bin_path, "finetune", os.path.join(ROOT, "sample-models", sample + ".onnx"),
               "--data", digits, "--epochs", "1", "--out", out,
               "--workspace", os.path.join(tmp, "ws-ft-" + sample), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0 or not os.path.exists(out):
            tail = (p.stderr or "").strip().splitlines()[-3:]
            failed.append({"case": name, "ok": False, "warnings": [],
                           "errors": [f"qsteer finetune: exit code {p.returncode}: {' | '.join(tail)}"]})
            continue
        cases.append((name, out, os.path.join(digits, "evaluation")))
    return cases, failed


ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def load_inputs(sess, data_dir):
    """inputs.npy for a single-input model; inputs.<input_name>.npy for several. The data are
    float32; integer and bool inputs get them cast, and a scalar input (stored as one value per
    sample) the first sample's value, as qsteer feeds them."""
    inputs = sess.get_inputs()
    if len(inputs) == 1 and os.path.exists(os.path.join(data_dir, "inputs.npy")):
        return {inputs[0].name: np.load(os.path.join(data_dir, "inputs.npy"))}
    feeds = {}
    for i in inputs:
        a = np.load(os.path.join(data_dir, f"inputs.{i.name}.npy"))
        if len(i.shape) == 0:
            a = a[0]
        else:
            a = np.moveaxis(a, 0, batch_axis(i.shape, a.shape[1:]))
        feeds[i.name] = np.asarray(a).astype(ORT_TYPES.get(i.type, np.float32))
    return feeds


def batch_axis(declared, sample):
    """Where the samples go: axis 0, or, for a recurrent state written [layers, batch, ...]
    (axis 0 fixed above 1), the one open axis whose removal leaves the per-sample shape (as
    qsteer finds it)."""
    if len(declared) != len(sample) + 1 or not isinstance(declared[0], int) or declared[0] < 2:
        return 0
    fits = [k for k in range(1, len(declared)) if not isinstance(declared[k], int)
            and all(not isinstance(d, int) or d == s
                    for d, s in zip(declared[:k] + declared[k + 1:], sample))]
    return fits[0] if len(fits) == 1 else 0


def run_ort(model, data_dir):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feeds = load_inputs(sess, data_dir)
    out = sess.run([sess.get_outputs()[0].name], feeds)[0]
    return np.asarray(out, dtype=np.float32)


def find_key(doc, key):
    """First value of `key` anywhere in a JSON document (breadth-first)."""
    queue = [doc]
    while queue:
        cur = queue.pop(0)
        if isinstance(cur, dict):
            if key in cur:
                return cur[key]
            queue.extend(cur.values())
        elif isinstance(cur, list):
            queue.extend(cur)
    return None


def run_qsteer(bin_path, model, data_dir, out_path, timeout):
    cmd = [bin_path, "eval", model, "--data", data_dir, "--split", "all",
           "--save-outputs", out_path, "--json"]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout}s", time.time() - t0
    secs = time.time() - t0
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-3:]
        return None, f"exit code {p.returncode}: {' | '.join(tail)}", secs
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        return None, f"stdout is not one JSON document ({e})", secs
    return doc, None, secs


def check_case(name, model, data_dir, bin_path, tmp, tol, timeout):
    r = {"case": name, "model": os.path.relpath(model, ROOT), "data": os.path.relpath(data_dir, ROOT),
         "ok": False, "errors": [], "warnings": []}
    try:
        ref = run_ort(model, data_dir)
    except Exception as e:  # noqa: BLE001
        r["errors"].append(f"ONNX Runtime failed: {e}")
        return r
    r["samples"] = int(ref.shape[0])
    stored = os.path.join(data_dir, "ort_outputs.npy")
    if os.path.exists(stored):
        s = np.load(stored)
        if s.shape != ref.shape or np.max(np.abs(s - ref)) / max(1.0, float(np.abs(ref).max())) > tol:
            r["warnings"].append("stored ort_outputs.npy differs from this ONNX Runtime's output")

    out_path = os.path.join(tmp, name.replace("/", "_") + ".npy")
    doc, err, secs = run_qsteer(bin_path, model, data_dir, out_path, timeout)
    r["qsteer_seconds"] = round(secs, 3)
    if err:
        r["errors"].append("qsteer " + err)
        return r
    if not os.path.exists(out_path):
        r["errors"].append("qsteer wrote no --save-outputs file")
        return r
    try:
        out = np.load(out_path)
    except Exception as e:  # noqa: BLE001
        r["errors"].append(f"cannot read saved outputs: {e}")
        return r
    if out.dtype != np.float32:
        r["errors"].append(f"saved outputs have dtype {out.dtype}, expected float32")
    if out.shape != ref.shape:
        r["errors"].append(f"saved outputs have shape {list(out.shape)}, ONNX Runtime gives {list(ref.shape)}")
        return r
    out = out.astype(np.float32)
    if not np.all(np.isfinite(out)):
        r["errors"].append("saved outputs contain NaN/Inf")
        return r
    diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    r["max_abs_diff"] = diff
    r["rel_diff"] = diff / scale
    if r["rel_diff"] > tol:
        r["errors"].append(f"rel_diff {r['rel_diff']:.3g} > tol {tol:g}")
    classifier = ref.ndim == 2 and ref.shape[1] > 1
    if classifier:
        agree = out.argmax(1) == ref.argmax(1)
        r["argmax_agreement"] = float(agree.mean())
        if not agree.all():
            r["errors"].append(f"argmax differs on {int((~agree).sum())} of {len(agree)} samples "
                               f"(first at index {int(np.argmin(agree))})")
        labels_path = os.path.join(data_dir, "labels.npy")
        if os.path.exists(labels_path):
            labels = np.load(labels_path)
            r["ort_accuracy"] = float((ref.argmax(1) == labels).mean())
            own = float((out.argmax(1) == labels).mean())
            rep = find_key(doc, "accuracy")
            if isinstance(rep, (int, float)) and not isinstance(rep, bool):
                r["qsteer_accuracy"] = float(rep)
                if abs(float(rep) - own) > 1e-9:
                    r["errors"].append(f"JSON accuracy {rep} != accuracy of its saved outputs {own}")
            else:
                r["warnings"].append("JSON has no numeric `accuracy`")
    samples = find_key(doc, "samples")
    if isinstance(samples, int) and samples != ref.shape[0]:
        r["warnings"].append(f"JSON says samples={samples}, dataset has {ref.shape[0]}")
    r["ok"] = not r["errors"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qsteer", required=True, help="path to the qsteer binary")
    ap.add_argument("--tol", type=float, default=1e-3, help="max |out-ref| / max(1, max|ref|) (default 1e-3)")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per qsteer run")
    ap.add_argument("--json", action="store_true", help="print one JSON report instead of a table")
    ap.add_argument("--keep", metavar="DIR", help="keep qsteer's saved outputs in DIR")
    args = ap.parse_args()

    bin_path = resolve_qsteer(args.qsteer, "check_fp32")
    if bin_path is None:
        return 2

    cases = [c for c in discover_cases() if not args.only or any(o in c[0] for o in args.only)]
    tmp, tmp_ctx = scratch_dir(args.keep, "qsteer-interop-")
    results = []
    if not args.only or any(o in c[0] for c in COMPRESSED for o in args.only):
        print("check_fp32: compressing sample models ...", file=sys.stderr, flush=True)
        made, failed = compressed_cases(bin_path, tmp, args.timeout)
        results.extend(failed)
        cases += [c for c in made if not args.only or any(o in c[0] for o in args.only)]
    if not args.only or any(o in c[0] for c in FINETUNED for o in args.only):
        print("check_fp32: fine-tuning sample models ...", file=sys.stderr, flush=True)
        made, failed = finetuned_cases(bin_path, tmp, args.timeout)
        results.extend(failed)
        cases += [c for c in made if not args.only or any(o in c[0] for o in args.only)]
    if not cases and not results:
        print("check_fp32: no cases found", file=sys.stderr)
        return 2
    for name, model, data in cases:
        print(f"check_fp32: {name} ...", file=sys.stderr, flush=True)
        results.append(check_case(name, model, data, bin_path, tmp, args.tol, args.timeout))
    if tmp_ctx:
        tmp_ctx.cleanup()

    passed = sum(r["ok"] for r in results)
    failed = len(results) - passed
    if args.json:
        print(json.dumps({"onnxruntime": ort.__version__, "tol": args.tol, "cases": results,
                          "passed": passed, "failed": failed}, indent=1))
        print(f"interop: {passed} passed, {failed} failed", file=sys.stderr)
    else:
        hdr = f"{'case':32s} {'samples':>7s} {'max_abs_diff':>12s} {'rel_diff':>10s} {'argmax':>7s} " \
              f"{'acc_ort':>7s} {'acc_qs':>7s}  status"
        print(f"ONNX Runtime {ort.__version__}, ORT_DISABLE_ALL, tol {args.tol:g}")
        print(hdr)
        print("-" * len(hdr))
        for r in results:
            print(f"{r['case']:32s} {fmt(r.get('samples'), '7d')} {fmt(r.get('max_abs_diff'), '12.3e')} "
                  f"{fmt(r.get('rel_diff'), '10.3e')} {fmt(r.get('argmax_agreement'), '7.2%')} "
                  f"{fmt(r.get('ort_accuracy'), '7.2%')} {fmt(r.get('qsteer_accuracy'), '7.2%')}  "
                  f"{'ok' if r['ok'] else 'FAIL'}")
            for e in r["errors"]:
                print(f"    error: {e}")
            for w in r["warnings"]:
                print(f"    warning: {w}")
        print(f"interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
