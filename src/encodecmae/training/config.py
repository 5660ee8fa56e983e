"""The settings of a training run, defined once.

:class:`TrainConfig` is the only place a training setting is declared: its default, its help and
its role. The ``train`` command's flags are generated from it (:func:`add_arguments`), the
workflow's experiment rows may override the fields marked ``training`` (the config's
``training:`` section, :func:`training_keys`), and the config schema is checked against it
(tests/test_experiments.py). Free of torch, so that the workflow can plan with it.

Roles: ``setting`` fields shape the trained model; ``input`` fields name the files it learns
from (recorded by content in the provenance, not by path); ``output`` and ``job`` fields say
where files go and how one job runs (threads, logging and checkpoint intervals): a run may be
resumed with other values of them and still writes the same model.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, dataclass, field, fields

from encodecmae.model.config import (FEEDFORWARD, INPUTS, LOSS_NORMS, MASK_STARTS, MASK_TOKENS, MEL_FRAMINGS,
                                     POSITIONS, SIZES)

ROLES = ("setting", "input", "output", "job")
ADAMW_IMPLS = ("default", "foreach", "fused")
COMPILE_BACKENDS = ("off", "inductor", "aot_eager")


def option(default=MISSING, help: str = "", *, role: str = "setting", training: bool = False,
           choices: tuple | None = None):
    """A TrainConfig field. ``training``: also a key of the config's ``training:`` section."""
    assert role in ROLES, role
    meta = {"help": help, "role": role, "training": training, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # files
    shards: list[str] = option(help="shard directories", role="input")
    targets: list[str] = option(help="per-shard target files (tokens or cluster ids), same order", role="input")
    out: str = option(help="final model checkpoint", role="output")
    ckpt_dir: str = option(help="directory of the step checkpoints (resuming reads it)", role="output")
    metrics: str = option(help="metrics CSV", role="output")
    # the model
    size: str = option("base", "size preset", choices=tuple(SIZES))
    input: str = option("mel256", "input features", choices=INPUTS)
    encodec_checkpoint: str | None = option(None, "EnCodec weights for --input encodec", role="input")
    n_layers: int | None = option(None, "encoder layers (overrides --size)")
    d_model: int | None = option(None, "model width D (overrides --size)")
    n_heads: int | None = option(None, "attention heads (overrides --size)")
    ff_dim: int | None = option(None, "feed-forward width (overrides --size)")
    init_from: str | None = option(None, "start from this checkpoint's weights (self-training)", role="input")
    reset_head: bool = option(False, "a new prediction head for the targets (with --init-from)")
    n_streams: int | None = option(None, "target streams Q (default: from the targets)")
    n_classes: int = option(1024, "classes per stream K (EnCodec codebook size, or k-means clusters)")
    # where the released code differs from the paper's text (docs/released-models.md);
    # a model started with --init-from keeps its teacher's architecture settings
    mask_token: str = option("learned", "mask token (paper: learned; released code: zeros)", training=True,
                             choices=MASK_TOKENS)
    feedforward: str = option("per_layer", "feed-forward blocks: one per layer, or one shared by the layers of "
                              "each stack (released code)", training=True, choices=FEEDFORWARD)
    mel_framing: str = option("aligned", "mel frames: hop 320 centred on EnCodec's frames, or the released "
                              "code's 318-sample shift", training=True, choices=MEL_FRAMINGS)
    positions: str = option("per_stack", "positional scale: one per stack, or one for encoder and decoder "
                            "(v1 released code; v2 has one per stack)", training=True, choices=POSITIONS)
    # the objective and the optimiser
    steps: int = option(500_000, "training steps (0: write the initial weights)")
    batch_size: int = option(128, "global batch (all ranks)", training=True)
    grad_accum: int = option(1, "gradient-accumulation micro-steps per step", training=True)
    lr: float = option(1e-4, "constant learning rate", training=True)
    weight_decay: float = option(0.05, "AdamW weight decay", training=True)
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas", training=True)
    delta: float = option(0.9, "weight of the masked-frame loss", training=True)
    gamma: list[float] = option([], "per-stream loss weights gamma_q (none: uniform)")
    mask_prop: float = option(0.5, "masked proportion of the frames", training=True)
    mask_gap: int = option(15, "mask span length in frames", training=True)
    mask_starts: str = option("anywhere", "where mask spans may start: anywhere in the clip, or only where they "
                              "end inside it (released code)", training=True, choices=MASK_STARTS)
    loss_norm: str = option("clip", "loss means per clip, or over the batch's frames (released code)",
                            training=True, choices=LOSS_NORMS)
    seed: int = option(0, "seed of initialisation, batches and masks", training=True)
    val_clips: int = option(200, "held-out validation clips", training=True)
    # how one job runs
    checkpoint_every: int = option(50_000, "steps between resumable checkpoints", role="job", training=True)
    log_every: int = option(50, "steps between metric rows", role="job", training=True)
    val_every: int = option(10_000, "steps between validations", role="job", training=True)
    num_workers: int = option(4, "data-loader worker processes", role="job", training=True)
    device: str = option("auto", "auto, cpu or cuda", role="job")
    threads: int = option(0, "torch CPU threads (0: torch's default)", role="job")
    resume: bool = option(False, "continue from the newest checkpoint in --ckpt-dir", role="job")
    stop_after: float = option(0.0, "seconds of this job after which it checkpoints and exits with code 75, for "
                               "a new job to resume (0: never); SIGTERM and SIGUSR1 do the same", role="job")
    # how fast one job runs (off by default: the default step is the reference the tests pin).
    # Flags of the command only, like --device: not keys of the config's training section, so
    # that adding them changed no run key (encodecmae.workflow.experiments.run_keys).
    adamw: str = option("default", "AdamW implementation: torch's default (a for-loop on the CPU, foreach on "
                        "CUDA), foreach, or fused (one kernel per step; where this torch has none for the device, "
                        "foreach, and the log says so)", role="job", choices=ADAMW_IMPLS)
    compile: str = option("off", "torch.compile the model's training pass: off, inductor (generated kernels), "
                          "or aot_eager (traced but run by eager kernels: checks the tracing); where this torch "
                          "cannot compile, eager, and the log says so", role="job", choices=COMPILE_BACKENDS)
    prefetch: int = option(0, "batches made ready ahead on the training device by a background thread (pinned "
                           "memory, non-blocking copies on a side CUDA stream; 0: off)", role="job")


def fields_with_role(*roles: str) -> frozenset[str]:
    return frozenset(f.name for f in fields(TrainConfig) if f.metadata["role"] in roles)


def training_keys() -> tuple[str, ...]:
    """Keys of the config's ``training:`` section (and of an experiment row's ``train:``)."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata["training"])


def defaults() -> dict:
    """Default of every field that has one."""
    out = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


# Fields that are not settings of the result: a resumed run may change them (a run extended
# by more steps continues the same trajectory too).
EXECUTION_FIELDS = fields_with_role("output", "job")
INPUT_FIELDS = fields_with_role("input")
RESUME_MAY_CHANGE = EXECUTION_FIELDS | {"steps"}
# Settings of the model's architecture (ModelConfig fields of the same name): a student started
# from a teacher's weights (--init-from) keeps the teacher's.
ARCHITECTURE_FIELDS = ("mask_token", "feedforward", "mel_framing", "positions")


# --- command line ------------------------------------------------------------------------------


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, named as the field (``batch_size`` -> ``--batch-size``)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kind, meta = hints[f.name], f.metadata
        kw: dict = {"help": meta["help"]}
        if meta["choices"]:
            kw["choices"] = meta["choices"]
        if kind is bool:
            kw["action"] = "store_true"
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            origin = typing.get_origin(kind)
            if origin in (list, tuple):
                kw["nargs"] = "+" if origin is list else len(args)
                kw["type"] = args[0]
            elif origin in (typing.Union, types.UnionType):
                kw["type"] = args[0]
            else:
                kw["type"] = kind
            if f.default is MISSING and f.default_factory is MISSING:
                kw["required"] = True
            else:
                kw["default"] = f.default if f.default is not MISSING else None
                if kw["default"] is not None:
                    kw["help"] += f" (default: {' '.join(map(str, kw['default'])) if origin is tuple else kw['default']})"
        parser.add_argument(flag(f.name), **kw)


def from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values["betas"] = tuple(values["betas"])
    values["gamma"] = list(values["gamma"] or [])
    return TrainConfig(**values)


def to_args(values: dict) -> str:
    """Render TrainConfig values as the command's flags (the inverse of the parser)."""
    parts = []
    for k, v in values.items():
        if isinstance(v, bool):
            parts.append(flag(k) if v else "")
        elif isinstance(v, (list, tuple)):
            parts.append(f"{flag(k)} {' '.join(str(x) for x in v)}")
        else:
            parts.append(f"{flag(k)} {v}")
    return " ".join(p for p in parts if p)
