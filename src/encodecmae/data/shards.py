"""Sharded 24-kHz corpus: the unit of all data work.

A shard is a directory holding

- ``audio.npy``: int16 [total_samples], the shard's clips at 24 kHz mono, concatenated;
- ``manifest.csv``: one row per clip: ``clip_id, source, offset, n_samples`` (``offset`` and
  ``n_samples`` in samples, both multiples of HOP=320 so clip frame t is shard frame
  ``offset // 320 + t``).

Per-frame targets for a shard (EnCodec tokens or cluster ids) are separate files written by
later steps: an int16 array [Q, total_samples // 320] in the same frame layout. The manifest
lists every clip with its length, so batching and cropping need no audio I/O.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.data.audio import AudioError, load_audio
from encodecmae.progress import progress

MANIFEST_COLUMNS = ["clip_id", "source", "offset", "n_samples"]
INT16_SCALE = 32767.0


@dataclass
class Shard:
    """Read-only view of a shard directory (audio is memory-mapped)."""

    path: Path
    manifest: pd.DataFrame
    audio: np.ndarray  # int16 [total_samples], memory-mapped

    @classmethod
    def open(cls, path: str | Path) -> "Shard":
        path = Path(path)
        manifest_path = path / "manifest.csv"
        audio_path = path / "audio.npy"
        for p in (manifest_path, audio_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: missing shard file (is {path} a shard directory?)")
        manifest = pd.read_csv(manifest_path, dtype={"clip_id": str, "source": str})
        missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
        if missing:
            raise ValueError(f"{manifest_path}: missing columns {sorted(missing)}")
        audio = np.load(audio_path, mmap_mode="r")
        return cls(path, manifest, audio)

    @property
    def n_frames(self) -> int:
        return len(self.audio) // HOP

    def __len__(self) -> int:
        return len(self.manifest)

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` as float32 in [-1, 1]."""
        row = self.manifest.iloc[i]
        return self.segment(int(row.offset), int(row.n_samples))

    def segment(self, offset: int, n_samples: int) -> np.ndarray:
        return np.asarray(self.audio[offset : offset + n_samples], dtype=np.float32) / INT16_SCALE


def read_file_list(path: str | Path) -> list[str]:
    """A file list: one audio path per line; blank lines and '#' comments skipped."""
    lines = Path(path).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def write_shard(files: Iterable[str | Path], out_dir: str | Path, min_samples: int = HOP) -> pd.DataFrame:
    """Resample ``files`` to 24 kHz mono int16 and write them as one shard in ``out_dir``.

    Each clip is trimmed to a whole number of frames (at most 319 samples lost). Clips
    shorter than ``min_samples`` are skipped and reported. Bad audio raises AudioError naming
    the file; nothing is written in that case (the shard is written to a temporary name and
    renamed only when complete).
    """
    out_dir = Path(out_dir)
    files = [str(f) for f in files]
    chunks: list[np.ndarray] = []
    rows = []
    offset = 0
    for f in progress(files, f"resample {out_dir.name}", unit="file"):
        wav = load_audio(f, SAMPLE_RATE)
        n = (len(wav) // HOP) * HOP
        if n < max(min_samples, HOP):
            print(f"skipping {f}: {len(wav)} samples at 24 kHz is shorter than {max(min_samples, HOP)}")
            continue
        peak = float(np.abs(wav[:n]).max())
        if peak > 1.0:  # keep the waveform's shape; int16 cannot hold it otherwise
            wav = wav / peak
        chunks.append(np.round(np.clip(wav[:n], -1.0, 1.0) * INT16_SCALE).astype(np.int16))
        rows.append({"clip_id": Path(f).stem, "source": f, "offset": offset, "n_samples": n})
        offset += n
    if not rows:
        raise AudioError(f"{out_dir}: none of the {len(files)} files gave a usable clip")
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    dup = manifest.clip_id[manifest.clip_id.duplicated()]
    if len(dup):  # ids must be unique inside a shard; disambiguate by position
        manifest["clip_id"] = [f"{cid}-{i}" for i, cid in enumerate(manifest.clip_id)]
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "audio.npy", np.concatenate(chunks))
    manifest.to_csv(tmp / "manifest.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return manifest


def save_targets(path: str | Path, targets: np.ndarray) -> None:
    """Write per-frame targets [Q, n_frames] as int16 .npy (atomically)."""
    path = Path(path)
    arr = np.asarray(targets)
    if arr.ndim != 2:
        raise ValueError(f"{path}: targets must be [Q, frames], got shape {arr.shape}")
    if arr.min(initial=0) < 0 or arr.max(initial=0) > np.iinfo(np.int16).max:
        raise ValueError(f"{path}: target ids out of int16 range")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npy")
    np.save(tmp, arr.astype(np.int16))
    tmp.rename(path)


def load_targets(path: str | Path, shard: Shard) -> np.ndarray:
    """Load per-frame targets for ``shard``, checking they cover its frames."""
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2 or arr.shape[1] != shard.n_frames:
        raise ValueError(
            f"{path}: targets of shape {arr.shape} do not match shard {shard.path} "
            f"with {shard.n_frames} frames"
        )
    return arr


AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus")


def list_audio(source_dir: str | Path) -> list[str]:
    """Every audio file under ``source_dir``, sorted (so shard plans never depend on directory order)."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir}: source directory not found")
    files = sorted(str(p) for p in source_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{source_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def shard_files(files: list[str], n_shards: int, index: int) -> list[str]:
    """Files of shard ``index`` of ``n_shards``: round-robin, so long and short files (often
    grouped by name) spread across shards."""
    if not 0 <= index < n_shards:
        raise ValueError(f"shard index {index} is outside 0..{n_shards - 1}")
    if len(files) < n_shards:
        raise ValueError(f"{len(files)} files cannot fill {n_shards} shards")
    return files[index::n_shards]


def register(sub) -> None:
    p = sub.add_parser("list-audio", help="list the audio files under a directory, sorted")
    p.add_argument("--source-dir", required=True)
    p.add_argument("--out", required=True, help="text file: one path per line")
    p.set_defaults(func=cmd_list_audio)

    p = sub.add_parser("resample", help="resample (a shard of) a list of audio files to one 24-kHz mono shard")
    p.add_argument("--file-list", required=True, help="text file: one audio path per line")
    p.add_argument("--n-shards", type=int, default=1, help="the list is split round-robin into this many shards")
    p.add_argument("--shard", type=int, default=0, help="which of them to write")
    p.add_argument("--out", required=True, help="shard directory to write")
    p.add_argument("--min-seconds", type=float, default=HOP / SAMPLE_RATE,
                   help="skip clips shorter than this (default: one frame)")
    p.set_defaults(func=cmd_resample)


def cmd_list_audio(args: argparse.Namespace) -> None:
    files = list_audio(args.source_dir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(f + "\n" for f in files))
    print(f"{args.source_dir}: {len(files)} audio files")


def cmd_resample(args: argparse.Namespace) -> None:
    files = shard_files(read_file_list(args.file_list), args.n_shards, args.shard)
    m = write_shard(files, args.out, min_samples=int(args.min_seconds * SAMPLE_RATE))
    print(f"{args.out}: {len(m)} clips, {m.n_samples.sum() / SAMPLE_RATE / 60:.1f} min")
