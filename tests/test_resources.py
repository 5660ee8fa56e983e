"""Sizing of the data and inference jobs: measured throughput x the job's audio, and measured
peak memory + the model's weights and activations (encodecmae.workflow.resources)."""

from __future__ import annotations

import math

import pytest

from encodecmae.workflow.experiments import Experiment
from encodecmae.workflow.resources import (
    MAX_RUNTIME_MIN,
    PEAK_MIB,
    SAFETY,
    START_MIN,
    THROUGHPUT,
    data_mem_mb,
    data_runtime,
    encoder_size,
    model_inference_mib,
    scaled_throughput,
)


def exp(size="base", **arch) -> Experiment:
    return Experiment(name="x", label="x", input="mel256", size=size, arch=arch, sources=["s"], steps=1,
                      teacher=None, init=None)


def test_throughput_is_the_measured_figure_at_one_and_two_threads():
    one, two = THROUGHPUT["tokenize"]["any"]
    assert scaled_throughput("tokenize", "any", 1) == one
    assert scaled_throughput("tokenize", "any", 2) == pytest.approx(one * two)
    # beyond 2 threads each one adds what the second did
    assert scaled_throughput("tokenize", "any", 8) == pytest.approx(one * (1 + 7 * (two - 1)))
    # a gain above one thread's worth (noise) is capped below linear
    one, _ = THROUGHPUT["embed"]["large"]
    assert scaled_throughput("embed", "large", 4) < 4 * one


def test_runtime_is_start_up_plus_twice_the_measured_work():
    one, _ = THROUGHPUT["tokenize"]["any"]
    assert data_runtime("tokenize", 12.0, 1) == START_MIN + math.ceil(SAFETY * 12 * 3600 / one / 60)
    assert data_runtime("tokenize", 12.0, 8) < data_runtime("tokenize", 12.0, 2) < data_runtime("tokenize", 12.0, 1)
    assert data_runtime("tokenize", 6.0, 1) < data_runtime("tokenize", 12.0, 1)
    # bigger encoders take longer on the same audio; a huge job is capped at the partition maximum
    assert data_runtime("assign", 12, 8, "small") < data_runtime("assign", 12, 8, "base") < data_runtime("assign", 12, 8, "large")
    assert data_runtime("embed", 10_000, 1, "large") == MAX_RUNTIME_MIN


def test_encoder_size_is_the_cheapest_preset_that_costs_as_much():
    assert [encoder_size(exp(s)) for s in ("small", "base", "large")] == ["small", "base", "large"]
    assert encoder_size(exp("debug")) == "small"
    assert encoder_size(exp("base", n_layers=3, d_model=96)) == "small"  # the demo's base
    assert encoder_size(exp("base", n_layers=12, d_model=768)) == "large"  # more than base
    assert encoder_size(exp("large", n_layers=40)) == "large"


def test_memory_is_the_measured_peak_plus_the_model():
    assert all(v > 0 for v in PEAK_MIB.values())
    resample = data_mem_mb("resample")
    assert resample % 500 == 0 and resample >= PEAK_MIB["resample"]
    small, base, large = (data_mem_mb("assign", exp(s)) for s in ("small", "base", "large"))
    assert PEAK_MIB["assign"] < small <= base < large
    assert data_mem_mb("embed", exp("base", n_layers=3, d_model=96, ff_dim=384)) < small  # the demo's


def test_model_memory_counts_the_real_weights():
    """The weights term is the per-layer model's parameter count (the larger variant) within 10 %."""
    import torch

    from encodecmae.model.config import ModelConfig
    from encodecmae.model.transformer import EncodecMAE

    torch.manual_seed(0)
    for size in ("small", "base"):
        cfg = ModelConfig.from_size(size)
        n_params = sum(p.numel() for p in EncodecMAE(cfg).parameters())
        weights_mib = model_inference_mib(cfg.n_layers, cfg.d_model, cfg.ff_dim, batch=0)
        assert weights_mib == pytest.approx(4 * n_params / 2 ** 20, rel=0.10), size
