# Sourced by fetch.sh and run.sh (HERE and ROOT set): makes the zoo's venv and sets PY.
# The venv is ${QSTEER_ZOO_VENV:-target/zoo-venv} (relative paths from the repository root),
# created on first use; requirements.txt is (re)installed when it changes.
zoo_venv() {
    local venv="${QSTEER_ZOO_VENV:-target/zoo-venv}"
    case "$venv" in /*) ;; *) venv="$ROOT/$venv" ;; esac
    PY="$venv/bin/python"
    local req="$HERE/requirements.txt" stamp="$venv/.qsteer-requirements"
    if [ ! -x "$PY" ]; then
        echo "zoo: creating venv $venv" >&2
        python3 -m venv "$venv"
    fi
    if ! cmp -s "$req" "$stamp"; then
        echo "zoo: installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
        "$PY" -m pip install --quiet --disable-pip-version-check -r "$req"
        cp "$req" "$stamp"
    fi
}
