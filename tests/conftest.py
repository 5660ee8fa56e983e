"""Shared fixtures: tiny synthetic shards with frame-aligned targets, and one real run of the
workflow on the CI configuration that the end-to-end (`e2e`) workflow, DVC and SLURM tests
share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.data.shards import Shard, save_targets, write_shard
from workflow_helpers import snakemake

N_TONES = 16


def tone_clip(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE):
    """A melody of 200-ms tones (15 frames each) and the tone index of every 24-kHz frame."""
    n = int(seconds * SAMPLE_RATE) // HOP * HOP
    seg = 15 * HOP
    tones = rng.integers(0, N_TONES, size=n // seg + 1)
    t = np.arange(n) / SAMPLE_RATE
    freq = 110.0 * 2 ** (tones[np.arange(n) // seg] / 4)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    wav = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.01 * rng.standard_normal(n)
    frame_tones = tones[(np.arange(n // HOP) * HOP) // seg]
    return wav.astype(np.float32), frame_tones, t


def make_tone_shard(root: Path, name: str, seconds: list[float], seed: int = 0):
    """Write 24-kHz tone clips, shard them, and save tone-index targets ([2, frames]: tone, tone // 4)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files, labels = [], []
    for i, s in enumerate(seconds):
        wav, tones, _ = tone_clip(rng, s)
        f = root / f"{name}_{i:03d}.wav"
        sf.write(f, wav, SAMPLE_RATE, subtype="FLOAT")
        files.append(f)
        labels.append(tones)
    shard_dir = root / name
    write_shard(files, shard_dir)
    shard = Shard.open(shard_dir)
    tok = np.concatenate(labels)
    assert len(tok) == shard.n_frames
    targets = root / f"{name}_tokens.npy"
    save_targets(targets, np.stack([tok, tok // 4]))
    return shard_dir, targets


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(1)
    secs = list(np.round(rng.uniform(1.0, 9.0, size=14), 2)) + [20.0]
    a = make_tone_shard(root, "shard0", secs[:8], seed=2)
    b = make_tone_shard(root, "shard1", secs[8:], seed=3)
    return [a[0], b[0]], [a[1], b[1]]


@pytest.fixture(scope="session")
def debug_checkpoint(tmp_path_factory):
    """An untrained debug-size model saved as a checkpoint file (enough for API tests)."""
    import torch

    from encodecmae.training import checkpoints as ckpt_io
    from encodecmae.model.config import ModelConfig
    from encodecmae.model.transformer import EncodecMAE

    torch.manual_seed(0)
    model = EncodecMAE(ModelConfig.from_size("debug", input="mel128"))
    path = tmp_path_factory.mktemp("ckpt") / "debug.pt"
    ckpt_io.save(path, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": 0})
    return path


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """A finished `snakemake --cores 2` run of config/ci.yaml: the one run of the CI configuration
    that the end-to-end tests share (test_workflow reads its outputs and plans reruns on them,
    test_dvc records and shares it, test_slurm compares its cluster run with it and trains from its
    data). They must not modify it."""
    work = tmp_path_factory.mktemp("ci_run")
    snakemake(work, "--cores", "2")
    return work
