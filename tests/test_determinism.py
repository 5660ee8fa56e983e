"""Determinism on the CPU: every computing stage gives the same bits with 1 and with 2 threads,
in two separate runs.

One subprocess per run (PyTorch's thread pool cannot be resized reliably once a process has
used it) runs the stages' commands in a row on small inputs, as the workflow's jobs do:
``fit-codebooks``, ``tokenize`` and ``estimate-gamma`` (EnCodec targets), ``train`` (a few steps
of a debug-size model), ``dump-features``, ``fit-kmeans`` and ``assign-clusters``
(self-training), ``embed-task`` and ``score-task`` (HEAR). Runs: one thread, then two threads.
Their outputs being equal bit for bit also shows that a stage gives the same bits run after run
(anything that varied between runs would tell them apart), so no second one-thread run is made.
The number of threads is set the way Snakemake sets it for a job (``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS``) and, for the commands that take one, by ``--threads``.

Before the fixes that made them thread-invariant, fit-codebooks, tokenize, estimate-gamma,
train, fit-kmeans and score-task each gave other bits with 2 threads than with 1, and this file
failed on that code (all five tests).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Two full runs of every stage: with the one-core rerun of the workflow, under the long runs.
pytestmark = pytest.mark.e2e

RUNS = {"t1": 1, "t2": 2}
SR = 16_000

# The stages, as the workflow's rules call them (sizes cut down). The stages after training use
# one fixed checkpoint (not the run's trained model), so that each is tested on its own.
DRIVER = r'''
import sys
from pathlib import Path
from encodecmae.cli import main

out, threads = Path(sys.argv[1]), sys.argv[2]
shards, targets, task, model, codec = sys.argv[3:5], sys.argv[5:7], sys.argv[7], sys.argv[8], sys.argv[9]
train = ["--shards", *shards, "--targets", *targets, "--out", str(out / "model.pt"), "--ckpt-dir", str(out / "ckpt"),
         "--metrics", str(out / "metrics.csv"), "--size", "debug", "--input", "mel128", "--steps", "6",
         "--batch-size", "4", "--lr", "1e-3", "--checkpoint-every", "3", "--log-every", "2", "--val-clips", "2",
         "--val-every", "6", "--num-workers", "0", "--device", "cpu", "--seed", "0", "--threads", threads]
stages = [
    ["fit-codebooks", "--shards", *shards, "--out", str(out / "codebooks.pt"), "--n-q", "4", "--codebook-size", "32",
     "--fit-max-frames", "1500", "--seed", "0"],
    ["tokenize", "--shard", shards[1], "--checkpoint", codec, "--out", str(out / "tokens.npy"), "--n-q", "8",
     "--batch-size", "4"],
    ["estimate-gamma", "--shards", *shards, "--checkpoint", codec, "--out", str(out / "gamma.json"),
     "--gamma-clips", "4", "--n-q", "8", "--seed", "0"],
    ["train", *train],
    *[["dump-features", "--checkpoint", model, "--shard", s, "--out", str(out / f"features{i}.npy"),
       "--crops-per-shard", "16", "--frames-per-crop", "40", "--seed", "0", "--device", "cpu"] for i, s in enumerate(shards)],
    ["fit-kmeans", "--features", str(out / "features0.npy"), str(out / "features1.npy"), "--out", str(out / "kmeans.npz"),
     "--k", "8", "--n-frames", "1000", "--seed", "0"],
    ["assign-clusters", "--checkpoint", model, "--kmeans", str(out / "kmeans.npz"), "--shard", shards[0],
     "--out", str(out / "clusters.npy"), "--device", "cpu"],
    ["embed-task", "--checkpoint", model, "--task-dir", task, "--out", str(out / "embeddings.npz"),
     "--device", "cpu", "--threads", threads],
    ["score-task", "--task-dir", task, "--embeddings", str(out / "embeddings.npz"), "--out", str(out / "scores.json"),
     "--max-epochs", "6", "--grid-points", "2", "--bootstrap", "10", "--seed", "0", "--threads", threads],
]
if threads != "1":  # several MLPs trained at once on threads: the same scores
    stages.append(["score-task", "--task-dir", task, "--embeddings", str(out / "embeddings.npz"), "--out",
                   str(out / "scores_workers.json"), "--max-epochs", "6", "--grid-points", "2", "--bootstrap", "10",
                   "--seed", "0", "--threads", threads, "--workers", "2"])
for argv in stages:
    main(argv)

# Finer than the commands' outputs (a token or a test accuracy only changes when a difference
# crosses a boundary): the encoder's output on the first 6 s of a shard, and the weights of one
# HEAR MLP after a few epochs.
import numpy as np
import torch
from encodecmae.evaluation.mlp import HParams, train_mlp
from encodecmae.data.shards import Shard
from encodecmae.targets.codec import EncodecTokenizer

shard = Shard.open(shards[1])
wav = torch.from_numpy(shard.segment(0, 3 * 48000).reshape(3, 48000))
np.save(out / "encoder_features.npy", EncodecTokenizer(codec).features(wav).numpy())
g = torch.Generator().manual_seed(0)
x, y = torch.randn(300, 64, generator=g), torch.randint(0, 5, (300,), generator=g)
mlp = train_mlp(x, y, x[:50], y[:50].numpy(), HParams(2, 1e-3, "xavier_uniform"), 5, "multiclass", "top1_acc",
                max_epochs=3, check_every=1, batch_size=128)
torch.save(mlp.model.state_dict(), out / "mlp.pt")
'''


def make_task(root: Path) -> Path:
    """A HEAR-layout task: 3 classes of 1-s noisy tones at 16 kHz, 12 / 6 / 6 clips."""
    rng = np.random.default_rng(0)
    labels = ["low", "mid", "high"]
    (root / str(SR)).mkdir(parents=True)
    t = np.arange(SR) / SR
    for split, n in (("train", 12), ("valid", 6), ("test", 6)):
        (root / str(SR) / split).mkdir()
        ann = {}
        for i in range(n):
            c = i % 3
            f0 = 220.0 * 2 ** c * rng.uniform(0.9, 1.1)
            wav = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(SR)
            name = f"{split}_{i:02d}.wav"
            sf.write(root / str(SR) / split / name, wav.astype(np.float32), SR)
            ann[name] = [labels[c]]
        (root / f"{split}.json").write_text(json.dumps(ann))
    meta = {"task_name": "tones", "mode": "train_valid_test", "prediction_type": "multiclass",
            "evaluation": ["top1_acc"], "label_vocabulary": labels, "sample_rate": SR}
    (root / "task_metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def runs(tone_corpus, debug_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The outputs of every stage, per run: {"t1": dir, "t2": dir}."""
    from encodecmae.targets.codebooks import fit_codebooks, shard_clips

    root = tmp_path_factory.mktemp("determinism")
    # One codec for the tokenisation stages of every run (fitted here, in this process), so
    # that they are tested on their own, not through the codebooks each run fits.
    codec = root / "codec.pt"
    fit_codebooks(shard_clips(tone_corpus[0]), codec, n_q=8, k=128, seed=1, max_frames=2000)
    task = make_task(root / "task")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    shards, targets = tone_corpus
    out = {}
    for name, n in RUNS.items():
        d = root / name
        d.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}  # the code's own setting
        env.update(OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
        res = subprocess.run([sys.executable, str(driver), str(d), str(n), *map(str, shards), *map(str, targets),
                              str(task), str(debug_checkpoint), str(codec)], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{name}:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
        out[name] = d
    return out


def assert_same(runs: dict[str, Path], name: str, load=None) -> None:
    """File ``name`` of every run equals the first run's: byte for byte, or ``load``-ed equal."""
    ref = runs["t1"] / name
    for run, d in runs.items():
        if load is None:
            assert (d / name).read_bytes() == ref.read_bytes(), f"{name}: run {run} differs from t1"
        else:
            diff = differences(load(ref), load(d / name))
            assert not diff, f"{name}: run {run} differs from t1: {diff[:5]}"


def differences(a, b, path: str = "") -> list[str]:
    """Where two nested structures (dicts, lists, tensors, arrays, numbers) differ, bit for bit."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor):
        a, b = a.detach().cpu().numpy(), b.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            if a.dtype.kind == "f" and a.shape == b.shape:
                return [f"{path}: {int((a != b).sum())} of {a.size} values, max |diff| "
                        f"{float(np.abs(a.astype(np.float64) - b).max()):.3g}"]
            return [f"{path}: differs"]
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_fitted_codebooks(runs):
    assert_same(runs, "codebooks.pt")


def test_tokens_of_a_shard(runs):
    assert_same(runs, "tokens.npy")
    assert_same(runs, "encoder_features.npy")
    assert_same(runs, "gamma.json")


def test_short_training_run(runs):
    """Weights after 6 steps, the optimiser state at step 3 and the metrics (losses, validation)."""
    assert_same(runs, "model.pt", lambda p: torch_load(p)["model"])
    assert_same(runs, "ckpt/step_0000003.pt", lambda p: {k: torch_load(p)[k] for k in ("model", "optimizer")})
    assert_same(runs, "metrics.csv")
    with open(runs["t1"] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6] and rows[-1]["val_loss"] != ""


def test_self_training_targets(runs):
    assert_same(runs, "features0.npy")
    assert_same(runs, "kmeans.npz", lambda p: dict(np.load(p)))
    assert_same(runs, "clusters.npy")


def test_embeddings_and_scores(runs):
    assert_same(runs, "embeddings.npz", lambda p: {k: v for k, v in np.load(p).items() if k != "provenance"})

    def scores(p):
        r = json.loads(p.read_text())
        r.pop("provenance", None)
        r.pop("seconds", None)
        return r

    assert_same(runs, "scores.json", scores)
    assert not differences(scores(runs["t1"] / "scores.json"), scores(runs["t2"] / "scores_workers.json"))
    assert_same(runs, "mlp.pt", torch_load)
