"""Experiments of a workflow configuration, resolved into what each rule needs.

The workflow's config declares models as a list of experiments (one row per model); this
module turns a row into the inputs and command-line parameters of its training rule, checks
references between rows (``init``, ``targets.clusters_of``), and keeps the logic out of the
Snakefile so it can be unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from encodecmae.model.config import SIZES

# training keys an experiment may override (the rest of TrainConfig is wired by the workflow)
TRAIN_KEYS = ("batch_size", "grad_accum", "lr", "weight_decay", "betas", "delta", "mask_prop", "mask_gap",
              "mask_token", "seed", "checkpoint_every", "log_every", "val_clips", "val_every", "num_workers")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass
class Experiment:
    name: str
    label: str
    input: str
    size: str
    arch: dict
    sources: list[str]
    steps: int
    teacher: str | None  # None: EnCodec targets; else the model whose clusters are the targets
    init: str | None
    train: dict = field(default_factory=dict)
    paper_line: int | None = None

    @property
    def targets_kind(self) -> str:
        return "encodec" if self.teacher is None else "clusters"

    def train_params(self) -> dict:
        """Everything the training command gets besides file paths: the rule's ``params``."""
        p = {"input": self.input, "size": self.size, "steps": self.steps, **self.arch, **self.train}
        if self.teacher is not None:
            p.update(n_streams=1, gamma=[1.0])
        if self.init is not None:
            p["reset_head"] = self.teacher is not None
        return p

    def run_key(self) -> str:
        """Short hash of the settings that define a training trajectory (not its length).

        Names the step-checkpoint directory: rerunning after a kill resumes the same run; a
        changed setting starts a new one instead of continuing the wrong checkpoint; more
        steps continue the run.
        """
        p = {k: v for k, v in self.train_params().items() if k not in ("steps", "checkpoint_every", "log_every",
                                                                         "val_every")}
        p.update(sources=self.sources, teacher=self.teacher, init=self.init)
        return hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]


def resolve(config: dict) -> dict[str, Experiment]:
    """Experiments by name, in config order; raises ConfigError naming the bad key."""
    sources = list(config["corpus"]["sources"])
    archs = config.get("architectures", {})
    defaults = {k: v for k, v in config.get("training", {}).items() if k in TRAIN_KEYS}
    out: dict[str, Experiment] = {}
    for i, row in enumerate(config["experiments"]):
        name = row["name"]
        where = f"experiments[{i}]"
        if name in out:
            raise ConfigError(f"{where}.name: duplicate experiment name {name!r}")
        init = row.get("init")
        if init is not None and init not in out:
            raise ConfigError(f"{where}.init: {init!r} is not an experiment listed before {name!r}")
        targets = row.get("targets", "encodec")
        teacher = targets.get("clusters_of") if isinstance(targets, dict) else None
        if teacher is not None and teacher not in out:
            raise ConfigError(f"{where}.targets.clusters_of: {teacher!r} is not an experiment listed before {name!r}")
        base = out[init] if init else None
        arch_name = row.get("architecture")
        if arch_name is not None and arch_name not in archs:
            raise ConfigError(f"{where}.architecture: {arch_name!r} is not defined under 'architectures'")
        size = row.get("size", base.size if base else "base")
        if size not in SIZES:
            raise ConfigError(f"{where}.size: {size!r} is not one of {sorted(SIZES)}")
        if base and (row.get("architecture") or row.get("size") or row.get("input")):
            raise ConfigError(f"{where}: a model that starts from 'init' keeps its architecture and input; "
                              f"remove size/architecture/input")
        srcs = row.get("sources", base.sources if base else sources)
        bad = [s for s in srcs if s not in sources]
        if bad:
            raise ConfigError(f"{where}.sources: {bad} not defined under corpus.sources")
        out[name] = Experiment(
            name=name, label=row.get("label", name), input=row.get("input", base.input if base else "mel256"),
            size=size, arch=dict(archs[arch_name]) if arch_name else (dict(base.arch) if base else {}),
            sources=list(srcs), steps=int(row["steps"]), teacher=teacher, init=init,
            train={**defaults, **row.get("train", {})}, paper_line=row.get("paper_line"))
    return out


def train_args(params: dict) -> str:
    """Render the training ``params`` as command-line flags (kebab-case)."""
    parts = []
    for k, v in params.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else "")
        elif isinstance(v, (list, tuple)):
            parts.append(f"{flag} {' '.join(str(x) for x in v)}")
        else:
            parts.append(f"{flag} {v}")
    return " ".join(p for p in parts if p)


# --- cluster resources of a training job (read by the workflow's train_mae rule) -----------------

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
