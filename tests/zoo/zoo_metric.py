#!/usr/bin/env python3
"""The zoo's downstream metrics, run by qsteer as a `--metric-command` (README "Your own
metric"): each scores a model's outputs against ONNX Runtime's FP32 outputs of the same
samples, so FP32 itself scores 1.0 and "W8A8 within 1 point of FP32" is a score >= 0.99.

    zoo_metric.py KIND REFDIR OUTPUTS_DIR INDICES.npy [--threshold T] [--time-major]

REFDIR holds `<k>.npy`: output k of every dataset sample from ORT, one sample per call,
stacked on a new axis 0 (run_zoo.py writes it). OUTPUTS_DIR and INDICES.npy are qsteer's `{outputs}` and
`{indices}`. The last stdout line is `{"score": S, ...}`.

Kinds (what a user of that model looks at, not a tensor statistic):
  top1     top-1 class agreement per sample (any leading axes: per position)
  ctc      CTC greedy decoding (argmax per step, repeats collapsed, blank 0 dropped): share of
           samples whose decoded sequence equals FP32's; extra: per-step argmax agreement
  map_f1   F1 of the thresholded map (pixels / notes above --threshold) against FP32's
  decision share of samples whose decision (probability > --threshold) equals FP32's
  cosine   mean cosine similarity of each sample's output with FP32's
  yolov8   detections (cx,cy,w,h + class scores per anchor; NMS): F1 against FP32's
  yolox    the same for YOLOX raw heads (grid offsets, log sizes, objectness x class)
  picodet  the same for PicoDet (per-stride class scores + distribution-focal box bins)

Detections: synthetic images have few confident objects, so each image's FP32 top-10
detections after NMS (score > --min-score, 0.05) are the reference and the run's top-10 are matched to them
(same class, IoU >= 0.5): a meaningful, label-free "does the detector still find the same
boxes".
"""

import argparse
import json
import os
import sys

import numpy as np

TOPK = 10
MIN_SCORE = 0.05
NMS_IOU = 0.45
MATCH_IOU = 0.5


def load_outputs(outputs_dir):
    meta = json.load(open(os.path.join(outputs_dir, "outputs.json")))
    return [np.load(m["file"]) for m in meta]


def load_reference(refdir, count):
    return [np.load(os.path.join(refdir, f"{k}.npy")) for k in range(count)]


def per_sample(out, ref, idx, time_major):
    """Both as [n, *S], S the reference's per-call shape without its size-1 axes.

    The reference is ORT's output per call stacked on a new axis 0. qsteer's output has the
    samples on axis 0, except a time-major output ([T, 1, C] per call) may come as [T, n, C]."""
    n = len(idx)
    ref = ref[idx]
    tail = [d for d in ref.shape[1:] if d != 1] or [1]
    if time_major and out.ndim == 3 and out.shape[1] == n and out.shape[0] != n:
        out = np.transpose(out, (1, 0, 2))
    if out.size != ref.size:
        print(f"zoo_metric: qsteer's output has shape {list(out.shape)}, the FP32 reference "
              f"{list(ref.shape)} for these {n} samples", file=sys.stderr)
        sys.exit(2)
    return out.reshape(n, *tail), ref.reshape(n, *tail)


# ----------------------------------------------------------------------------- the kinds


def top1(out, ref, args):
    a, b = np.argmax(out, axis=-1), np.argmax(ref, axis=-1)
    return {"score": float(np.mean(a == b))}


def ctc_decode(steps):
    seq, prev = [], -1
    for s in steps:
        if s != prev and s != 0:
            seq.append(int(s))
        prev = s
    return seq


def ctc(out, ref, args):
    a, b = np.argmax(out, axis=-1), np.argmax(ref, axis=-1)
    match = [ctc_decode(x) == ctc_decode(y) for x, y in zip(a, b)]
    return {"score": float(np.mean(match)), "step_agreement": float(np.mean(a == b))}


def map_f1(out, ref, args):
    a, b = out > args.threshold, ref > args.threshold
    tp = float(np.sum(a & b))
    denom = float(np.sum(a) + np.sum(b))
    return {"score": 1.0 if denom == 0 else 2 * tp / denom, "positives_fp32": int(np.sum(b))}


def decision(out, ref, args):
    n = out.shape[0]
    a = out.reshape(n, -1) > args.threshold
    b = ref.reshape(n, -1) > args.threshold
    return {"score": float(np.mean(a == b))}


def cosine(out, ref, args):
    n = out.shape[0]
    a, b = out.reshape(n, -1).astype(np.float64), ref.reshape(n, -1).astype(np.float64)
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return {"score": float(np.mean(cos))}


# ---------------------------------------------------------------------------- detections


def iou(box, boxes):
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def top_detections(boxes, scores, min_score):
    """boxes [A,4] x1y1x2y2, scores [A,C] -> up to TOPK (box, class), class-wise NMS."""
    cls = np.argmax(scores, axis=1)
    conf = scores[np.arange(len(cls)), cls]
    order = np.argsort(-conf)
    order = order[conf[order] > min_score]
    kept = []
    for i in order:
        if len(kept) == TOPK:
            break
        same = [j for j in kept if cls[j] == cls[i]]
        if same and np.max(iou(boxes[i], boxes[same])) > NMS_IOU:
            continue
        kept.append(i)
    return boxes[kept], cls[kept]


def detection_f1(dets, refs):
    tp = fp = fn = 0
    for (boxes, cls), (rboxes, rcls) in zip(dets, refs):
        used = np.zeros(len(rboxes), dtype=bool)
        for b, c in zip(boxes, cls):
            cand = [j for j in range(len(rboxes)) if not used[j] and rcls[j] == c]
            if cand:
                ious = iou(b, rboxes[cand])
                best = int(np.argmax(ious))
                if ious[best] >= MATCH_IOU:
                    used[cand[best]] = True
                    tp += 1
                    continue
            fp += 1
        fn += int(np.sum(~used))
    denom = 2 * tp + fp + fn
    return {"score": 1.0 if denom == 0 else 2 * tp / denom, "detections_fp32": tp + fn}


def xywh_to_xyxy(b):
    return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                     b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], axis=1)


def yolov8_decode(out):
    """[22, A]: cx, cy, w, h in pixels, then class probabilities."""
    x = out.T
    return xywh_to_xyxy(x[:, :4]), x[:, 4:]


def yolox_decode(out, size):
    """[A, 5+C] raw: xy offsets in grid cells, log sizes, objectness, class (after sigmoid)."""
    grids, strides = [], []
    for s in (8, 16, 32):
        g = size // s
        ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((g * g, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (out[:, :2] + grid) * stride
    wh = np.exp(np.clip(out[:, 2:4], -20, 20)) * stride
    return xywh_to_xyxy(np.concatenate([xy, wh], axis=1)), out[:, 4:5] * out[:, 5:]


def picodet_decode(scores, dists, height, width):
    """Per stride: scores [A,C] (sigmoid), dists [A, 4*(R+1)] distribution bins (l, t, r, b)."""
    boxes, all_scores = [], []
    for s, d, stride in zip(scores, dists, (8, 16, 32, 64)):
        gh, gw = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        cx, cy = (xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride
        bins = d.reshape(len(d), 4, -1)
        p = np.exp(bins - bins.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        dist = (p * np.arange(bins.shape[2])).sum(axis=2) * stride
        boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        all_scores.append(s)
    return np.concatenate(boxes), np.concatenate(all_scores)


def detections(kind, outs, args):
    n = outs[0].shape[0]
    per_image = []
    for i in range(n):
        if kind == "yolov8":
            b, s = yolov8_decode(outs[0][i])
        elif kind == "yolox":
            b, s = yolox_decode(outs[0][i], args.size[0])
        else:
            k = len(outs) // 2
            b, s = picodet_decode([o[i] for o in outs[:k]], [o[i] for o in outs[k:]], *args.size)
        per_image.append(top_detections(b, s, args.min_score))
    return per_image


# ------------------------------------------------------------------------------------ main

KINDS = {"top1": top1, "ctc": ctc, "map_f1": map_f1, "decision": decision, "cosine": cosine}
DETECTORS = ("yolov8", "yolox", "picodet")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=[*KINDS, *DETECTORS])
    ap.add_argument("refdir")
    ap.add_argument("outputs")
    ap.add_argument("indices")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--time-major", action="store_true")
    ap.add_argument("--outputs-used", type=int, default=1, help="how many outputs the metric reads")
    ap.add_argument("--min-score", type=float, default=MIN_SCORE, help="detections: lowest score kept")
    ap.add_argument("--size", type=int, nargs="+", default=[640], help="input H [W] (detectors)")
    args = ap.parse_args()

    idx = np.load(args.indices).astype(np.int64)
    outs = load_outputs(args.outputs)
    refs = load_reference(args.refdir, len(outs))
    used = len(outs) if args.kind == "picodet" else args.outputs_used
    pairs = [per_sample(o, r, idx, args.time_major) for o, r in zip(outs[:used], refs[:used])]
    outs, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    if args.kind in DETECTORS:
        result = detection_f1(detections(args.kind, outs, args), detections(args.kind, refs, args))
    else:
        parts = [KINDS[args.kind](o, r, args) for o, r in zip(outs, refs)]
        result = dict(parts[0])
        result["score"] = float(np.mean([p["score"] for p in parts]))
    result["kind"] = args.kind
    print(json.dumps(result))


if __name__ == "__main__":
    main()
