#!/usr/bin/env python3
"""Run qsteer over every zoo model and compare with ONNX Runtime and with expected.json.

    python3 tests/zoo/run_zoo.py --qsteer BIN --cache DIR [--only ID] [--steps S,S] [--select FILE]
                                 [--timeout S] [--keep DIR] [--json] [--update-expected]
    (normally through tests/zoo/run.sh, which provides a venv with onnxruntime and numpy)

Per model (fresh workspace in a temp dir, `--workspace`), the steps and what makes them pass:

  inspect        qsteer inspect MODEL --json                          exit 0, one JSON document
  inspect_data   qsteer inspect MODEL --data D --json                 exit 0, one JSON document
  eval           qsteer eval MODEL --data D --split all --save-outputs FP32.npy --json
                                                                      exit 0, JSON, FP32.npy written
  fp32_vs_ort    FP32.npy vs ONNX Runtime (CPU, ORT_DISABLE_ALL) on the same inputs, first output:
                 same shape, finite, max|out-ref| / max(1, max|ref|) <= --tol (1e-3, as
                 tests/interop/check_fp32.py); reports max abs diff and SQNR (dB)
  quantsim       qsteer quantsim MODEL --data D --out SIM.onnx --export DIR --json (W8A8 per
                 tensor): exit 0, JSON; reports the fidelity score (agreement, sqnr_db). A model
                 with a `zoo_metric` in models.json is scored by it instead, through qsteer's
                 --metric-command (zoo_metric.py against ORT's FP32 outputs of every output)
  w8a8_metric    that score (`metric_value`, 1.0 = FP32) of quantsim or quantsim_pc is >= 0.99:
                 W8A8 (per tensor or per channel) within 1 point of FP32
  qdq_vs_sim     qsteer eval SIM.onnx --save-outputs SIM.npy, then ONNX Runtime runs the exported
                 QDQ model: `exact`, the QDQ model vs SIM.onnx (its quantized weights read
                 through Identity nodes, computed like the export's: see
                 tests/interop/computed_weights.py) both in ORT_DISABLE_ALL, must be
                 <= --tol-exact (0: the export computes what the simulation computes), and the
                 default (optimized, integer-kernel) session must stay within --tol-qdq (0.05) of
                 range(sim) (tests/interop/check_qdq.py's bound) or, where quantization noise is
                 large, be --qdq-margin (6) dB closer to the simulation than the simulation is to
                 FP32; reported: SQNR of the simulation and of the QDQ model against FP32 ORT and
                 the simulation's top-1 agreement with FP32 ([N,K] outputs)
  quantsim_pc, qdq_pc_vs_sim   the same with --per-channel
  analyze        qsteer analyze MODEL --data D --json                 exit 0, JSON
  cle            qsteer cle MODEL --data D --out CLE.onnx --json      exit 0, JSON
  compress       qsteer compress MODEL --data D --method wsvd --target 0.8 --candidates 4 --json
                                                                      exit 0, JSON

Every qsteer call gets --calibration-size (16) where the command has it, --progress none and
--timeout seconds. ONNX Runtime runs one sample per call, as qsteer does by default. A step whose input step failed
is `skip`; a comparison ONNX Runtime cannot make (it cannot load or run the model) is `n/a`. The table goes to stdout (--json: the
report), the report also to CACHE/zoo-report.json. expected.json lists, per model and step,
whether the step is expected to pass: exit 0 when every step expected to pass passed (steps
that pass but are not expected to are printed as "fixed — update expected.json"), 1 otherwise,
2 on bad arguments. --update-expected rewrites expected.json from this run's results.
"""

import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time


import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop"))
from computed_weights import with_computed_weights  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = ["inspect", "inspect_data", "eval", "fp32_vs_ort", "quantsim", "qdq_vs_sim", "quantsim_pc",
         "qdq_pc_vs_sim", "w8a8_metric", "analyze", "cle", "compress"]
SHORT = {"inspect": "insp", "inspect_data": "insp+d", "eval": "eval", "fp32_vs_ort": "fp32/ort",
         "quantsim": "qsim", "w8a8_metric": "w8a8", "qdq_vs_sim": "qdq/sim", "quantsim_pc": "qsim-pc", "qdq_pc_vs_sim": "qdq-pc",
         "analyze": "analyze", "cle": "cle", "compress": "compress"}
# A step that needs another step's output (skipped when that one did not pass).
NEEDS = {"fp32_vs_ort": "eval", "qdq_vs_sim": "quantsim", "qdq_pc_vs_sim": "quantsim_pc"}
# W8A8 passes when the model's downstream metric (zoo_metric.py, 1.0 = FP32) is at least this.
W8A8_MIN_SCORE = 0.99


def log(msg):
    print(f"zoo: {msg}", file=sys.stderr, flush=True)


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


def first_error_line(stderr):
    """The line that says what went wrong: the first 'error' line, else the last line."""
    lines = [l.strip() for l in (stderr or "").splitlines() if l.strip()]
    for l in lines:
        if l.lower().startswith(("error", "qsteer: error", "thread '")) or "panicked at" in l:
            return l
    return lines[-1] if lines else ""


def run_qsteer(args, cmd, timeout=None):
    """(doc or None, result dict with status/seconds/error/exit_code)."""
    full = [args.qsteer, *cmd, "--progress", "none"]
    timeout = timeout or args.timeout
    t0 = time.time()
    try:
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, {"status": "FAIL", "seconds": round(time.time() - t0, 2),
                      "error": f"timed out after {timeout:g} s", "exit_code": None}
    res = {"seconds": round(time.time() - t0, 2), "exit_code": p.returncode}
    if p.returncode != 0:
        res.update(status="FAIL", error=f"exit {p.returncode}: {first_error_line(p.stderr)}")
        return None, res
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        res.update(status="FAIL", error=f"stdout is not one JSON document ({e})")
        return None, res
    res["status"] = "ok"
    notes = [l.strip() for l in (p.stderr or "").splitlines() if l.strip().lower().startswith(("note", "warning"))]
    if notes:
        res["notes"] = notes[:5]
    return doc, res


# ------------------------------------------------------------------------ ONNX Runtime side


def load_feeds(entry, data_dir):
    names = list(entry["inputs"])
    if len(names) == 1 and os.path.exists(os.path.join(data_dir, "inputs.npy")):
        return {names[0]: np.load(os.path.join(data_dir, "inputs.npy"))}
    return {n: np.load(os.path.join(data_dir, f"inputs.{n}.npy")) for n in names}


def sample_feed(v, k, shape):
    """Sample k of a stored input for ONNX Runtime: a scalar input gets its value as a 0-d
    array; a recurrent state written [layers, batch, ...] (axis 0 fixed above 1, another axis
    open, as Silero VAD's `state`) gets the sample on its open axis; others on axis 0."""
    if len(shape) == 0:
        return np.asarray(v[k])
    x = v[k:k + 1]
    if isinstance(shape[0], int) and shape[0] > 1 and x.ndim == len(shape):
        for ax, d in enumerate(shape):
            if not isinstance(d, int):
                return np.ascontiguousarray(np.moveaxis(x, 0, ax))
    return x


def run_ort(model, feeds, optimize, disabled_optimizers=()):
    """The model's first output for every sample, one sample per call (as qsteer evaluates by
    default), concatenated on axis 0. One call per sample also keeps graphs that mix samples
    (a ReduceMax over the whole batch, a Reshape that hard-codes batch 1) per sample."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    extra = {"disabled_optimizers": list(disabled_optimizers)} if disabled_optimizers else {}
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"], **extra)
    out_name = sess.get_outputs()[0].name
    n = len(next(iter(feeds.values())))
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    outs = []
    for k in range(n):
        f = {name: sample_feed(v, k, shapes[name]) for name, v in feeds.items()}
        outs.append(np.asarray(sess.run([out_name], f)[0], dtype=np.float32))
    return np.concatenate([o.reshape(1) if o.ndim == 0 else o for o in outs], axis=0)


def write_reference(model, feeds, refdir):
    """Every output of every sample (ORT, one sample per call, ORT_DISABLE_ALL) stacked on a new
    axis 0, as REFDIR/<k>.npy: zoo_metric.py's FP32 reference."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    per_sample = []
    for k in range(n):
        f = {name: sample_feed(v, k, shapes[name]) for name, v in feeds.items()}
        per_sample.append(sess.run(None, f))
    os.makedirs(refdir, exist_ok=True)
    for j in range(len(per_sample[0])):
        np.save(os.path.join(refdir, f"{j}.npy"), np.stack([np.asarray(o[j], dtype=np.float32) for o in per_sample]))


def metric_command(entry, refdir):
    """The --metric-command for a model with a `zoo_metric`, or None."""
    spec = entry.get("zoo_metric")
    if not spec:
        return None
    words = [sys.executable, os.path.join(HERE, "zoo_metric.py"), spec["kind"], refdir, "{outputs}", "{indices}"]
    for key, value in spec.items():
        if key == "kind":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, *[str(v) for v in (value if isinstance(value, list) else [value])]]
    return " ".join(shlex.quote(w) if not w.startswith("{") else w for w in words)


def sqnr_db(ref, out):
    noise = float(np.sum((out.astype(np.float64) - ref) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10 * np.log10(signal / noise)


def load_npy(path):
    if not os.path.exists(path):
        return None, "qsteer wrote no --save-outputs file"
    try:
        return np.load(path), None
    except Exception as e:  # noqa: BLE001
        return None, f"cannot read saved outputs: {e}"


def cmp_fp32(entry, model, data_dir, out_path, args):
    t0 = time.time()
    res = {"status": "FAIL"}
    out, err = load_npy(out_path)
    if err:
        res["error"] = err
        return res
    try:
        ref = run_ort(model, load_feeds(entry, data_dir), optimize=False)
    except Exception as e:  # noqa: BLE001
        res.update(status="n/a", error=f"ONNX Runtime cannot run the model: {str(e).splitlines()[0][:300]}")
        return res
    res["seconds"] = round(time.time() - t0, 2)
    res["shape"], res["ort_shape"] = list(out.shape), list(ref.shape)
    if out.shape != ref.shape:
        res["error"] = f"saved outputs have shape {list(out.shape)}, ONNX Runtime gives {list(ref.shape)}"
        return res
    out = out.astype(np.float32)
    if not np.all(np.isfinite(out)):
        res["error"] = "saved outputs contain NaN/Inf"
        return res
    diff = float(np.max(np.abs(out - ref))) if ref.size else 0.0
    res["max_abs_diff"] = diff
    res["rel_diff"] = diff / max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    res["sqnr_db"] = sqnr_db(ref, out)
    if res["rel_diff"] > args.tol:
        res["error"] = f"rel_diff {res['rel_diff']:.3g} > tol {args.tol:g} (max abs diff {diff:.3g}, SQNR {res['sqnr_db']:.1f} dB)"
        return res
    res["status"] = "ok"
    return res


def cmp_qdq(entry, model, data_dir, work, tag, quant_doc, args):
    """qsteer's simulated outputs vs ONNX Runtime on the exported QDQ model."""
    t0 = time.time()
    res = {"status": "FAIL"}
    export = (quant_doc or {}).get("export") or {}
    qdq = export.get("output")
    sim_model = os.path.join(work, f"sim{tag}.onnx")
    if not qdq or not os.path.exists(qdq):
        res["error"] = "quantsim --export reported no existing `export.output`"
        return res
    if not os.path.exists(sim_model):
        res["error"] = f"quantsim --out wrote no {os.path.basename(sim_model)}"
        return res
    sim_npy = os.path.join(work, f"sim{tag}.npy")
    if not (getattr(args, "reuse_outputs", False) and os.path.exists(sim_npy)):
        doc, r = run_qsteer(args, ["eval", sim_model, "--data", data_dir, "--split", "all", "--save-outputs",
                                   sim_npy, "--no-workspace", "--json"])
        if r["status"] != "ok":
            res["error"] = "qsteer eval of the simulated model: " + r["error"]
            return res
    sim, err = load_npy(sim_npy)
    if err:
        res["error"] = err
        return res
    feeds = load_feeds(entry, data_dir)
    try:
        deployed = run_ort(qdq, feeds, optimize=True)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"ONNX Runtime cannot run the exported QDQ model: {str(e).splitlines()[0][:300]}"
        return res
    res["seconds"] = round(time.time() - t0, 2)
    if sim.shape != deployed.shape:
        res["error"] = f"simulated outputs have shape {list(sim.shape)}, the QDQ model in ONNX Runtime gives {list(deployed.shape)}"
        return res
    sim = sim.astype(np.float32)
    span = float(sim.max() - sim.min()) or 1.0
    res["rel_diff"] = float(np.abs(sim - deployed).max()) / span
    res["sqnr_db_vs_sim"] = sqnr_db(sim, deployed)
    try:  # the quantization's own effect: qsteer's simulation and the deployed QDQ model vs FP32
        ref = run_ort(model, feeds, optimize=False)
        if ref.shape == deployed.shape:
            res["sim_sqnr_db_vs_fp32"] = sqnr_db(ref, sim)
            res["sqnr_db_vs_fp32"] = sqnr_db(ref, deployed)
            if ref.ndim == 2 and ref.shape[1] > 1:
                res["sim_agreement_vs_fp32"] = float((ref.argmax(1) == sim.argmax(1)).mean())
    except Exception:  # noqa: BLE001
        pass
    try:
        exported = run_ort(qdq, feeds, optimize=False)
        # The simulated weights read as computed values, like the export's DequantizeLinear
        # outputs: ORT sums a constant Gemm/MatMul weight with K > 256 in another order
        # (tests/interop/computed_weights.py).
        sim_computed = os.path.join(work, f"sim{tag}_computed_weights.onnx")
        with_computed_weights(sim_model, qdq, sim_computed)
        simulated = run_ort(sim_computed, feeds, optimize=False)
        res["exact"] = float(np.abs(exported - simulated).max()) / span if exported.shape == simulated.shape else None
    except Exception as e:  # noqa: BLE001
        res["exact"] = None
        res["exact_error"] = str(e).splitlines()[0][:300]
    if res["rel_diff"] > args.tol_qdq:
        # ORT's integer kernels (QLinearAdd, QLinearMul, ...) requantize with their own rounding:
        # a value at 0.49999 of a step rounds the other way, and the flip spreads downstream.
        # The same optimized session without the QDQ→QLinear rewrite tells that apart from an
        # export that computes something else.
        try:
            plain = run_ort(qdq, feeds, optimize=True, disabled_optimizers=[QLINEAR_REWRITE])
            res["rel_diff_without_qlinear"] = float(np.abs(sim - plain).max()) / span
        except Exception as e:  # noqa: BLE001
            res["rel_diff_without_qlinear_error"] = str(e).splitlines()[0][:300]
    return qdq_verdict(res, args)


# The ORT graph transformer that replaces DequantizeLinear→op→QuantizeLinear by integer ops.
QLINEAR_REWRITE = "QDQSelectorActionTransformer"


def qdq_verdict(res, args):
    """Pass/fail of a QDQ comparison from its numbers (also used to re-judge a stored report).

    The export must compute what the simulation computes (`exact`, both in ORT_DISABLE_ALL), and
    ONNX Runtime's optimized session (integer kernels) must stay close to the simulation: within
    --tol-qdq of the output range everywhere (tests/interop/check_qdq.py's bound), or, on a model
    whose quantization noise is large (a rounding tie flipped in an early layer can then move an
    output by its whole range), at least --qdq-margin dB closer to the simulation than the
    simulation is to FP32: ORT's kernels add noise well below the quantization's own. When
    neither holds but the same optimized session without ORT's QDQ→QLinear rewrite stays within
    --tol-qdq, the difference is the integer kernels' own requantization rounding (a value within
    a hair of half a step rounds the other way and the flip spreads), not the export: the step
    passes and says so in `qlinear_rounding`, with both figures kept."""
    errors = []
    margin_ok = (isinstance(res.get("sqnr_db_vs_sim"), float) and isinstance(res.get("sim_sqnr_db_vs_fp32"), float)
                 and res["sqnr_db_vs_sim"] >= res["sim_sqnr_db_vs_fp32"] + args.qdq_margin)
    plain = res.get("rel_diff_without_qlinear")
    rounding_only = (res["rel_diff"] > args.tol_qdq and not margin_ok
                     and isinstance(plain, float) and plain <= args.tol_qdq)
    res.pop("qlinear_rounding", None)
    if rounding_only:
        res["qlinear_rounding"] = (f"ORT's integer kernels move the output by {res['rel_diff']:.3g} of the range; "
                                   f"without the {QLINEAR_REWRITE} rewrite {plain:.3g}")
    if res["rel_diff"] > args.tol_qdq and not margin_ok and not rounding_only:
        errors.append(f"max |qdq - sim| / range {res['rel_diff']:.3g} > {args.tol_qdq:g} and SQNR(qdq vs sim) "
                      f"{res.get('sqnr_db_vs_sim', float('nan')):.1f} dB < SQNR(sim vs fp32) "
                      f"{res.get('sim_sqnr_db_vs_fp32', float('nan')):.1f} dB + {args.qdq_margin:g}")
    if res.get("exact") is None:
        errors.append("ORT_DISABLE_ALL: " + res.get("exact_error", "exported and simulated models differ in shape"))
    elif res["exact"] > args.tol_exact:
        errors.append(f"ORT_DISABLE_ALL: exported vs simulated model differ by {res['exact']:.3g} of the range "
                      f"> {args.tol_exact:g}")
    res["status"] = "FAIL" if errors else "ok"
    if errors:
        res["error"] = "; ".join(errors)
    else:
        res.pop("error", None)
    return res


# ------------------------------------------------------------------------------- one model


def pick(doc, keys):
    out = {}
    for k in keys:
        v = find_key(doc, k)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out[k] = v
    return out


def w8a8_verdict(entry, results):
    """The better of W8A8 per tensor and per channel, by the model's downstream metric."""
    if not entry.get("zoo_metric"):
        return {"status": "n/a", "error": "no zoo_metric for this model in models.json"}
    kind = entry["zoo_metric"]["kind"]
    runs = {name: results.get(step, {}).get("metric_value")
            for name, step in (("per_tensor", "quantsim"), ("per_channel", "quantsim_pc"))}
    runs = {name: v for name, v in runs.items() if isinstance(v, (int, float))}
    if not runs:
        return {"status": "FAIL", "error": "no quantsim run has a metric_value (the metric command did not run)"}
    best = max(runs, key=runs.get)
    res = {"kind": kind, "metric_value": runs[best], "best": best, **runs}
    if runs[best] < W8A8_MIN_SCORE:
        shown = ", ".join(f"{n.replace('_', ' ')} {v:.4f}" for n, v in runs.items())
        res.update(status="FAIL", error=f"W8A8 {kind} score {shown} < {W8A8_MIN_SCORE} (FP32 = 1.0)")
    else:
        res["status"] = "ok"
    return res


def run_model(entry, model, data_dir, args, steps, tmp):
    work = os.path.join(tmp, entry["id"])
    os.makedirs(work, exist_ok=True)
    ws = os.path.join(work, "ws")
    cal = ["--calibration-size", str(args.calibration_size)]
    results = {}
    docs = {}

    def qsteer_step(name, cmd, keys):
        doc, r = run_qsteer(args, cmd, args.step_timeouts.get(name))
        if doc is not None:
            r.update(pick(doc, keys))
        docs[name] = doc
        results[name] = r

    for step in steps:
        need = NEEDS.get(step)
        if need and results.get(need, {}).get("status") != "ok":
            results[step] = {"status": "skip", "error": f"needs {need}"}
            continue
        if step == "inspect":
            qsteer_step(step, ["inspect", model, "--json"], ["macs_total", "params_total"])
            if docs[step] is not None and isinstance(docs[step].get("layers"), list):
                results[step]["layers"] = len(docs[step]["layers"])
        elif step == "inspect_data":
            qsteer_step(step, ["inspect", model, "--data", data_dir, "--json"], ["macs_total", "params_total"])
            if docs[step] is not None and isinstance(docs[step].get("layers"), list):
                results[step]["layers"] = len(docs[step]["layers"])
        elif step == "eval":
            qsteer_step(step, ["eval", model, "--data", data_dir, "--split", "all", "--save-outputs",
                               os.path.join(work, "fp32.npy"), *cal, "--workspace", ws, "--json"],
                        ["samples", "seconds", "samples_per_second"])
        elif step == "fp32_vs_ort":
            results[step] = cmp_fp32(entry, model, data_dir, os.path.join(work, "fp32.npy"), args)
        elif step in ("quantsim", "quantsim_pc"):
            tag = "_pc" if step == "quantsim_pc" else ""
            flags = ["--per-channel"] if tag else []
            refdir = os.path.join(work, "fp32_ref")
            command = metric_command(entry, refdir)
            if command and not os.path.isdir(refdir):
                try:
                    write_reference(model, load_feeds(entry, data_dir), refdir)
                except Exception as e:  # noqa: BLE001
                    log(f"{entry['id']}: no FP32 reference from ONNX Runtime ({str(e).splitlines()[0][:200]})")
                    command = None
            if command:
                flags += ["--metric-command", command]
            qsteer_step(step, ["quantsim", model, "--data", data_dir, *flags, *cal, "--out",
                               os.path.join(work, f"sim{tag}.onnx"), "--export", os.path.join(work, f"export{tag}"),
                               "--workspace", ws, "--json"], ["agreement", "sqnr_db", "samples", "seconds",
                                                               "metric", "metric_value"])
            doc = docs[step]
            if doc is not None and all(find_key(doc, k) is None
                                       for k in ("agreement", "sqnr_db", "accuracy", "metric_value")):
                results[step]["score"] = "none: the JSON has no agreement / sqnr_db (no labels, no reference)"
        elif step == "w8a8_metric":
            results[step] = w8a8_verdict(entry, results)
        elif step in ("qdq_vs_sim", "qdq_pc_vs_sim"):
            tag = "_pc" if step == "qdq_pc_vs_sim" else ""
            results[step] = cmp_qdq(entry, model, data_dir, work, tag, docs.get("quantsim" + tag), args)
        elif step == "analyze":
            qsteer_step(step, ["analyze", model, "--data", data_dir, *cal, "--workspace", ws, "--json"],
                        ["sqnr_db", "agreement", "seconds"])
        elif step == "cle":
            qsteer_step(step, ["cle", model, "--data", data_dir, "--out", os.path.join(work, "cle.onnx"),
                               "--workspace", ws, "--json"], ["iterations", "agreement", "sqnr_db"])
            if docs[step] is not None and isinstance(docs[step].get("sets"), list):
                results[step]["sets"] = len(docs[step]["sets"])
        elif step == "compress":
            qsteer_step(step, ["compress", model, "--data", data_dir, "--method", "wsvd", "--target", "0.8",
                               "--candidates", "4", *cal, "--workspace", ws, "--json"],
                        ["mac_ratio", "agreement", "evaluations", "seconds"])
        r = results[step]
        log(f"{entry['id']}: {step}: {r['status']}" + (f" ({r['seconds']:.1f} s)" if isinstance(r.get("seconds"), (int, float)) else "")
            + (f": {r['error'][:300]}" if r.get("error") and r["status"] != "ok" else ""))
    return results


# ------------------------------------------------------------------------------ reporting


def cell(r):
    if r is None:
        return ""
    s = r["status"]
    return {"ok": "ok", "FAIL": "FAIL", "skip": "skip", "n/a": "n/a"}.get(s, s)


def numbers(step, r):
    """The key figures of one step, short."""
    f = []

    def add(key, fmtspec, label=None):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            f.append(f"{label or key} {format(v, fmtspec)}")

    if step in ("inspect", "inspect_data"):
        add("layers", "d")
        if isinstance(r.get("macs_total"), (int, float)):
            f.append(f"MACs {r['macs_total'] / 1e6:.1f}M")
    elif step == "eval":
        add("samples_per_second", ".1f", "samples/s")
    elif step == "fp32_vs_ort":
        add("max_abs_diff", ".2e", "max|d|")
        add("sqnr_db", ".1f", "SQNR dB")
    elif step == "w8a8_metric":
        add("per_tensor", ".4f", f"{r.get('kind', 'score')} per tensor")
        add("per_channel", ".4f", "per channel")
    elif step in ("quantsim", "quantsim_pc", "analyze"):
        add("metric_value", ".4f", "metric")
        add("agreement", ".3f")
        add("sqnr_db", ".1f", "SQNR dB")
        if r.get("score"):
            f.append("no score in JSON")
    elif step in ("qdq_vs_sim", "qdq_pc_vs_sim"):
        add("rel_diff", ".2e", "rel")
        add("rel_diff_without_qlinear", ".2e", "rel w/o QLinear")
        add("exact", ".2e")
        add("sim_sqnr_db_vs_fp32", ".1f", "sim SQNR vs fp32 dB")
        add("sim_agreement_vs_fp32", ".3f", "sim agreement")
    elif step == "cle":
        add("sets", "d")
    elif step == "compress":
        add("mac_ratio", ".3f", "MAC ratio")
        add("agreement", ".3f")
        add("evaluations", "d")
    if isinstance(r.get("seconds"), (int, float)):
        f.append(f"{r['seconds']:.1f} s")
    return ", ".join(f)


def judge(report, expected, steps):
    """(regressions, fixed): (model, step) pairs against expected.json."""
    regressions, fixed = [], []
    for mid, m in report["models"].items():
        exp = expected.get(mid, {})
        for step in steps:
            r = m["steps"].get(step)
            if r is None or step not in exp:
                continue
            ok = r["status"] == "ok"
            if exp[step] and not ok:
                regressions.append((mid, step))
            elif not exp[step] and ok:
                fixed.append((mid, step))
    return regressions, fixed


def print_table(report, steps, regressions, fixed):
    ids = list(report["models"])
    w = max([len(i) for i in ids] + [5])
    hdr = f"{'model':{w}s} " + " ".join(f"{SHORT[s]:>8s}" for s in steps)
    print(hdr)
    print("-" * len(hdr))
    reg, fix = set(regressions), set(fixed)
    for mid in ids:
        m = report["models"][mid]
        cells = []
        for s in steps:
            c = cell(m["steps"].get(s)) if m["steps"] else "-"
            if (mid, s) in reg:
                c += "!"
            elif (mid, s) in fix:
                c += "+"
            cells.append(f"{c:>8s}")
        print(f"{mid:{w}s} " + " ".join(cells))
    print("(! expected to pass, did not; + passes, not expected to: update expected.json)")
    print()
    for mid in ids:
        m = report["models"][mid]
        if m.get("skipped"):
            print(f"{mid}: skipped: {m['skipped']}")
            continue
        print(f"{mid}  ({m['seconds']:.0f} s)")
        for s in steps:
            r = m["steps"].get(s)
            if r is None:
                continue
            line = f"  {s:14s} {cell(r):5s} {numbers(s, r)}"
            print(line.rstrip())
            if r.get("error") and r["status"] != "ok":
                print(f"      {r['error']}")
    print()
    for mid, s in fixed:
        print(f"fixed — update expected.json: {mid} {s}")
    for mid, s in regressions:
        r = report["models"][mid]["steps"][s]
        print(f"REGRESSION: {mid} {s}: {r['status']}: {r.get('error', '')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qsteer", required=True, help="the qsteer binary")
    ap.add_argument("--cache", required=True, help="the zoo cache fetch.sh filled")
    ap.add_argument("--only", action="append", default=[], help="only this model id (repeatable)")
    ap.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--select", metavar="FILE",
                    help="JSON {\"models\": {ID: [STEP, ...]}}: these models, each with its steps (ci.json)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per qsteer call (default 300)")
    ap.add_argument("--step-timeout", action="append", default=[], metavar="STEP=SECONDS",
                    help="another timeout for one step's qsteer call, e.g. compress=600 (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    ap.add_argument("--calibration-size", type=int, default=16, help="calibration samples (default 16)")
    ap.add_argument("--tol", type=float, default=1e-3, help="FP32: max|d| / max(1, max|ref|) (default 1e-3)")
    ap.add_argument("--tol-qdq", type=float, default=0.05, help="QDQ: max|qdq-sim| / range(sim) (default 0.05)")
    ap.add_argument("--tol-exact", type=float, default=0.0, help="QDQ vs SIM.onnx in ORT_DISABLE_ALL (default 0)")
    ap.add_argument("--qdq-margin", type=float, default=6.0,
                    help="or SQNR(qdq vs sim) >= SQNR(sim vs fp32) + this many dB (default 6)")
    ap.add_argument("--keep", metavar="DIR", help="keep workspaces and outputs in DIR")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    ap.add_argument("--report", help="where to write the JSON report (default CACHE/zoo-report.json)")
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.json"))
    ap.add_argument("--update-expected", action="store_true", help="write expected.json from this run")
    args = ap.parse_args()

    if os.sep in args.qsteer:
        args.qsteer = os.path.abspath(args.qsteer)
    if not (shutil.which(args.qsteer) or os.access(args.qsteer, os.X_OK)):
        log(f"qsteer binary not found or not executable: {args.qsteer}")
        return 2
    try:
        args.step_timeouts = {k: float(v) for k, v in (t.split("=", 1) for t in args.step_timeout)}
    except ValueError:
        log("--step-timeout takes STEP=SECONDS")
        return 2
    steps = STEPS if not args.steps else [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        log(f"unknown step(s): {', '.join(bad)}; steps: {', '.join(STEPS)}")
        return 2
    with open(os.path.join(HERE, "models.json")) as f:
        models = json.load(f)["models"]
    per_model = {}
    if args.select:
        with open(args.select) as f:
            per_model = json.load(f)["models"]
        args.only = args.only or list(per_model)
        bad = sorted({s for v in per_model.values() for s in v} - set(STEPS))
        if bad:
            log(f"{args.select}: unknown step(s): {', '.join(bad)}; steps: {', '.join(STEPS)}")
            return 2
        steps = [s for s in STEPS if any(s in v for v in per_model.values())]
    unknown = [o for o in args.only + list(per_model) if o not in {m["id"] for m in models}]
    if unknown:
        log(f"unknown model id(s): {', '.join(unknown)}")
        return 2
    expected = {}
    if os.path.exists(args.expected):
        with open(args.expected) as f:
            expected = json.load(f).get("models", {})

    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        tmp, ctx = os.path.abspath(args.keep), None
    else:
        ctx = tempfile.TemporaryDirectory(prefix="qsteer-zoo-")
        tmp = ctx.name
    report = {"qsteer": args.qsteer, "onnxruntime": ort.__version__, "calibration_size": args.calibration_size,
              "timeout": args.timeout, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": {}}
    t_all = time.time()
    report_path = args.report or os.path.join(args.cache, "zoo-report.json")
    lock = threading.Lock()
    selected = [e for e in models if not args.only or e["id"] in args.only]
    for entry in selected:  # table order = models.json order, whatever finishes first
        report["models"][entry["id"]] = {"steps": {}, "pending": True}

    def one(entry):
        model = os.path.join(args.cache, "models", entry["id"], os.path.basename(entry["path"]))
        data_dir = os.path.join(args.cache, "data", entry["id"])
        if not os.path.exists(model) or not os.path.exists(os.path.join(data_dir, "data.json")):
            m = {"skipped": "not in the cache (run tests/zoo/fetch.sh)", "steps": {}}
            log(f"{entry['id']}: not in the cache, skipped")
        else:
            t0 = time.time()
            res = run_model(entry, model, data_dir, args, per_model.get(entry["id"], steps), tmp)
            m = {"model": model, "data": data_dir, "seconds": round(time.time() - t0, 1), "steps": res}
            log(f"{entry['id']}: done in {time.time() - t0:.0f} s: " + " ".join(f"{s}={r['status']}" for s, r in res.items()))
        with lock:  # the report so far, after every model (a long run can be followed)
            report["models"][entry["id"]] = m
            with open(report_path + ".tmp", "w") as f:
                json.dump(report, f, indent=1, default=str)
            os.replace(report_path + ".tmp", report_path)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, selected))
    report["seconds"] = round(time.time() - t_all, 1)
    if ctx:
        ctx.cleanup()

    regressions, fixed = judge(report, expected, steps)
    report["regressions"] = [f"{m} {s}" for m, s in regressions]
    report["fixed"] = [f"{m} {s}" for m, s in fixed]
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    if args.update_expected:
        about = "Per model and step: true when the step is expected to pass with today's qsteer."
        if os.path.exists(args.expected):
            with open(args.expected) as f:
                about = json.load(f).get("about", about)
        exp_doc = {"about": about, "models": dict(expected)}
        for mid, m in report["models"].items():
            if m.get("skipped"):
                continue
            cur = dict(exp_doc["models"].get(mid, {}))
            for s, r in m["steps"].items():
                cur[s] = r["status"] == "ok"
            exp_doc["models"][mid] = {s: cur[s] for s in STEPS if s in cur}
        with open(args.expected, "w") as f:  # one line per model
            rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in exp_doc["models"].items()]
            f.write("{\n" + f' "about": {json.dumps(exp_doc["about"])},\n "models": {{\n' + ",\n".join(rows)
                    + "\n }\n}\n")
        log(f"wrote {args.expected}")
        regressions, fixed = [], []

    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print(f"qsteer zoo: {args.qsteer}; ONNX Runtime {ort.__version__}; calibration {args.calibration_size}; "
              f"{report['seconds']:.0f} s")
        print_table(report, steps, regressions, fixed)
    n_ok = sum(r["status"] == "ok" for m in report["models"].values() for r in m["steps"].values())
    n_all = sum(len(m["steps"]) for m in report["models"].values())
    print(f"zoo: {n_ok} of {n_all} steps ok; {len(regressions)} regression(s), {len(fixed)} fixed; "
          f"report {report_path}", file=sys.stderr)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
