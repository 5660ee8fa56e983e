"""HEAR 2021 task folders at the model's rate: the ``prepare-hear-task`` command.

The paper's downstream scores were measured on HEAR task audio at 24 kHz, resampled from the
higher-rate copies so that the band up to 12 kHz is there. HEAR distributes each task (Zenodo)
as ``hear2021-<task>-48000.tar.gz`` with members ``[hear-<version>/]tasks/<task>/...``:

* ``task_metadata.json``, ``labelvocabulary.csv`` and one ``<split>.json`` per split
  (``train``/``valid``/``test`` or ``fold00``..): the metadata files, at the task's root;
* ``<rate>/<split>/<file>``: the audio (mono 16-bit WAV) at ``rate`` Hz.

``prepare_task(source, out_dir, task)`` turns such a task, given as the tarball or as a task
folder hear-preprocess wrote (``<task>/`` with ``task_metadata.json`` and rate folders), into a
task folder of the same layout at ``sample_rate`` (24000): every clip resampled (torchaudio's
sinc resampler, ``encodecmae.data.audio.resample``) to 16-bit PCM mono WAV under
``out_dir/<sample_rate>/<split>/<file>`` (same file name), the metadata files copied, and
``task_metadata.json`` given ``sample_rate`` (where ``encodecmae.evaluation.tasks`` looks for
the audio folder) and ``source_sample_rate`` (the rate the clips were resampled from).

The source rate is the lowest one at or above ``sample_rate`` (48000, 44100, 32000): resampling
down from it keeps the whole band the model sees. A task that only has lower rates (16000, 22050)
is refused unless ``allow_upsampling``: upsampled audio has nothing above the source's Nyquist
frequency, which is not the audio the paper's numbers were measured on.

A tarball is read as a stream, member by member (never unpacked to disk, which for FSD50K would
take tens of GB), so memory holds one clip whatever the task's size. The work goes to
``<out_dir>.partial/`` (outside the output, so it survives the workflow engine deleting a failed
job's output); each clip is written under a temporary name and renamed, so a clip there is
complete, and a rerun (after a kill, or on a complete copy of a truncated tarball) skips the clips
already there. ``<out_dir>.partial`` is renamed to ``out_dir`` only once every clip of every split
is there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

from encodecmae import SAMPLE_RATE
from encodecmae.data.audio import MAX_CHANNELS, AudioError, resample
from encodecmae.progress import Progress

METADATA_FILE = "task_metadata.json"
STATE_FILE = ".prepare-hear-task.json"  # in the .partial folder: what its clips were made from
STATE_VERSION = 1  # bump when the clips written for the same key would differ
TMP_SUFFIX = ".tmp"


class HearTaskError(ValueError):
    """A task that cannot be prepared; the message names the task and the source."""


# --------------------------------------------------------------------------------------------
# Which rate to read
# --------------------------------------------------------------------------------------------


def _rank(rate: int, target: int) -> tuple[int, int]:
    """Preference order of source rates (smaller is better): rates at or above the target,
    lowest first (the least work, nothing of the target's band lost), then lower rates,
    highest first (used only when upsampling is allowed)."""
    return (0, rate) if rate >= target else (1, -rate)


def _no_rate_error(task: str, source: Path, target: int, rates: set[int]) -> HearTaskError:
    found = ", ".join(str(r) for r in sorted(rates)) or "none"
    return HearTaskError(
        f"{task}: no audio at {target} Hz or above in {source} (audio rates found: {found}). The "
        f"{target}-Hz task must be resampled from a copy at {target} Hz or more (HEAR's 48000-Hz "
        f"tarball, hear2021-{task}-48000.tar.gz); audio upsampled from a lower rate has nothing above "
        f"half that rate. Pass --allow-upsampling (allow_upsampling=True) to upsample anyway."
    )


def _upsampling_warning(task: str, rate: int, target: int) -> None:
    bar = "!" * 78
    print(f"{bar}\nWARNING: {task}: no audio at {target} Hz or above; UPSAMPLING from {rate} Hz "
          f"(--allow-upsampling).\nWARNING: the prepared clips have nothing above {rate // 2} Hz: "
          f"scores on them are not comparable with the paper's.\n{bar}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The output being built
# --------------------------------------------------------------------------------------------


def _to_int16(x: np.ndarray) -> np.ndarray:
    # soundfile reads 16-bit PCM as v / 32768: scaling back by 32768 copies a clip at the same
    # rate bit for bit
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _safe_parts(parts: list[str], where: str) -> list[str]:
    """Path components of an archive member or split entry, refusing any that would write
    outside the output folder."""
    for p in parts:
        if p in ("", ".", "..") or "\\" in p or p.startswith("/"):
            raise HearTaskError(f"{where}: unsafe path component {p!r}")
    return parts


class _Partial:
    """``<out_dir>.partial``: the clips done so far and the state they were made from."""

    def __init__(self, out_dir: Path, task: str, sample_rate: int):
        self.dir = out_dir.with_name(out_dir.name + ".partial")
        self.task, self.sample_rate = task, sample_rate
        self.source_rate: int | None = None
        self.written = self.reused = 0
        state = self._read_state()
        if state is not None and (state.get("task"), state.get("sample_rate"), state.get("version")) != (
            task, sample_rate, STATE_VERSION
        ):
            print(f"{self.dir}: left by a run for another task or rate ({state}): starting over", flush=True)
            shutil.rmtree(self.dir)
            state = None
        self._state_rate = state.get("source_sample_rate") if state else None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.audio_dir = self.dir / str(sample_rate)

    def _read_state(self) -> dict | None:
        path = self.dir / STATE_FILE
        if not self.dir.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # a folder without a readable state is not ours to reuse

    def use_rate(self, rate: int) -> None:
        """Clips from now on are resampled from ``rate``; clips made from another rate (an
        earlier run's, or this run's before a better rate turned up) are discarded."""
        if rate == self.source_rate:
            return
        if self.source_rate is not None or (self._state_rate is not None and self._state_rate != rate):
            if self.audio_dir.exists():
                print(f"{self.dir}: discarding clips made from {self._state_rate or self.source_rate} Hz "
                      f"(now reading {rate} Hz)", flush=True)
                shutil.rmtree(self.audio_dir)
            self.written = self.reused = 0
        elif self.audio_dir.exists():
            print(f"{self.dir}: resuming, {self.n_clips()} clips were made by an earlier run", flush=True)
        self.source_rate = self._state_rate = rate
        state = {"task": self.task, "sample_rate": self.sample_rate, "source_sample_rate": rate,
                 "version": STATE_VERSION}
        _atomic_write_bytes(self.dir / STATE_FILE, json.dumps(state).encode())

    def clip(self, split: str, filename: str, read: Callable[[], bytes], where: str) -> None:
        """Resample one clip (``read()`` gives its encoded bytes) into the output, unless an
        earlier run wrote it already."""
        out = self.audio_dir / split / filename
        if out.exists():  # written whole under a temporary name and renamed: complete
            self.reused += 1
            return
        data = read()  # read whole (one clip) before anything is written
        wav = _decode(data, where, self.source_rate)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}{TMP_SUFFIX}")
        sf.write(str(tmp), _to_int16(resample(wav, self.source_rate, self.sample_rate)), self.sample_rate,
                 format="WAV", subtype="PCM_16")
        os.replace(tmp, out)
        self.written += 1

    def n_clips(self) -> int:
        return sum(1 for p in self.audio_dir.rglob("*") if p.is_file() and not p.name.endswith(TMP_SUFFIX)) \
            if self.audio_dir.exists() else 0

    def remove_tmp_files(self) -> None:
        for root, _, files in os.walk(self.dir):
            for f in files:
                if f.startswith(".") and f.endswith(TMP_SUFFIX):
                    os.unlink(os.path.join(root, f))


def _decode(data: bytes, where: str, folder_rate: int | None) -> np.ndarray:
    """A clip's bytes as float32 mono samples, checked as ``load_audio`` checks files."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.channels > MAX_CHANNELS:
                raise AudioError(f"{where}: {f.channels} channels (at most {MAX_CHANNELS} are mixed to mono)")
            rate = f.samplerate
            x = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types
        raise AudioError(f"{where}: cannot read audio ({exc})") from exc
    if rate != folder_rate:  # the folder's rate is what was chosen (and what the metadata will say)
        raise AudioError(f"{where}: the file says {rate} Hz but lies in the {folder_rate}-Hz folder")
    if x.size == 0:
        raise AudioError(f"{where}: audio is empty")
    if not np.isfinite(x).all():
        raise AudioError(f"{where}: audio holds NaN or Inf samples")
    return x.mean(axis=1)


# --------------------------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------------------------


def _find_task_dir(source: Path, task: str) -> Path:
    """The task folder in ``source``: the folder itself, ``source/<task>`` or
    ``source/tasks/<task>`` (hear-preprocess's tasks folder, or an unpacked tarball)."""
    for d in (source, source / task, source / "tasks" / task):
        if (d / METADATA_FILE).is_file():
            return d
    raise HearTaskError(f"{task}: no {METADATA_FILE} in {source}, {source / task} or {source / 'tasks' / task} "
                        f"(is it a hear-preprocess task folder?)")


def _rate_dirs(task_dir: Path) -> dict[int, Path]:
    return {int(d.name): d for d in task_dir.iterdir() if d.is_dir() and d.name.isdigit()}


def _prepare_from_dir(source: Path, task: str, target: int, allow_upsampling: bool, part: _Partial,
                      meta_files: dict[str, bytes]) -> None:
    task_dir = _find_task_dir(source, task)
    rate_dirs = _rate_dirs(task_dir)
    usable = [r for r in rate_dirs if r >= target or allow_upsampling]
    if not usable:
        raise _no_rate_error(task, source, target, set(rate_dirs))
    rate = min(usable, key=lambda r: _rank(r, target))
    if rate < target:
        _upsampling_warning(task, rate, target)
    for f in sorted(task_dir.iterdir()):
        if f.is_file():
            meta_files[f.name] = f.read_bytes()
    part.use_rate(rate)
    clips = [(split_dir.name, f) for split_dir in sorted(rate_dirs[rate].iterdir()) if split_dir.is_dir()
             for f in sorted(split_dir.rglob("*")) if f.is_file()]
    with Progress(f"prepare {task}", total=len(clips), unit="clip") as bar:
        for split, f in clips:
            name = f.relative_to(rate_dirs[rate] / split).as_posix()
            part.clip(split, name, f.read_bytes, str(f))
            bar.update()


class _TarInfo(tarfile.TarInfo):
    """Notes on the archive when its end-of-archive block was read: ``TarFile.next`` returns
    None alike at that block and when the data stops early at a member boundary (a truncated
    download), and only the first is a complete archive."""

    @classmethod
    def fromtarfile(cls, archive):
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            archive.clean_end = True
            raise


# what reading a damaged or truncated archive raises (tarfile wraps most of it in ReadError)
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


class _SourceReadError(Exception):
    """Reading the archive failed (as opposed to writing the output: a full disk is no
    truncated download)."""


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members in archive order; the archive forgets each one once passed (in stream mode
    ``TarFile`` otherwise keeps every member's TarInfo: memory growing with the task)."""
    while True:
        try:
            member = archive.next()
        except _READ_ERRORS as exc:
            raise _SourceReadError(str(exc)) from exc
        if member is None:
            return
        yield member
        archive.members = []


def _reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return archive.extractfile(member).read()
        except _READ_ERRORS as exc:
            raise _SourceReadError(f"{member.name}: {exc}") from exc
    return read


def _prepare_from_tar(source: Path, task: str, target: int, allow_upsampling: bool, part: _Partial,
                      meta_files: dict[str, bytes]) -> None:
    rates_seen: set[int] = set()
    tasks_seen: set[str] = set()
    found_task = False
    warned = False
    try:
        try:  # "r|*": a stream of members, any compression; no seeking, nothing unpacked
            archive = tarfile.open(source, "r|*", tarinfo=_TarInfo)
        except _READ_ERRORS as exc:
            raise _SourceReadError(str(exc)) from exc
        with archive, Progress(f"prepare {task}", unit="clip") as bar:
            for member in _members(archive):
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if "tasks" in parts[:-1]:
                    tasks_seen.add(parts[parts.index("tasks") + 1])
                if not member.isfile() or task not in parts[:-1]:
                    continue
                found_task = True
                rel = _safe_parts(parts[parts.index(task) + 1:], f"{source}: member {member.name!r}")
                if len(rel) == 1:  # task_metadata.json, labelvocabulary.csv, <split>.json
                    meta_files[rel[0]] = _reader(archive, member)()
                    continue
                if len(rel) < 3 or not rel[0].isdigit():
                    continue  # not <rate>/<split>/<file>
                rate = int(rel[0])
                rates_seen.add(rate)
                if rate < target and not allow_upsampling:
                    continue
                if part.source_rate is None or _rank(rate, target) < _rank(part.source_rate, target):
                    # a better rate than the clips done so far were made from (several rates in one
                    # archive: the lowest at or above the target wins)
                    part.use_rate(rate)
                    if rate < target and not warned:
                        _upsampling_warning(task, rate, target)
                        warned = True
                if rate != part.source_rate:
                    continue
                where = f"{source}: {member.name}"
                part.clip(rel[1], "/".join(rel[2:]), _reader(archive, member), where)
                bar.update()
            clean_end = getattr(archive, "clean_end", False)
    except _SourceReadError as exc:
        raise _truncated(source, task, part, str(exc)) from exc
    if not found_task:
        names = ", ".join(sorted(tasks_seen)[:20]) or "none"
        raise HearTaskError(f"{source}: no task {task!r} in the archive (tasks found: {names})")
    if not clean_end:
        raise _truncated(source, task, part, "no end-of-archive block")
    if part.source_rate is None:
        raise _no_rate_error(task, source, target, rates_seen)
    if part.source_rate < target and not warned:
        _upsampling_warning(task, part.source_rate, target)


def _truncated(source: Path, task: str, part: _Partial, why: str) -> HearTaskError:
    return HearTaskError(
        f"{source}: the archive ends early or is corrupt ({why}). {part.n_clips()} clips of {task} are kept in "
        f"{part.dir}; run again on a complete archive (check its sha256) to continue from them."
    )


# --------------------------------------------------------------------------------------------
# Splits and the final check
# --------------------------------------------------------------------------------------------


def _split_names(meta: dict, meta_files: dict[str, bytes], where: str) -> list[str]:
    """The task's splits: ``splits`` in the metadata (hear-preprocess and our demo tasks write
    it), else from ``split_mode``/``nfolds`` or our ``mode``, else every ``<split>.json``."""
    from encodecmae.evaluation.tasks import HEAR_SPLIT_MODES, task_split_names

    if isinstance(meta.get("splits"), list) and meta["splits"]:
        return [str(s) for s in meta["splits"]]
    if meta.get("split_mode") in HEAR_SPLIT_MODES or meta.get("mode") in ("train_valid_test", "folds"):
        try:  # the one reading of split modes (evaluation.tasks)
            return task_split_names(meta, where)[1]
        except ValueError as exc:  # a k-fold task without nfolds
            raise HearTaskError(str(exc)) from None
    found = sorted(n[:-5] for n in meta_files if n.endswith(".json") and n != METADATA_FILE)
    if not found:
        raise HearTaskError(f"{where}: no splits in the metadata and no <split>.json files")
    return found


def _check_and_count(part: _Partial, splits: list[str], task: str) -> dict[str, dict]:
    """Every clip of every split JSON has its audio: clips and hours per split (else an error
    naming the missing clips)."""
    counts, missing = {}, []
    for split in splits:
        path = part.dir / f"{split}.json"
        if not path.exists():
            raise HearTaskError(f"{task}: the metadata names split {split!r} but the source has no {split}.json")
        frames = 0
        names = json.loads(path.read_text())
        for name in names:
            clip = part.audio_dir / split / name
            if not clip.is_file():
                missing.append(f"{split}/{name}")
                continue
            frames += sf.info(str(clip)).frames
        counts[split] = {"clips": len(names), "hours": frames / part.sample_rate / 3600}
    if missing:
        raise HearTaskError(
            f"{task}: {len(missing)} clips listed in the split files have no audio in the source (the clips "
            f"made are kept in {part.dir}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    return counts


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def prepare_task(source: str | Path, out_dir: str | Path, task: str, sample_rate: int = SAMPLE_RATE,
                 allow_upsampling: bool = False) -> dict:
    """Write HEAR task ``task`` from ``source`` (a HEAR tarball, or a hear-preprocess task folder)
    to ``out_dir`` at ``sample_rate`` Hz; see the module docstring.

    Returns a summary: ``task``, ``out_dir``, ``sample_rate``, ``source_sample_rate``,
    ``splits`` ({split: {"clips", "hours"}}), ``clips``, ``hours``, ``written`` (clips resampled
    by this call) and ``reused`` (clips an earlier, interrupted call had written). Raises
    HearTaskError (no such task, no rate to read from, truncated archive, clips missing) or
    AudioError (a clip that cannot be decoded), keeping ``<out_dir>.partial`` for the rerun.
    """
    source, out_dir = Path(source), Path(out_dir)
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such task folder or archive")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: already exists (remove it to prepare {task} again)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    part = _Partial(out_dir, task, sample_rate)
    meta_files: dict[str, bytes] = {}  # task root files: a few small files (the split lists)
    try:
        if source.is_dir():
            _prepare_from_dir(source, task, sample_rate, allow_upsampling, part, meta_files)
        else:
            _prepare_from_tar(source, task, sample_rate, allow_upsampling, part, meta_files)
    except HearTaskError:
        if part.n_clips() == 0:  # nothing worth keeping for a rerun
            shutil.rmtree(part.dir, ignore_errors=True)
        raise
    if METADATA_FILE not in meta_files:
        raise HearTaskError(f"{task}: no {METADATA_FILE} in {source}")
    meta = json.loads(meta_files[METADATA_FILE])
    splits = _split_names(meta, meta_files, f"{source}: {task}/{METADATA_FILE}")
    # evaluation.tasks finds the audio under {sample_rate}/; source_sample_rate records the band
    meta["sample_rate"] = sample_rate
    meta["source_sample_rate"] = part.source_rate
    meta_files[METADATA_FILE] = (json.dumps(meta, indent=1) + "\n").encode()
    for name, data in meta_files.items():
        _atomic_write_bytes(part.dir / _safe_parts([name], f"{source}: {name}")[0], data)

    counts = _check_and_count(part, splits, task)
    part.remove_tmp_files()  # left by a killed run
    (part.dir / STATE_FILE).unlink()
    os.replace(part.dir, out_dir)

    total_clips = sum(c["clips"] for c in counts.values())
    total_hours = sum(c["hours"] for c in counts.values())
    per_split = ", ".join(f"{s} {c['clips']} clips {c['hours']:.2f} h" for s, c in counts.items())
    upsampled = " (UPSAMPLED)" if part.source_rate < sample_rate else ""
    print(f"{out_dir}: {task} at {sample_rate} Hz from {part.source_rate} Hz{upsampled}: {per_split}; "
          f"total {total_clips} clips, {total_hours:.2f} h ({part.written} resampled now, {part.reused} "
          f"from an earlier run)", flush=True)
    return {"task": task, "out_dir": str(out_dir), "sample_rate": sample_rate,
            "source_sample_rate": part.source_rate, "splits": counts, "clips": total_clips,
            "hours": total_hours, "written": part.written, "reused": part.reused}


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-hear-task",
        help="resample a HEAR task (tarball or hear-preprocess folder) to the model's rate",
        description="Write HEAR task --task from --source (hear2021-<task>-48000.tar.gz, read as a stream, or "
        "a hear-preprocess task folder) to --out: the metadata files, and every clip resampled to "
        "--sample-rate as 16-bit mono WAV under OUT/<sample-rate>/<split>/. Resumable: work goes to "
        "OUT.partial/ and a rerun skips the clips already there.",
    )
    p.add_argument("--source", type=Path, required=True,
                   help="HEAR task tarball (.tar, .tar.gz) or task folder (with task_metadata.json)")
    p.add_argument("--task", required=True, help="HEAR task name, e.g. speech_commands-v0.0.2-full")
    p.add_argument("--out", type=Path, required=True, help="task folder to write (must not exist)")
    p.add_argument("--sample-rate", type=int, default=SAMPLE_RATE,
                   help=f"rate of the prepared audio (default {SAMPLE_RATE})")
    p.add_argument("--allow-upsampling", action="store_true",
                   help="accept a source with only lower rates (16000/22050): upsampled, without the upper band")
    p.set_defaults(func=cmd_prepare_hear_task)


def cmd_prepare_hear_task(args: argparse.Namespace) -> None:
    prepare_task(args.source, args.out, args.task, sample_rate=args.sample_rate,
                 allow_upsampling=args.allow_upsampling)
