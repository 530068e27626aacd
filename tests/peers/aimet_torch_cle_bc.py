#!/usr/bin/env python3
"""aimet-torch's CLE then bias correction (AIMET's default: empirical for every layer) on a
sample model converted to PyTorch with onnx2torch, scored by aimet-onnx's simulation; prints
one JSON document (the `cle_bc` row's AIMET cell, issue #17; aimet-onnx 2.42 has no bias
correction).

    python aimet_torch_cle_bc.py MODEL.onnx --data sample-models/digits [--work DIR]

1. The Clip(0, 6) between two Convs (BatchNormalizations folded) become Relu in the ONNX
   model (as the `cle` row does for aimet-onnx and qsteer's `--relu6-to-relu`), which
   onnx2torch then converts.
2. aimet-torch `equalize_model` (folds the BatchNormalizations, scales, absorbs high biases),
   then `correct_bias` with W4A8 asymmetric tf_enhanced `QuantParams`, all 200 calibration
   samples for both its encodings and the correction, `perform_only_empirical_bias_corr`
   left at its default (True).
3. The corrected Conv/Linear weights and biases are written back into the same ONNX model
   with its BatchNormalizations folded by aimet-onnx (the model the `cle` row simulates), and
   scored by aimet-onnx's `QuantizationSimModel` exactly as the other AIMET cells: the cell
   compares bias correction, not two simulations.

The check the README asks for: the same path without step 2's bias correction (aimet-torch's
CLE alone, simulated by aimet-onnx) must reproduce aimet-onnx's own `cle` cell; both scores
are in the JSON (`cle_accuracy`, `accuracy`). Runs in the aimet-torch venv (venv-torch.sh),
which sees the peers venv's packages. Exit code 0 done, 2 bad arguments.
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402 (the shared AIMET settings, the Relu6 conversion)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def torch_config(work):
    """aimet-torch's default_config.json with asymmetric weights, per tensor (the row's grid;
    peers.aimet_config does the same for aimet-onnx)."""
    import aimet_torch

    src = Path(aimet_torch.__file__).parent / "common" / "quantsim_config" / "default_config.json"
    if not src.exists():
        import aimet_common

        src = Path(aimet_common.__file__).parent / "quantsim_config" / "default_config.json"
    cfg = json.loads(src.read_text())
    cfg["defaults"]["params"]["is_symmetric"] = "False"
    cfg["defaults"]["per_channel_quantization"] = "False"
    path = Path(work) / "aimet_torch_config_pt.json"
    path.write_text(json.dumps(cfg, indent=1))
    return str(path)


def write_back(torch_model, onnx_model):
    """Every Conv/Gemm of `onnx_model` takes the weight and bias of the torch module of the
    same name (onnx2torch names `a/b` the node `a.b`); a bias the correction added is added as
    an initializer. Returns how many layers were written."""
    from onnx import numpy_helper

    modules = dict(torch_model.named_modules())
    inits = {t.name: t for t in onnx_model.graph.initializer}
    written = 0
    for node in onnx_model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        m = modules.get(node.name.replace(".", "/")) or modules.get(node.name)
        if m is None:
            raise RuntimeError(f"no torch module for ONNX node {node.name}")
        w = m.weight.detach().cpu().numpy().astype(np.float32)
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if not trans_b:
                w = w.T
        old = inits[node.input[1]]
        if tuple(old.dims) != w.shape:
            raise RuntimeError(f"{node.name}: weight {tuple(old.dims)} in ONNX, {w.shape} in torch")
        old.CopyFrom(numpy_helper.from_array(w, old.name))
        if m.bias is not None:
            b = m.bias.detach().cpu().numpy().astype(np.float32)
            if len(node.input) > 2 and node.input[2]:
                t = inits[node.input[2]]
                t.CopyFrom(numpy_helper.from_array(b.reshape(tuple(t.dims)), t.name))
            else:
                name = f"{node.name}.bias_corrected"
                onnx_model.graph.initializer.append(numpy_helper.from_array(b, name))
                while len(node.input) < 2:
                    node.input.append("")
                node.input.append(name)
        written += 1
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="directory with calibration/ and evaluation/")
    ap.add_argument("--work", help="working directory (AIMET's exports)")
    args = ap.parse_args()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    model_path = Path(args.model).resolve()
    data = Path(args.data).resolve()
    for p in (model_path, *(data / s / f for s in ("calibration", "evaluation")
                            for f in ("inputs.npy", "labels.npy"))):
        if not p.exists():
            log(f"aimet_torch_cle_bc: {p} does not exist")
            return 2
    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / "aimet-torch-cle-bc"
    work.mkdir(parents=True, exist_ok=True)

    import onnx
    import torch
    from onnx2torch import convert
    import aimet_torch
    from aimet_torch._base.quantsim import QuantParams
    from aimet_torch.bias_correction import correct_bias
    from aimet_torch.cross_layer_equalization import equalize_model
    from aimet_onnx.batch_norm_fold import fold_all_batch_norms_to_weight

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    calib_x = np.load(data / "calibration" / "inputs.npy").astype(np.float32)
    calib_y = np.load(data / "calibration" / "labels.npy").astype(np.int64)
    evaluation = (np.load(data / "evaluation" / "inputs.npy").astype(np.float32),
                  np.load(data / "evaluation" / "labels.npy"))
    aimet = peers.Aimet(work, (calib_x, calib_y), evaluation)

    source = onnx.load(str(model_path))
    # The Clips between two Convs are found on the folded model (on the shipped one a
    # BatchNormalization sits between Conv and Clip) and turned into Relu in both.
    target = copy.deepcopy(source)
    fold_all_batch_norms_to_weight(target)
    converted = peers.relu6_between_convs_to_relu(target)
    for node in source.graph.node:
        if node.name in converted:
            node.op_type = "Relu"
            del node.input[1:]
    input_shape = (1, *calib_x.shape[1:])

    def score(torch_model, tag):
        m = copy.deepcopy(target)
        written = write_back(torch_model, m)
        sim = aimet.sim(m, "tf_enhanced", False)
        sim.compute_encodings(aimet.batches())
        acc = aimet.accuracy(sim.session)
        d = work / f"aimet-torch-{tag}"
        d.mkdir(parents=True, exist_ok=True)
        sim.export(str(d), "model")
        return acc, written, str(d / "model.encodings")

    model = convert(source).eval()
    start = time.perf_counter()
    equalize_model(model, input_shape)
    cle_seconds = time.perf_counter() - start
    cle_accuracy, _, _ = score(model, "cle")

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(calib_x), torch.from_numpy(calib_y)),
        batch_size=peers.AIMET_BATCH, shuffle=False)
    params = QuantParams(weight_bw=peers.W_BITS, act_bw=peers.A_BITS, round_mode="nearest",
                         quant_scheme="tf_enhanced",
                         config_file=torch_config(work))
    n = len(calib_x)
    # aimet-torch's simulation refuses modules it has no quantized form of (onnx2torch's
    # Add and global pool): bias correction quantizes the layers' weights only (it turns the
    # output quantizers off), so those modules are left unquantized.
    from aimet_torch.v2.nn import QuantizationMixin

    for cls in {type(m) for m in model.modules()}:
        if cls.__module__.startswith("onnx2torch"):
            QuantizationMixin.ignore(cls)
    start = time.perf_counter()
    correct_bias(model, params, num_quant_samples=n, data_loader=loader, num_bias_correct_samples=n)
    bc_seconds = time.perf_counter() - start
    accuracy, written, encodings = score(model, "cle-bc")

    doc = {
        "tool": "aimet-torch",
        "version": getattr(aimet_torch, "__version__", "?"),
        "torch": torch.__version__,
        "model": str(model_path),
        "relu6_to_relu": converted,
        "layers_written": written,
        "calibration_samples": n,
        "cle_accuracy": cle_accuracy,
        "accuracy": accuracy,
        "cle_seconds": round(cle_seconds, 2),
        "bc_seconds": round(bc_seconds, 2),
        "encodings": encodings,
    }
    print(json.dumps(doc, indent=1), file=out)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
