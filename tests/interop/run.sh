#!/usr/bin/env bash
# Interop checks of a qsteer binary against ONNX Runtime: FP32 outputs (check_fp32.py), then the
# exported QDQ models against qsteer's simulation (check_qdq.py).
#
#   tests/interop/run.sh QSTEER_BIN [check_fp32.py options...]
#   tests/interop/run.sh --bench [ort_bench.py options...]     # ONNX Runtime throughput table
#
# Creates a venv at ${QSTEER_INTEROP_VENV:-target/interop-venv} (relative paths are taken from
# the repository root) on first use and pip-installs tests/interop/requirements.txt into it;
# reinstalls when that file changes. Exit code: 0 both passed, else the larger of the two
# scripts' codes (1 fail, 2 usage). Options after QSTEER_BIN go to check_fp32.py only.
set -euo pipefail

usage() { echo "usage: tests/interop/run.sh QSTEER_BIN [check_fp32 options] | --bench [ort_bench options]" >&2; exit 2; }
[ $# -ge 1 ] || usage

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QSTEER_INTEROP_VENV:-target/interop-venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.qsteer-requirements"

if [ ! -x "$PY" ]; then
    echo "interop: creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$STAMP"; then
    echo "interop: installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$STAMP"
fi

if [ "$1" = "--bench" ]; then
    shift
    exec "$PY" "$HERE/ort_bench.py" "$@"
fi

BIN="$1"
shift
# a path (not a bare command name on PATH) is resolved against the caller's directory
case "$BIN" in */*) [ -d "$(dirname "$BIN")" ] && BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac
status=0
"$PY" "$HERE/check_fp32.py" --qsteer "$BIN" "$@" || status=$?
"$PY" "$HERE/check_qdq.py" --qsteer "$BIN" || { rc=$?; [ "$rc" -gt "$status" ] && status=$rc; }
exit "$status"
