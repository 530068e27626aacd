#!/usr/bin/env python3
"""aimet-torch's spatial SVD with greedy per-layer ratio selection, no fine-tuning, on a sample
model converted to PyTorch with onnx2torch; prints one JSON document (issue #17 item 3).

    python aimet_torch_ssvd.py MODEL.onnx --data sample-models/digits [--target 0.5]
                               [--candidates 10] [--work DIR]

The eval callback scores top-1 accuracy on DATA/evaluation (all samples, every call), the same
samples qsteer's greedy scores its dictionary on. The JSON has, per candidate layer (graph
order): the rank each candidate ratio gives (AIMET's SpatialSvdCostCalculator), the factor
shapes at that rank, the eval-score dictionary and the greedy's choice; then the compressed
model's accuracy, AIMET's MAC ratio and the wall time of `compress_model`. Runs in the
aimet-torch venv (tests/peers/venv-torch.sh). Exit code 0 done, 2 bad arguments.
"""

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="directory with evaluation/inputs.npy, labels.npy")
    ap.add_argument("--target", type=float, default=0.5, help="MAC ratio of the result")
    ap.add_argument("--candidates", type=int, default=10, help="N of the candidate ratios k/N")
    ap.add_argument("--work", help="working directory (AIMET writes ./data/*.pkl there)")
    args = ap.parse_args()
    # AIMET logs to stdout: keep the real stdout for the JSON, send the rest to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    model_path = Path(args.model).resolve()
    data = Path(args.data).resolve()
    for p in (model_path, data / "evaluation" / "inputs.npy", data / "evaluation" / "labels.npy"):
        if not p.exists():
            log(f"aimet_torch_ssvd: {p} does not exist")
            return 2
    if not (0.0 < args.target < 1.0) or args.candidates < 2:
        log("aimet_torch_ssvd: --target must be in (0, 1) and --candidates at least 2")
        return 2

    import onnx
    import torch
    from onnx2torch import convert
    import aimet_torch
    from aimet_torch.common.cost_calculator import CostCalculator, SpatialSvdCostCalculator
    from aimet_torch.common.defs import CompressionScheme, CostMetric, GreedySelectionParameters
    from aimet_torch.compress import ModelCompressor
    from aimet_torch.defs import SpatialSvdParameters
    from aimet_torch.layer_database import LayerDatabase

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x = torch.from_numpy(np.load(data / "evaluation" / "inputs.npy").astype(np.float32))
    y = torch.from_numpy(np.load(data / "evaluation" / "labels.npy").astype(np.int64))

    def evaluate(model, _iterations, use_cuda=False):
        model.eval()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    model = convert(onnx.load(str(model_path))).eval()
    input_shape = (1, *x.shape[1:])
    # The layers as AIMET sees them, for the ranks and factor shapes of each candidate.
    layer_db = LayerDatabase(model, torch.zeros(input_shape))
    candidates = [Decimal(k) / Decimal(args.candidates) for k in range(1, args.candidates)]
    layers = []
    for layer in layer_db:
        m = layer.module
        if not isinstance(m, torch.nn.Conv2d) or m.groups != 1:
            continue
        o, i, kh, kw = layer.weight_shape
        ranks = {}
        for c in candidates:
            r = SpatialSvdCostCalculator.calculate_rank_given_comp_ratio(layer, c, CostMetric.mac)
            cost = SpatialSvdCostCalculator.calculate_cost_given_rank(layer, r)
            ranks[str(c)] = {"rank": r, "macs": int(cost.mac),
                             "shapes": [[r, i, kh, 1], [o, r, 1, kw]]}
        layers.append({"layer": layer.name, "weight": [o, i, kh, kw],
                       "macs": int(CostCalculator.compute_layer_cost(layer).mac),
                       "full_rank": SpatialSvdCostCalculator.calculate_max_rank(layer),
                       "candidates": ranks})

    params = SpatialSvdParameters(
        SpatialSvdParameters.Mode.auto,
        SpatialSvdParameters.AutoModeParams(
            GreedySelectionParameters(target_comp_ratio=Decimal(str(args.target)),
                                      num_comp_ratio_candidates=args.candidates)))
    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / "aimet-torch-ssvd"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    baseline = evaluate(model, None)
    start = time.perf_counter()
    compressed, stats = ModelCompressor.compress_model(
        model, evaluate, 1, input_shape, CompressionScheme.spatial_svd, CostMetric.mac, params)
    seconds = time.perf_counter() - start
    accuracy = evaluate(compressed, None)

    scores = stats.compression_ratio_selection_stats.eval_scores_dictionary
    chosen = {s.name: (None if s.compression_ratio is None else str(s.compression_ratio))
              for s in stats.per_layer_stats}
    for entry in layers:
        entry["scores"] = {str(k): float(v) for k, v in sorted(scores.get(entry["layer"], {}).items())}
        entry["chosen"] = chosen.get(entry["layer"])
        if entry["chosen"] is not None:
            r = entry["candidates"].get(str(Decimal(entry["chosen"])))
            entry["chosen_rank"] = r["rank"] if r else None
    doc = {
        "tool": "aimet-torch",
        "version": getattr(aimet_torch, "__version__", "?"),
        "torch": torch.__version__,
        "model": str(model_path),
        "target": args.target,
        "candidates": args.candidates,
        "samples": int(len(x)),
        "baseline_accuracy": baseline,
        "accuracy": accuracy,
        "aimet_accuracy": float(stats.compressed_model_accuracy),
        "mac_ratio": float(stats.mac_compression_ratio),
        "seconds": round(seconds, 2),
        "layers": layers,
    }
    print(json.dumps(doc, indent=1), file=out)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
