#!/usr/bin/env bash
# Creates the aimet-torch venv at ${QSTEER_PEERS_TORCH_VENV:-target/peers-torch-venv}
# (relative paths are taken from the repository root) on top of the peers venv (venv.sh): a
# .pth file makes the peers venv's packages (torch, onnx, onnx2torch, numpy) visible, and only
# requirements-aimet-torch.txt is pip-installed into it, again when that file changes. Kept
# apart because aimet-torch and aimet-onnx pin different versions of shared plotting
# packages. Prints the venv's python on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QSTEER_PEERS_TORCH_VENV:-target/peers-torch-venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
REQ="$HERE/requirements-aimet-torch.txt"
STAMP="$VENV/.qsteer-requirements"

BASE_PY="$("$HERE/venv.sh")"
if [ ! -x "$PY" ]; then
    echo "peers: creating venv $VENV on top of $(dirname "$(dirname "$BASE_PY")")" >&2
    python3 -m venv "$VENV"
fi
BASE_SITE="$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$BASE_SITE" > "$SITE/qsteer-peers-base.pth"
if ! cmp -s "$REQ" "$STAMP"; then
    echo "peers: installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$STAMP"
fi
echo "$PY"
