"""Refresh the locks: envs/lock/venv.txt (what setup.sh installs) and the pip sections of the
per-rule conda environments envs/*.yaml (the same versions, each environment's own closure).

    python scripts/lock.py            # after changing a dependency in pyproject.toml

Needs the package index and the locked uv (in .venv after scripts/setup.sh). The venv lock is
universal (Linux, macOS, Windows; Python 3.11-3.12), with the hash of every file, and prefers one
version of each package for all of them. The conda environments run Python 3.11 on Linux x86_64
(a cluster's nodes); their pins are resolved under the venv lock as a constraint, so a package
never has two versions in the project. tests/test_envs.py checks that the files agree.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "envs" / "lock" / "venv.txt"
BUILD = REPO / "envs" / "lock" / "build.in"
EXTRAS = ["workflow", "test", "dvc"]  # the extras setup.sh installs
# Each rule environment: the library's dependencies plus these packages (from pyproject's extras).
ENVS = {
    "data": [],
    "torch": [],
    "report": ["matplotlib"],
}
CONDA_PYTHON = "3.11"
MARKER = "      # locked: scripts/lock.py writes the lines below; do not edit them by hand\n"


def uv(*args: str) -> str:
    exe = REPO / ".venv" / "bin" / "uv"  # the locked uv
    if not exe.exists():
        sys.exit(f"lock.py: {exe} not found (scripts/setup.sh installs it)")
    res = subprocess.run([exe, "pip", "compile", "--quiet", "--no-header", *args], cwd=REPO,
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"lock.py: uv pip compile failed:\n{res.stderr}")
    return res.stdout


def lock_venv() -> None:
    extras = [a for e in EXTRAS for a in ("--extra", e)]
    uv("pyproject.toml", str(BUILD.relative_to(REPO)), *extras, "--universal", "--fork-strategy", "fewest",
       "--python-version", "3.11", "--generate-hashes", "-o", str(LOCK.relative_to(REPO)))


def env_pins(extra: list[str]) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".in", delete=False) as f:
        f.write("".join(f"{p}\n" for p in extra))
    out = uv("pyproject.toml", f.name, "-c", str(LOCK.relative_to(REPO)), "--python-version", CONDA_PYTHON,
             "--python-platform", "x86_64-manylinux_2_28", "--no-annotate")
    Path(f.name).unlink()
    return [line.strip() for line in out.splitlines() if re.match(r"^[A-Za-z0-9]", line)]


def write_env(name: str, pins: list[str]) -> None:
    path = REPO / "envs" / f"{name}.yaml"
    text = path.read_text()
    head = text.split("  - pip:\n")[0]
    head = re.sub(r"(?m)^  - python=.*$", f"  - python={CONDA_PYTHON}", head)
    path.write_text(head + "  - pip:\n" + MARKER + "".join(f"      - {p}\n" for p in pins))


def main() -> None:
    lock_venv()
    for name, extra in ENVS.items():
        write_env(name, env_pins(extra))
    print(f"lock.py: wrote {LOCK.relative_to(REPO)} and envs/{{{','.join(ENVS)}}}.yaml")


if __name__ == "__main__":
    main()
