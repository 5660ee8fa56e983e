"""What git tracks: source, configuration and documentation only. No file over 1 MB (but the
lock files), no wheels, archives, compiled or other binary files, no build or tool outputs, and
nothing a run or an editor leaves on one machine (artifacts travel through DVC)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import PurePosixPath

import pytest
from workflow_helpers import REPO

MAX_BYTES = 1_000_000
# Generated lock files: large by nature, and what makes an install or a result reproducible.
LARGE_ALLOWED = ("dvc.lock", "envs/lock/")
# Packages, archives, compiled code, model weights, arrays and audio: downloads or outputs, never sources.
BAD_SUFFIXES = (".whl", ".egg", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".zip", ".7z", ".rar", ".so",
                ".dylib", ".dll", ".exe", ".o", ".a", ".pyc", ".pyo", ".pyd", ".pt", ".pth", ".ckpt", ".npy", ".npz",
                ".wav", ".flac", ".mp3", ".log")
# Folders that tools write on one machine: builds, caches, environments, run state.
BAD_DIRS = ("__pycache__", ".venv", "venv", "build", "dist", ".eggs", ".pytest_cache", ".ruff_cache", ".mypy_cache",
            ".ipynb_checkpoints", ".snakemake", ".idea", ".vscode")
BAD_NAMES = (".DS_Store", "Thumbs.db", "nohup.out")


def tracked_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    res = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"not a git checkout: {res.stderr.strip()}")
    files = [f for f in res.stdout.split("\0") if f]
    assert "pyproject.toml" in files and "Snakefile" in files, files[:20]
    return files


def misplaced(path: str) -> str | None:
    """Why ``path`` (relative, as git lists it) should not be tracked, or None."""
    p = PurePosixPath(path)
    if any(part in BAD_DIRS or part.endswith(".egg-info") for part in p.parts[:-1]):
        return "a build, cache or environment folder"
    if p.name in BAD_NAMES or p.name.endswith((".swp", "~")) or (p.name.startswith("slurm-") and p.suffix == ".out"):
        return "a file that a tool or a run leaves on one machine"
    if p.name.lower().endswith(BAD_SUFFIXES):
        return "a package, archive, compiled or data file"
    return None


def test_the_rules_catch_what_they_name():
    bad = ["ruff-0.17.6-py3-none-manylinux_2_17_x86_64.whl", "src/encodecmae/__pycache__/cli.cpython-312.pyc",
           "src/encodecmae.egg-info/PKG-INFO", "data.tar.gz", "build/lib/x.py", ".snakemake/log/a.log",
           "models/base.pt", "ext/_fast.so", ".DS_Store", "slurm-123.out", "tests/audio.wav"]
    assert [f for f in bad if misplaced(f) is None] == []
    good = ["src/encodecmae/cli.py", "envs/lock/venv.txt", "dvc.lock", "config/ci.yaml", "README.md",
            "results/metrics.json", "scripts/setup.sh", "docs/build.md"]
    assert [f for f in good if misplaced(f)] == []


def test_no_tracked_file_is_large_binary_or_built():
    problems = []
    for rel in tracked_files():
        path = REPO / rel
        if not path.is_file():  # deleted in the work tree but not yet in the index
            continue
        why = misplaced(rel)
        size = path.stat().st_size
        if why is None and size > MAX_BYTES and not rel.startswith(LARGE_ALLOWED):
            why = f"{size / 1e6:.1f} MB (over {MAX_BYTES / 1e6:.0f} MB)"
        if why is None and b"\0" in path.read_bytes()[:8000]:  # git's own test for a binary file
            why = "binary content"
        if why:
            problems.append(f"{rel}: {why}")
    assert not problems, "tracked files that do not belong in git:\n" + "\n".join(problems)
