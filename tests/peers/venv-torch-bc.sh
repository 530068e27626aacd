#!/usr/bin/env bash
# Creates the bias-correction venv at ${QSTEER_PEERS_TORCH_BC_VENV:-target/peers-torch-bc-venv}
# (relative paths are taken from the repository root) on top of the aimet-torch venv
# (venv-torch.sh) and the peers venv (venv.sh): a .pth file makes their packages visible, and
# only requirements-aimet-torch-bc.txt (an aimet-torch release that still has bias
# correction) is pip-installed into it, again when that file changes; its aimet_torch
# shadows the newer one. Prints the venv's python on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QSTEER_PEERS_TORCH_BC_VENV:-target/peers-torch-bc-venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
REQ="$HERE/requirements-aimet-torch-bc.txt"
STAMP="$VENV/.qsteer-requirements"

BASE_PY="$("$HERE/venv.sh")"
TORCH_PY="$("$HERE/venv-torch.sh")"
if [ ! -x "$PY" ]; then
    echo "peers: creating venv $VENV on top of $(dirname "$(dirname "$TORCH_PY")")" >&2
    python3 -m venv "$VENV"
fi
site_of() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
SITE="$(site_of "$PY")"
printf '%s\n%s\n' "$(site_of "$TORCH_PY")" "$(site_of "$BASE_PY")" > "$SITE/qsteer-peers-base.pth"
if ! cmp -s "$REQ" "$STAMP"; then
    echo "peers: installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$STAMP"
fi
echo "$PY"
