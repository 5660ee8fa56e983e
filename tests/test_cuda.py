"""CUDA paths: bf16 training learns, resume continues the same run, extraction matches the CPU,
the speed options train the same run, and the GPU check runs at tiny sizes.

Skipped without a GPU (CI has none); run them on a GPU machine with
``python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from encodecmae.training import checkpoints as ckpt_io
from encodecmae.evaluation.embed import embed_clips
from encodecmae.training.loop import train

from test_gpu_check import load_gpu_check
from test_train import base_cfg, read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_training_on_cuda_learns(tone_corpus, tmp_path):
    cfg = base_cfg(tone_corpus, tmp_path, steps=40, batch_size=8, lr=1e-3, log_every=5, val_every=20,
                   checkpoint_every=100, gamma=[0.5, 0.5], device="cuda")
    train(cfg)
    rows = read_metrics(cfg.metrics)
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.6 * first, (first, last)
    assert float(rows[-1]["unmasked_ce_q0"]) < 3.0
    ck = ckpt_io.load(cfg.out)
    # autocast leaves the weights in fp32
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())


def test_cuda_resume_continues_the_same_run(tone_corpus, tmp_path):
    full = base_cfg(tone_corpus, tmp_path / "full", steps=12, checkpoint_every=4, device="cuda")
    train(full)
    part = base_cfg(tone_corpus, tmp_path / "part", steps=8, checkpoint_every=4, device="cuda")
    train(part)
    resumed = base_cfg(tone_corpus, tmp_path / "part", steps=12, checkpoint_every=4, device="cuda", resume=True)
    train(resumed)
    a, b = ckpt_io.load(full.out)["model"], ckpt_io.load(resumed.out)["model"]
    # same batches and RNG; CUDA kernels (scatter backward) are not bit-deterministic, hence a tolerance
    worst = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert worst < 5e-3, worst
    ra, rb = read_metrics(full.metrics), read_metrics(resumed.metrics)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    assert abs(float(ra[-1]["loss"]) - float(rb[-1]["loss"])) < 5e-2


def test_cuda_extraction_matches_cpu(debug_checkpoint):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (96_000, 50_000, 200_000)]
    cpu = embed_clips(ckpt_io.load_model(debug_checkpoint, "cpu"), clips, device="cpu")
    gpu = embed_clips(ckpt_io.load_model(debug_checkpoint, "cuda"), clips, device="cuda")
    for c, g in zip(cpu, gpu):
        assert c.shape == g.shape
        np.testing.assert_allclose(g, c, atol=2e-3, rtol=1e-3)


def test_speed_options_on_cuda_train_the_same_run(tone_corpus, tmp_path):
    """Fused AdamW, inductor and device prefetch (a side stream, events, record_stream) on CUDA:
    the same run as today's step, to the tolerance of CUDA's non-deterministic kernels (the
    resume test's); each option alone too, so a failure names it."""
    def weights(name, **kw):
        cfg = base_cfg(tone_corpus, tmp_path / name, steps=12, checkpoint_every=100, val_clips=0, device="cuda", **kw)
        train(cfg)
        return ckpt_io.load(cfg.out)["model"]

    ref = weights("default")
    for name, kw in {"fused": {"adamw": "fused"}, "prefetch": {"prefetch": 2, "num_workers": 1},
                     "inductor": {"compile": "inductor"},
                     "all": {"adamw": "fused", "compile": "inductor", "prefetch": 2}}.items():
        w = weights(name, **kw)
        worst = max((ref[k] - w[k]).abs().max().item() for k in ref if ref[k].is_floating_point())
        assert worst < 5e-3, (name, worst)


def test_gpu_check_tiny_on_cuda(tmp_path):
    """Every measurement of the GPU check on the GPU at tiny sizes, inductor compiling."""
    gc = load_gpu_check()
    status = gc.main(["--tiny", "--strict", "--compile-backend", "inductor", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    items = results["measurements"]
    assert status == 0 and {r["status"] for r in items.values()} == {"ok"}
    assert results["meta"]["device"] == torch.cuda.get_device_name()
    assert items["train_base"]["optimised"]["speed"] == "AdamW fused, compile inductor, prefetch 2"
    assert not any("compile_failed" in items[k]["optimised"] for k in ("train_base", "train_large"))
    assert items["train_base"]["today"]["speed"].startswith("AdamW foreach")  # torch's default on CUDA
    syncs = items["host_syncs"]
    assert syncs["method"].startswith("torch.cuda.set_sync_debug_mode")
    assert syncs["today"]["per_step"] >= 2 and any(w.startswith("masking.py:") for w in syncs["today"]["where"])
