"""benchmarks/gpu_check.py, the GPU check of a short lease: its CPU mode at tiny sizes runs every
measurement's code path (the CPU standing in for the GPU), so the script cannot rot between
leases; a measurement that fails or is left out is recorded with its reason."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_gpu_check():
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    gc = load_gpu_check()
    out = tmp_path_factory.mktemp("gpu_check")
    status = gc.main(["--cpu", "--tiny", "--strict", "--out", str(out), "--work", str(out / "work")])
    return gc, status, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_cpu_tiny_mode_runs_every_measurement(tiny_run):
    gc, status, results, table = tiny_run
    items = results["measurements"]
    assert status == 0
    assert list(items) == list(gc.MEASUREMENTS)
    assert {name: r["status"] for name, r in items.items()} == {name: "ok" for name in gc.MEASUREMENTS}
    for name in gc.MEASUREMENTS:  # one table row per measurement, with its summary
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert "| ok |" in row, row
    meta = results["meta"]
    assert meta["mode"] == "tiny on the CPU" and meta["device"] == "CPU (stand-in)" and meta["finished"] is True
    assert meta["targets"]["train_base_clips_s"] == 2600.0 and meta["targets"]["train_large_clips_s"] == 1200.0


def test_training_measurements_use_the_speed_options(tiny_run):
    _, _, results, _ = tiny_run
    m = results["measurements"]
    base, large = m["train_base"], m["train_large"]
    assert base["today"]["speed"] == "AdamW for-loop, compile off, prefetch 0"
    # fused AdamW has a CPU kernel in this torch; the tiny mode compiles with aot_eager
    assert base["optimised"]["speed"] == "AdamW fused, compile aot_eager, prefetch 2"
    assert large["today"]["n_layers"] == 3 and base["today"]["n_layers"] == 2  # the tiny stand-ins
    assert base["today"]["clips_s"] > 0 and base["optimised"]["clips_s"] > 0
    # counted FLOPs: more layers, more FLOPs; no peak rate for a CPU, so no MFU (and it says why)
    assert large["flops_per_step"] > base["flops_per_step"] > 0
    assert base["today"]["mfu"] is None and "CPU" in base["peak_note"]
    assert base["meets_target"] is None  # a CPU is not compared with the GPU targets
    assert set(m["adamw"]) >= {"default", "foreach", "fused"} and set(m["prefetch"]) >= {"off", "on"}
    assert m["compile"]["on"]["speed"].startswith("AdamW fused, compile aot_eager")
    assert m["compile"]["off"]["speed"].startswith("AdamW fused, compile off")


def test_host_syncs_are_counted_where_they_happen(tiny_run):
    """The model's pass reads the number of visible frames (.item()) and scatters the encoder's
    output through nonzero(): two host synchronisations per step on CUDA, both in masking.py."""
    _, _, results, _ = tiny_run
    syncs = results["measurements"]["host_syncs"]
    for name in ("today", "optimised"):
        assert syncs[name]["per_step"] == 2, syncs[name]
        assert all(w.startswith("masking.py:") for w in syncs[name]["where"]), syncs[name]
    assert syncs["meets_target"] is False and syncs["target_per_step"] == 0


def test_loss_curve_tokenize_embed_asr_and_loader(tiny_run):
    _, _, results, _ = tiny_run
    m = results["measurements"]
    curve = m["loss_curve"]
    assert curve["steps"] == 6 and len(curve["today"]) == len(curve["optimised"]) == 6
    # the same batches and initial weights: only fused AdamW's rounding and compile's tracing differ
    assert curve["first_loss"][0] == pytest.approx(curve["first_loss"][1], rel=1e-6)
    assert curve["last_window_rel_diff"] < 1e-4 and curve["meets_target"] is True
    assert m["tokenize"]["audio_s"] == pytest.approx(1.0, abs=0.02) and m["tokenize"]["x_realtime"] > 0
    assert m["embed"]["audio_s"] == 8.0 and m["embed"]["x_realtime"] > 0
    assert m["train_asr"]["steps_s"] > 0 and m["train_asr"]["batch"] == 4
    loader = m["loader"]
    assert loader["workers"] == 1 and loader["delivered_clips_s"] > 0
    assert loader["headroom"] == pytest.approx(loader["delivered_clips_s"] / loader["consumed_clips_s"])


def test_failures_and_left_out_measurements_are_recorded(tmp_path):
    """Not strict: a measurement that cannot run is recorded as failed with its reason and the
    others go on; those not asked for are recorded as skipped; the exit status is 1."""
    gc = load_gpu_check()
    status = gc.main(["--cpu", "--tiny", "--out", str(tmp_path), "--only", "compile", "embed"])
    items = json.loads((tmp_path / "gpu_check.json").read_text())["measurements"]
    assert status == 1
    assert items["compile"]["status"] == "failed" and "train_base" in items["compile"]["reason"]
    assert items["embed"]["status"] == "ok"
    skipped = {n for n, r in items.items() if r["status"] == "skipped"}
    assert skipped == set(gc.MEASUREMENTS) - {"compile", "embed"}
    assert all(items[n]["reason"] == "not asked for (--only)" for n in skipped)
    # what the time budget leaves out is recorded too
    assert gc.main(["--cpu", "--tiny", "--out", str(tmp_path / "b"), "--only", "embed", "--budget-s", "0"]) == 0
    embed = json.loads((tmp_path / "b" / "gpu_check.json").read_text())["measurements"]["embed"]
    assert embed["status"] == "skipped" and embed["reason"].startswith("time budget:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_without_cuda_it_fails_fast_naming_the_measurement(tmp_path):
    gc = load_gpu_check()
    with pytest.raises(gc.NeedsCuda, match="train_base needs a CUDA GPU.*--cpu"):
        gc.main(["--tiny", "--out", str(tmp_path)])
    assert not (tmp_path / "gpu_check.json").exists()
