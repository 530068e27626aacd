#!/usr/bin/env python3
"""qsteer against AIMET (aimet-onnx) and ONNX Runtime on the sample models: the post-training
rows of issue #17, one table.

Both tools get the same model file, the same 200 calibration samples and are scored on the same
400 evaluation samples (sample-models/digits). Every setting is W4A8 (4-bit weights, 8-bit
activations), asymmetric, per tensor unless the row says per channel. See README.md.

    python peers.py --qsteer QSTEER_BIN [--models mbv2,resnet] [--rows ROW,...] [--json]
                    [--table-out FILE] [--iterations 200] [--keep DIR] [--tools aimet,ort,...]
    python peers.py --from-json REPORT.json [MORE.json ...] [--table-out FILE] [--json]

Tools can run apart (e.g. AIMET's slow AdaRound in the background while qsteer builds) and
their --json reports be merged into one table by --from-json with several files.

Exit code: 0 done, 1 a tool failed on a row (the table shows "error"), 2 bad arguments.
"""

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample-models"
DATA = SAMPLES / "digits"
MODELS = {"mbv2": "mbv2_digits.onnx", "resnet": "resnet_digits.onnx"}
W_BITS, A_BITS = 4, 8
# AIMET's AdaRound draws BATCH_SIZE = 32 samples per iteration from one loader batch.
AIMET_BATCH = 32

# Row id -> (label, what each tool runs). Order is the table's.
ROWS = {
    "tf_enhanced": "tf_enhanced, as shipped (BN unfolded)",
    "tf_enhanced_folded": "tf_enhanced, BN folded",
    "per_channel": "per channel, tf_enhanced, BN folded",
    "minmax": "minmax, BN folded",
    "cle": "CLE (BN folded, Relu6 → Relu), tf_enhanced",
    "cle_bc": "CLE + bias correction, tf_enhanced",
    "adaround": "AdaRound, {it} iterations, BN folded",
    "ssvd": "spatial SVD to {c} MACs, greedy, no fine-tuning (FP32)",
    "ssvd_reconstruct": "spatial SVD to {c} MACs, greedy, then layer-wise reconstruction (FP32)",
}
# The spatial SVD rows: compression, not quantization (aimet-torch; see aimet_torch_ssvd.py).
SSVD_ROWS = ("ssvd", "ssvd_reconstruct")
SSVD_TARGET = 0.5
# The `qsteer_qw` tool: qsteer with activations calibrated on the weight-quantized model.
QW_FLAGS = ("--calibrate-on", "quantized-weights")
TOOLS = ("aimet", "aimet_torch", "ort", "qsteer", "qsteer_qw")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load_split(name):
    x = np.load(DATA / name / "inputs.npy").astype(np.float32)
    y = np.load(DATA / name / "labels.npy")
    return x, y


# ---------------------------------------------------------------- qsteer


class Qsteer:
    """qsteer's defaults; `extra` flags go on every command (tool `qsteer_qw`: activations
    calibrated with the weights already quantized, AIMET's order)."""

    def __init__(self, binary, work, extra=(), name="qsteer"):
        self.binary = binary
        self.work = Path(work)
        self.build = qsteer_build(binary)
        self.extra = list(extra)
        self.name = name

    def run(self, args, tag):
        ws = self.work / f"ws-{tag}"
        cmd = [self.binary, *args, "--data", str(DATA), "--json", "--workspace", str(ws)]
        start = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-800:]}")
        return json.loads(p.stdout), seconds

    def fold(self, model, tag):
        out = self.work / f"{tag}-folded.onnx"
        cmd = [self.binary, "fold-bn", str(model), "--out", str(out), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"fold-bn exited {p.returncode}: {p.stderr.strip()[-800:]}")
        return out

    def row(self, row, model, tag, iterations):
        grid = ["--w-bits", str(W_BITS), "--a-bits", str(A_BITS)]
        m = str(model)
        if row == "tf_enhanced":
            args = ["quantsim", m, *grid]
        elif row == "tf_enhanced_folded":
            args = ["quantsim", str(self.fold(model, tag)), *grid]
        elif row == "per_channel":
            args = ["quantsim", str(self.fold(model, tag)), *grid, "--per-channel"]
        elif row == "minmax":
            # BN folded: ONNX Runtime's pre-processing folds it, so every tool gets the same
            # weights to quantize; minmax weights too, as AIMET's one quant_scheme and ORT's
            # MinMax do (qsteer's default weight scheme at 4 bit is tf_enhanced).
            args = ["quantsim", str(self.fold(model, tag)), *grid, "--scheme", "minmax",
                    "--weight-scheme", "same"]
        elif row == "cle":
            args = ["fix", m, "--chain", "fold-bn,cle,quantsim", "--relu6-to-relu", *grid]
        elif row == "cle_bc":
            args = ["fix", m, "--chain", "fold-bn,cle,bc,quantsim", "--relu6-to-relu", *grid]
        elif row == "adaround":
            args = ["fix", m, "--chain", "fold-bn,adaround,quantsim", *grid,
                    "--iterations", str(iterations)]
        elif row in SSVD_ROWS:
            args = ["compress", m, "--method", "ssvd", "--target", str(SSVD_TARGET)]
            if row == "ssvd_reconstruct":
                args.append("--reconstruct")
        else:
            raise ValueError(row)
        if row not in SSVD_ROWS:
            args += self.extra
        doc, seconds = self.run(args, f"{tag}-{row}{'-' + self.name if self.extra else ''}")
        shown = [os.path.relpath(a, ROOT) if a == m else ("folded.onnx" if a.endswith("-folded.onnx") else a)
                 for a in args]
        command = " ".join(["qsteer", *shown, "--data", "sample-models/digits", "--json"])
        if "folded.onnx" in shown:
            command = f"qsteer fold-bn {os.path.relpath(m, ROOT)} --out folded.onnx && {command}"
        result = {"accuracy": doc["accuracy"], "seconds": round(seconds, 2), "command": command,
                  "build": self.build}
        if row in SSVD_ROWS:
            # The compression's own time (the dictionary is cached per workspace: fresh here).
            result.update(fix_seconds=round(doc["seconds"], 2), mac_ratio=doc["mac_ratio"],
                          ratios=doc["ratios"], evaluations=doc["evaluations"],
                          before_reconstruction=doc.get("before_reconstruction"))
        if self.extra:
            result["flags"] = " ".join(self.extra)
        for step in doc.get("steps", []):
            if step.get("step", "").startswith("adaround") and "seconds" in step:
                result["fix_seconds"] = round(step["seconds"], 2)
        enc = doc.get("encodings") or (doc.get("steps") or [{}])[-1].get("encodings")
        # Relative to the work directory (--keep DIR), where it stays.
        result["encodings"] = os.path.relpath(enc, self.work) if enc else None
        return result


# ---------------------------------------------------------------- AIMET


def aimet_config(work, per_channel):
    """AIMET's default_config.json with asymmetric weights (qsteer's default grid; AIMET's own
    default, symmetric weights, scores lower at 4 bit on these models) and the granularity."""
    import aimet_onnx

    src = Path(aimet_onnx.__file__).parent / "common" / "quantsim_config" / "default_config.json"
    cfg = json.loads(src.read_text())
    cfg["defaults"]["params"]["is_symmetric"] = "False"
    cfg["defaults"]["per_channel_quantization"] = "True" if per_channel else "False"
    path = Path(work) / f"aimet_config_{'pc' if per_channel else 'pt'}.json"
    path.write_text(json.dumps(cfg, indent=1))
    return str(path)


def relu6_between_convs_to_relu(model):
    """Clip(0, 6) between two Convs becomes Relu, as AIMET's CLE does itself (its pass only
    recognises Clip bounds given by Constant nodes; here they are initializers) and as qsteer's
    `--relu6-to-relu` does. Returns the names converted."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: t for t in model.graph.initializer}
    from onnx import numpy_helper

    converted = []
    for n in model.graph.node:
        if n.op_type != "Clip" or len(n.input) < 3:
            continue
        lo, hi = (inits.get(n.input[1]), inits.get(n.input[2]))
        if lo is None or hi is None:
            continue
        if float(numpy_helper.to_array(lo)) != 0.0:
            continue
        parent = producers.get(n.input[0])
        kids = consumers.get(n.output[0], [])
        if parent is None or parent.op_type != "Conv" or len(kids) != 1 or kids[0].op_type != "Conv":
            continue
        n.op_type = "Relu"
        del n.input[1:]
        converted.append(n.name)
    return converted


class Aimet:
    def __init__(self, work, calib, evaluation):
        import aimet_onnx  # noqa: F401 (fail early with the import error)

        self.work = Path(work)
        self.calib_x = calib[0]
        self.eval_x, self.eval_y = evaluation

    def batches(self):
        x = self.calib_x
        return [{"input": x[i:i + AIMET_BATCH]} for i in range(0, len(x), AIMET_BATCH)]

    def accuracy(self, session):
        correct = 0
        for i in range(0, len(self.eval_x), 100):
            logits = session.run(None, {"input": self.eval_x[i:i + 100]})[0]
            correct += int((logits.argmax(1) == self.eval_y[i:i + 100]).sum())
        return correct / len(self.eval_x)

    def sim(self, model, scheme, per_channel):
        from aimet_onnx import QuantizationSimModel

        return QuantizationSimModel(
            model,
            param_type=f"int{W_BITS}",
            activation_type=f"int{A_BITS}",
            quant_scheme=scheme,
            config_file=aimet_config(self.work, per_channel),
        )

    def row(self, row, model_path, tag, iterations):
        import onnx
        from aimet_onnx.batch_norm_fold import fold_all_batch_norms_to_weight
        from aimet_onnx.cross_layer_equalization import equalize_model

        if row in SSVD_ROWS:
            return None
        model = onnx.load(str(model_path))
        scheme, per_channel, note = "tf_enhanced", False, None
        if row == "tf_enhanced":
            pass
        elif row in ("tf_enhanced_folded", "adaround"):
            fold_all_batch_norms_to_weight(model)
        elif row == "per_channel":
            fold_all_batch_norms_to_weight(model)
            per_channel = True
        elif row == "minmax":
            fold_all_batch_norms_to_weight(model)
            scheme = "min_max"
        elif row == "cle":
            fold_all_batch_norms_to_weight(model)
            relu6_between_convs_to_relu(model)
            equalize_model(model)
        elif row == "cle_bc":
            return {"accuracy": None, "note": "aimet-onnx 2.42 has no bias correction"}
        else:
            raise ValueError(row)
        sim = self.sim(model, scheme, per_channel)
        seconds = None
        if row == "adaround":
            from aimet_onnx import apply_adaround

            start = time.perf_counter()
            apply_adaround(sim, self.batches(), num_iterations=iterations)
            seconds = time.perf_counter() - start
        sim.compute_encodings(self.batches())
        accuracy = self.accuracy(sim.session)
        out = self.work / f"aimet-{tag}-{row}"
        out.mkdir(parents=True, exist_ok=True)
        sim.export(str(out), "model")
        result = {"accuracy": accuracy, "encodings": str((out / "model.encodings").relative_to(self.work))}
        if seconds is not None:
            result["fix_seconds"] = round(seconds, 2)
        if note:
            result["note"] = note
        return result


class AimetTorch:
    """aimet-torch on the model converted with onnx2torch, in its own venv (venv-torch.sh):
    its spatial SVD (greedy, no fine-tuning; aimet_torch_ssvd.py) and its CLE + bias
    correction, scored by aimet-onnx's simulation (aimet_torch_cle_bc.py)."""

    def __init__(self, work):
        self.work = Path(work)
        self.pythons = {}

    def venv(self, script="venv-torch.sh"):
        """The python of aimet-torch's venv (`venv-torch-bc.sh`: the release with bias
        correction)."""
        if script not in self.pythons:
            here = Path(__file__).resolve().parent
            self.pythons[script] = subprocess.run([str(here / script)], check=True,
                                                  capture_output=True, text=True).stdout.strip()
        return self.pythons[script]

    def cle_bc(self, model_path, tag):
        script = Path(__file__).resolve().parent / "aimet_torch_cle_bc.py"
        work = self.work / f"aimet-torch-{tag}-cle_bc"
        cmd = [self.venv("venv-torch-bc.sh"), str(script), str(model_path), "--data", str(DATA),
               "--work", str(work)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"aimet_torch_cle_bc.py exited {p.returncode}: {p.stderr.strip()[-800:]}")
        doc = json.loads(p.stdout)
        (self.work / f"aimet-torch-{tag}-cle_bc.json").write_text(p.stdout)
        return {"accuracy": doc["accuracy"], "cle_accuracy": doc["cle_accuracy"],
                "version": doc["version"],
                "encodings": os.path.relpath(doc["encodings"], self.work),
                "note": "aimet-torch CLE + empirical bias correction on the onnx2torch model, "
                        "scored by aimet-onnx's simulation"}

    def row(self, row, model_path, tag, _iterations):
        if row == "cle_bc":
            return self.cle_bc(model_path, tag)
        if row != "ssvd":
            return None  # aimet-torch's spatial SVD has no layer-wise reconstruction
        python = self.venv()
        script = Path(__file__).resolve().parent / "aimet_torch_ssvd.py"
        work = self.work / f"aimet-torch-{tag}-{row}"
        cmd = [python, str(script), str(model_path), "--data", str(DATA),
               "--target", str(SSVD_TARGET), "--work", str(work)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"aimet_torch_ssvd.py exited {p.returncode}: {p.stderr.strip()[-800:]}")
        doc = json.loads(p.stdout)
        (self.work / f"aimet-torch-{tag}-{row}.json").write_text(p.stdout)
        return {"accuracy": doc["accuracy"], "fix_seconds": doc["seconds"],
                "mac_ratio": doc["mac_ratio"], "version": doc["version"],
                "ratios": {l["layer"].replace("/", "."): float(l["chosen"])
                           for l in doc["layers"] if l["chosen"] is not None},
                "layers": doc["layers"]}


# ---------------------------------------------------------------- ONNX Runtime


class OrtMinmax:
    """ONNX Runtime's quantize_static, MinMax calibration, QDQ, per tensor, after its
    recommended pre-processing (shape inference and graph optimisation, which folds BN).
    The cell is the row's grid, asymmetric uint4 weights; symmetric int4 weights (a weight
    grid the other tools run only with symmetric activations) are measured too and reported
    beside it in the JSON."""

    def __init__(self, work, calib, evaluation):
        self.work = Path(work)
        self.calib_x = calib[0]
        self.eval_x, self.eval_y = evaluation

    def row(self, row, model_path, tag, _iterations):
        if row != "minmax":
            return None
        import onnxruntime as ort
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                              QuantFormat, QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        calib = self.calib_x

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.i = 0

            def get_next(self):
                if self.i >= len(calib):
                    return None
                self.i += AIMET_BATCH
                return {"input": calib[self.i - AIMET_BATCH:self.i]}

        pre = self.work / f"ort-{tag}-pre.onnx"
        quant_pre_process(str(model_path), str(pre))
        scores = {}
        for wtype, sym in ((QuantType.QUInt4, False), (QuantType.QInt4, True)):
            out = self.work / f"ort-{tag}-{wtype.name}.onnx"
            quantize_static(
                str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                activation_type=QuantType.QUInt8, weight_type=wtype,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": sym, "ActivationSymmetric": False},
            )
            s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            correct = 0
            for i in range(0, len(self.eval_x), 100):
                logits = s.run(None, {"input": self.eval_x[i:i + 100]})[0]
                correct += int((logits.argmax(1) == self.eval_y[i:i + 100]).sum())
            scores[wtype.name] = correct / len(self.eval_x)
        return {"accuracy": scores["QUInt4"], "note": "weights asymmetric uint4",
                "symmetric_int4_weights_accuracy": scores["QInt4"]}


def qsteer_build(binary):
    """`debug` or `release` from the binary's path (target/<profile>/qsteer), else its name."""
    parts = Path(binary).resolve().parts
    return parts[-2] if len(parts) >= 2 and parts[-2] in ("debug", "release") else Path(binary).name


# ---------------------------------------------------------------- table


def pct(v):
    return "–" if v is None else f"{100 * v:.2f} %"


def cell(r):
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    s = pct(r.get("accuracy"))
    if r.get("mac_ratio") is not None:
        s += f" at {r['mac_ratio']:.3f} MACs"
    if r.get("fix_seconds") is not None:
        s += f" ({r['fix_seconds']:.1f} s{', ' + r['build'] if r.get('build') else ''})"
    if r.get("symmetric_int4_weights_accuracy") is not None:
        s += f" (symmetric int4 weights: {pct(r['symmetric_int4_weights_accuracy'])})"
    return s


def aimet_cell(results):
    """The AIMET column's cell: aimet-onnx's, or aimet-torch's where aimet-onnx has no number
    (bias correction, spatial SVD)."""
    onnx_cell = results.get("aimet")
    if onnx_cell and (onnx_cell.get("accuracy") is not None or "error" in onnx_cell):
        return onnx_cell
    return results.get("aimet_torch") or onnx_cell


def markdown(report):
    models = report["models"]
    quant = any(row["row"] not in SSVD_ROWS for row in report["rows"])
    qw = any("qsteer_qw" in r for row in report["rows"] for r in row["results"].values())
    head = f"| setting ({'W4A8' if quant else 'FP32'}, {report['evaluation_samples']} evaluation samples) |"
    rule = "| --- |"
    for m in models:
        head += f" AIMET {m} | ORT {m} | qsteer {m} |"
        rule += " ---: | ---: | ---: |"
        if qw:
            head += f" qsteer {m}, `--calibrate-on quantized-weights` |"
            rule += " ---: |"
    lines = [head, rule]
    for row in report["rows"]:
        line = f"| {row['setting']} |"
        for m in models:
            r = row["results"][m]
            aimet = aimet_cell(r)
            line += f" {cell(aimet)} | {cell(r.get('ort'))} | {cell(r.get('qsteer'))} |"
            if qw:
                line += f" {cell(r.get('qsteer_qw'))} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


NOTES = Path(__file__).resolve().parent / "notes.json"


def trailing(report):
    """(row, model, qsteer, best peer, peer's tool) wherever qsteer scores below the best
    peer's accuracy."""
    out = []
    for row in report["rows"]:
        for m in report["models"]:
            r = row["results"].get(m, {})
            q = (r.get("qsteer") or {}).get("accuracy")
            peers = [(v.get("accuracy"), tool) for tool, v in r.items()
                     if not tool.startswith("qsteer") and v and v.get("accuracy") is not None]
            if q is None or not peers:
                continue
            best, tool = max(peers)
            if q < best - 1e-9:
                out.append((row, m, q, best, tool))
    return out


def trailing_notes(report):
    """The list under the table: each cell where qsteer trails, by how many samples, and the
    measured reason from notes.json (`{"row": {"model": "why"}}`) where one is recorded."""
    lines = []
    notes = json.loads(NOTES.read_text()) if NOTES.exists() else {}
    n = report["evaluation_samples"]
    for row, m, q, best, tool in trailing(report):
        behind = round((best - q) * n)
        why = notes.get(row["row"], {}).get(m, "No measured cause recorded yet.")
        qw = (row["results"][m].get("qsteer_qw") or {}).get("accuracy")
        if qw is not None:
            why += f" (`--calibrate-on quantized-weights`: {pct(qw)}.)"
        name = {"aimet": "AIMET", "aimet_torch": "aimet-torch", "ort": "ORT"}.get(tool, tool)
        lines.append(f"- {row['setting']}, {m}: qsteer {pct(q)} against {name} {pct(best)} "
                     f"({behind} sample{'s' if behind != 1 else ''} of {n}). {why}")
    if not lines:
        return "qsteer scores at or above the best peer in every cell.\n"
    return "Where qsteer trails:\n\n" + "\n".join(lines) + "\n"


def markers(name):
    """The lines around a generated table (`name` is "peers table" for the main one)."""
    return (f"<!-- {name}: generated by tests/peers/peers.py, do not edit -->",
            f"<!-- end of {name} -->")


BEGIN, END = markers("peers table")


def merge_reports(reports):
    """One report from several runs of the same rows' settings (e.g. `--tools aimet,ort` and
    `--tools qsteer`): per row and model, every tool's cell; a tool measured twice keeps the
    later report's. Reports with other grids or samples are refused (ValueError)."""
    same = ("w_bits", "a_bits", "calibration_samples", "evaluation_samples", "adaround_iterations")
    merged = copy.deepcopy(reports[0])
    for r in merged["rows"]:
        for tools in r["results"].values():
            if "qsteer" in tools and merged.get("qsteer_build"):
                tools["qsteer"].setdefault("build", merged["qsteer_build"])
    dates = {merged["date"]}
    for other in reports[1:]:
        differ = [k for k in same if other.get(k) != merged.get(k)]
        if differ:
            raise ValueError(f"the reports differ in {', '.join(differ)}: not one comparison")
        merged["models"] += [m for m in other["models"] if m not in merged["models"]]
        merged["versions"].update(other.get("versions", {}))
        if other.get("qsteer_build"):
            builds = {merged.get("qsteer_build"), other["qsteer_build"]} - {None}
            merged["qsteer_build"] = "/".join(sorted(builds))
        dates.add(other["date"])
        rows = {r["row"]: r for r in merged["rows"]}
        for r in other["rows"]:
            if r["row"] not in rows:
                rows[r["row"]] = copy.deepcopy(r)
                merged["rows"].append(rows[r["row"]])
                continue
            for m, tools in r["results"].items():
                for tool, result in tools.items():
                    result = dict(result)
                    if tool.startswith("qsteer") and other.get("qsteer_build"):
                        result.setdefault("build", other["qsteer_build"])
                    rows[r["row"]]["results"].setdefault(m, {})[tool] = result
    order = list(ROWS)
    merged["rows"].sort(key=lambda r: order.index(r["row"]) if r["row"] in order else len(order))
    merged["date"] = " and ".join(sorted(dates))
    merged["merged_from"] = len(reports)
    return merged


def generated_block(report):
    v = report["versions"]
    if all(row["row"] in SSVD_ROWS for row in report["rows"]):
        return (
            f"{markdown(report)}\n"
            f"Measured {report['date']} by `tests/peers/run.sh` (aimet-torch "
            f"{v.get('aimet_torch', '?')} on the model converted with onnx2torch, qsteer "
            f"`{report.get('qsteer_build', '?')}`); FP32, greedy to {SSVD_TARGET} MACs over "
            f"candidates k/10, dictionary and score on the {report['evaluation_samples']} "
            "evaluation samples. Times in brackets are the whole compression (dictionary, "
            "selection, split; reconstruction where the row has it).\n"
        )
    return (
        f"{markdown(report)}\n"
        f"{trailing_notes(report)}\n"
        f"Measured {report['date']} by `tests/peers/run.sh` (aimet-onnx {v.get('aimet_onnx', '?')}, "
        f"onnxruntime {v.get('onnxruntime', '?')}, torch {v.get('torch', '?')}, "
        f"qsteer `{report.get('qsteer_build', '?')}`); W{report['w_bits']}A{report['a_bits']}, "
        f"{report['calibration_samples']} calibration and {report['evaluation_samples']} "
        "evaluation samples. Times in brackets are the AdaRound step alone (with qsteer's build)"
        + ("" if not any(row["row"] in SSVD_ROWS for row in report["rows"]) else
           ", and for the spatial SVD rows the whole compression (dictionary, selection, split); "
           f"their AIMET column is aimet-torch {v.get('aimet_torch', '?')} (the model converted "
           "with onnx2torch)")
        + ".\n" + torch_bc_note(report)
    )


def torch_bc_note(report):
    """Where the `cle_bc` row's AIMET cell is aimet-torch's: what ran, and the check that its
    CLE alone reproduces aimet-onnx's `cle` cell."""
    rows = {r["row"]: r for r in report["rows"]}
    bc = rows.get("cle_bc", {}).get("results", {})
    cle = rows.get("cle", {}).get("results", {})
    checks, versions = [], set()
    for m in report["models"]:
        t = bc.get(m, {}).get("aimet_torch")
        if not t or t.get("accuracy") is None:
            continue
        versions.add(t.get("version", "?"))
        onnx_cle = (cle.get(m, {}).get("aimet") or {}).get("accuracy")
        checks.append(f"{m} {pct(t.get('cle_accuracy'))} (aimet-onnx's `cle` cell {pct(onnx_cle)})")
    if not checks:
        return ""
    v = "/".join(sorted(versions))
    return (
        f"\nThe AIMET cells of the CLE + bias correction row are aimet-torch {v}'s: its "
        "`equalize_model` and `correct_bias` (empirical, W4A8 tf_enhanced, the 200 calibration "
        "samples) on the model converted with onnx2torch, the weights written back into the "
        "BN-folded ONNX model and scored by aimet-onnx's simulation like every other AIMET cell "
        "(`aimet_torch_cle_bc.py`). The same path without bias correction scores "
        + ", ".join(checks) + ".\n"
    )


def write_table(path, report, marker="peers table"):
    """The table into `path`: between the markers when the file has them, else the whole file.
    Written to a temporary file and renamed, so a failed run leaves the old file."""
    path = Path(path)
    begin, end = markers(marker)
    block = generated_block(report)
    text = block
    if path.exists():
        old = path.read_text()
        if begin in old and end in old:
            head, rest = old.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{begin}\n{block}{end}{tail}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qsteer", help="the qsteer binary (needed unless --from-json)")
    ap.add_argument("--from-json", nargs="+", metavar="REPORT",
                    help="render the reports earlier --json runs saved, merged into one table "
                    "(e.g. the AIMET/ORT run and the qsteer run); run nothing")
    ap.add_argument("--models", default="mbv2,resnet")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--iterations", type=int, default=200, help="AdaRound iterations per layer")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--table-out", help="also write the markdown table to this file; a file "
                    f"holding the lines {BEGIN!r} and {END!r} gets only the text between them "
                    "replaced (e.g. sample-models/README.md)")
    ap.add_argument("--table-marker", default="peers table",
                    help="the name in the markers --table-out replaces between (another table)")
    ap.add_argument("--keep", help="keep models, encodings and workspaces in this directory")
    args = ap.parse_args()
    # AIMET logs to stdout: keep the real stdout for the report, send the rest to stderr.
    report_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    if args.from_json:
        try:
            report = merge_reports([json.loads(Path(f).read_text()) for f in args.from_json])
        except (OSError, ValueError) as e:
            log(f"peers: --from-json: {e}")
            return 2
        if args.table_out:
            write_table(args.table_out, report, args.table_marker)
        print(json.dumps(report, indent=1) if args.json else markdown(report), end="", file=report_out)
        report_out.flush()
        return 0
    if not args.qsteer and any(t.startswith("qsteer") for t in args.tools.split(",")):
        log("peers: --qsteer QSTEER_BIN is required")
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [m for m in models if m not in MODELS] + [r for r in rows if r not in ROWS] + \
        [t for t in tools if t not in TOOLS]
    if bad:
        log(f"peers: unknown model, row or tool: {', '.join(bad)} "
            f"(models {', '.join(MODELS)}; rows {', '.join(ROWS)}; tools {', '.join(TOOLS)})")
        return 2
    binary = args.qsteer
    if any(t.startswith("qsteer") for t in tools) and shutil.which(binary) is None \
            and not os.access(binary, os.X_OK):
        log(f"peers: qsteer binary {binary} not found or not executable")
        return 2

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qsteer-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    calib, evaluation = load_split("calibration"), load_split("evaluation")
    runners = {}
    if "aimet" in tools:
        runners["aimet"] = Aimet(work, calib, evaluation)
    if "aimet_torch" in tools:
        runners["aimet_torch"] = AimetTorch(work)
    if "ort" in tools:
        runners["ort"] = OrtMinmax(work, calib, evaluation)
    if "qsteer" in tools:
        runners["qsteer"] = Qsteer(binary, work)
    if "qsteer_qw" in tools:
        runners["qsteer_qw"] = Qsteer(binary, work, QW_FLAGS, "qsteer_qw")

    versions = {"python": sys.version.split()[0]}
    for pkg in ("aimet_onnx", "onnxruntime", "onnx", "torch", "numpy"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001 (a missing package is only not reported)
            pass
    report = {
        "models": models,
        "w_bits": W_BITS,
        "a_bits": A_BITS,
        "calibration_samples": int(len(calib[0])),
        "evaluation_samples": int(len(evaluation[0])),
        "adaround_iterations": args.iterations,
        "versions": versions,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "qsteer_build": qsteer_build(binary) if any(t.startswith("qsteer") for t in tools) else None,
        "rows": [],
    }
    failed = False
    for row in rows:
        entry = {"row": row, "setting": ROWS[row].format(it=args.iterations, c=SSVD_TARGET),
                 "results": {}}
        for m in models:
            path = SAMPLES / MODELS[m]
            entry["results"][m] = {}
            for name, runner in runners.items():
                log(f"peers: {row} {m} {name}")
                try:
                    r = runner.row(row, path, m, args.iterations)
                except Exception as e:  # noqa: BLE001 (a failed row is reported, the rest run)
                    failed = True
                    r = {"error": str(e)[-1000:]}
                    log(f"peers: {row} {m} {name} failed: {r['error']}")
                if r is not None:
                    entry["results"][m][name] = r
        report["rows"].append(entry)
        for r in entry["results"].values():
            if r.get("aimet_torch", {}).get("version"):
                versions["aimet_torch"] = r["aimet_torch"]["version"]
    table = markdown(report)
    if args.table_out:
        write_table(args.table_out, report, args.table_marker)
    if args.json:
        print(json.dumps(report, indent=1), file=report_out)
    else:
        print(table, end="", file=report_out)
    report_out.flush()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
