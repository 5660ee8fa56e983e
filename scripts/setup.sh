#!/usr/bin/env bash
# Create .venv with the project installed (library, workflow tools, test tools, DVC), every
# package at the exact version and hash of envs/lock/venv.txt. Idempotent: a second call
# reinstalls nothing that is already right, then checks the stack again.
# Refresh the lock after changing a dependency in pyproject.toml: python scripts/lock.py
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
# --require-hashes: every package, pip, setuptools and uv included, must be the locked file;
# nothing else is resolved. --no-deps: the lock is the whole closure. pip installs uv alone first
# (its lock entry, cut out of the lock), then uv installs the lock (downloads in parallel: about
# 5 GB in under a minute where pip took five). The project itself is installed editable on top,
# without touching the locked packages.
uv_lock=$(mktemp)
trap 'rm -f "$uv_lock"' EXIT
awk '/^uv==/ {p = 1} p {print} p && !/\\$/ {exit}' envs/lock/venv.txt > "$uv_lock"
.venv/bin/python -m pip install --quiet --require-hashes --no-deps -r "$uv_lock"
UV=(.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps)
"${UV[@]}" --require-hashes --compile-bytecode -r envs/lock/venv.txt
"${UV[@]}" --no-build-isolation -e .
.venv/bin/python scripts/check_stack.py
