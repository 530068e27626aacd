#!/usr/bin/env python3
"""Regenerate qsteer's sample models and the digits dataset.

Usage (from the repository root or anywhere):

    pip install "jax[cpu]" onnx onnxruntime scikit-learn numpy pillow
    python3 sample-models/make_samples.py

    # only the data files (needs scikit-learn numpy pillow; the models are left alone):
    python3 sample-models/make_samples.py --data-only

Everything is deterministic (fixed seeds; JAX on CPU). Outputs, all relative to
this file's directory:

    mbv2_digits.onnx, resnet_digits.onnx
    digits/training/{inputs,labels}.npy         1197 samples (the models were trained on these)
    digits/calibration/{inputs,labels}.npy      200 samples
    digits/evaluation/{inputs,labels}.npy       400 samples
    digits/split.json                           indices into load_digits() of each split
    digits/images/<label>/<NNN>.png             first 100 evaluation samples, NNN = index
    digits/images/preprocess.json               in the evaluation split, zero-padded
    models.json                                 per-layer params/MACs and accuracies (README source)

Data: sklearn.datasets.load_digits() (the UCI 8x8 handwritten digits, shipped inside
scikit-learn). Pixels 0..16 -> float32 x/16 in [0, 1], then upsampled 8x8 -> 16x16 by
separable bilinear interpolation with half-pixel centres and edge clamping
(align_corners=False; identical to PyTorch F.interpolate(mode="bilinear",
align_corners=False) and ONNX Resize(linear, half_pixel)). For a 2x upsample this means
output pixel o samples source coordinate o/2 - 0.25, i.e. weights (0.75, 0.25) between
the two nearest source pixels, with the outermost rows/columns copying the edge pixel.
Layout NCHW [N, 1, 16, 16].

Models are written as ONNX opset 13, IR version 8, from the trained parameters with
onnx.helper, BatchNormalization left unfused, convs followed by BN without bias.
"""

import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# --data-only writes the data files without the training stack (jax, onnx, onnxruntime).
DATA_ONLY = "--data-only" in sys.argv[1:]
if not DATA_ONLY:
    import jax  # noqa: E402
    import jax.numpy as jnp  # noqa: E402
    import onnx  # noqa: E402
    import onnxruntime as ort  # noqa: E402
    from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_SEED = 0
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch
OPSET = 13
IR_VERSION = 8


# ----------------------------------------------------------------------------- data
def upsample_bilinear_2x(x):
    """[N, 8, 8] -> [N, 16, 16], half-pixel centres, edge clamp (align_corners=False)."""

    def axis_weights(n_in, n_out):
        scale = n_in / n_out
        m = np.zeros((n_out, n_in), dtype=np.float64)
        for o in range(n_out):
            src = (o + 0.5) * scale - 0.5
            src = min(max(src, 0.0), n_in - 1)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, n_in - 1)
            w1 = src - i0
            m[o, i0] += 1.0 - w1
            m[o, i1] += w1
        return m

    a = axis_weights(x.shape[1], 2 * x.shape[1])
    b = axis_weights(x.shape[2], 2 * x.shape[2])
    y = np.einsum("oi,nij,pj->nop", a, x.astype(np.float64), b)
    return y.astype(np.float32)


def load_data():
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)  # [1797, 8, 8] in [0, 1]
    x = upsample_bilinear_2x(x)[:, None, :, :]  # [1797, 1, 16, 16]
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, ev = train_test_split(idx, test_size=400, random_state=SPLIT_SEED, stratify=y)
    tr, cal = train_test_split(rest, test_size=200, random_state=SPLIT_SEED, stratify=y[rest])
    assert len(tr) == 1197 and len(cal) == 200 and len(ev) == 400
    return x, y, {"train": tr, "calibration": cal, "evaluation": ev}


# ------------------------------------------------------------------- model description
# A model is a Python function `forward(ops, x)` written against an "ops" interface.
# JaxOps executes it (and creates parameters on first use); OnnxOps emits ONNX nodes.
# Same code for both, so the exported graph is the trained network by construction.


class JaxOps:
    def __init__(self, params, state, train, rng=None):
        self.params = params
        self.state = state
        self.train = train
        self.rng = rng
        self.new_state = {}

    def _param(self, name, shape, init):
        if name not in self.params:
            self.rng, k = jax.random.split(self.rng)
            self.params[name] = init(k, shape)
        return self.params[name]

    def _state(self, name, shape, value):
        if name not in self.state:
            self.state[name] = jnp.full(shape, value, jnp.float32)
        return self.state[name]

    @staticmethod
    def _he(k, shape):
        fan_in = int(np.prod(shape[1:]))
        return jax.random.normal(k, shape, jnp.float32) * np.sqrt(2.0 / fan_in)

    def conv(self, name, x, cin, cout, k, stride=1, groups=1):
        w = self._param(name + ".weight", (cout, cin // groups, k, k), self._he)
        p = k // 2
        if groups == cin == cout and groups > 1:
            # Depthwise: sum of k*k shifted, per-channel scaled copies. Same maths as
            # conv_general_dilated(feature_group_count=C), but XLA:CPU's grouped-conv gradient
            # is ~10x slower than this on 2 cores.
            h, wd = x.shape[2], x.shape[3]
            ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
            xp = jnp.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            out = 0.0
            for i in range(k):
                for j in range(k):
                    tap = xp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
                    out = out + tap * w[None, :, 0, i, j, None, None]
            return out
        return jax.lax.conv_general_dilated(
            x, w, window_strides=(stride, stride), padding=[(p, p), (p, p)],
            dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)

    def bn(self, name, x, c):
        g = self._param(name + ".weight", (c,), lambda k, s: jnp.ones(s, jnp.float32))
        b = self._param(name + ".bias", (c,), lambda k, s: jnp.zeros(s, jnp.float32))
        rm = self._state(name + ".running_mean", (c,), 0.0)
        rv = self._state(name + ".running_var", (c,), 1.0)
        if self.train:
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            n = x.shape[0] * x.shape[2] * x.shape[3]
            self.new_state[name + ".running_mean"] = (1 - BN_MOMENTUM) * rm + BN_MOMENTUM * mean
            self.new_state[name + ".running_var"] = (1 - BN_MOMENTUM) * rv + BN_MOMENTUM * var * n / (n - 1)
        else:
            mean, var = rm, rv
        inv = g / jnp.sqrt(var + BN_EPS)
        return (x - mean[None, :, None, None]) * inv[None, :, None, None] + b[None, :, None, None]

    def relu6(self, name, x):
        return jnp.clip(x, 0.0, 6.0)

    def relu(self, name, x):
        return jnp.maximum(x, 0.0)

    def add(self, name, a, b):
        return a + b

    def gap(self, name, x):
        return x.mean(axis=(2, 3), keepdims=True)

    def flatten(self, name, x):
        return x.reshape(x.shape[0], -1)

    def gemm(self, name, x, cin, cout, out_name=None):
        def init_w(k, s):
            lim = 1.0 / np.sqrt(cin)
            return jax.random.uniform(k, s, jnp.float32, -lim, lim)

        w = self._param(name + ".weight", (cout, cin), init_w)
        b = self._param(name + ".bias", (cout,), lambda k, s: jnp.zeros(s, jnp.float32))
        return x @ w.T + b


class OnnxOps:
    """Emits ONNX nodes; tensors are value names (str)."""

    def __init__(self, params, state):
        self.params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        self.params.update({k: np.asarray(v, np.float32) for k, v in state.items()})
        self.nodes = []
        self.inits = {}
        self.layers = []  # for the params/MACs table

    def _init(self, name):
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(self.params[name], name)
        return name

    def _node(self, op, name, inputs, out=None, **attrs):
        out = out or name + ".out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, name, x, cin, cout, k, stride=1, groups=1):
        p = k // 2
        w = self._init(name + ".weight")
        self.layers.append(dict(name=name, op="Conv", cin=cin, cout=cout, k=k, stride=stride,
                                groups=groups, params=int(self.params[w].size)))
        return self._node("Conv", name, [x, w], kernel_shape=[k, k], strides=[stride, stride],
                          pads=[p, p, p, p], dilations=[1, 1], group=groups)

    def bn(self, name, x, c):
        ins = [x] + [self._init(name + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        self.layers.append(dict(name=name, op="BatchNormalization", params=2 * c))
        return self._node("BatchNormalization", name, ins, epsilon=BN_EPS, momentum=1 - BN_MOMENTUM)

    def _clip_bounds(self):
        if "relu6.min" not in self.inits:
            self.inits["relu6.min"] = numpy_helper.from_array(np.array(0.0, np.float32), "relu6.min")
            self.inits["relu6.max"] = numpy_helper.from_array(np.array(6.0, np.float32), "relu6.max")

    def relu6(self, name, x):
        self._clip_bounds()
        return self._node("Clip", name, [x, "relu6.min", "relu6.max"])

    def relu(self, name, x):
        return self._node("Relu", name, [x])

    def add(self, name, a, b):
        return self._node("Add", name, [a, b])

    def gap(self, name, x):
        return self._node("GlobalAveragePool", name, [x])

    def flatten(self, name, x):
        return self._node("Flatten", name, [x], axis=1)

    def gemm(self, name, x, cin, cout, out_name=None):
        w, b = self._init(name + ".weight"), self._init(name + ".bias")
        self.layers.append(dict(name=name, op="Gemm", cin=cin, cout=cout,
                                params=int(self.params[w].size + self.params[b].size)))
        return self._node("Gemm", name, [x, w, b], out=out_name, alpha=1.0, beta=1.0, transB=1)


# MobileNetV2-style. (t, c, s): expansion, output channels, stride.
MBV2_BLOCKS = [(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1)]


def mbv2_forward(ops, x):
    x = ops.conv("stem.conv", x, 1, 16, 3)
    x = ops.bn("stem.bn", x, 16)
    x = ops.relu6("stem.relu6", x)
    cin = 16
    for i, (t, c, s) in enumerate(MBV2_BLOCKS, start=1):
        p = f"block{i}"
        h = x
        hid = cin * t
        if t != 1:
            h = ops.conv(f"{p}.expand.conv", h, cin, hid, 1)
            h = ops.bn(f"{p}.expand.bn", h, hid)
            h = ops.relu6(f"{p}.expand.relu6", h)
        h = ops.conv(f"{p}.dw.conv", h, hid, hid, 3, stride=s, groups=hid)
        h = ops.bn(f"{p}.dw.bn", h, hid)
        h = ops.relu6(f"{p}.dw.relu6", h)
        h = ops.conv(f"{p}.project.conv", h, hid, c, 1)
        h = ops.bn(f"{p}.project.bn", h, c)
        # residual as in MobileNetV2 (torchvision's use_res_connect): stride 1 and cin == cout
        x = ops.add(f"{p}.add", x, h) if (s == 1 and cin == c) else h
        cin = c
    x = ops.conv("head.conv", x, cin, 64, 1)
    x = ops.bn("head.bn", x, 64)
    x = ops.relu6("head.relu6", x)
    x = ops.gap("pool", x)
    x = ops.flatten("flatten", x)
    return ops.gemm("fc", x, 64, 10, out_name="logits")


# ResNet-style basic blocks: (channels, stride)
RESNET_BLOCKS = [(16, 1), (32, 2), (64, 2)]


def resnet_forward(ops, x):
    x = ops.conv("stem.conv", x, 1, 16, 3)
    x = ops.bn("stem.bn", x, 16)
    x = ops.relu("stem.relu", x)
    cin = 16
    for i, (c, s) in enumerate(RESNET_BLOCKS, start=1):
        p = f"layer{i}"
        h = ops.conv(f"{p}.conv1", x, cin, c, 3, stride=s)
        h = ops.bn(f"{p}.bn1", h, c)
        h = ops.relu(f"{p}.relu1", h)
        h = ops.conv(f"{p}.conv2", h, c, c, 3)
        h = ops.bn(f"{p}.bn2", h, c)
        if s != 1 or cin != c:
            sc = ops.conv(f"{p}.downsample.conv", x, cin, c, 1, stride=s)
            sc = ops.bn(f"{p}.downsample.bn", sc, c)
        else:
            sc = x
        x = ops.add(f"{p}.add", h, sc)
        x = ops.relu(f"{p}.relu2", x)
        cin = c
    x = ops.gap("pool", x)
    x = ops.flatten("flatten", x)
    return ops.gemm("fc", x, 64, 10, out_name="logits")


# ----------------------------------------------------------------------------- training
def shift_augment(xb, rng, max_shift=1):
    """Random integer translation by up to +-max_shift px per sample (zero fill)."""
    n = xb.shape[0]
    pad = np.pad(xb, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    out = np.empty_like(xb)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + 16, dx[i]:dx[i] + 16]
    return out


def train(forward, x_tr, y_tr, seed, epochs=30, batch=64, lr=3e-3, wd=1e-4):
    params, state = {}, {}
    init_ops = JaxOps(params, state, train=False, rng=jax.random.PRNGKey(seed))
    forward(init_ops, jnp.zeros((2, 1, 16, 16), jnp.float32))

    def loss_fn(p, s, xb, yb):
        ops = JaxOps(p, s, train=True)
        logits = forward(ops, xb)
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
        return loss, ops.new_state

    steps_per_epoch = len(x_tr) // batch
    total = epochs * steps_per_epoch
    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def step(p, s, m, v, t, xb, yb):
        (loss, new_s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, xb, yb)
        lr_t = lr * 0.5 * (1 + jnp.cos(jnp.pi * t / total))  # cosine schedule
        t1 = t + 1
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        mh = jax.tree_util.tree_map(lambda a: a / (1 - b1 ** t1), m)
        vh = jax.tree_util.tree_map(lambda a: a / (1 - b2 ** t1), v)
        # AdamW: decoupled weight decay on weights only (not BN/bias vectors)
        p = {k: p[k] - lr_t * (mh[k] / (jnp.sqrt(vh[k]) + eps) + (wd * p[k] if p[k].ndim > 1 else 0.0))
             for k in p}
        return p, {**s, **new_s}, m, v, loss

    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    rng = np.random.default_rng(seed)
    t = 0
    for ep in range(epochs):
        perm = rng.permutation(len(x_tr))
        losses = []
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = shift_augment(x_tr[idx], rng)
            params, state, m, v, loss = step(params, state, m, v, jnp.float32(t), jnp.asarray(xb),
                                             jnp.asarray(y_tr[idx]))
            t += 1
            losses.append(float(loss))
        if ep % 10 == 9 or ep == epochs - 1:
            print(f"  epoch {ep + 1:3d}  loss {np.mean(losses):.4f}", flush=True)
    return {k: np.asarray(v) for k, v in params.items()}, {k: np.asarray(v) for k, v in state.items()}


def jax_infer(forward, params, state, x):
    f = jax.jit(lambda p, s, xb: forward(JaxOps(p, s, train=False), xb))
    return np.asarray(f(params, state, jnp.asarray(x)))


# ----------------------------------------------------------------------------- export
def export_onnx(forward, params, state, path, graph_name, doc):
    ops = OnnxOps(params, state)
    out = forward(ops, "input")
    assert out == "logits"
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 16, 16])
    outp = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(ops.nodes, graph_name, [inp], [outp], initializer=list(ops.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qsteer-make_samples", producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)  # atomic: other processes may be reading the old model
    return model, ops.layers


def layer_table(model, layers):
    """Per-layer params and MACs per sample, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
    rows = []
    for L in layers:
        out = L["name"] + ".out" if L["name"] != "fc" else "logits"
        oshape = shapes[out]
        macs = 0
        if L["op"] == "Conv":
            out_elems = int(np.prod(oshape[1:]))
            macs = out_elems * (L["cin"] // L["groups"]) * L["k"] * L["k"]
        elif L["op"] == "Gemm":
            macs = L["cin"] * L["cout"]
        rows.append(dict(L, out_shape=oshape[1:], macs=macs))
    return rows


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


# ----------------------------------------------------------------------------- main
def write_data(x, y, split):
    """The npy splits, split.json and the image-folder copy under digits/."""
    data_dir = os.path.join(HERE, "digits")
    for name in ("training", "calibration", "evaluation"):
        part = split["train" if name == "training" else name]
        d = os.path.join(data_dir, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "inputs.npy"), np.ascontiguousarray(x[part], np.float32))
        np.save(os.path.join(d, "labels.npy"), np.ascontiguousarray(y[part], np.int64))
    with open(os.path.join(data_dir, "split.json"), "w") as f:
        json.dump({"source": "sklearn.datasets.load_digits", "seed": SPLIT_SEED,
                   "method": "sklearn train_test_split, stratified: 400 evaluation, then 200 calibration "
                             "from the remaining 1397; 1197 train",
                   **{k: [int(i) for i in v] for k, v in split.items()}}, f)
        f.write("\n")

    # image folder: first 100 evaluation samples
    img_dir = os.path.join(data_dir, "images")
    xe, ye = x[split["evaluation"]], y[split["evaluation"]]
    for i in range(100):
        d = os.path.join(img_dir, str(int(ye[i])))
        os.makedirs(d, exist_ok=True)
        px = np.clip(np.round(xe[i, 0] * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(px, mode="L").save(os.path.join(d, f"{i:03d}.png"), optimize=True)
    with open(os.path.join(img_dir, "preprocess.json"), "w") as f:
        json.dump({"resize": None, "center_crop": None, "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0],
                   "channel_order": "gray", "layout": "nchw"}, f)
        f.write("\n")


def main():
    t0 = time.time()
    x, y, split = load_data()
    write_data(x, y, split)
    if DATA_ONLY:
        print(f"data written in {time.time() - t0:.1f}s")
        return
    jax.config.update("jax_default_matmul_precision", "highest")
    x_tr, y_tr = x[split["train"]], y[split["train"]]
    x_ev, y_ev = x[split["evaluation"]], y[split["evaluation"]]
    x_cal, y_cal = x[split["calibration"]], y[split["calibration"]]
    summary = {}
    specs = [
        ("mbv2_digits", mbv2_forward, 1, "MobileNetV2-style digit classifier (qsteer sample model)"),
        ("resnet_digits", resnet_forward, 2, "ResNet-style digit classifier (qsteer sample model)"),
    ]
    for name, fwd, seed, doc in specs:
        print(f"== {name} (seed {seed})", flush=True)
        ts = time.time()
        params, state = train(fwd, x_tr, y_tr, seed)
        print(f"  trained in {time.time() - ts:.1f}s")
        path = os.path.join(HERE, name + ".onnx")
        model, layers = export_onnx(fwd, params, state, path, name, doc)
        jl = jax_infer(fwd, params, state, x_ev)
        ol = ort_logits(path, x_ev)
        diff = float(np.max(np.abs(jl - ol)))
        same = bool(np.all(jl.argmax(1) == ol.argmax(1)))
        assert same and diff < 1e-3, (name, diff, same)
        acc_ev = float(np.mean(ol.argmax(1) == y_ev))
        acc_cal = float(np.mean(ort_logits(path, x_cal).argmax(1) == y_cal))
        acc_tr = float(np.mean(ort_logits(path, x_tr).argmax(1) == y_tr))
        rows = layer_table(model, layers)
        n_params = sum(int(t.dims and np.prod(t.dims) or 1) for t in model.graph.initializer)
        summary[name] = dict(
            file=name + ".onnx", bytes=os.path.getsize(path), seed=seed,
            eval_accuracy_ort=acc_ev, calibration_accuracy_ort=acc_cal, train_accuracy_ort=acc_tr,
            jax_vs_ort_max_abs_logit_diff=diff, argmax_identical=same,
            macs_total=int(sum(r["macs"] for r in rows)),
            params_trainable=int(sum(r["params"] for r in rows)),
            initializer_elements=n_params,
            nodes=len(model.graph.node), layers=rows)
        print(f"  ORT eval acc {acc_ev:.4f}  calib acc {acc_cal:.4f}  train acc {acc_tr:.4f}  "
              f"JAX-vs-ORT max|dlogit| {diff:.2e}  argmax identical {same}")
        print(f"  params {summary[name]['params_trainable']}  MACs {summary[name]['macs_total']}  "
              f"bytes {summary[name]['bytes']}")
    with open(os.path.join(HERE, "models.json"), "w") as f:
        json.dump({"jax": jax.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                   "models": summary}, f, indent=1)
        f.write("\n")
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
