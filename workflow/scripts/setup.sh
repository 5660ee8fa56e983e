#!/usr/bin/env bash
# Create .venv with the project installed (library, workflow tools, test tools).
# Idempotent: a second call only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[workflow,test,dvc]"
