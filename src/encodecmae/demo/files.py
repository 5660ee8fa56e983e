"""Writing the demo's outputs deterministically and atomically.

The audio writers avoid timestamps (the PEAK chunk of float WAVs is zeroed), so the same samples
give byte-identical files. Outputs are built in a hidden temporary sibling directory and renamed
into place at the end (``_AtomicDir``), so an interrupted run leaves no half-written output.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


def _zero_peak_timestamp(path: Path) -> None:
    """libsndfile's PEAK chunk (float WAV) holds a wall-clock timestamp: zero it."""
    data = bytearray(path.read_bytes())
    i = 12
    while i + 8 <= len(data):
        cid = bytes(data[i : i + 4])
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        if cid == b"PEAK" and size >= 8:
            data[i + 12 : i + 16] = b"\0\0\0\0"
            path.write_bytes(bytes(data))
            return
        i += 8 + size + (size & 1)


def _write_audio(path: Path, x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype == "FLOAT":
        sf.write(str(path), np.asarray(x, dtype=np.float32), sr, format=fmt, subtype="FLOAT")
        _zero_peak_timestamp(path)
    else:
        sf.write(str(path), _to_int16(x), sr, format=fmt, subtype=subtype)


class _AtomicDir:
    """Build a directory under a hidden temporary sibling; rename it to ``final`` on success."""

    def __init__(self, final: str | Path, overwrite: bool = False):
        self.final = Path(final)
        self.overwrite = overwrite

    def __enter__(self) -> Path:
        if self.final.exists() and not self.overwrite:
            raise FileExistsError(f"{self.final}: already exists (remove it or pass overwrite)")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.tmp.chmod(0o755)  # mkdtemp makes it 0700
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)
