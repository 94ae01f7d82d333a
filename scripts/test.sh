#!/usr/bin/env bash
# Set up .venv (Python 3.11, as Blender 4.2-5.0 embed) with the test extras, then run the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/core -k lbs`.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
# Two test workers, one thread each: more threads than cores makes small tensor work far slower.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec .venv/bin/python -m pytest -q -n 2 "$@"
