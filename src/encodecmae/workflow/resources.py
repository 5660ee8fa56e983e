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
# Longest time limit asked for (48 h, a common partition maximum): a longer run is cut there and
# resumes from its last step checkpoint when the job is resubmitted.
MAX_RUNTIME_MIN = 2880


def train_resources(exp: Experiment) -> dict:
    """threads, gpu, cpus_per_gpu, mem_mb and runtime (minutes) of ``exp``'s training job."""
    n_layers, d_model, _ = SIZES[exp.size]
    n_layers, d_model = exp.arch.get("n_layers", n_layers), exp.arch.get("d_model", d_model)
    n_params = 12 * n_layers * d_model ** 2  # attention + feed-forward weights, roughly
    if exp.steps == 0:  # an untrained baseline: the job only writes the initial weights
        return {"threads": 1, "gpu": 0, "cpus_per_gpu": 0, "mem_mb": 2000, "runtime": 10}
    if n_params < CPU_MAX_PARAMS:
        s = CPU_SIZING
        runtime = 10 + math.ceil(1.25 * exp.steps / s["steps_per_s"] / 60)
        return {"threads": s["threads"], "gpu": 0, "cpus_per_gpu": 0, "mem_mb": s["mem_mb"],
                "runtime": min(runtime, MAX_RUNTIME_MIN)}
    s = TRAIN_SIZING[exp.size]
    cpus_per_gpu = int(exp.train.get("num_workers", 0)) + 1
    runtime = 15 + math.ceil(1.25 * exp.steps / s["steps_per_s"] / 60)
    return {"threads": s["gpu"] * cpus_per_gpu, "gpu": s["gpu"], "cpus_per_gpu": cpus_per_gpu,
            "mem_mb": s["gpu"] * s["mem_mb_per_gpu"], "runtime": min(runtime, MAX_RUNTIME_MIN)}


def inference_mem_mb(exp: Experiment) -> int:
    """Host memory of a job that runs ``exp``'s encoder (embedding, teacher features, clusters)."""
    if exp.arch:  # a custom (demo/CI) architecture
        return 2000
    return {"debug": 2000, "small": 4000, "base": 4000, "large": 8000}[exp.size]
