"""ASR features on disk: every mixed state of each utterance of a split, at 37.5 Hz in float16.

Written once per split by :func:`extract_features`, block by block and resumable, and read back
lazily by :class:`AsrFeatures`. Precomputing them is what makes 200k steps affordable: the
upstream is frozen, so it would compute the same activations at every epoch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from encodecmae import SAMPLE_RATE
from encodecmae.device import resolve_device
from encodecmae.evaluation.asr.layers import (
    ASR_FRAME_RATE,
    DEFAULT_LAYER_MIX,
    layer_features_batch,
    layer_names,
)
from encodecmae.evaluation.asr.text import encode, read_split
from encodecmae.progress import Progress

BLOCK_SECONDS = 100.0  # audio per block of extract_features: ~7.5k frames, 0.3 GB float32 (base)
FEATURES_FORMAT = "encodecmae-asr-features"
FEATURES_VERSION = 1


def _block_features(model, paths: list[Path], device, layer_mix: str) -> list[np.ndarray]:
    """The features of one block of utterances (audio loaded here: one block in memory)."""
    from encodecmae.data.audio import load_audio

    return layer_features_batch(model, [load_audio(p, SAMPLE_RATE) for p in paths], device=device,
                                layer_mix=layer_mix)


def _plan_blocks(utts: list[tuple[str, Path, str]], block_seconds: float) -> list[list[int]]:
    """Utterance indices of each block: consecutive utterances until ``block_seconds`` of audio
    (from the file headers, as embed_task plans a split: the same plan on every run of the same
    split and setting)."""
    from encodecmae.data.audio import AudioError
    from encodecmae.data.shards import audio_seconds
    from encodecmae.evaluation.embed import plan_blocks

    seconds = [audio_seconds(path) for _, path, _ in utts]
    for (utt, path, _), s in zip(utts, seconds):
        if math.isnan(s):  # unreadable header
            raise AudioError(f"{path}: cannot read audio (utterance {utt})")
    return plan_blocks(seconds, block_seconds)


INDEX_COLUMNS = ("utt_id", "block", "offset", "n_frames", "transcript")


def _write_index(dir_: Path, rows: list[tuple], meta: dict) -> None:
    with open(dir_ / "index.tsv", "w") as f:
        f.write("\t".join(INDEX_COLUMNS) + "\n")
        f.writelines("\t".join(str(x) for x in r) + "\n" for r in rows)
    (dir_ / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")  # last: marks it complete


def _replace_dir(src: Path, dest: Path) -> None:
    """Move the finished ``src`` folder to ``dest``: an empty ``dest`` or an earlier features
    folder there is replaced, anything else is left alone (an error)."""
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        elif (dest / "meta.json").exists() and (dest / "index.tsv").exists():
            shutil.rmtree(dest)
        else:
            raise FileExistsError(f"{dest}: exists and is not an ASR features folder; remove it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


def feature_file(block: int) -> str:
    return f"feats-{block:06d}.npy"


def extract_features(checkpoint: str | Path, split_dir: str | Path, out_dir: str | Path, device: str = "cpu",
                     threads: int = 0, block_seconds: float = BLOCK_SECONDS,
                     layer_mix: str = DEFAULT_LAYER_MIX) -> Path:
    """Features of every utterance of a LibriSpeech-layout split, written to ``out_dir``: the
    states of ``layer_mix`` (:mod:`encodecmae.evaluation.asr.layers`), pairs of frames averaged.

    On disk (read by :class:`AsrFeatures`): ``feats-NNNNNN.npy`` per block, float16
    [frames of the block's utterances, S, D] (S states) (an utterance's frames are contiguous);
    ``index.tsv`` (utt_id, block, offset, n_frames, transcript; sorted by utt_id); ``meta.json``
    (layers, dimension, frame rate, provenance). The split is read ``block_seconds`` of audio at a
    time, so memory holds one block whatever the split's size. Blocks are kept as they finish
    in ``<out_dir>.parts/`` (:class:`encodecmae.resume.BlockStore`: a killed job's rerun computes
    only the missing ones); the finished folder is moved to ``out_dir`` at the end.
    """
    from encodecmae import provenance
    from encodecmae.resume import BlockStore
    from encodecmae.training.checkpoints import load_model

    out_dir = Path(out_dir)
    if threads:
        torch.set_num_threads(threads)
    if block_seconds <= 0:
        raise ValueError(f"--block-seconds must be positive, got {block_seconds}")
    layer_names(1, layer_mix)  # an unknown mix fails before any work
    dev = resolve_device(device)
    utts = read_split(split_dir)
    for utt, _, text in utts:  # fail before any compute on a transcript we cannot train on
        try:
            encode(text)
        except ValueError as exc:
            raise ValueError(f"{split_dir}: utterance {utt}: {exc}") from exc
    model = load_model(checkpoint, dev)
    ckpt_sha = provenance.sha256_file(checkpoint)
    split_sha = provenance.sha256_json([(u, t, Path(p).stat().st_size) for u, p, t in utts])
    blocks = _plan_blocks(utts, block_seconds)
    store = BlockStore(out_dir, {"format": FEATURES_FORMAT, "version": FEATURES_VERSION, "checkpoint_sha256": ckpt_sha,
                                 "split_sha256": split_sha, "block_seconds": block_seconds,
                                 "layer_mix": layer_mix})
    bar = Progress(f"asr features {Path(split_dir).name}", total=len(utts), unit="utt")
    n_frames: list[np.ndarray] = []
    for b, idx in enumerate(blocks):
        frames = store.get(f"frames-{b:06d}")  # written after its features: the block is done
        if frames is None:
            feats = _block_features(model, [utts[i][1] for i in idx], dev, layer_mix)  # [S, t_i, D] each
            # [sum t_i, S, D]: an utterance's frames contiguous on disk
            block = np.concatenate([f.transpose(1, 0, 2) for f in feats], axis=0).astype(np.float16)
            store.put(Path(feature_file(b)).stem, block)
            frames = np.array([f.shape[1] for f in feats], np.int64)
            store.put(f"frames-{b:06d}", frames)
        n_frames.append(frames)
        bar.update(len(idx))
    bar.close()
    rows = []
    for b, (idx, frames) in enumerate(zip(blocks, n_frames)):
        offsets = np.concatenate([[0], np.cumsum(frames)[:-1]])
        for i, off, n in zip(idx, offsets, frames):
            rows.append((utts[i][0], b, int(off), int(n), utts[i][2]))
    names, D = layer_names(model.cfg.n_layers, layer_mix), model.cfg.d_model
    L1 = len(names)
    meta = {"format": FEATURES_FORMAT, "version": FEATURES_VERSION, "n_layers": L1, "dim": D, "layer_mix": layer_mix,
            "layers": names, "frame_rate": ASR_FRAME_RATE, "dtype": "float16",
            "layout": "feats-NNNNNN.npy [frames, layers, dim] per block; index.tsv rows (utt_id, block, offset, "
                      "n_frames, transcript)",
            "odd_last_frame": "kept alone", "n_utterances": len(rows), "n_frames": int(sum(r[3] for r in rows)),
            "split_dir": str(split_dir), "split_sha256": split_sha, "block_seconds": block_seconds,
            "checkpoint": str(checkpoint), "checkpoint_sha256": ckpt_sha,
            "model_provenance": provenance.checkpoint_provenance(checkpoint), "code": provenance.code_state()}
    _write_index(store.dir, rows, meta)
    _replace_dir(store.dir, out_dir)
    for b in range(len(blocks)):  # in index.tsv now; removed only after the move, so that a kill
        (out_dir / f"frames-{b:06d}.npy").unlink()  # before it leaves a resumable parts folder
    (out_dir / "key.json").unlink()
    print(f"wrote {out_dir}: {len(rows)} utterances, {meta['n_frames']} frames x {L1} layers x {D}", flush=True)
    return out_dir


def write_feature_dir(out_dir: str | Path, items: list[tuple[str, str, np.ndarray]], meta: dict | None = None) -> Path:
    """A features folder (the format of :func:`extract_features`, one block) from in-memory
    (utt_id, transcript, [L, T, D]) items: for synthetic problems and tests."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = sorted(items, key=lambda it: it[0])
    L, D = items[0][2].shape[0], items[0][2].shape[2]
    np.save(out_dir / feature_file(0), np.concatenate([f.transpose(1, 0, 2) for _, _, f in items]).astype(np.float16))
    rows, off = [], 0
    for utt, text, f in items:
        encode(text)
        rows.append((utt, 0, off, f.shape[1], " ".join(text.split())))
        off += f.shape[1]
    full = {"format": FEATURES_FORMAT, "version": FEATURES_VERSION, "n_layers": L, "dim": D,
            "frame_rate": ASR_FRAME_RATE, "dtype": "float16", "n_utterances": len(rows), "n_frames": off,
            **(meta or {})}
    _write_index(out_dir, rows, full)
    return out_dir


class AsrFeatures(torch.utils.data.Dataset):
    """A features folder (:func:`extract_features`), read one utterance at a time.

    ``self[i]`` is (features [L, T, D] float16 numpy, CTC ids int64 numpy) of the i-th utterance
    (sorted by utt_id); the block files are memory-mapped (a few at a time), so only the
    utterances asked for are read. ``utt_ids``, ``transcripts`` and ``n_frames`` list them.
    """

    OPEN_BLOCKS = 8  # mmaps kept open (each holds a file descriptor)

    def __init__(self, features_dir: str | Path):
        self.dir = Path(features_dir)
        meta_path, index_path = self.dir / "meta.json", self.dir / "index.tsv"
        for p in (meta_path, index_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: not found ({self.dir} is not a finished ASR features folder: "
                                        f"see extract-asr-features)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FEATURES_FORMAT:
            raise ValueError(f"{meta_path}: not an ASR features folder (format {self.meta.get('format')!r})")
        self.n_layers, self.dim = int(self.meta["n_layers"]), int(self.meta["dim"])
        self.utt_ids, self.blocks, self.offsets, self.n_frames, self.transcripts = [], [], [], [], []
        with open(index_path) as f:
            header = f.readline().rstrip("\n").split("\t")
            if tuple(header) != INDEX_COLUMNS:
                raise ValueError(f"{index_path}: header {header}, expected {list(INDEX_COLUMNS)}")
            for line in f:
                utt, block, off, n, text = line.rstrip("\n").split("\t")
                self.utt_ids.append(utt)
                self.blocks.append(int(block))
                self.offsets.append(int(off))
                self.n_frames.append(int(n))
                self.transcripts.append(text)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.utt_ids)

    def _block(self, b: int) -> np.ndarray:
        if b in self._open:
            self._open.move_to_end(b)
        else:
            self._open[b] = np.load(self.dir / feature_file(b), mmap_mode="r")  # [frames, L, D]
            if len(self._open) > self.OPEN_BLOCKS:
                self._open.popitem(last=False)
        return self._open[b]

    def features(self, i: int) -> np.ndarray:
        """[L, T, D] float16 of utterance i."""
        off, n = self.offsets[i], self.n_frames[i]
        return np.ascontiguousarray(self._block(self.blocks[i])[off : off + n].transpose(1, 0, 2))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.features(i), np.array(encode(self.transcripts[i]), np.int64)

    def __getstate__(self):  # DataLoader workers open their own maps
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Padded batch: feats [B, L, T, D] float16, lengths [B], targets [B, S] (0-padded), target_lengths [B]."""
    B = len(items)
    L, _, D = items[0][0].shape
    lengths = torch.tensor([f.shape[1] for f, _ in items], dtype=torch.long)
    tlen = torch.tensor([len(t) for _, t in items], dtype=torch.long)
    feats = torch.zeros(B, L, int(lengths.max()), D, dtype=torch.float16)
    targets = torch.zeros(B, max(int(tlen.max()), 1), dtype=torch.long)
    for b, (f, t) in enumerate(items):
        feats[b, :, : f.shape[1]] = torch.from_numpy(f)
        targets[b, : len(t)] = torch.from_numpy(t)
    return {"feats": feats, "lengths": lengths, "targets": targets, "target_lengths": tlen}

