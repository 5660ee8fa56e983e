"""Embedding extraction from a trained checkpoint.

Audio of any length and rate is resampled to 24 kHz and cut into 4-s chunks (the last one
shorter); the frame embeddings of the chunks are concatenated, and the scene embedding is
their mean over time (the paper's protocol). Chunks of all clips are pooled and run in
batches of equal length, so a task of many short clips and a single long file are both
batched.

Frame t of a 24-kHz signal is centred at sample 320 t + 160, i.e. at (320 t + 160) / 24 ms.

A task split is read about ``BLOCK_SECONDS`` of audio at a time (``BLOCK_FILES`` clips at most)
and only its scene embeddings are kept, so memory does not grow with the split (FSD50K's
training split included); a file longer than ``LONG_FILE_SECONDS`` is read and embedded a block
at a time, so memory does not grow with a file either.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encodecmae import CROP_SAMPLES, HOP, SAMPLE_RATE, provenance
from encodecmae.data.audio import load_audio, resample, stream_audio
from encodecmae.data.shards import audio_seconds
from encodecmae.device import resolve_device
from encodecmae.evaluation.tasks import (
    clip_path,
    metadata_path,
    read_metadata,
    split_files,
    task_sample_rate,
    task_split_names,
)
from encodecmae.model.transformer import EncodecMAE
from encodecmae.progress import Progress
from encodecmae.resume import BlockStore
from encodecmae.training.checkpoints import load_model


BLOCK_FILES = 256  # clips of a task split loaded and embedded at a time, at most ...
BLOCK_SECONDS = 600.0  # ... and about this much audio
LONG_FILE_SECONDS = 600.0  # a longer file is streamed (Embedder.stream_scene), not loaded whole


def frame_times_ms(n: int) -> np.ndarray:
    """Centre time in milliseconds of each of ``n`` frames."""
    return ((np.arange(n) * HOP + HOP / 2) / SAMPLE_RATE * 1000.0).astype(np.float32)


def chunk_bounds(n_samples: int, chunk: int = CROP_SAMPLES) -> list[tuple[int, int]]:
    """(start, stop) of the 4-s chunks of a clip; the last chunk may be shorter."""
    return [(s, min(s + chunk, n_samples)) for s in range(0, max(n_samples, 1), chunk)]


@torch.no_grad()
def run_chunks(forward: Callable[[torch.Tensor], np.ndarray], clips: list[np.ndarray], batch_size: int = 16,
               device: str | torch.device = "cpu", progress: bool = False) -> list[list[np.ndarray]]:
    """``forward`` of every 4-s chunk of each 24-kHz clip: per clip, its chunks' outputs in order.

    Chunks of all clips are pooled and run in batches of equal length, longest first (no padding,
    so a chunk's output does not depend on its batch). ``forward`` maps wav [b, n] on ``device``
    to a numpy array [b, ...].
    """
    groups: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)  # length -> (clip, idx, start, stop)
    n_chunks = []
    for ci, clip in enumerate(clips):
        if len(clip) == 0:
            raise ValueError(f"clip {ci} is empty")
        bounds = chunk_bounds(len(clip))
        n_chunks.append(len(bounds))
        for k, (s, e) in enumerate(bounds):
            groups[e - s].append((ci, k, s, e))
    out: list[list] = [[None] * n for n in n_chunks]
    bar = Progress("embed", total=sum(n_chunks), unit="chunk", disable=not progress)
    for length in sorted(groups, reverse=True):
        items = groups[length]
        for b0 in range(0, len(items), batch_size):
            part = items[b0 : b0 + batch_size]
            wav = torch.from_numpy(np.stack([clips[ci][s:e] for ci, _, s, e in part]).astype(np.float32))
            for (ci, k, _, _), y in zip(part, forward(wav.to(device))):
                out[ci][k] = y
            bar.update(len(part))
    bar.close()
    return out


def embed_clips(model: EncodecMAE, clips: list[np.ndarray], layer: int = -1, batch_size: int = 16,
                device: str | torch.device = "cpu", progress: bool = False) -> list[np.ndarray]:
    """Frame embeddings [ceil(n/320), D] float32 of each 24-kHz clip, from encoder ``layer``.

    ``layer`` indexes ``EncodecMAE.hidden_states``: -1 the encoder output (default), -2 the
    last block before the final output norm.
    """
    def forward(wav: torch.Tensor) -> np.ndarray:  # [b, n] -> [b, t, D]
        return model.hidden_states(wav)[layer].float().cpu().numpy()

    return [np.concatenate(chunks, axis=0) for chunks in run_chunks(forward, clips, batch_size, device, progress)]


def plan_blocks(seconds: list[float], block_seconds: float, max_files: int | None = None,
                alone_over: float = math.inf) -> list[list[int]]:
    """How a split is read a block at a time: lists of consecutive file indices, a block closed
    once it holds ``block_seconds`` of audio or ``max_files`` files; a file longer than
    ``alone_over`` seconds is a block of its own. NaN (an unreadable header) counts as 0 s."""
    blocks, cur, secs = [], [], 0.0
    for i, s in enumerate(seconds):
        if s > alone_over:
            blocks += [cur, [i]] if cur else [[i]]
            cur, secs = [], 0.0
            continue
        cur.append(i)
        secs += s if s == s else 0.0
        if secs >= block_seconds or (max_files is not None and len(cur) >= max_files):
            blocks.append(cur)
            cur, secs = [], 0.0
    if cur:
        blocks.append(cur)
    return blocks


class Embedder:
    """A checkpoint ready to embed audio files or arrays at any sample rate."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", layer: int = -1, batch_size: int = 16):
        self.device = resolve_device(device)
        self.model = load_model(checkpoint, self.device)
        self.layer, self.batch_size = layer, batch_size

    @property
    def dim(self) -> int:
        return self.model.cfg.d_model

    def frames(self, clips: list[np.ndarray], sample_rate: int = SAMPLE_RATE, progress: bool = False) -> list[np.ndarray]:
        clips24 = [resample(c, sample_rate, SAMPLE_RATE) for c in clips]
        return embed_clips(self.model, clips24, self.layer, self.batch_size, self.device, progress)

    def scenes(self, clips: list[np.ndarray], sample_rate: int = SAMPLE_RATE, progress: bool = False) -> np.ndarray:
        return np.stack([f.mean(axis=0) for f in self.frames(clips, sample_rate, progress)]).astype(np.float32)

    def stream_scene(self, path: str | Path) -> np.ndarray:
        """The scene embedding of an audio file of any length, read and embedded a block at a
        time: the mean of the frames of its 4-s chunks, as ``scenes`` of the whole file gives
        (to float rounding), with memory for one block."""
        total, count = np.zeros(self.dim, np.float64), 0
        pending = np.zeros(0, np.float32)

        def add(chunks: list[np.ndarray]) -> None:
            nonlocal total, count
            for f in embed_clips(self.model, chunks, self.layer, self.batch_size, self.device):
                total += f.sum(axis=0, dtype=np.float64)
                count += len(f)

        for block in stream_audio(path, SAMPLE_RATE):
            pending = np.concatenate([pending, block])
            whole = len(pending) // CROP_SAMPLES * CROP_SAMPLES
            if whole:
                add([pending[s : s + CROP_SAMPLES] for s in range(0, whole, CROP_SAMPLES)])
                pending = pending[whole:]
        if len(pending):
            add([pending])
        return (total / count).astype(np.float32)


def embed_task(checkpoint: str | Path, task_dir: str | Path, out: str | Path, layer: int = -1,
               batch_size: int = 16, device: str = "cpu") -> Path:
    """Scene embeddings of every clip of a HEAR-layout task, as an .npz per split.

    Writes ``emb_{split}`` float32 [n, D] and ``files_{split}`` (file names, sorted) for each
    split named in the task's metadata, and ``provenance``: a JSON string with this run's code
    commit, the layer, the SHA-256 of the task folder and the model's provenance (see
    ``provenance.embedding_provenance``).
    """
    task_dir, out = Path(task_dir), Path(out)
    meta = read_metadata(task_dir)
    sr = task_sample_rate(meta)
    _, splits = task_split_names(meta, metadata_path(task_dir))
    emb = Embedder(checkpoint, device, layer, batch_size)
    arrays = {"provenance": provenance.to_npz_value(provenance.embedding_provenance(checkpoint, task_dir, layer))}
    # a killed job's rerun continues after its last finished block (encodecmae.resume)
    store = BlockStore(out, {"provenance": str(arrays["provenance"]), "batch_size": batch_size,
                             "blocks": [BLOCK_FILES, BLOCK_SECONDS, LONG_FILE_SECONDS]})
    for split in splits:
        files = split_files(task_dir, split)
        paths = [clip_path(task_dir, sr, split, f) for f in files]
        seconds = [audio_seconds(p) for p in paths]  # NaN when unreadable: load_audio names the file
        bar = Progress(f"embed {split}", total=len(files), unit="file")
        parts = []
        # memory holds one block of audio (BLOCK_SECONDS or BLOCK_FILES), not the split's
        for b, idx in enumerate(plan_blocks(seconds, BLOCK_SECONDS, BLOCK_FILES, LONG_FILE_SECONDS)):
            name = f"{split}-{b:09d}"
            part = store.get(name)  # a block from an earlier run, if it got there
            if part is None:
                if seconds[idx[0]] > LONG_FILE_SECONDS:  # alone in its block, read a block at a time
                    part = emb.stream_scene(paths[idx[0]])[None]
                else:
                    part = emb.scenes([load_audio(paths[i], sr) for i in idx], sr)
                store.put(name, part)
            parts.append(part)
            bar.update(len(idx))
        bar.close()
        arrays[f"emb_{split}"] = np.concatenate(parts) if parts else np.zeros((0, emb.model.cfg.d_model), np.float32)
        arrays[f"files_{split}"] = np.array(files)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez(tmp, **arrays)
    tmp.rename(out)
    store.close()
    return out


def embed_files(checkpoint: str | Path, files: list[str | Path], out_dir: str | Path, layer: int = -1,
                batch_size: int = 16, device: str = "cpu", log: Callable[[str], None] | None = None) -> list[Path]:
    """Frame embeddings, scene embedding and frame times of each audio file (any rate, any
    channel count), as ``out_dir/NAME.npz`` (``frames``, ``scene``, ``timestamps_ms``) per file."""
    say = log or (lambda msg: None)
    emb = Embedder(checkpoint, device, layer, batch_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:  # one file in memory at a time
        frames = emb.frames([load_audio(f)])[0]
        dest = out_dir / (Path(f).stem + ".npz")
        np.savez(dest, frames=frames, scene=frames.mean(0), timestamps_ms=frame_times_ms(len(frames)))
        say(f"{f} -> {dest} ({len(frames)} frames x {frames.shape[1]})")
        written.append(dest)
    return written


def cmd_embed(args: argparse.Namespace) -> None:
    embed_files(checkpoint=args.checkpoint, files=args.files, out_dir=args.out_dir, layer=args.layer,
                batch_size=args.batch_size, device=args.device, log=print)


def cmd_embed_task(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    embed_task(checkpoint=args.checkpoint, task_dir=args.task_dir, out=args.out, layer=args.layer,
               batch_size=args.batch_size, device=args.device)


def register(sub) -> None:
    p = sub.add_parser("embed", help="embed audio files: frames, scene embedding and timestamps per file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", required=True, help="writes NAME.npz (frames, scene, timestamps_ms) per input")
    p.add_argument("--layer", type=int, default=-1, help="encoder layer (-1: last, the paper's choice)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("files", nargs="+", help="audio files (any rate, any channel count)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("embed-task", help="scene embeddings of every clip of a HEAR-layout task")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task-dir", required=True)
    p.add_argument("--out", required=True, help=".npz with emb_SPLIT and files_SPLIT arrays")
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.set_defaults(func=cmd_embed_task)
