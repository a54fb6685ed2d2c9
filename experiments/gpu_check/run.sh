#!/usr/bin/env bash
# The GPU check from a fresh clone: install gas through constraints.txt, then run the checks.
#
#   bash experiments/gpu_check/run.sh              # on a machine with a CUDA GPU (about 8 minutes on one H200)
#   bash experiments/gpu_check/run.sh --dry-run    # anywhere, CPU only, tiny sizes, into a temporary folder
#
# Arguments go to experiments/gpu_check/run.py (its docstring says what each step measures). Results land
# in experiments/results/gpu_check.{md,csv}; the exit status is non-zero when a check failed.
# GPU_CHECK_PYTHON names an interpreter that already has gas installed (then nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/../.."

python_bin="${GPU_CHECK_PYTHON:-}"
if [ -z "$python_bin" ]; then
    python_bin=.venv/bin/python
    # The same install as `make test`, without its PostgreSQL extra: only constraints.txt's pins, no other download.
    if ! "$python_bin" -c "import gas, pytest, scipy, tabulate" >/dev/null 2>&1; then
        echo "gpu_check: installing gas into .venv through constraints.txt" >&2
        test -x "$python_bin" || "${PYTHON:-python3}" -m venv .venv
        "$python_bin" -m pip install --quiet -c constraints.txt -e '.[dev]'
    fi
fi
exec "$python_bin" experiments/gpu_check/run.py "$@"
