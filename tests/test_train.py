"""Training: learning, checkpoints, exact resume after a kill, and DDP against one process."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from encodecmae.training import checkpoints as ckpt_io
from encodecmae import provenance
from encodecmae.model.config import ModelConfig
from encodecmae.model.transformer import EncodecMAE
from encodecmae.progress import Progress, format_duration, progress
from encodecmae.training.config import TrainConfig
from encodecmae.training.loop import train


def base_cfg(tone_corpus, out: Path, **kw) -> TrainConfig:
    shards, targets = tone_corpus
    d = dict(shards=[str(s) for s in shards], targets=[str(t) for t in targets], out=str(out / "model.pt"),
             ckpt_dir=str(out / "ckpt"), metrics=str(out / "metrics.csv"), size="debug", steps=12, batch_size=4,
             checkpoint_every=4, log_every=1, val_clips=2, val_every=6, num_workers=0, device="cpu", seed=0,
             threads=1)
    d.update(kw)
    return TrainConfig(**d)


def cli_args(cfg: TrainConfig) -> list[str]:
    args = ["--shards", *cfg.shards, "--targets", *cfg.targets, "--out", cfg.out, "--ckpt-dir", cfg.ckpt_dir,
            "--metrics", cfg.metrics, "--size", cfg.size, "--steps", str(cfg.steps), "--batch-size",
            str(cfg.batch_size), "--grad-accum", str(cfg.grad_accum), "--checkpoint-every",
            str(cfg.checkpoint_every), "--log-every", str(cfg.log_every), "--val-clips", str(cfg.val_clips),
            "--val-every", str(cfg.val_every), "--num-workers", "0", "--device", "cpu", "--threads", "1",
            "--seed", str(cfg.seed)]
    for key in RELEASED:  # the settings where the released code differs from the paper's text
        args += [f"--{key.replace('_', '-')}", getattr(cfg, key)]
    return args + (["--resume"] if cfg.resume else [])


# the released code's settings (docs/released-models.md)
RELEASED = dict(mask_token="zeros", feedforward="shared", mel_framing="released", positions="per_stack",
                mask_starts="released", loss_norm="batch")


def read_metrics(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_loss_decreases_and_metrics_are_logged(tone_corpus, tmp_path):
    cfg = base_cfg(tone_corpus, tmp_path, steps=40, batch_size=8, lr=1e-3, log_every=5, val_every=20,
                   checkpoint_every=100, gamma=[0.5, 0.5])
    train(cfg)
    rows = read_metrics(cfg.metrics)
    assert [int(r["step"]) for r in rows] == list(range(5, 41, 5))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.6 * first, (first, last)
    # tones are predictable from the visible frames: unmasked CE falls below uniform (ln 1024 = 6.93)
    assert float(rows[-1]["unmasked_ce_q0"]) < 3.0
    assert rows[-1]["val_loss"] != ""
    assert "clips_per_s" not in rows[-1]  # speed is in the log, not in the versioned metrics
    ck = ckpt_io.load(cfg.out)
    assert ck["step"] == 40 and "optimizer" not in ck and ck["gamma"] == [0.5, 0.5]
    assert ck["config"]["train"]["lr"] == 1e-3 and ck["code_version"].startswith("0.1.0")
    model = ckpt_io.build_model(ck)
    assert model.cfg.size == "debug" and model.cfg.n_streams == 2
    check_provenance(ck["provenance"], cfg, tone_corpus)


def check_provenance(prov: dict, cfg: TrainConfig, tone_corpus) -> None:
    """The model's provenance: this checkout's code commit, the checkpoint directory's name, the
    settings that shape the result and the bytes of the shard manifests and targets, in order."""
    assert {k: prov[k] for k in ("code_commit", "code_dirty")} == provenance.code_state()
    assert prov["run_key"] == Path(cfg.ckpt_dir).name
    settings = prov["settings"]
    assert settings["lr"] == cfg.lr and settings["steps"] == cfg.steps and settings["betas"] == list(cfg.betas)
    assert not {"out", "ckpt_dir", "metrics", "threads", "device", "num_workers", "resume", "shards"} & set(settings)
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()
    assert prov["settings_sha256"] == hashlib.sha256(canonical).hexdigest()
    files = [f for shard, target in zip(*tone_corpus) for f in (Path(shard) / "manifest.csv", Path(target))]
    lines = "".join(hashlib.sha256(f.read_bytes()).hexdigest() + "\n" for f in files)
    assert prov["train_data_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert prov["init_from"] is None and prov["encodec_sha256"] is None


def test_untrained_model_records_the_same_provenance(tone_corpus, tmp_path):
    """steps 0: the same fields; the training data are those the run was given (none was used)."""
    cfg = base_cfg(tone_corpus, tmp_path, steps=0)
    train(cfg)
    ck = ckpt_io.load(cfg.out)
    assert ck["step"] == 0 and ck["provenance"]["settings"]["steps"] == 0
    check_provenance(ck["provenance"], cfg, tone_corpus)
    # a self-trained student records the file it started from and that file's provenance
    student = base_cfg(tone_corpus, tmp_path / "student", steps=0, init_from=cfg.out)
    train(student)
    init = ckpt_io.load(student.out)["provenance"]["init_from"]
    assert init == {"sha256": hashlib.sha256(Path(cfg.out).read_bytes()).hexdigest(), "provenance": ck["provenance"]}


def test_step_checkpoints_hold_everything_to_resume(tone_corpus, tmp_path):
    cfg = base_cfg(tone_corpus, tmp_path, steps=8)
    train(cfg)
    names = [p.name for p in ckpt_io.list_checkpoints(cfg.ckpt_dir)]
    assert names == ["step_0000004.pt"]  # the last step is the final model file
    ck = ckpt_io.load(Path(cfg.ckpt_dir) / names[0])
    assert {"model", "optimizer", "step", "rng", "config", "code_version", "model_config"} <= set(ck)
    assert ck["step"] == 4
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)  # an existing checkpoint directory is never silently continued


def test_log_has_one_line_per_log_interval(tone_corpus, tmp_path, capsys):
    """The job log gets a whole line per metrics row (no tqdm carriage returns): step/total,
    loss, masked accuracy, lr, clips/s, elapsed and ETA; validation loss when validated."""
    cfg = base_cfg(tone_corpus, tmp_path, steps=7, log_every=3, val_every=6, checkpoint_every=100)
    train(cfg)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = [line for line in out.splitlines() if line.startswith("train: ")]
    assert [int(re.match(r"train: step (\d+)/7 \(\d+%\), ", line)[1]) for line in lines] == [3, 6, 7]
    assert [int(r["step"]) for r in read_metrics(cfg.metrics)] == [3, 6, 7]  # one line per metrics row
    pattern = (r"train: step \d+/7 \(\d+%\), loss \d+\.\d{4}, masked_acc 0\.\d{3}, (val_loss \d+\.\d{4}, )?"
               r"lr 1\.0e-04, \d+\.\d clips/s, elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$")
    for line in lines:
        assert re.fullmatch(pattern, line), line
    assert "val_loss" not in lines[0] and "val_loss" in lines[1] and "val_loss" in lines[2]
    assert lines[-1].startswith("train: step 7/7 (100%)") and lines[-1].endswith("ETA 0:00:00")


def test_progress_prints_whole_lines_at_most_every_interval():
    buf = io.StringIO()
    items = list(progress(range(5), "resample 000", unit="file", interval=3600, file=buf))
    assert items == list(range(5))
    assert buf.getvalue().splitlines() == [
        line for line in buf.getvalue().splitlines() if re.fullmatch(
            r"resample 000: 5/5 file \(100%\), [\d.]+ file/s, elapsed 0:00:00, done", line)]
    assert len(buf.getvalue().splitlines()) == 1  # the interval was never reached: only the last line
    buf = io.StringIO()
    with Progress("x.th", total=4 << 20, unit="B", scale=True, interval=0, file=buf) as p:
        p.update(1 << 20)
    first, last = buf.getvalue().splitlines()
    assert first.startswith("x.th: 1.0 MiB/4.0 MiB (25%), ") and " ETA " in first
    assert last.endswith(", stopped") and "\r" not in buf.getvalue()
    assert format_duration(3725.2) == "1:02:05"


def run_cli(args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "encodecmae", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_training_resumes_to_the_same_weights(tone_corpus, tmp_path):
    ref = base_cfg(tone_corpus, tmp_path / "ref", steps=16)
    train(ref)

    cut = base_cfg(tone_corpus, tmp_path / "cut", steps=16)
    proc = run_cli(cli_args(cut))
    first_ckpt = Path(cut.ckpt_dir) / "step_0000004.pt"
    deadline = time.time() + 120
    while not first_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, log  # it really was killed mid-run
    assert not Path(cut.out).exists()

    cut.resume = True
    proc = run_cli(cli_args(cut))
    log = proc.communicate()[0]
    assert proc.returncode == 0, log
    assert "resuming from" in log
    a, b = ckpt_io.load(ref.out)["model"], ckpt_io.load(cut.out)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # same run key (both directories are named ckpt), settings, data and commit: same provenance
    assert ckpt_io.load(cut.out)["provenance"] == ckpt_io.load(ref.out)["provenance"]
    steps = [int(r["step"]) for r in read_metrics(cut.metrics)]
    assert steps == list(range(1, 17))  # rows after the checkpoint were dropped, none duplicated


@pytest.mark.parametrize("settings", ["default", "released"])
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tone_corpus, tmp_path, settings):
    kw = RELEASED if settings == "released" else {}
    one = base_cfg(tone_corpus, tmp_path / "one", steps=5, batch_size=8, grad_accum=2, val_clips=0, **kw)
    train(one)
    two = base_cfg(tone_corpus, tmp_path / "two", steps=5, batch_size=8, grad_accum=1, val_clips=0, **kw)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "encodecmae", "train", *cli_args(two)]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ck = ckpt_io.load(two.out)
    assert ck["config"]["world_size"] == 2
    a, b = ckpt_io.load(one.out)["model"], ck["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    # and training did move the weights, so the agreement is not that of two untouched models
    torch.manual_seed(0)
    init = EncodecMAE(ModelConfig.from_dict(ck["model_config"])).state_dict()
    assert (a["head.weight"] - init["head.weight"]).abs().max() > 1e-4
    ra, rb = read_metrics(one.metrics), read_metrics(two.metrics)
    assert float(ra[-1]["loss"]) == pytest.approx(float(rb[-1]["loss"]), rel=1e-4)


def test_resume_refuses_a_checkpoint_of_other_settings_but_extends_steps(tone_corpus, tmp_path):
    cfg = base_cfg(tone_corpus, tmp_path, steps=6, checkpoint_every=3)
    train(cfg)
    other = base_cfg(tone_corpus, tmp_path, steps=6, checkpoint_every=3, lr=5e-4, resume=True)
    with pytest.raises(ValueError, match="lr"):
        train(other)
    longer = base_cfg(tone_corpus, tmp_path, steps=9, checkpoint_every=3, resume=True)
    train(longer)  # more steps continue the same run from its newest checkpoint
    assert ckpt_io.load(longer.out)["step"] == 9


def test_released_settings_train_resume_and_keep_the_shared_block(tone_corpus, tmp_path):
    """The shared feed-forward through the optimiser and the checkpoints: one optimiser state per
    distinct weight, a killed-and-resumed run equals an uninterrupted one, and the model file
    rebuilds with one block per stack."""
    whole = base_cfg(tone_corpus, tmp_path / "whole", steps=8, **RELEASED)
    train(whole)
    first = base_cfg(tone_corpus, tmp_path / "parts", steps=4, **RELEASED)
    train(first)
    train(base_cfg(tone_corpus, tmp_path / "parts", steps=8, resume=True, **RELEASED))
    a, b = ckpt_io.load(whole.out), ckpt_io.load(tmp_path / "parts" / "model.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    step = ckpt_io.load(Path(whole.ckpt_dir) / "step_0000004.pt")
    model = ckpt_io.build_model(step)
    distinct = [p for p in model.parameters() if p.requires_grad]
    assert len(step["optimizer"]["state"]) == len(distinct)
    loaded = ckpt_io.load_model(whole.out)
    assert loaded.cfg.feedforward == "shared" and loaded.encoder.blocks[0].ff is loaded.encoder.blocks[1].ff
    assert loaded.dec_pos is not loaded.enc_pos and loaded.cfg.mel_framing == "released"
    assert a["config"]["train"]["mask_starts"] == "released" and a["config"]["train"]["loss_norm"] == "batch"
    # a student keeps its teacher's architecture; settings that say otherwise are refused
    student = base_cfg(tone_corpus, tmp_path / "student", steps=2, init_from=whole.out)
    with pytest.raises(ValueError, match="pass --mask-token zeros --feedforward shared --mel-framing released"):
        train(student)


def test_a_run_longer_than_the_time_limit_finishes_across_jobs_with_the_same_weights(tone_corpus, tmp_path):
    """Each job stops when its time is up (stop_after), writes a step checkpoint and exits with
    EXIT_CONTINUE; job after job resumes, and the last writes the weights an uninterrupted run
    writes. SIGUSR1 (and SIGTERM) stop a job the same way."""
    import encodecmae.training.loop as loop

    ref = base_cfg(tone_corpus, tmp_path / "ref", steps=10, checkpoint_every=100)
    train(ref)
    seg = base_cfg(tone_corpus, tmp_path / "seg", steps=10, checkpoint_every=100, stop_after=1e-6, resume=True)
    jobs = 0
    codes = []
    while not Path(seg.out).exists() and len(codes) < 20:
        try:
            train(seg)
            codes.append(0)
        except SystemExit as stopped:
            codes.append(stopped.code)
    # every job but the last did one step (its time was up at once) and stopped to be resumed
    assert codes == [loop.EXIT_CONTINUE] * 9 + [0] and ckpt_io.load(seg.out)["step"] == 10
    a, b = ckpt_io.load(ref.out)["model"], ckpt_io.load(seg.out)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [int(r["step"]) for r in read_metrics(seg.metrics)] == list(range(1, 11))

    sig = base_cfg(tone_corpus, tmp_path / "sig", steps=10, checkpoint_every=100, resume=True)
    real_step = loop.train_step
    calls = []

    def step_then_signal(run, batch):
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGUSR1)  # as `scancel --signal=USR1` would
        return real_step(run, batch)

    loop.train_step = step_then_signal
    try:
        with pytest.raises(SystemExit) as stopped:
            train(sig)
    finally:
        loop.train_step = real_step
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert stopped.value.code == loop.EXIT_CONTINUE
    assert [p.name for p in ckpt_io.list_checkpoints(sig.ckpt_dir)] == ["step_0000004.pt"]
    train(sig)
    b = ckpt_io.load(sig.out)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- the speed options (encodecmae.training.speed): off by default, each pinned against the default step


def trained_weights(tone_corpus, out: Path, **kw) -> dict[str, torch.Tensor]:
    cfg = base_cfg(tone_corpus, out, steps=6, checkpoint_every=3, val_clips=0, **kw)
    train(cfg)
    return ckpt_io.load(cfg.out)["model"]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def default_weights(tone_corpus, tmp_path_factory):
    """Weights after 6 steps of today's step (the reference of the speed options' tests)."""
    return trained_weights(tone_corpus, tmp_path_factory.mktemp("default"))


def test_prefetching_gives_the_same_weights(tone_corpus, tmp_path, default_weights):
    """Batches are a pure function of the step: made ahead by a thread, with or without loader
    workers, the run is the same bits."""
    ahead = trained_weights(tone_corpus, tmp_path / "ahead", prefetch=2)
    assert all(torch.equal(default_weights[k], ahead[k]) for k in default_weights)
    workers = trained_weights(tone_corpus, tmp_path / "workers", prefetch=3, num_workers=1)
    assert all(torch.equal(default_weights[k], workers[k]) for k in default_weights)


# Fused AdamW computes the same update in one kernel with the float operations in another order
# (the bias corrections folded into the step size): over 6 steps the weights differ from the
# for-loop's by at most 1 float32 ulp of the largest weights (magnitude 1: 1.2e-7, measured); 2
# ulps allowed, against an update of 1e-4 per step.
FUSED_TOLERANCE = 2.4e-7


def test_adamw_implementations_agree_with_the_default(tone_corpus, tmp_path, default_weights, capsys):
    """On the CPU torch's default AdamW is the for-loop; foreach gives its bits, fused rounds
    differently (FUSED_TOLERANCE)."""
    foreach = trained_weights(tone_corpus, tmp_path / "foreach", adamw="foreach")
    assert "speed: AdamW foreach, compile off, prefetch 0" in capsys.readouterr().out
    assert all(torch.equal(default_weights[k], foreach[k]) for k in default_weights)
    fused = trained_weights(tone_corpus, tmp_path / "fused", adamw="fused")
    assert "speed: AdamW fused, compile off, prefetch 0" in capsys.readouterr().out
    assert 0 < max_diff(default_weights, fused) <= FUSED_TOLERANCE


def test_compiled_step_gives_the_same_weights(tone_corpus, tmp_path, default_weights, capsys):
    """aot_eager traces the training pass (dynamo splits it at the model's two data-dependent
    shapes) and runs the traced graphs with eager kernels: the same bits. (inductor generates
    its own kernels, which round differently; on the CPU its first step of the debug model took
    6 minutes on the 2 shared cores of the development VM, 2026-12-07, so it is left to
    tests/test_cuda.py and the GPU check.)"""
    w = trained_weights(tone_corpus, tmp_path / "compiled", compile="aot_eager")
    assert "speed: AdamW for-loop, compile aot_eager, prefetch 0" in capsys.readouterr().out
    assert all(torch.equal(default_weights[k], w[k]) for k in default_weights)


def test_compile_and_fused_adamw_fall_back_and_say_so(monkeypatch):
    from encodecmae.training.speed import Speed, adamw, maybe_compile

    model = torch.nn.Linear(3, 2)
    speed = Speed()
    monkeypatch.setenv("PATH", "")  # no C++ compiler for inductor on the CPU
    assert maybe_compile(model, "inductor", torch.device("cpu"), speed) is model
    assert speed.compile == "off" and "needs a C++ compiler" in speed.notes[0]
    meta = [torch.nn.Parameter(torch.zeros(2, device="meta"))]  # no fused kernel for the meta device
    opt = adamw(meta, "fused", speed, lr=1e-3)
    assert speed.adamw == "foreach" and opt.param_groups[0]["foreach"] is True
    assert "fused AdamW unavailable" in speed.notes[1] and "foreach instead" in speed.describe()


def test_resume_with_other_speed_options(tone_corpus, tmp_path, default_weights):
    """The speed options are a job's, not the run's: a run checkpointed with today's step resumes
    with fused AdamW and prefetching (the optimiser takes this job's implementation, not the
    checkpoint's), and one checkpointed with fused AdamW resumes with the default; neither the
    checkpoint's settings nor the provenance record them."""
    part = base_cfg(tone_corpus, tmp_path / "a", steps=4, checkpoint_every=3, val_clips=0)
    train(part)
    resumed = base_cfg(tone_corpus, tmp_path / "a", steps=6, checkpoint_every=3, val_clips=0, resume=True,
                       adamw="fused", prefetch=2)
    train(resumed)
    assert max_diff(default_weights, ckpt_io.load(resumed.out)["model"]) <= FUSED_TOLERANCE
    step3 = ckpt_io.load(Path(part.ckpt_dir) / "step_0000003.pt")
    assert step3["optimizer"]["param_groups"][0]["fused"] is None
    assert not {"adamw", "compile", "prefetch"} & (set(step3["config"]["train"]) | set(step3["provenance"]["settings"]))
    fused = base_cfg(tone_corpus, tmp_path / "b", steps=4, checkpoint_every=3, val_clips=0, adamw="fused")
    train(fused)
    assert ckpt_io.load(Path(fused.ckpt_dir) / "step_0000003.pt")["optimizer"]["param_groups"][0]["fused"] is True
    back = base_cfg(tone_corpus, tmp_path / "b", steps=6, checkpoint_every=3, val_clips=0, resume=True)
    train(back)
    assert max_diff(default_weights, ckpt_io.load(back.out)["model"]) <= FUSED_TOLERANCE
