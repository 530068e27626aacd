#!/usr/bin/env bash
# Creates the peers venv at ${QSTEER_PEERS_VENV:-target/peers-venv} (relative paths are taken
# from the repository root) and pip-installs tests/peers/requirements.txt into it, again when
# that file changes. Prints the venv's python on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${QSTEER_PEERS_VENV:-target/peers-venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.qsteer-requirements"

if [ ! -x "$PY" ]; then
    echo "peers: creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$STAMP"; then
    echo "peers: installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$STAMP"
fi
echo "$PY"
