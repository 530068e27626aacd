#!/usr/bin/env python3
"""ONNX Runtime FP32 throughput (images/s) of the sample models on the evaluation set.

    tests/interop/run.sh --bench [--json] [--min-seconds S] [--models mbv2_digits ...]
    (or: target/interop-venv/bin/python tests/interop/ort_bench.py ...)

For every sample model, batch size (1, 32), thread setting (intra_op_num_threads=1, and ORT's
default) and graph optimization level (ORT_DISABLE_ALL, ORT's default ORT_ENABLE_ALL) it runs
whole passes over sample-models/digits/evaluation/inputs.npy (the last batch may be partial)
after one warm-up pass, repeating passes until --min-seconds have elapsed, and reports
images/s of the median pass. A reference point for qsteer's own `benchmark` numbers; nothing
here is asserted.
"""

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPT_LEVELS = {"disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "default": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def bench(model, x, batch, threads, opt, min_seconds):
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[opt]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = sess.get_outputs()[0].name
    chunks = [x[i:i + batch] for i in range(0, len(x), batch)]

    def one_pass():
        t0 = time.perf_counter()
        for c in chunks:
            sess.run([out], {name: c})
        return time.perf_counter() - t0

    one_pass()  # warm-up
    times, start = [], time.perf_counter()
    while not times or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        times.append(one_pass())
    med = float(np.median(times))
    return {"images_per_s": len(x) / med, "ms_per_batch": 1000 * med / len(chunks), "passes": len(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time per configuration (default 1)")
    ap.add_argument("--models", nargs="*", help="model names (default: every sample-models/*.onnx)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    args = ap.parse_args()

    x = np.load(os.path.join(ROOT, "sample-models", "digits", "evaluation", "inputs.npy"))
    models = sorted(glob.glob(os.path.join(ROOT, "sample-models", "*.onnx")))
    if args.models:
        models = [m for m in models if os.path.basename(m)[:-5] in args.models]
    if not models:
        print("ort_bench: no models", file=sys.stderr)
        return 2
    rows = []
    for m in models:
        for batch in args.batches:
            for threads in (1, 0):
                for opt in ("disable_all", "default"):
                    r = bench(m, x, batch, threads, opt, args.min_seconds)
                    rows.append({"model": os.path.basename(m)[:-5], "batch": batch,
                                 "threads": threads or "default", "graph_opt": opt, **r})
                    print(f"ort_bench: {rows[-1]}", file=sys.stderr, flush=True)
    meta = {"onnxruntime": ort.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "samples": int(len(x)), "min_seconds": args.min_seconds}
    if args.json:
        print(json.dumps({**meta, "results": rows}, indent=1))
    else:
        print(f"ONNX Runtime {ort.__version__} FP32, {len(x)} evaluation images, {os.cpu_count()} CPUs")
        hdr = f"{'model':16s} {'batch':>5s} {'threads':>8s} {'graph_opt':>12s} {'images/s':>10s} {'ms/batch':>9s}"
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            print(f"{r['model']:16s} {r['batch']:5d} {str(r['threads']):>8s} {r['graph_opt']:>12s} "
                  f"{r['images_per_s']:10.1f} {r['ms_per_batch']:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
