"""Resuming long data jobs (tokenize, assign-clusters, embed-task) after a kill, block by block.

A job that computes its output a block of input at a time keeps each finished block's result in
``<out>.parts/`` next to its output, with the key of its inputs and settings. Snakemake deletes
only a failed job's declared outputs, so when the job runs again (a resubmission after a time
limit or a node failure, or the user's rerun) it finds the blocks done before the kill and
computes only the others; the output is the same as an uninterrupted run's, because each block's
result does not depend on the others. Parts written under another key (changed inputs or
settings) are discarded. The parts are removed once the output is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np



class BlockStore:
    """Finished blocks of the job writing ``out``: ``get(name)`` the array a block stored in an
    earlier run of the job with the same ``key`` (None if it has not), ``put(name, array)`` once a
    block is done, ``close()`` after the output is written."""

    def __init__(self, out: str | Path, key: dict):
        out = Path(out)
        self.dir = out.with_name(out.name + ".parts")
        self._key = json.dumps(key, sort_keys=True, default=str)
        key_file = self.dir / "key.json"
        if self.dir.exists() and (not key_file.exists() or key_file.read_text() != self._key):
            shutil.rmtree(self.dir)  # left by a run on other inputs or settings: start over
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(self._key)
        self.resumed = sum(1 for _ in self.dir.glob("*.npy"))
        if self.resumed:
            print(f"{out}: resuming, {self.resumed} blocks were finished by an earlier run", flush=True)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.npy"

    def get(self, name: str) -> np.ndarray | None:
        path = self._path(name)
        return np.load(path) if path.exists() else None

    def put(self, name: str, array: np.ndarray) -> None:
        tmp = self.dir / f"{name}.tmp"
        with open(tmp, "wb") as f:  # written whole, then renamed: a kill leaves no half block
            np.save(f, np.asarray(array))
        os.replace(tmp, self._path(name))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
