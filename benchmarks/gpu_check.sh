#!/usr/bin/env bash
# The GPU check in one command (docs/gpu.md): bash benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py flags]
# Runs from the repository root with the project's src/ on PYTHONPATH, .venv's python when there
# is one, else python3 (a lent GPU machine's, which holds PyTorch); wheels in .whl/ (packages that
# machine lacks) are installed first into /tmp/site. The timeout stops it within a 10-minute call.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu_check}
shift || true
if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
if compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec timeout -k 10 570 "$py" benchmarks/gpu_check.py --out "$out" "$@"
