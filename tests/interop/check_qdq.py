#!/usr/bin/env python3
"""QDQ interop check: qsteer's simulated outputs vs ONNX Runtime running qsteer's exported QDQ model.

    python3 tests/interop/check_qdq.py --qsteer target/debug/qsteer
    (normally through tests/interop/run.sh, after check_fp32.py)

Cases: each sample model (mbv2_digits, resnet_digits) on sample-models/digits at W8A8 per
tensor, W8A8 per channel and W4A8 per channel, plus W16A16 (com.microsoft Q/DQ) and W8A4
(activations as float ops) per channel; and the opset-11 fixture tests/fixtures/opset_upgrade_11
(Split/Squeeze/Unsqueeze/ReduceSum attributes, a 4-D Softmax) at W8A8 per channel, which the
export converts to opset 13. For each case the qsteer binary runs

    BIN quantsim MODEL --data DIGITS [flags] --out SIM.onnx --export DIR --workspace WS --json
    BIN eval SIM.onnx --data DIGITS --split all --save-outputs SIM.npy --no-workspace --json

(the simulated logits of every sample, calibration then evaluation, as tract computes them).
ONNX Runtime then runs the exported QDQ model (`export.output` of the quantsim JSON) on the same
inputs with the default session options (what a deployment gets; ORT may fuse Q/DQ into integer
kernels), and both the exported model and qsteer's simulated model SIM.onnx with
ORT_DISABLE_ALL, one sample per call as qsteer runs them. A case fails when

  * qsteer fails, prints something other than one JSON document, or writes no outputs,
  * ONNX Runtime cannot load or run the exported model,
  * the default session's argmax agrees with qsteer's simulated outputs on fewer than
    --min-agreement (0.99) of the samples, or its max |delta logit| exceeds --tol (0.05) times
    the simulated logits' range (max - min over all samples; two output grid steps for 4-bit
    activations),
  * with ORT_DISABLE_ALL the exported model and the simulated model differ by more than
    --tol-exact (0: identical) times that range. The export must compute exactly what the
    simulation computes; the simulated model's quantized weights are read through Identity
    nodes for this, as computed values like the export's DequantizeLinear outputs
    (computed_weights.py: ONNX Runtime sums a constant Gemm/MatMul weight with K > 256 in
    another order than a computed one);
  * qsteer's own run of the simulated model (tract) differs from ONNX Runtime's run of the
    same simulated model (ORT_DISABLE_ALL) by more than --tol-tract (0.01) times that
    range (the `tract` column: the fraction of logits differing at all). tract's and ORT's
    FP32 ops (convolution sums, Sigmoid) differ in their last bits and land values on the
    other side of a rounding boundary (and tract multiplies by 1/scale where ORT divides; see
    src/quant/qdq.rs for the measurements). The `ties` column counts logits of the default
    session (integer kernels) that differ at all from qsteer's.

A table goes to stdout (or a JSON report with --json); exit 0 if every case passed, 1 if any
failed, 2 on bad arguments.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

from computed_weights import with_computed_weights
from interop_common import fmt, resolve_qsteer, scratch_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(ROOT, "sample-models", "digits")
MODELS = ["mbv2_digits", "resnet_digits"]
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# (model file, dataset directory, cases): extra models with their own data and configs.
EXTRA = [
    ("opset_upgrade_11", os.path.join(FIXTURES, "opset_upgrade_11.onnx"), os.path.join(FIXTURES, "opset_upgrade_11"),
     [("W8A8 per-channel", ["--per-channel", "--calibration-size", "4"], 0)]),
    # K = 320 > 256: ORT sums a constant and a computed MatMul weight in other orders (the
    # `exact` column compares with computed weights on both sides; `constant` is the raw one).
    ("wide_matmul", os.path.join(FIXTURES, "wide_matmul.onnx"), os.path.join(FIXTURES, "wide_matmul"),
     [("W8A8 per-tensor", ["--calibration-size", "16"], 0)]),
]
# (name, quantsim flags, steps): the close-logits bound is --tol of the logit range, or `steps`
# grid steps of the output quantizer when that is more (a tie tract rounds the other way moves
# a 4-bit output by 1/15 of its range).
CONFIGS = [
    ("W8A8 per-tensor", [], 0),
    ("W8A8 per-channel", ["--per-channel"], 0),
    ("W4A8 per-channel", ["--w-bits", "4", "--per-channel"], 0),
    # 16 bit: com.microsoft DequantizeLinear (int16 weights) and Q/DQ (uint16 activations).
    ("W16A16 per-channel", ["--w-bits", "16", "--a-bits", "16", "--per-channel"], 0),
    # 4-bit activations: the float-op form.
    ("W8A4 per-channel", ["--a-bits", "4", "--per-channel"], 2 / 15),
    # One side only: the other stays float in the export (see the README on what ORT's
    # optimized session makes of a float weight behind a quantized input).
    ("A8 only per-tensor", ["--mode", "a"], 0),
    ("W8 only per-channel", ["--mode", "w", "--per-channel"], 0),
]


def dataset_inputs(data):
    """The `--split all` order: of an explicit split calibration, then evaluation; else the file."""
    if os.path.isdir(os.path.join(data, "calibration")):
        parts = [np.load(os.path.join(data, p, "inputs.npy")) for p in ("calibration", "evaluation")]
        return np.concatenate(parts).astype(np.float32)
    return np.load(os.path.join(data, "inputs.npy")).astype(np.float32)


def run_json(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout}s"
    if p.returncode != 0:
        tail = (p.stderr or "").strip().splitlines()[-3:]
        return None, f"exit code {p.returncode}: {' | '.join(tail)}"
    try:
        return json.loads(p.stdout), None
    except json.JSONDecodeError as e:
        return None, f"stdout is not one JSON document ({e})"


def run_ort(model, x, optimize, per_sample=False):
    """The first output on all of `x`: in one call, or one sample per call as qsteer runs
    (ORT picks its GEMM path by the row count: a batch can hide what one sample shows)."""
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = sess.get_outputs()[0].name
    if per_sample:
        return np.concatenate([np.asarray(sess.run([out], {name: x[i:i + 1]})[0], dtype=np.float32)
                               for i in range(len(x))])
    return np.asarray(sess.run([out], {name: x})[0], dtype=np.float32)


def compare(sim, ref):
    span = float(sim.max() - sim.min()) or 1.0
    return float((sim.argmax(1) == ref.argmax(1)).mean()), float(np.abs(sim - ref).max()) / span


def check_case(model_name, model, data, config, flags, steps, bin_path, tmp, args, x):
    r = {"case": f"{model_name} {config}", "ok": False, "errors": []}
    work = os.path.join(tmp, f"{model_name}-{config.replace(' ', '_')}")
    os.makedirs(work, exist_ok=True)
    sim_path = os.path.join(work, "sim.onnx")
    t0 = time.time()
    doc, err = run_json([bin_path, "quantsim", model, "--data", data, *flags, "--out", sim_path,
                         "--export", os.path.join(work, "export"), "--workspace", os.path.join(work, "ws"),
                         "--json"], args.timeout)
    if err:
        r["errors"].append("qsteer quantsim " + err)
        return r
    export = doc.get("export") or {}
    qdq = export.get("output")
    if not qdq or not os.path.exists(qdq):
        r["errors"].append("quantsim --export reported no existing `export.output`")
        return r
    r["accuracy_sim"] = doc.get("accuracy")
    r["float_op_tensors"] = len(export.get("float_op_tensors", []))
    out_path = os.path.join(work, "sim.npy")
    doc, err = run_json([bin_path, "eval", sim_path, "--data", data, "--split", "all", "--save-outputs",
                         out_path, "--no-workspace", "--json"], args.timeout)
    if err:
        r["errors"].append("qsteer eval " + err)
        return r
    r["qsteer_seconds"] = round(time.time() - t0, 2)
    sim = np.load(out_path).astype(np.float32)
    if sim.shape[0] != x.shape[0]:
        r["errors"].append(f"qsteer saved {sim.shape[0]} samples, the dataset has {x.shape[0]}")
        return r
    try:
        deployed = run_ort(qdq, x, optimize=True)
        exported = run_ort(qdq, x, optimize=False, per_sample=True)
        simulated = run_ort(sim_path, x, optimize=False, per_sample=True)
        # `exact` reads the simulated weights as computed values, like the export's (see
        # computed_weights.py: ORT sums a constant and a computed weight in other orders).
        sim_computed = os.path.join(work, "sim_computed_weights.onnx")
        with_computed_weights(sim_path, qdq, sim_computed)
        simulated_computed = run_ort(sim_computed, x, optimize=False, per_sample=True)
    except Exception as e:  # noqa: BLE001
        r["errors"].append(f"ONNX Runtime failed on {os.path.basename(qdq)}: {e}")
        return r
    r["samples"] = int(x.shape[0])
    r["agreement"], r["rel_diff"] = compare(sim, deployed)
    r["ties"] = float((sim != deployed).mean())
    _, r["rel_diff_exact"] = compare(simulated_computed, exported)
    _, r["rel_diff_exact_constant_weights"] = compare(simulated, exported)
    _, r["rel_diff_tract"] = compare(sim, simulated)
    r["tract"] = float((sim != simulated).mean())
    if r["agreement"] < args.min_agreement:
        r["errors"].append(f"argmax agreement {r['agreement']:.2%} < {args.min_agreement:.0%}")
    tol = max(args.tol, steps)
    if r["rel_diff"] > tol:
        r["errors"].append(f"max |delta logit| / logit range {r['rel_diff']:.3g} > {tol:.3g}")
    if r["rel_diff_exact"] > args.tol_exact:
        r["errors"].append(f"ORT_DISABLE_ALL: exported vs simulated model differ by "
                           f"{r['rel_diff_exact']:.3g} of the logit range > {args.tol_exact:g}")
    tol_tract = max(args.tol_tract, steps)
    if r["rel_diff_tract"] > tol_tract:
        r["errors"].append(f"qsteer (tract) vs ONNX Runtime on the simulated model differ by "
                           f"{r['rel_diff_tract']:.3g} of the logit range > {tol_tract:.3g}")
    r["ok"] = not r["errors"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qsteer", required=True, help="path to the qsteer binary")
    ap.add_argument("--min-agreement", type=float, default=0.99, help="argmax agreement (default 0.99)")
    ap.add_argument("--tol", type=float, default=0.05,
                    help="max |delta logit| / simulated logit range, default session (default 0.05)")
    ap.add_argument("--tol-exact", type=float, default=0.0,
                    help="the same, exported vs simulated model both in ORT_DISABLE_ALL (default 0)")
    ap.add_argument("--tol-tract", type=float, default=0.01,
                    help="the same, qsteer's run of the simulated model vs ORT_DISABLE_ALL's (default 0.01: "
                         "about 2.5 steps of an 8-bit output; measured 1 step on the sample models)")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per qsteer run")
    ap.add_argument("--json", action="store_true", help="print one JSON report instead of a table")
    ap.add_argument("--keep", metavar="DIR", help="keep the models and outputs in DIR")
    args = ap.parse_args()

    bin_path = resolve_qsteer(args.qsteer, "check_qdq")
    if bin_path is None:
        return 2
    cases = [(m, os.path.join(ROOT, "sample-models", m + ".onnx"), DIGITS, c, f, steps)
             for m in MODELS for c, f, steps in CONFIGS]
    cases += [(m, path, data, c, f, steps) for m, path, data, configs in EXTRA for c, f, steps in configs]
    cases = [case for case in cases if not args.only or any(o in f"{case[0]} {case[3]}" for o in args.only)]
    if not cases:
        print("check_qdq: no cases selected", file=sys.stderr)
        return 2

    tmp, tmp_ctx = scratch_dir(args.keep, "qsteer-qdq-")
    results = []
    for m, path, data, c, f, steps in cases:
        print(f"check_qdq: {m} {c} ...", file=sys.stderr, flush=True)
        results.append(check_case(m, path, data, c, f, steps, bin_path, tmp, args, dataset_inputs(data)))
    if tmp_ctx:
        tmp_ctx.cleanup()

    passed = sum(r["ok"] for r in results)
    failed = len(results) - passed
    if args.json:
        print(json.dumps({"onnxruntime": ort.__version__, "cases": results, "passed": passed,
                          "failed": failed}, indent=1))
    else:
        print(f"ONNX Runtime {ort.__version__}: exported QDQ model vs qsteer's simulation "
              f"(argmax >= {args.min_agreement:.0%}, rel_diff <= {args.tol:g}, exact <= {args.tol_exact:g})")
        hdr = f"{'case':32s} {'samples':>7s} {'acc_sim':>7s} {'argmax':>7s} {'rel_diff':>9s} " \
              f"{'ties':>7s} {'exact':>9s} {'tract':>7s} {'seconds':>7s}  status"
        print(hdr)
        print("-" * len(hdr))
        for r in results:
            print(f"{r['case']:32s} {fmt(r.get('samples'), '7d')} {fmt(r.get('accuracy_sim'), '7.2%')} "
                  f"{fmt(r.get('agreement'), '7.2%')} {fmt(r.get('rel_diff'), '9.2e')} "
                  f"{fmt(r.get('ties'), '7.2%')} {fmt(r.get('rel_diff_exact'), '9.2e')} "
                  f"{fmt(r.get('tract'), '7.2%')} "
                  f"{fmt(r.get('qsteer_seconds'), '7.1f')}  {'ok' if r['ok'] else 'FAIL'}")
            for e in r["errors"]:
                print(f"    error: {e}")
        print("argmax, rel_diff (max |delta logit| / logit range), ties (logits differing at all): ORT default "
              "session on the QDQ export vs qsteer's simulation; exact: QDQ export vs simulated model, both "
              "in ORT_DISABLE_ALL; tract: logits of qsteer's run of the simulated model differing at all from "
              "ORT_DISABLE_ALL's run of it")
        print(f"qdq interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
