"""Cluster resources of the workflow's jobs: GPUs, cores, memory and time limits per model size."""

from __future__ import annotations

import math

from encodecmae.model.config import SIZES
from encodecmae.workflow.experiments import Experiment

# Per model size: data-parallel GPUs (torchrun ranks; the global batch is split over them), host
# memory per GPU, and the throughput of the whole job in steps/s, which sizes the time limit.
# CPU cores per GPU come from the experiment's data-loader workers (num_workers + 1 for the rank).
TRAIN_SIZING = {
    "debug": {"gpu": 1, "mem_mb_per_gpu": 8000, "steps_per_s": 10.0},
    "small": {"gpu": 1, "mem_mb_per_gpu": 24000, "steps_per_s": 4.0},
    "base": {"gpu": 2, "mem_mb_per_gpu": 24000, "steps_per_s": 3.0},
    "large": {"gpu": 4, "mem_mb_per_gpu": 32000, "steps_per_s": 2.0},
}
# Models under this many transformer weights (the CI and demo architectures) train on CPU, one
# thread each: a second thread speeds such small matrices up little, and two jobs train side by side.
CPU_MAX_PARAMS = 1_000_000
CPU_SIZING = {"threads": 1, "mem_mb": 2000, "steps_per_s": 0.5}
# Longest time limit asked for (48 h, a common partition maximum). A longer run is done in
# segments: each job stops STOP_MARGIN_MIN before its limit with a step checkpoint (train
# --stop-after) and the next job, resubmitted by the rule's retries, resumes there.
MAX_RUNTIME_MIN = 2880
STOP_MARGIN_MIN = 5


def segments(runtime_min: float) -> int:
    """Jobs a training run of ``runtime_min`` minutes takes under MAX_RUNTIME_MIN per job."""
    return max(1, math.ceil(runtime_min / (MAX_RUNTIME_MIN - STOP_MARGIN_MIN)))


def train_resources(exp: Experiment) -> dict:
    """threads, gpu, cpus_per_gpu, mem_mb, runtime (minutes) and segments (jobs) of ``exp``'s training."""
    n_layers, d_model, _ = SIZES[exp.size]
    n_layers, d_model = exp.arch.get("n_layers", n_layers), exp.arch.get("d_model", d_model)
    n_params = 12 * n_layers * d_model ** 2  # attention + feed-forward weights, roughly
    if exp.steps == 0:  # an untrained baseline: the job only writes the initial weights
        return {"threads": 1, "gpu": 0, "cpus_per_gpu": 0, "mem_mb": 2000, "runtime": 10, "segments": 1}
    if n_params < CPU_MAX_PARAMS:
        s = CPU_SIZING
        runtime = 10 + math.ceil(1.25 * exp.steps / s["steps_per_s"] / 60)
        return {"threads": s["threads"], "gpu": 0, "cpus_per_gpu": 0, "mem_mb": s["mem_mb"],
                "runtime": min(runtime, MAX_RUNTIME_MIN), "segments": segments(runtime)}
    s = TRAIN_SIZING[exp.size]
    cpus_per_gpu = int(exp.train.get("num_workers", 0)) + 1
    runtime = 15 + math.ceil(1.25 * exp.steps / s["steps_per_s"] / 60)
    return {"threads": s["gpu"] * cpus_per_gpu, "gpu": s["gpu"], "cpus_per_gpu": cpus_per_gpu,
            "mem_mb": s["gpu"] * s["mem_mb_per_gpu"], "runtime": min(runtime, MAX_RUNTIME_MIN),
            "segments": segments(runtime)}


# The SUPERB ASR downstream (BiLSTM-CTC on frozen features). A downstream of SUPERB's size (proj
# and hidden 1024) trains on one GPU: ~3.8 TFLOP per step of 32 LibriSpeech utterances (two
# bidirectional LSTM layers over ~470 frames each, forward and backward), which at a third of an
# H100's TF32 rate is ~0.1 s; ASR_GPU_STEPS_PER_S assumes half that speed (an estimate, not yet
# measured: issue 15), so 200k steps ask for ~28 h. A small one (a demo's) trains on CPU, one
# thread, at about the speed measured here: 10 steps/s for the demo's downstream (one BiLSTM layer
# of 128, projection 64, batch 32 of ~2.4-s utterances, two such jobs sharing the 2-core AMD EPYC
# VM; 2026-12-02).
ASR_GPU_MIN_WIDTH = 256
ASR_GPU_STEPS_PER_S = 2.0
ASR_CPU_STEPS_PER_S = 10.0


def asr_train_resources(asr: dict) -> dict:
    """threads, gpu, mem_mb, runtime (minutes) and segments (jobs) of one ASR downstream training."""
    steps = int(asr.get("steps", 200_000))
    if max(int(asr.get("proj", 1024)), int(asr.get("hidden", 1024))) >= ASR_GPU_MIN_WIDTH:
        runtime = 15 + math.ceil(1.25 * steps / ASR_GPU_STEPS_PER_S / 60)
        return {"threads": 4, "gpu": 1, "mem_mb": 16000, "runtime": min(runtime, MAX_RUNTIME_MIN),
                "segments": segments(runtime)}
    runtime = 10 + math.ceil(1.25 * steps / ASR_CPU_STEPS_PER_S / 60)
    return {"threads": 1, "gpu": 0, "mem_mb": 2000, "runtime": min(runtime, MAX_RUNTIME_MIN),
            "segments": segments(runtime)}


# --- data and inference jobs -----------------------------------------------------------------------
# Throughput on one CPU thread, in seconds of audio per second of wall time, and the speed-up that
# 2 threads gave over 1: benchmarks/bench_throughput.py on the CI machine (2-core Intel Xeon VM,
# torch 2.11 from PyPI; 120 s of audio per figure, 60 s for large; 2026-12-02). "resample" is the
# slower of its formats (44.1-kHz stereo MP3 as FMA's; 16-kHz FLAC ran 1,620x) and uses one thread.
# The encoder stages are per model size with the paper's (released) architecture: "assign" is the
# encoder plus the exact nearest-centroid search, "embed" the encoder alone (embed-task and
# dump-features).
THROUGHPUT = {
    "resample": {"any": (480.0, 1.0)},
    "tokenize": {"any": (6.0, 1.71)},
    "assign": {"small": (14.6, 1.69), "base": (7.2, 1.75), "large": (2.7, 1.71)},
    "embed": {"small": (15.6, 1.73), "base": (8.7, 1.50), "large": (2.6, 2.08)},
}
# A job with more threads is sized as if each thread beyond the first added what the second did
# (measured up to 2 threads only), at most MAX_THREAD_GAIN of one thread (the large encoder's 2.08
# is noise above linear). A GPU job is sized as its CPU threads would run it: an upper bound until
# GPU throughput is measured (issue 15), so its limit is generous, never short.
MAX_THREAD_GAIN = 0.9
# A job's time limit: START_MIN for start-up and the last write, plus SAFETY times its measured
# work (cluster cores are often slower than this machine's and share their memory bandwidth).
START_MIN, SAFETY = 10, 2.0
# Peak resident memory of each data job, in MiB, measured by benchmarks/bench_memory.py (the
# largest over a 1-h and a 4-h shard and a 2-h file): code, libraries and one block of audio. The
# encoder stages ran a debug-size teacher; they add their model's weights and one batch's
# activations (model_inference_mib).
PEAK_MIB = {"resample": 665, "tokenize": 1719, "assign": 1017, "embed": 890}
MEM_HEADROOM = 1.25


def encoder_size(exp: Experiment) -> str:
    """The size preset whose throughput figures an experiment's encoder runs at: the smallest of
    small/base/large that costs at least as much (layers x D^2; the demo's and debug models: small)."""
    n_layers, d_model, _ = SIZES[exp.size]
    cost = exp.arch.get("n_layers", n_layers) * exp.arch.get("d_model", d_model) ** 2
    for size in ("small", "base", "large"):
        if SIZES[size][0] * SIZES[size][1] ** 2 >= cost:
            return size
    return "large"


def scaled_throughput(stage: str, size: str, threads: int) -> float:
    """Seconds of audio per second for ``stage`` with a model of ``size`` on ``threads`` threads."""
    table = THROUGHPUT[stage]
    one, two = table[size] if size in table else table["any"]
    return one * (1.0 + (max(1, threads) - 1) * min(two - 1.0, MAX_THREAD_GAIN))


def data_runtime(stage: str, hours: float, threads: int = 1, size: str = "any") -> int:
    """Time limit in minutes of a ``stage`` job over ``hours`` of audio (capped at MAX_RUNTIME_MIN)."""
    seconds = hours * 3600.0 / scaled_throughput(stage, size, threads)
    return min(MAX_RUNTIME_MIN, START_MIN + math.ceil(SAFETY * seconds / 60.0))


def model_inference_mib(n_layers: int, d_model: int, ff_dim: int, batch: int = 16, frames: int = 300) -> float:
    """Weights (float32; one feed-forward block per layer, the larger variant) and the activations
    of one batch of 4-s chunks (hidden_states keeps every layer's output), in MiB."""
    per_layer = 4 * d_model ** 2 + 2 * d_model * ff_dim
    params = (n_layers + 2) * per_layer + 8 * 1024 * d_model + 256 * d_model
    activations = (n_layers + 1) * batch * frames * d_model + 4 * batch * frames * ff_dim
    return 4 * (params + 3 * activations) / 2 ** 20


def data_mem_mb(stage: str, exp: Experiment | None = None) -> int:
    """Host memory in MB of a ``stage`` job: its measured peak, plus ``exp``'s encoder (weights and
    one batch's activations) for the stages that run one, with MEM_HEADROOM; in steps of 500."""
    mib = PEAK_MIB[stage]
    if exp is not None:
        n_layers, d_model, _ = SIZES[exp.size]
        mib += model_inference_mib(exp.arch.get("n_layers", n_layers), exp.arch.get("d_model", d_model),
                                   exp.arch.get("ff_dim", 128 if exp.size == "debug" else 4096))
    return 500 * math.ceil(MEM_HEADROOM * mib * 1.048576 / 500)
