"""The training loop of pretraining and self-training.

AdamW (wd 0.05, betas 0.9/0.95), constant lr 1e-4, global batch 128 split over data-parallel
ranks (torchrun/DDP) and gradient-accumulation micro-batches; bf16 autocast on CUDA, fp32 on
CPU. Batches are a pure function of (seed, step) (see ``batches``), so resuming from a checkpoint
replays exactly the batches an uninterrupted run would see.

Resuming is explicit: ``--resume`` continues from the newest checkpoint in ``--ckpt-dir`` (and
starts fresh when there is none); without it an existing checkpoint directory is an error, so
no run silently continues another.

:func:`train` reads as the procedure; each part it calls is one step of it: :func:`setup`
(ranks, device, data, model, optimiser), :func:`restore` (the newest step checkpoint),
:func:`train_step`, :class:`TrainingLog` (metric rows, validation, progress lines) and
:func:`save`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from encodecmae import provenance
from encodecmae.device import resolve_device
from encodecmae.model.config import ModelConfig
from encodecmae.model.loss import mae_loss
from encodecmae.model.masking import valid_mask
from encodecmae.model.transformer import EncodecMAE, count_parameters
from encodecmae.progress import format_duration
from encodecmae.training import checkpoints as ckpt_io
from encodecmae.training.batches import Corpus, StepDataset
from encodecmae.training.speed import Speed, adamw, maybe_compile, prefetch, set_adamw_impl, steps_of
from encodecmae.training.config import (ARCHITECTURE_FIELDS, EXECUTION_FIELDS, RESUME_MAY_CHANGE, TrainConfig,
                                        add_arguments, from_args)


# Exit status of a job that stopped before its last step (time limit, SIGTERM, SIGUSR1) after
# writing a checkpoint: the workflow resubmits it (the rule's retries) and the new job resumes.
EXIT_CONTINUE = 75


def train(cfg: TrainConfig) -> Path:
    """Train ``cfg.steps`` steps (continuing a resumed run) and write the final model ``cfg.out``.

    A job that reaches ``cfg.stop_after`` seconds, or gets SIGTERM or SIGUSR1, writes a step
    checkpoint after the step it is in and exits with EXIT_CONTINUE; the next job resumes there.
    """
    run = setup(cfg)
    start = restore(run)
    log = TrainingLog(run, start)
    stop = Stopper(cfg.stop_after)
    record_job(run, f"starts at step {start} of {cfg.steps}")
    step = start
    for step, batch in batches(run, start):
        parts = train_step(run, batch)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(step, parts)
        saved = step % cfg.checkpoint_every == 0 and step < cfg.steps
        if saved:
            save(run, run.ckpt_dir / f"step_{step:07d}.pt", step, with_optimizer=True)
        if step < cfg.steps and stop.now(run):
            if not saved:
                save(run, run.ckpt_dir / f"step_{step:07d}.pt", step, with_optimizer=True)
            if run.main:
                print(f"stopping at step {step} of {cfg.steps} ({stop.reason}); a new job resumes from "
                      f"{run.ckpt_dir / f'step_{step:07d}.pt'}", flush=True)
            record_job(run, f"stops at step {step} of {cfg.steps} ({stop.reason})")
            if run.world > 1:
                dist.destroy_process_group()
            raise SystemExit(EXIT_CONTINUE)
    save(run, Path(cfg.out), step, with_optimizer=False)
    record_job(run, f"finished at step {step} of {cfg.steps}")
    if run.world > 1:
        dist.destroy_process_group()
    return Path(cfg.out)


JOBS_LOG = "jobs.log"


def record_job(run: Run, event: str) -> None:
    """One line in the checkpoint directory's ``jobs.log`` (main rank): the history of the jobs
    that trained this run, which outlives each job's own log (the workflow replaces that one
    when it resubmits the job)."""
    if not run.main:
        return
    job = os.environ.get("SLURM_JOB_ID")
    who = f"SLURM job {job}" if job else f"process {os.getpid()}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    with open(run.ckpt_dir / JOBS_LOG, "a") as f:
        f.write(f"{stamp} {who} {event}\n")


class Stopper:
    """When a job should stop before its last step: after ``seconds`` of it (a cluster time limit
    minus the time to write a checkpoint), or once it got SIGTERM or SIGUSR1. All ranks agree (the
    flag is all-reduced), so they stop after the same step."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds if seconds > 0 else math.inf
        self.signal: str | None = None
        self.reason = ""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name

    def now(self, run: Run) -> bool:
        local = self.signal is not None or time.monotonic() >= self.deadline
        if run.world > 1:
            flag = torch.tensor([float(local)], device=run.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = bool(flag.item())
        if local:
            self.reason = f"got {self.signal}" if self.signal else "job time limit near"
        return local


# --- setup -------------------------------------------------------------------------------------


@dataclass
class Run:
    """What the steps of one training job share."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    corpus: Corpus
    model: EncodecMAE
    opt: torch.optim.Optimizer
    gamma: torch.Tensor
    ckpt_dir: Path
    extra: dict = field(default_factory=dict)  # recorded in the checkpoint config (init_from)
    ddp: torch.nn.Module | None = None  # the model as the steps call it (DDP-wrapped on several ranks)
    provenance: dict | None = None
    code_version: str | None = None
    speed: Speed = field(default_factory=Speed)  # the AdamW, compile and prefetch that run (training.speed)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def per_rank(self) -> int:
        return self.cfg.batch_size // self.world

    @property
    def micro(self) -> int:
        return self.per_rank // self.cfg.grad_accum

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()


def setup(cfg: TrainConfig) -> Run:
    """Ranks and device, the corpus, and the seeded model, loss weights and optimiser."""
    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1),
                                                                         ("LOCAL_RANK", 0)))
    device = resolve_device(cfg.device, local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by world size x --grad-accum "
                         f"({world} x {cfg.grad_accum})")
    corpus = Corpus(cfg.shards, cfg.targets, n_val=cfg.val_clips, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    random.seed(cfg.seed)  # the global Python and numpy generators too: their states are saved
    np.random.seed(cfg.seed)  # in every checkpoint, so two runs write the same bytes
    model, extra = build_training_model(cfg, corpus.n_streams)
    model.to(device).train()
    gamma = resolve_gamma(cfg, corpus.n_streams).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    speed = Speed(prefetch=cfg.prefetch)
    opt = adamw(params, cfg.adamw, speed, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return Run(cfg=cfg, rank=rank, world=world, device=device, corpus=corpus, model=model, opt=opt, gamma=gamma,
               ckpt_dir=Path(cfg.ckpt_dir), extra=extra, speed=speed)


def build_training_model(cfg: TrainConfig, n_target_streams: int) -> tuple[EncodecMAE, dict]:
    """New model, or the teacher's weights (with a new head) for self-training."""
    extra: dict = {}
    if cfg.init_from:
        teacher = ckpt_io.load(cfg.init_from)
        model = ckpt_io.build_model(teacher)
        extra["init_from"] = {"path": cfg.init_from, "step": teacher.get("step"),
                              "code_version": teacher.get("code_version")}
        differ = [f"--{k.replace('_', '-')} {getattr(model.cfg, k)}" for k in ARCHITECTURE_FIELDS
                  if getattr(model.cfg, k) != getattr(cfg, k)]
        if differ:  # the student is the teacher's architecture; its recorded settings must say so
            raise ValueError(f"{cfg.init_from}: the teacher's architecture differs from this run's settings; "
                             f"pass {' '.join(differ)}")
        if cfg.reset_head:
            model.reset_head(cfg.n_streams or n_target_streams, cfg.n_classes)
    else:
        mcfg = ModelConfig.from_size(cfg.size, input=cfg.input, encodec_checkpoint=cfg.encodec_checkpoint,
                                     n_streams=cfg.n_streams or n_target_streams, n_classes=cfg.n_classes,
                                     **{k: getattr(cfg, k) for k in ARCHITECTURE_FIELDS})
        arch = {k: getattr(cfg, k) for k in ("n_layers", "d_model", "n_heads", "ff_dim") if getattr(cfg, k)}
        model = EncodecMAE(replace(mcfg, **arch))
    if model.cfg.n_streams != n_target_streams:
        raise ValueError(f"the model predicts {model.cfg.n_streams} streams but the targets have "
                         f"{n_target_streams} (use --reset-head --n-streams {n_target_streams})")
    return model, extra


def resolve_gamma(cfg: TrainConfig, n_streams: int) -> torch.Tensor:
    if not cfg.gamma:
        return torch.full((n_streams,), 1.0 / n_streams)
    if len(cfg.gamma) != n_streams:
        raise ValueError(f"--gamma has {len(cfg.gamma)} weights but the targets have {n_streams} streams")
    return torch.tensor(cfg.gamma, dtype=torch.float32)


# --- restore -----------------------------------------------------------------------------------


def restore(run: Run) -> int:
    """Load the newest step checkpoint when resuming; wrap the model for several ranks; record
    the run's provenance. Returns the step training continues from (0 for a new run)."""
    cfg, existing = run.cfg, ckpt_io.list_checkpoints(run.ckpt_dir)
    if existing and not cfg.resume:
        raise FileExistsError(f"{run.ckpt_dir}: holds checkpoints from an earlier run; pass --resume to continue "
                              f"it or remove the directory")
    start, resumed = 0, None
    if existing:
        state = ckpt_io.load(existing[-1], map_location=run.device)
        check_resumable(state, cfg, existing[-1])
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        set_adamw_impl(run.opt, cfg.adamw, run.speed)  # this job's choice, not the saving job's
        ckpt_io.set_rng_state(state["rng"])
        start, resumed = int(state["step"]), state.get("provenance")
        if run.main:
            print(f"resuming from {existing[-1]} at step {start}", flush=True)
    run.ddp = torch.nn.parallel.DistributedDataParallel(
        run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None) if run.world > 1 else run.model
    # the steps call the compiled module; validation and checkpoints use run.model (same weights)
    run.ddp = maybe_compile(run.ddp, cfg.compile, run.device, run.speed)
    if run.main:
        # what makes this model (code commit, run key, settings and data hashes), in every checkpoint;
        # git runs once per job, not at every checkpoint
        run.provenance = provenance.model_provenance(asdict(cfg), resumed_from=resumed)
        run.code_version = ckpt_io.code_version()
        counts = count_parameters(run.model)
        print(f"model {run.model.cfg.size} ({run.model.cfg.input}): {counts['encoder'] / 1e6:.1f} M encoder "
              f"parameters, {counts['total'] / 1e6:.1f} M in all; {len(run.corpus.train_clips)} training clips, "
              f"{len(run.corpus.val_clips)} validation clips; batch {cfg.batch_size} = {run.world} ranks x "
              f"{cfg.grad_accum} accumulation x {run.micro}", flush=True)
        if (cfg.adamw, cfg.compile, cfg.prefetch) != ("default", "off", 0) or run.speed.notes:
            print(f"speed: {run.speed.describe()}", flush=True)
    return start


def check_resumable(state: dict, cfg: TrainConfig, path: Path) -> None:
    old = state.get("config", {}).get("train", {})
    new = asdict(cfg)
    diff = sorted(k for k in new if k not in RESUME_MAY_CHANGE and _norm(old.get(k)) != _norm(new[k]))
    if diff:
        raise ValueError(f"{path}: checkpoint was trained with different settings ({', '.join(diff)}); "
                         f"resume it with the same settings or use another --ckpt-dir")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


# --- step --------------------------------------------------------------------------------------


def batches(run: Run, start: int):
    """(step number, this rank's share of the global batch) for steps start+1 .. cfg.steps,
    prefetched by workers (and, with ``--prefetch``, placed on the device ahead by a thread)."""
    cfg = run.cfg
    loader = torch.utils.data.DataLoader(
        StepDataset(run.corpus, cfg.batch_size, cfg.seed, cfg.mask_prop, cfg.mask_gap, cfg.mask_starts,
                    rows=(run.rank * run.per_rank, (run.rank + 1) * run.per_rank)),  # this rank's share only
        sampler=range(start, cfg.steps), batch_size=None, num_workers=cfg.num_workers,
        pin_memory=run.device.type == "cuda", persistent_workers=False,
        # its own generator: each new iterator draws a base seed, which must not come from the
        # global RNG (saved in checkpoints), or a resumed job would end in another RNG state
        generator=torch.Generator().manual_seed(cfg.seed),
        prefetch_factor=4 if cfg.num_workers else None)
    yield from prefetch(steps_of(loader, start, cfg.steps), run.device, cfg.prefetch)


def train_step(run: Run, batch) -> dict[str, torch.Tensor]:
    """One optimiser step on this rank's share of the global batch: masked frames are dropped,
    the encoder sees the visible ones, the decoder predicts the targets of every frame, and the
    weighted cross-entropy is back-propagated (over ``grad_accum`` micro-batches). Returns the
    loss parts averaged over the micro-batches."""
    cfg = run.cfg
    mine = batch  # this rank's rows of the global batch (``batches``)
    run.opt.zero_grad(set_to_none=True)
    acc: dict[str, torch.Tensor] = {}
    for m in range(cfg.grad_accum):
        b = mine.slice(m * run.micro, (m + 1) * run.micro).to(run.device)
        sync = m == cfg.grad_accum - 1 or run.world == 1
        with (nullcontext() if sync else run.ddp.no_sync()), run.autocast():
            logits = run.ddp(b.wav, b.lengths, b.mask)
            parts = mae_loss(logits, b.targets, b.mask, valid_mask(b.lengths, b.mask.shape[1]), run.gamma, cfg.delta,
                             cfg.loss_norm)
        (parts["loss"] / cfg.grad_accum).backward()
        for k, v in parts.items():
            acc[k] = acc.get(k, 0) + v.detach() / cfg.grad_accum
    run.opt.step()
    return acc


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Mean of the loss parts over the fixed held-out crops (weighted by clips per batch)."""
    cfg, model = run.cfg, run.model
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for batch in run.corpus.val_batches(max(1, cfg.batch_size // cfg.grad_accum), cfg.seed, cfg.mask_prop,
                                        cfg.mask_gap, cfg.mask_starts):
        b = batch.to(run.device)
        with run.autocast():
            logits = model(b.wav, b.lengths, b.mask)
        parts = scalars(mae_loss(logits, b.targets, b.mask, valid_mask(b.lengths, b.mask.shape[1]), run.gamma,
                                 cfg.delta, cfg.loss_norm), "val_")
        k = len(b.lengths)
        for key, v in parts.items():
            sums[key] = sums.get(key, 0.0) + v * k
        n += k
    model.train()
    return {k: v / n for k, v in sums.items()} if n else {}


# --- log ---------------------------------------------------------------------------------------

PARTS = ("masked_ce", "unmasked_ce", "masked_acc")  # per-stream loss parts, besides the loss


def metric_columns(n_streams: int) -> list[str]:
    """Columns of metrics.csv: what the run computed, nothing about how fast (two runs of the same
    settings write the same file, which DVC versions); speed goes to the log lines."""
    def names(prefix: str) -> list[str]:
        cols = [f"{prefix}loss"]
        for part in PARTS:
            cols += [f"{prefix}{part}"] + [f"{prefix}{part}_q{q}" for q in range(n_streams)]
        return cols

    return ["step", "lr", *names(""), *names("val_")]


def scalars(parts: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}loss": float(parts["loss"])}
    for name in PARTS:
        v = parts[name].detach().float().cpu()
        out[f"{prefix}{name}"] = float(v.mean())
        out.update({f"{prefix}{name}_q{q}": float(x) for q, x in enumerate(v)})
    return out


class MetricsWriter:
    """CSV of training metrics; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: str | Path, columns: list[str], resume_step: int):
        self.path, self.columns = Path(path), columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in columns} for r in rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow({k: row.get(k, "") for k in self.columns})


class TrainingLog:
    """Metric rows (metrics.csv, validation included when due) and one progress line per row."""

    def __init__(self, run: Run, start: int):
        self.run, self.start = run, start
        self.writer = MetricsWriter(run.cfg.metrics, metric_columns(run.corpus.n_streams), start) if run.main \
            else None
        self.t_start = self.t_last = time.perf_counter()  # of this job's steps: elapsed time and ETA
        self.last_step = start

    def write(self, step: int, parts: dict[str, torch.Tensor]) -> None:
        run, cfg = self.run, self.run.cfg
        if run.world > 1:
            for v in parts.values():
                dist.all_reduce(v)
                v /= run.world
        now = time.perf_counter()
        rate = (step - self.last_step) * cfg.batch_size / (now - self.t_last)
        self.t_last, self.last_step = now, step
        row = {"step": step, "lr": run.opt.param_groups[0]["lr"], "clips_per_s": rate, **scalars(parts)}
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"loss is {row['loss']} at step {step}; last checkpoint is kept in "
                                     f"{run.ckpt_dir}")
        if run.main and cfg.val_clips and (step % cfg.val_every == 0 or step == cfg.steps):
            row.update(validate(run))
        if run.main:
            self.writer.write(row)
            print(progress_line(row, cfg.steps, self.start, time.perf_counter() - self.t_start), flush=True)


def progress_line(row: dict, total: int, start: int, elapsed: float) -> str:
    """One line of the job log per metrics row: ``train: step 40/200 (20%), loss 5.1234,
    masked_acc 0.123, lr 1.0e-03, 12.3 clips/s, elapsed 0:01:02, ETA 0:04:08`` (plus
    ``val_loss`` when the row has one); the ETA is from this job's steps (``start``: resumed at)."""
    step = row["step"]
    parts = [f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)", f"loss {row['loss']:.4f}"]
    if row.get("masked_acc") is not None:
        parts.append(f"masked_acc {row['masked_acc']:.3f}")
    if row.get("val_loss") is not None:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    parts += [f"lr {row['lr']:.1e}", f"{row['clips_per_s']:.1f} clips/s", f"elapsed {format_duration(elapsed)}"]
    done = step - start
    if done > 0 and elapsed > 0:
        parts.append(f"ETA {format_duration((total - step) * elapsed / done)}")
    return "train: " + ", ".join(parts)


# --- save --------------------------------------------------------------------------------------


def save(run: Run, path: Path, step: int, with_optimizer: bool) -> None:
    """Write a checkpoint (rank 0; the others wait): weights, step, the run's settings without
    those of one job (a job given other cores writes the same bytes), RNG states, provenance."""
    if run.main:
        payload = {"model": run.model.state_dict(), "model_config": run.model.cfg.to_dict(), "step": step,
                   "config": {"train": {k: v for k, v in asdict(run.cfg).items() if k not in EXECUTION_FIELDS},
                              "world_size": run.world, **run.extra},
                   "code_version": run.code_version, "gamma": run.gamma.tolist(), "rng": ckpt_io.rng_state(),
                   "provenance": run.provenance}
        if with_optimizer:
            payload["optimizer"] = run.opt.state_dict()
        ckpt_io.save(path, payload)
        if not with_optimizer:
            print(f"wrote {path} at step {step}", flush=True)
    if run.world > 1:
        dist.barrier()


# --- command line ------------------------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain or self-train EnCodecMAE (torchrun for several GPUs)")
    add_arguments(p)
    p.add_argument("--gamma-file", default=None, help="JSON with a 'gamma' list (from estimate-gamma)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    cfg = from_args(args)
    if args.gamma_file:
        if cfg.gamma:
            raise ValueError("give --gamma or --gamma-file, not both")
        try:
            gamma = [float(x) for x in json.loads(Path(args.gamma_file).read_text())["gamma"]]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{args.gamma_file}: expected JSON with a 'gamma' list ({exc})") from exc
        cfg = replace(cfg, gamma=gamma)
    train(cfg)
