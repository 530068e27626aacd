"""ONNX Runtime's side of `cargo bench --bench zoo_speed`: one zoo model, its first N samples
fed one per call (as qsteer evaluates), timed on request so the bench can interleave ORT's
runs with qsteer's.

    python zoo_speed_ort.py ZOO_DIR CACHE MODEL_ID N

reads commands on stdin, one a line, and answers one line each:

    time T      -> "ok SECONDS": the N samples through a session of T intra-op threads
                   (default graph optimisations, as a user gets them; created once, warmed up)
    profile T   -> "ok JSON": per op type, the milliseconds per sample ORT's own profiler
                   records (its "Node" events), most expensive first
    quit

Errors answer "err MESSAGE". Only numpy and onnxruntime from the zoo venv are needed.
"""

import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    zoo_dir, cache, model_id, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sys.path.insert(0, zoo_dir)
    from run_zoo import load_feeds, sample_feed  # the zoo's own feeding, shared on purpose

    with open(os.path.join(zoo_dir, "models.json")) as f:
        entry = next(m for m in json.load(f)["models"] if m["id"] == model_id)
    model = os.path.join(cache, "models", model_id, os.path.basename(entry["path"]))
    feeds = load_feeds(entry, os.path.join(cache, "data", model_id))
    sessions = {}

    def session(threads, profile=False):
        key = (threads, profile)
        if key not in sessions:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if profile:
                so.enable_profiling = True
                so.profile_file_prefix = f"/tmp/speed-ort-profile-{os.getpid()}"
            sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
            shapes = {i.name: i.shape for i in sess.get_inputs()}
            count = min(n, len(next(iter(feeds.values()))))
            per_sample = [{k: sample_feed(v, i, shapes[k]) for k, v in feeds.items()} for i in range(count)]
            if not profile:
                for f in per_sample[:2]:
                    sess.run(None, f)
            sessions[key] = (sess, per_sample)
        return sessions[key]

    def timed(threads):
        sess, per_sample = session(threads)
        t0 = time.perf_counter()
        for f in per_sample:
            sess.run(None, f)
        return time.perf_counter() - t0

    def profiled(threads):
        sess, per_sample = session(threads, profile=True)
        for f in per_sample:
            sess.run(None, f)
        path = sess.end_profiling()
        sessions.pop((threads, True))
        with open(path) as f:
            events = json.load(f)
        os.remove(path)
        by_op = {}
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            op = e.get("args", {}).get("op_name", "?")
            count, us = by_op.get(op, (0, 0.0))
            by_op[op] = (count + 1, us + e.get("dur", 0))
        per = max(1, len(per_sample))
        rows = [{"op": op, "calls_per_sample": c / per, "ms": us / 1e3 / per} for op, (c, us) in by_op.items()]
        rows.sort(key=lambda r: -r["ms"])
        return rows

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "quit":
                return
            if words[0] == "time":
                print(f"ok {timed(int(words[1])):.6f}", flush=True)
            elif words[0] == "profile":
                print("ok " + json.dumps(profiled(int(words[1]))), flush=True)
            else:
                print(f"err unknown command {words[0]!r}", flush=True)
        except Exception as e:  # the bench reports it and goes on without ORT for this model
            print("err " + " ".join(str(e).split()), flush=True)


if __name__ == "__main__":
    main()
