"""Sharded 24-kHz corpus: the unit of all data work.

A shard is a directory holding

- ``audio.npy``: int16 [total_samples], the shard's clips at 24 kHz mono, concatenated;
- ``manifest.csv``: one row per clip: ``clip_id, source, offset, n_samples`` (``offset`` and
  ``n_samples`` in samples, both multiples of HOP=320 so clip frame t is shard frame
  ``offset // 320 + t``).

Per-frame targets for a shard (EnCodec tokens or cluster ids) are separate files written by
later steps: an int16 array [Q, total_samples // 320] in the same frame layout. The manifest
lists every clip with its length, so batching and cropping need no audio I/O.

Shards are planned by duration: ``list-audio`` measures every file of a source (from its
header) and deals the files to a fixed number of shards, longest first to the shard with the
least audio so far, so every shard holds about the same hours whatever the files' lengths (a
source's shard count comes from the workflow config: its expected hours / ``shard_hours``).
Files that cannot be used (unreadable, empty, NaN, too short, too many channels) are skipped by
``resample`` and listed in the shard's ``skipped.csv`` with the reason; the shard fails only
when more than ``max_bad_fraction`` of its files are bad.
"""

from __future__ import annotations

import argparse
import csv
import mmap
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import soundfile as sf

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.data.audio import AudioError, stream_audio
from encodecmae.progress import progress

MANIFEST_COLUMNS = ["clip_id", "source", "offset", "n_samples"]
LIST_COLUMNS = ["path", "seconds", "shard"]  # list-audio's output (tab-separated)
SKIPPED_COLUMNS = ["path", "reason"]
INT16_SCALE = 32767.0
WRITE_CHUNK_SAMPLES = 1 << 20  # samples converted and copied at a time into audio.npy (2 MiB of int16)


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

    def release(self) -> None:
        """Drop the audio pages read so far from this process's resident memory (they stay in
        the page cache): jobs that read a shard once, in order, call it after each block so
        that their memory does not grow with the shard."""
        mapped = getattr(self.audio, "_mmap", None)
        if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)


def read_file_list(path: str | Path, shard: int | None = None) -> list[str]:
    """The files of a ``list-audio`` list (of one shard of it), in list order."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype={"path": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: not a file list written by list-audio ({exc})") from exc
    if list(table.columns) != LIST_COLUMNS:
        raise ValueError(f"{path}: expected the columns {LIST_COLUMNS} (a list-audio output), got {list(table.columns)}")
    if shard is not None:
        n_shards = int(table["shard"].max()) + 1
        if not 0 <= shard < n_shards:
            raise ValueError(f"{path}: shard {shard} is outside 0..{n_shards - 1}")
        table = table[table["shard"] == shard]
    return table["path"].tolist()


def write_shard(files: Iterable[str | Path], out_dir: str | Path, min_samples: int = HOP,
                max_bad_fraction: float = 0.0) -> pd.DataFrame:
    """Resample ``files`` to 24 kHz mono int16 and write them as one shard in ``out_dir``.

    Each clip is trimmed to a whole number of frames (at most 319 samples lost). Files that
    cannot be used (AudioError: unreadable, empty, NaN, too many channels) and clips shorter
    than ``min_samples`` are skipped, printed, and listed in ``skipped.csv`` with the reason;
    when more than ``max_bad_fraction`` of the files are bad, AudioError names them and nothing
    is written. Memory does not grow with the shard or a file: files are read and resampled a
    block at a time (a long one through a scratch file), clips are appended to a scratch file
    as they come, and the shard is written to a temporary name and renamed only when complete.
    """
    out_dir = Path(out_dir)
    files = [str(f) for f in files]
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rows, skipped = [], []
    offset = 0
    with open(tmp / "audio.raw", "wb") as raw:
        for f in progress(files, f"resample {out_dir.name}", unit="file"):
            try:
                wav = _Resampled(f, tmp / "file.f32")
            except AudioError as exc:
                print(f"skipping {exc}", flush=True)
                skipped.append({"path": f, "reason": str(exc).removeprefix(f"{f}: ")})
                continue
            n = (wav.n // HOP) * HOP
            if n < max(min_samples, HOP):
                print(f"skipping {f}: {wav.n} samples at 24 kHz is shorter than {max(min_samples, HOP)}", flush=True)
                skipped.append({"path": f, "reason": f"too short ({wav.n} samples at 24 kHz)"})
                continue
            scale = 1.0 / wav.peak if wav.peak > 1.0 else 1.0  # keep the shape; int16 cannot hold it otherwise
            for chunk in wav.chunks(n):
                raw.write(np.round(np.clip(chunk * scale if scale != 1.0 else chunk, -1.0, 1.0)
                                   * INT16_SCALE).astype("<i2").tobytes())
            rows.append({"clip_id": Path(f).stem, "source": f, "offset": offset, "n_samples": n})
            offset += n
    (tmp / "file.f32").unlink(missing_ok=True)
    bad = len(skipped)
    if not rows or bad > max_bad_fraction * len(files):
        shutil.rmtree(tmp)
        listing = "; ".join(f"{x['path']}: {x['reason']}" for x in skipped[:5]) + (" ..." if bad > 5 else "")
        raise AudioError(f"{out_dir}: {bad} of {len(files)} files are bad (more than max_bad_fraction="
                         f"{max_bad_fraction}): {listing}")
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    dup = manifest.clip_id[manifest.clip_id.duplicated()]
    if len(dup):  # ids must be unique inside a shard; disambiguate by position
        manifest["clip_id"] = [f"{cid}-{i}" for i, cid in enumerate(manifest.clip_id)]
    # the scratch file becomes audio.npy: a header, then its bytes copied through a bounded buffer
    # (file reads, not a memory map, whose pages would count in the job's resident memory)
    with open(tmp / "audio.npy", "wb") as dst, open(tmp / "audio.raw", "rb") as src:
        np.lib.format.write_array_header_1_0(dst, {"descr": "<i2", "fortran_order": False, "shape": (offset,)})
        shutil.copyfileobj(src, dst, 2 * WRITE_CHUNK_SAMPLES)
    (tmp / "audio.raw").unlink()
    manifest.to_csv(tmp / "manifest.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).to_csv(tmp / "skipped.csv", index=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return manifest


class _Resampled:
    """One file resampled to 24 kHz mono, read block by block (``stream_audio``): kept in memory
    up to ``SPILL_SAMPLES``, beyond that in a float32 scratch file, so that its peak is known
    before it is written as int16 and memory does not grow with the file."""

    SPILL_SAMPLES = 1 << 24  # 11.6 min at 24 kHz, 64 MiB of float32

    def __init__(self, path: str, scratch: Path):
        self.blocks: list[np.ndarray] = []
        self.scratch, self.spilled, self.n, self.peak = scratch, False, 0, 0.0
        out = None
        try:
            for block in stream_audio(path, SAMPLE_RATE):
                self.n += len(block)
                self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))
                if out is None and self.n > self.SPILL_SAMPLES:
                    out = open(scratch, "wb")
                    self.spilled = True
                    for b in self.blocks:
                        out.write(b.astype("<f4").tobytes())
                    self.blocks = []
                if out is None:
                    self.blocks.append(block)
                else:
                    out.write(block.astype("<f4").tobytes())
        finally:
            if out is not None:
                out.close()

    def chunks(self, n: int):
        """The first ``n`` samples, a bounded chunk at a time."""
        if not self.spilled:
            wav = np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)
            yield wav[:n]
            return
        with open(self.scratch, "rb") as f:
            for i in range(0, n, WRITE_CHUNK_SAMPLES):
                yield np.fromfile(f, dtype="<f4", count=min(WRITE_CHUNK_SAMPLES, n - i))


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
    """Every audio file under ``source_dir``, sorted (so shard plans never depend on directory
    order). Hidden files and folders are not the source's audio (a download's scratch folder,
    macOS's ``._`` files)."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir}: source directory not found")
    files = sorted(str(p) for p in source_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(source_dir).parts))
    if not files:
        raise ValueError(f"{source_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def audio_seconds(path: str | Path) -> float:
    """Duration from the file's header (NaN when it cannot be read: resample will skip the file)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate else float("nan")
    except Exception:  # soundfile raises several types
        return float("nan")


def plan_shards(seconds: list[float], n_shards: int) -> list[int]:
    """The shard of each file: longest first, each to the shard with the least audio so far
    (ties to the lowest index), so shards hold about equal hours. Unknown durations count as
    the median one."""
    import heapq

    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if len(seconds) < n_shards:
        raise ValueError(f"{len(seconds)} files cannot fill {n_shards} shards")
    dur = np.asarray(seconds, dtype=np.float64)
    known = dur[np.isfinite(dur)]
    dur = np.where(np.isfinite(dur), dur, np.median(known) if len(known) else 1.0)
    order = np.argsort(-dur, kind="stable")
    heap = [(0.0, i) for i in range(n_shards)]
    shard = np.zeros(len(dur), dtype=np.int64)
    for j in order:
        load, i = heapq.heappop(heap)
        shard[j] = i
        heapq.heappush(heap, (load + float(dur[j]), i))
    return shard.tolist()


def write_file_list(source_dir: str | Path, out: str | Path, n_shards: int) -> pd.DataFrame:
    """List a source's audio with durations and shard plan (tab-separated ``LIST_COLUMNS``)."""
    files = list_audio(source_dir)
    seconds = [audio_seconds(f) for f in progress(files, f"list {Path(source_dir).name}", unit="file")]
    table = pd.DataFrame({"path": files, "seconds": np.round(seconds, 3), "shard": plan_shards(seconds, n_shards)})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False)
    hours = table.groupby("shard")["seconds"].sum() / 3600
    unreadable = int(table["seconds"].isna().sum())
    print(f"{source_dir}: {len(files)} audio files, {table['seconds'].sum() / 3600:.2f} h "
          f"({unreadable} unreadable headers) in {n_shards} shards of {hours.min():.2f}-{hours.max():.2f} h", flush=True)
    return table


def write_index(files: list[str | Path], out: str | Path) -> pd.DataFrame:
    """An index of per-shard files (path and size, tab-separated), which the workflow's jobs that
    read every shard of a source depend on instead of each file (a few edges, not thousands)."""
    missing = [str(f) for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} indexed file(s) missing: {', '.join(missing[:5])}")
    table = pd.DataFrame({"path": [str(f) for f in files], "bytes": [Path(f).stat().st_size for f in files]})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False)
    print(f"{out}: {len(table)} files, {table.bytes.sum() / 2**20:.1f} MiB", flush=True)
    return table


def register(sub) -> None:
    p = sub.add_parser("list-audio", help="list a source's audio files with durations, planned into shards")
    p.add_argument("--source-dir", required=True)
    p.add_argument("--n-shards", type=int, required=True, help="shards to deal the files to (by duration)")
    p.add_argument("--out", required=True, help="tab-separated list: path, seconds, shard")
    p.set_defaults(func=cmd_list_audio)

    p = sub.add_parser("index-files", help="index per-shard files (path, size) for the jobs that read them all")
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--out", required=True, help="tab-separated: path, bytes")
    p.set_defaults(func=cmd_index_files)

    p = sub.add_parser("resample", help="resample one shard of a list-audio list to one 24-kHz mono shard")
    p.add_argument("--file-list", required=True, help="list-audio output")
    p.add_argument("--shard", type=int, default=0, help="which shard of the list to write")
    p.add_argument("--out", required=True, help="shard directory to write")
    p.add_argument("--min-seconds", type=float, default=HOP / SAMPLE_RATE,
                   help="skip clips shorter than this (default: one frame)")
    p.add_argument("--max-bad-fraction", type=float, default=0.0,
                   help="fail when more than this fraction of the shard's files cannot be used (default: any)")
    p.set_defaults(func=cmd_resample)


def cmd_index_files(args: argparse.Namespace) -> None:
    write_index(args.files, args.out)


def cmd_list_audio(args: argparse.Namespace) -> None:
    write_file_list(args.source_dir, args.out, args.n_shards)


def cmd_resample(args: argparse.Namespace) -> None:
    files = read_file_list(args.file_list, args.shard)
    m = write_shard(files, args.out, min_samples=int(args.min_seconds * SAMPLE_RATE),
                    max_bad_fraction=args.max_bad_fraction)
    print(f"{args.out}: {len(m)} clips, {m.n_samples.sum() / SAMPLE_RATE / 60:.1f} min")
