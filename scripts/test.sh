#!/usr/bin/env bash
# Run the tests on both Blender Pythons, each in a venv of its own (created on first use):
#   .venv     Python 3.11 + bpy 5.0.1      (Blender 4.2 to 5.0 embed Python 3.11)
#   .venv313  Python 3.13 + bpy 5.2.3 LTS  (Blender 5.1 and later embed Python 3.13)
# Where no Python 3.13 is found, one line says so and only the 3.11 half runs.
# Extra arguments go to pytest in both halves, e.g. `bash scripts/test.sh tests/core -k lbs`.
# PYTHON311 / PYTHON313 name the interpreters to use (PYTHON is also read for 3.11).
# Exit status: non-zero when either half fails. The last line is pytest's summary (one half) or
# both halves' counts added up, alone on the line.
set -uo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0

# An interpreter of Python $1 (e.g. 3.13), or nothing. A pyenv shim named python3.13 exists even
# where it refuses to run (no PYENV_VERSION selects 3.13), so each candidate has to run and report
# the right version; pyenv's own install folder is searched after PATH.
find_python() {
    local version=$1 override=$2 candidate
    local -a candidates=()
    [ -n "$override" ] && candidates+=("$override")
    candidates+=("python$version")
    local root=${PYENV_ROOT:-$HOME/.pyenv}
    if [ -d "$root/versions" ]; then
        while IFS= read -r candidate; do candidates+=("$candidate"); done < <(
            ls -d "$root"/versions/"$version"*/bin/python"$version" 2>/dev/null | sort -rV)
    fi
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" \
            >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# Create (once) and update the venv $1 with interpreter $2: PyTorch, then the project with its test extras.
# pip keeps what is already installed at the pinned versions, so a second run installs nothing.
set_up_venv() {
    local venv=$1 python=$2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
}

# Counts from a pytest summary line ("3 failed, 338 passed, 2 skipped in 95.1s") as "passed failed skipped errors".
counts() {
    local line=$1 word
    for word in passed failed skipped error; do
        printf '%s ' "$(grep -oE "[0-9]+ ${word}" <<<"$line" | grep -oE '^[0-9]+' || echo 0)"
    done
}

py311=$(find_python 3.11 "${PYTHON311:-${PYTHON:-}}") || { echo "no Python 3.11 found (set PYTHON311)"; exit 1; }
py313=$(find_python 3.13 "${PYTHON313:-}") || py313=""
halves=(".venv|$py311|Blender 5.0.1 / Python 3.11")
if [ -n "$py313" ]; then
    halves+=(".venv313|$py313|Blender 5.2.3 LTS / Python 3.13")
else
    echo "no Python 3.13 found (set PYTHON313): testing Blender 5.0.1 / Python 3.11 only, not Blender 5.1+"
fi

# Two test workers, one thread each: more threads than cores makes small tensor work far slower.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
summaries=()
started=$SECONDS
for half in "${halves[@]}"; do
    IFS='|' read -r venv python label <<<"$half"
    echo "== $label ($venv)"
    if ! set_up_venv "$venv" "$python"; then
        echo "== $label: setting up $venv failed"
        status=1
        summaries+=("$label|0 failed, 1 error (set-up)")
        continue
    fi
    log=$(mktemp)
    "$venv/bin/python" -m pytest -q -n 2 "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || status=1
    summaries+=("$label|$(tail -n 1 "$log")")
    rm -f "$log"
done

if [ "${#summaries[@]}" -gt 1 ]; then
    total=(0 0 0 0)
    for summary in "${summaries[@]}"; do
        echo "== ${summary%%|*}: ${summary#*|}"
        read -r -a part <<<"$(counts "${summary#*|}")"
        for i in 0 1 2 3; do total[i]=$((total[i] + part[i])); done
    done
    echo "== both halves in $((SECONDS - started)) s:"
    line="${total[0]} passed, ${total[1]} failed, ${total[2]} skipped"
    [ "${total[3]}" -eq 0 ] || line+=", ${total[3]} errors"
    echo "$line"  # alone on the last line, as CI reads it
fi
exit "$status"
