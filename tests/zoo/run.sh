#!/usr/bin/env bash
# Run qsteer over the acceptance zoo (tests/zoo/fetch.sh fills the cache first).
#
#   tests/zoo/run.sh QSTEER_BIN [--only ID]... [--steps S,S] [--select FILE] [--timeout SECONDS] [--keep DIR]
#                    [--json] [--update-expected]
#
# Cache: ${QSTEER_ZOO_CACHE:-$HOME/.cache/qsteer-zoo}; without it (no fetch.json) this prints a
# note and exits 0. Python deps come from the venv at ${QSTEER_ZOO_VENV:-target/zoo-venv}
# (tests/zoo/requirements.txt). Prints the model x step table and writes
# <cache>/zoo-report.json. Exit code: 0 every step expected.json expects to pass passed,
# 1 otherwise, 2 usage (binary missing, unknown model or step).
set -euo pipefail

usage() { echo "usage: tests/zoo/run.sh QSTEER_BIN [--only ID]... [--steps S,S] [--select FILE] [--timeout S] [--keep DIR] [--json] [--update-expected]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${QSTEER_ZOO_CACHE:-$HOME/.cache/qsteer-zoo}"
if [ ! -f "$CACHE/fetch.json" ]; then
    echo "zoo: cache not present (run tests/zoo/fetch.sh); skipping"
    exit 0
fi

BIN="$1"
shift
# a path (not a bare command name on PATH) is resolved against the caller's directory
case "$BIN" in */*) [ -d "$(dirname "$BIN")" ] && BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac

# shellcheck source=venv.sh
. "$HERE/venv.sh"
zoo_venv
exec "$PY" "$HERE/run_zoo.py" --qsteer "$BIN" --cache "$CACHE" "$@"
