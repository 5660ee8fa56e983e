"""The measurements of benchmarks/gpu_check.py (its docstring says what each one is), the
synthetic corpus they run on, and the two sizes (profiles) they run at."""


from __future__ import annotations

import math
import os
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.data.shards import save_targets, write_shard
from encodecmae.training import loop
from encodecmae.training.config import TrainConfig

# Targets of issue 26 (an H200; an H100 SXM has the same bf16 peak but slower memory).
TARGETS = {"train_base_clips_s": 2600.0, "train_large_clips_s": 1200.0, "loader_headroom": 1.2,
           "tokenize_x_realtime": 5000.0, "host_syncs_per_step": 0}
# Peak dense (no sparsity) bf16/fp16 tensor-core rates from NVIDIA's datasheets, by device name;
# the first key found in torch.cuda.get_device_name() wins (GH200 before H200, H100 variants first).
PEAK_BF16 = {"GH200": 989.4e12, "H200": 989.4e12, "H100 PCIe": 756.5e12, "H100 NVL": 835.5e12, "H100": 989.4e12,
             "H800": 989.4e12, "A100": 312e12, "A800": 312e12, "L40S": 362.05e12, "L4": 121e12}
MEASUREMENTS = ("train_base", "train_large", "adamw", "compile", "prefetch", "host_syncs", "loader", "tokenize",
                "embed", "train_asr", "loss_curve")


@dataclass
class Profile:
    """Sizes of one mode. ``models``: the role's model size and batch (tiny: debug stand-ins)."""

    models: dict  # role -> (size, batch, TrainConfig architecture overrides)
    clips: list  # (source, seconds, count): the synthetic corpus
    warmup: int
    timed: int
    workers: int
    threads: int
    n_q: int  # target streams and classes (tiny: fewer, or the output head dominates a debug model's step)
    n_classes: int
    compile: str
    curve_steps: int
    tokenize_batch: int
    tokenize_sources: tuple
    embed_clips: tuple  # (seconds, count)
    asr: dict  # n_layers, dim, frames, n_train, batch, proj, hidden, steps (two runs)
    estimates: dict = field(default_factory=dict)  # measurement -> seconds it needs (budget checks)


def gpu_profile() -> Profile:
    cores = os.cpu_count() or 2
    # paper-like lengths: AudioSet 10-s clips, FMA 30-s tracks, Libri-Light long recordings
    return Profile(models={"base": ("base", 128, {}), "large": ("large", 128, {})},
                   clips=[("audioset", 10.0, 96), ("fma", 30.0, 32), ("librilight", 300.0, 4)],
                   warmup=4, timed=20, workers=max(1, cores - 2), threads=0, n_q=8, n_classes=1024, compile="inductor",
                   curve_steps=2000,
                   tokenize_batch=64, tokenize_sources=("audioset", "fma", "librilight"), embed_clips=(10.0, 64),
                   asr={"n_layers": 11, "dim": 768, "frames": 470, "n_train": 32, "batch": 32, "proj": 1024,
                        "hidden": 1024, "steps": (3, 13), "workers": 2},
                   estimates={"train_base": 120, "train_large": 150, "adamw": 20, "compile": 5, "prefetch": 20,
                              "host_syncs": 0, "loader": 25, "tokenize": 20, "embed": 15, "train_asr": 40,
                              "loss_curve": 60})


def tiny_profile() -> Profile:
    return Profile(models={"base": ("debug", 4, {}), "large": ("debug", 4, {"n_layers": 3})},
                   clips=[("audioset", 5.0, 3), ("fma", 9.0, 1), ("librilight", 20.0, 1), ("short", 1.0, 1)],
                   warmup=2, timed=2, workers=0, threads=1, n_q=2, n_classes=64, compile="aot_eager", curve_steps=6,
                   tokenize_batch=4, tokenize_sources=("short",), embed_clips=(4.0, 2),
                   asr={"n_layers": 3, "dim": 8, "frames": 40, "n_train": 8, "batch": 4, "proj": 16, "hidden": 16,
                        "steps": (1, 3), "workers": 0})


# --- the synthetic corpus ----------------------------------------------------------------------


def write_corpus(work: Path, profile: Profile) -> dict[str, tuple[Path, Path]]:
    """One shard per source (tones and noise at 24 kHz, written by ``write_shard``) and random
    targets [n_q, frames] in 0..n_classes-1: source -> (shard dir, targets file)."""
    rng = np.random.default_rng(0)
    out = {}
    for source, seconds, count in profile.clips:
        files = []
        for i in range(count):
            n = int(seconds * SAMPLE_RATE)
            t = np.arange(n) / SAMPLE_RATE
            wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.05 * rng.standard_normal(n)
            path = work / "audio" / source / f"{source}_{i:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            files.append(path)
        shard = work / "shards" / source
        manifest = write_shard(files, shard)
        frames = int(manifest.n_samples.sum()) // HOP
        targets = work / "shards" / f"{source}_targets.npy"
        save_targets(targets, rng.integers(0, profile.n_classes, size=(profile.n_q, frames)))
        out[source] = (shard, targets)
    return out


# --- training steps ----------------------------------------------------------------------------


@dataclass
class Ctx:
    device: torch.device
    profile: Profile
    work: Path
    corpus: dict
    results: object  # gpu_check.Results: what ran so far, and the time left

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


OPTIMISED = {"adamw": "fused", "prefetch": 2}  # and compile: the profile's backend


def train_cfg(ctx: Ctx, name: str, role: str, steps: int, **speed) -> TrainConfig:
    size, batch, arch = ctx.profile.models[role]
    d = ctx.work / "runs" / name
    return TrainConfig(shards=[str(s) for s, _ in ctx.corpus.values()],
                       targets=[str(t) for _, t in ctx.corpus.values()],
                       out=str(d / "model.pt"), ckpt_dir=str(d / "ckpt"), metrics=str(d / "metrics.csv"), size=size,
                       steps=steps, batch_size=batch, val_clips=0, checkpoint_every=10**9, log_every=10**9,
                       val_every=10**9, num_workers=ctx.profile.workers, device=ctx.device.type,
                       n_classes=ctx.profile.n_classes,
                       threads=ctx.profile.threads, seed=0, **arch, **speed)


def optimised(ctx: Ctx) -> dict:
    return {**OPTIMISED, "compile": ctx.profile.compile}


def start_run(cfg: TrainConfig) -> loop.Run:
    run = loop.setup(cfg)
    loop.restore(run)
    return run


def time_steps(ctx: Ctx, cfg: TrainConfig, on_step=None) -> dict:
    """Clips/s of ``cfg.steps`` real training steps (loader included), the first ``warmup`` untimed
    (the first one, compile included, is timed on its own); ``on_step(i, run, batch)`` may run a
    step instead (counting FLOPs or syncs) and returns True when it did."""
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    run = start_run(cfg)
    warmup, losses = ctx.profile.warmup, []
    t_start = time.perf_counter()
    t0 = first = None
    for i, (step, batch) in enumerate(loop.batches(run, 0)):
        if i == warmup:
            ctx.sync()
            t0 = time.perf_counter()
        if not (on_step and on_step(i, run, batch)):
            losses.append(loop.train_step(run, batch)["loss"].detach())
        if i == 0:
            ctx.sync()
            first = time.perf_counter() - t_start
    ctx.sync()
    dt = (time.perf_counter() - t0) / (cfg.steps - warmup)
    last = float(losses[-1])
    if not math.isfinite(last):
        raise FloatingPointError(f"loss {last} after {cfg.steps} steps ({run.speed.describe()})")
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.device.type == "cuda" else None
    return {"clips_s": cfg.batch_size / dt, "step_s": dt, "first_step_s": first, "speed": run.speed.describe(),
            "size": run.model.cfg.size, "n_layers": run.model.cfg.n_layers, "batch": cfg.batch_size,
            "peak_gib": peak, "loss": last}


def count_flops(run: loop.Run, batch) -> int:
    """FLOPs of one training step's forward and backward (matmuls and attention; the optimiser's
    and the loss's elementwise work is not counted, as in the usual MFU), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loop.train_step(run, batch)
    return int(counter.get_total_flops())


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no peak rate for a CPU (the CPU stands in for the GPU)"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak, f"{name}: {peak / 1e12:.1f} TFLOP/s dense bf16 ({key} in the datasheet table)"
    return None, f"{name}: not in the table of peak rates (PEAK_BF16); MFU not computed"


def measure_training(ctx: Ctx, role: str) -> dict:
    """Today's step and the optimised one. Two warmup steps run instrumented: the first of
    today's under the FLOP counter, the last of each run's under the host-sync counter (after
    compilation and the allocator's first requests)."""
    steps = ctx.profile.warmup + ctx.profile.timed
    flops, syncs = {}, {}

    def counting(i, run, batch):
        if i == 0 and not flops:
            flops["step"] = count_flops(run, batch)
            return True
        if i == ctx.profile.warmup - 1:
            syncs[run.cfg.ckpt_dir] = count_syncs(ctx, run, batch)
            return True
        return False

    today = time_steps(ctx, train_cfg(ctx, f"{role}_today", role, steps), counting)
    cfg = train_cfg(ctx, f"{role}_optimised", role, steps, **optimised(ctx))
    try:
        best = time_steps(ctx, cfg, counting)
    except Exception as exc:  # a compile failure costs the compiled figure, not the others
        if cfg.compile == "off" or ctx.results.strict:
            raise
        cfg = replace(cfg, compile="off", ckpt_dir=cfg.ckpt_dir + "_eager", out=cfg.out + ".eager.pt")
        best = time_steps(ctx, cfg, counting)
        best["compile_failed"] = f"{type(exc).__name__}: {exc}"
        print(f"gpu_check: train_{role}: compile failed ({best['compile_failed']}); optimised step without it",
              flush=True)
    today["host_syncs"] = syncs[str(ctx.work / "runs" / f"{role}_today" / "ckpt")]
    best["host_syncs"] = syncs[cfg.ckpt_dir]
    peak, peak_note = peak_flops(ctx.device)
    out = {"today": today, "optimised": best, "flops_per_step": flops["step"], "peak_flops": peak,
           "peak_note": peak_note, "speedup": best["clips_s"] / today["clips_s"]}
    for k in ("today", "optimised"):
        tflops = flops["step"] / out[k]["step_s"]
        out[k]["tflops"] = tflops / 1e12
        out[k]["mfu"] = tflops / peak if peak else None
    key = f"train_{role}_clips_s"
    out["target_clips_s"] = TARGETS[key]
    out["meets_target"] = best["clips_s"] >= TARGETS[key] if ctx.device.type == "cuda" else None
    return out


def measure_option(ctx: Ctx, option: str) -> dict:
    """Base clips/s with one speed option switched, the others as in today's step (compile: as
    in the optimised step, so that its own gain shows)."""
    steps = ctx.profile.warmup + ctx.profile.timed
    if option == "compile":  # the optimised step (train_base) against the same without compile
        base = ctx.results.items.get("train_base", {})
        if base.get("status") != "ok":
            raise RuntimeError("needs train_base's optimised step, which did not run")
        on = base["optimised"]
        off = time_steps(ctx, train_cfg(ctx, "compile_off", "base", steps, **{**optimised(ctx), "compile": "off"}))
        return {"off": off, "on": on, "speedup": on["clips_s"] / off["clips_s"],
                "compile_s": on["first_step_s"] - off["first_step_s"]}
    if option == "adamw":
        variants = {"default": {}, "foreach": {"adamw": "foreach"}, "fused": {"adamw": "fused"}}
    else:
        variants = {"off": {}, "on": {"prefetch": OPTIMISED["prefetch"]}}
    out = {k: time_steps(ctx, train_cfg(ctx, f"{option}_{k}", "base", steps, **v)) for k, v in variants.items()}
    first, last = list(out)[0], list(out)[-1]
    return {**out, "speedup": out[last]["clips_s"] / out[first]["clips_s"]}


# --- host synchronisations ---------------------------------------------------------------------

# Tensor reads that wait for the device on CUDA: what the CPU stand-in counts.
HOST_READS = frozenset({"item", "nonzero", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu",
                        "numpy", "nonzero_static", "masked_select", "unique", "repeat_interleave"})


def _caller() -> str:
    """file:line of the innermost frame outside torch (where the synchronising call is)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if f"{os.sep}torch{os.sep}" not in frame.filename and not frame.filename.endswith("gpu_check.py"):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def count_syncs(ctx: Ctx, run: loop.Run, batch) -> list[str]:
    """Where one training step synchronises the host with the device (one entry per sync). The
    CPU stand-in counts the step's pass run eagerly, and not the reads of the optimiser's ``step``
    counters: on CUDA they stay on the host unless AdamW is fused (which reads none)."""
    where: list[str] = []
    if ctx.device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loop.train_step(run, batch)
            ctx.sync()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        where = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    else:
        from torch.overrides import TorchFunctionMode

        host = {id(s["step"]) for s in run.opt.state.values() if "step" in s}

        class HostReads(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if getattr(func, "__name__", "") in HOST_READS and not (args and id(args[0]) in host):
                    where.append(_caller())
                return func(*args, **(kwargs or {}))

        # eager for the count: under a torch-function mode, dynamo would recompile the pass
        with torch.compiler.set_stance("force_eager"), HostReads():
            loop.train_step(run, batch)
    return where


def measure_syncs(ctx: Ctx) -> dict:
    """Host synchronisations per step of today's step and the optimised one, as counted in
    train_base's runs (see ``measure_training``)."""
    base = ctx.results.items.get("train_base", {})
    if base.get("status") != "ok":
        raise RuntimeError("counted in train_base's runs, which did not run")
    out = {name: {"per_step": len(base[name]["host_syncs"]), "where": sorted(set(base[name]["host_syncs"]))}
           for name in ("today", "optimised")}
    out["method"] = ("torch.cuda.set_sync_debug_mode('warn')" if ctx.device.type == "cuda" else
                     f"CPU stand-in: calls of tensor reads that synchronise on CUDA ({', '.join(sorted(HOST_READS))})")
    out["target_per_step"] = TARGETS["host_syncs_per_step"]
    out["meets_target"] = out["optimised"]["per_step"] <= TARGETS["host_syncs_per_step"]
    return out


# --- the loader ----------------------------------------------------------------------------------


def measure_loader(ctx: Ctx) -> dict:
    """Clips/s ``loop.batches`` delivers on this machine's cores (workers, pinned memory and the
    device prefetch of the optimised step, no training) against what the optimised step
    consumes (train_base)."""
    workers = ctx.profile.workers or 1  # the tiny profile trains in-process; the loader is timed with a worker
    n = ctx.profile.warmup + 4 * ctx.profile.timed
    cfg = replace(train_cfg(ctx, "loader", "base", n, **optimised(ctx)), num_workers=workers, compile="off")
    run = start_run(cfg)
    t0 = None
    for i, (_, batch) in enumerate(loop.batches(run, 0)):
        if i == ctx.profile.warmup:
            ctx.sync()
            t0 = time.perf_counter()
    ctx.sync()
    delivered = cfg.batch_size * (n - ctx.profile.warmup) / (time.perf_counter() - t0)
    base = ctx.results.items.get("train_base", {})
    consumed = base["optimised"]["clips_s"] if base.get("status") == "ok" else None
    headroom = delivered / consumed if consumed else None
    return {"workers": workers, "cores": os.cpu_count(), "delivered_clips_s": delivered, "consumed_clips_s": consumed,
            "headroom": headroom, "target_headroom": TARGETS["loader_headroom"],
            "meets_target": None if headroom is None else headroom >= TARGETS["loader_headroom"]}


# --- tokenisation, embedding, the ASR downstream -------------------------------------------------


def measure_tokenize(ctx: Ctx) -> dict:
    """``tokenize_shard`` (the pipeline's tokenisation job) on the training shards, with the
    24-kHz EnCodec architecture (random weights: the pretrained checkpoint cannot be downloaded
    here; the arithmetic is the same)."""
    from encodecmae.targets.codec import new_encodec
    from encodecmae.targets.tokenize import tokenize_shard

    ckpt = ctx.work / "encodec_random.th"
    torch.manual_seed(0)
    torch.save(new_encodec().state_dict(), ckpt)
    dev, batch = ctx.device.type, ctx.profile.tokenize_batch
    shards = [ctx.corpus[s][0] for s in ctx.profile.tokenize_sources]
    # warmup: kernels chosen, the codec loaded once on the device
    tokenize_shard(shards[0], ckpt, ctx.work / "tok_warm.npy", batch_size=batch, device=dev)
    ctx.sync()
    t0 = time.perf_counter()
    seconds = 0.0
    for i, shard in enumerate(shards):
        tok = tokenize_shard(shard, ckpt, ctx.work / f"tok_{i}.npy", batch_size=batch, device=dev)
        seconds += tok.shape[1] * HOP / SAMPLE_RATE
    ctx.sync()
    x = seconds / (time.perf_counter() - t0)
    return {"audio_s": seconds, "x_realtime": x, "batch": batch, "target_x_realtime": TARGETS["tokenize_x_realtime"],
            "meets_target": x >= TARGETS["tokenize_x_realtime"] if ctx.device.type == "cuda" else None}


def measure_embed(ctx: Ctx) -> dict:
    """``embed_clips`` (the HEAR embedding and feature-dump jobs) with the base model (random weights)."""
    from encodecmae.evaluation.embed import embed_clips
    from encodecmae.model.config import ModelConfig
    from encodecmae.model.transformer import EncodecMAE

    size, _, arch = ctx.profile.models["base"]
    torch.manual_seed(0)
    model = EncodecMAE(replace(ModelConfig.from_size(size), **arch)).to(ctx.device).eval()
    seconds, count = ctx.profile.embed_clips
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32) for _ in range(count)]
    batch = 16
    embed_clips(model, clips[:2], -1, batch, ctx.device)  # warmup
    ctx.sync()
    t0 = time.perf_counter()
    out = embed_clips(model, clips, -1, batch, ctx.device)
    ctx.sync()
    assert all(np.isfinite(e).all() for e in out)
    return {"audio_s": seconds * count, "x_realtime": seconds * count / (time.perf_counter() - t0), "size": size,
            "batch": batch, "precision": "float32 (embed_clips runs without autocast)"}


def measure_asr(ctx: Ctx) -> dict:
    """``train_asr`` steps/s on synthetic features of the base model's shape: two runs of n1 and
    n2 steps (each with one dev evaluation and one checkpoint at its end), whose difference is
    the time of n2 - n1 steps."""
    from encodecmae.evaluation.asr import train_asr, write_feature_dir

    a = ctx.profile.asr
    rng = np.random.default_rng(0)
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "DOG'S", "BONE"]

    def items(n, tag):
        return [(f"{tag}{i:04d}", " ".join(rng.choice(words, size=a["frames"] // 12)),
                 rng.standard_normal((a["n_layers"], a["frames"], a["dim"]), np.float32).astype(np.float16))
                for i in range(n)]

    train = write_feature_dir(ctx.work / "asr" / "train", items(a["n_train"], "t"))
    dev = write_feature_dir(ctx.work / "asr" / "dev", items(2, "d"))
    times = []
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    for k, n in enumerate((1, *a["steps"])):  # the first: warmup (imports, kernels chosen), not timed
        d = ctx.work / "asr" / f"run{k}"
        t0 = time.perf_counter()
        train_asr(train, dev, d / "model.pt", d / "ckpt", steps=n, batch_size=a["batch"], eval_every=n,
                  device=ctx.device.type, threads=ctx.profile.threads, proj=a["proj"], hidden=a["hidden"],
                  workers=a["workers"])  # the workflow's rule: 2 loaders beside a GPU, none on the CPU
        times.append(time.perf_counter() - t0)
    for sig, handler in handlers.items():  # train_asr's Stopper would turn the lease's SIGTERM into a flag
        signal.signal(sig, handler)
    step_s = (times[2] - times[1]) / (a["steps"][1] - a["steps"][0])
    from encodecmae.workflow.resources import ASR_GPU_STEPS_PER_S

    return {"steps_s": 1.0 / step_s, "step_s": step_s, "batch": a["batch"], "frames": a["frames"],
            "workers": a["workers"],
            "layers": a["n_layers"], "dim": a["dim"], "proj": a["proj"], "hidden": a["hidden"],
            "estimate_steps_s": ASR_GPU_STEPS_PER_S}


# --- the loss curve ------------------------------------------------------------------------------


def curve(ctx: Ctx, name: str, limit_s: float, **speed) -> list[float]:
    """Per-step training loss of up to ``curve_steps`` steps of the base model, stopped at
    ``limit_s`` seconds (checked every 50 steps; the losses stay on the device until the end)."""
    cfg = train_cfg(ctx, f"curve_{name}", "base", ctx.profile.curve_steps, **speed)
    run = start_run(cfg)
    t0, losses = time.monotonic(), []
    for i, (_, batch) in enumerate(loop.batches(run, 0)):
        losses.append(loop.train_step(run, batch)["loss"].detach())
        if i % 50 == 49 and time.monotonic() - t0 > limit_s:
            break
    return [float(v) for v in torch.stack(losses).float().cpu()]


def measure_curve(ctx: Ctx) -> dict:
    """Today's step and the optimised one from the same initial weights on the same batches:
    their losses should agree up to the rounding of bf16 and of the reordered float sums."""
    limit = max(10.0, (ctx.results.left() - 30.0) / 2) if ctx.device.type == "cuda" else math.inf
    today = curve(ctx, "today", limit)
    best = curve(ctx, "optimised", limit, **optimised(ctx))
    n = min(len(today), len(best))
    a, b = np.array(today[:n]), np.array(best[:n])
    w = max(1, n // 10)
    last_a, last_b = a[-w:].mean(), b[-w:].mean()
    rel = abs(last_b - last_a) / abs(last_a)
    return {"steps_asked": ctx.profile.curve_steps, "steps": n,
            "shortened": n < ctx.profile.curve_steps and f"stopped at {n} steps by the time budget" or None,
            "first_loss": [float(a[0]), float(b[0])], "last_window_mean": [float(last_a), float(last_b)],
            "last_window_rel_diff": float(rel), "max_abs_diff": float(np.abs(a - b).max()),
            "tolerance_rel": 0.02, "meets_target": bool(rel <= 0.02),
            "today": [round(v, 5) for v in today[:n]], "optimised": [round(v, 5) for v in best[:n]]}


