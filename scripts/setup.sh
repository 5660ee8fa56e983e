#!/usr/bin/env bash
# Create .venv with the project installed (library, workflow tools, test tools, DVC), every
# package at the exact version and hash of envs/lock/venv.txt. Idempotent: a second call
# reinstalls nothing that is already right, then checks the stack again.
# Refresh the lock after changing a dependency in pyproject.toml: scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
  echo "setup.sh: $("$PYTHON" --version 2>&1) found; the lock is for Python 3.11 or 3.12 (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# --require-hashes: every package, pip and setuptools included, must be the locked file; nothing
# else is resolved. --no-deps: the lock is the whole closure. The project itself is installed
# editable on top, without touching the locked packages.
.venv/bin/python -m pip install --quiet --require-hashes --no-deps -r envs/lock/venv.txt
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python scripts/check_stack.py
