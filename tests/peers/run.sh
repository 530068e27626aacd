#!/usr/bin/env bash
# qsteer against AIMET (aimet-onnx) and ONNX Runtime on the sample models: the post-training
# rows of issue #17 as one table.
#
#   tests/peers/run.sh QSTEER_BIN [peers.py options...]
#
# e.g. `tests/peers/run.sh target/release/qsteer --table-out sample-models/peers-table.md`.
# The venv comes from venv.sh. Exit code: peers.py's (0 done, 1 a row failed, 2 bad arguments).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: tests/peers/run.sh QSTEER_BIN [peers.py options]" >&2; exit 2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$1" = "--from-json" ]; then   # re-render a saved report: tests/peers/run.sh --from-json FILE [opts]
    PY="$("$HERE/venv.sh")"
    exec "$PY" "$HERE/peers.py" "$@"
fi
BIN="$1"
shift
# a path (not a bare command name on PATH) is resolved against the caller's directory
case "$BIN" in */*) [ -d "$(dirname "$BIN")" ] && BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac
PY="$("$HERE/venv.sh")"
exec "$PY" "$HERE/peers.py" --qsteer "$BIN" "$@"
