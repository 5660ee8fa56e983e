"""Pretraining and self-training loop.

AdamW (wd 0.05, betas 0.9/0.95), constant lr 1e-4, global batch 128 split over data-parallel
ranks (torchrun/DDP) and gradient-accumulation micro-batches; bf16 autocast on CUDA, fp32 on
CPU. Batches are a pure function of (seed, step) (see data.py), so resuming from a checkpoint
replays exactly the batches an uninterrupted run would see.

Resuming is explicit: ``--resume`` continues from the newest checkpoint in ``--ckpt-dir`` (and
starts fresh when there is none); without it an existing checkpoint directory is an error, so
no run silently continues another.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from encodecmae.training import checkpoints as ckpt_io
from encodecmae import provenance
from encodecmae.training.batches import Batch, Corpus, StepDataset
from encodecmae.model.loss import mae_loss
from encodecmae.model.masking import valid_mask
from encodecmae.model.config import ModelConfig
from encodecmae.model.transformer import EncodecMAE, count_parameters
from encodecmae.progress import format_duration


@dataclass
class TrainConfig:
    shards: list[str]
    targets: list[str]
    out: str
    ckpt_dir: str
    metrics: str
    size: str = "base"
    input: str = "mel256"
    encodec_checkpoint: str | None = None
    n_layers: int | None = None  # architecture overrides of the size preset
    d_model: int | None = None
    n_heads: int | None = None
    ff_dim: int | None = None
    init_from: str | None = None  # self-training: start from a teacher checkpoint
    reset_head: bool = False
    n_streams: int | None = None  # default: the number of target streams
    n_classes: int = 1024
    mask_token: str = "learned"
    steps: int = 500_000
    batch_size: int = 128  # global batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    delta: float = 0.9
    gamma: list[float] = field(default_factory=list)  # empty: uniform
    mask_prop: float = 0.5
    mask_gap: int = 15
    seed: int = 0
    checkpoint_every: int = 50_000
    log_every: int = 50
    val_clips: int = 200
    val_every: int = 10_000
    num_workers: int = 4
    device: str = "auto"
    resume: bool = False
    threads: int = 0


# --- distributed helpers -------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


# --- model construction --------------------------------------------------------------------


def build_training_model(cfg: TrainConfig, n_target_streams: int) -> tuple[EncodecMAE, dict]:
    """New model, or the teacher's weights (with a new head) for self-training."""
    extra: dict = {}
    if cfg.init_from:
        teacher = ckpt_io.load(cfg.init_from)
        model = ckpt_io.build_model(teacher)
        extra["init_from"] = {"path": cfg.init_from, "step": teacher.get("step"),
                              "code_version": teacher.get("code_version")}
        if cfg.reset_head:
            model.reset_head(cfg.n_streams or n_target_streams, cfg.n_classes)
    else:
        mcfg = ModelConfig.from_size(cfg.size, input=cfg.input, encodec_checkpoint=cfg.encodec_checkpoint,
                                     n_streams=cfg.n_streams or n_target_streams, n_classes=cfg.n_classes,
                                     mask_token=cfg.mask_token)
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


# --- metrics ---------------------------------------------------------------------------------


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


def scalars(parts: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}loss": float(parts["loss"])}
    for name in ("masked_ce", "unmasked_ce", "masked_acc"):
        v = parts[name].detach().float().cpu()
        out[f"{prefix}{name}"] = float(v.mean())
        out.update({f"{prefix}{name}_q{q}": float(x) for q, x in enumerate(v)})
    return out


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


@torch.no_grad()
def validate(model: EncodecMAE, corpus: Corpus, cfg: TrainConfig, gamma, device, autocast) -> dict[str, float]:
    """Mean of the loss parts over the fixed held-out crops (weighted by clips per batch)."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for batch in corpus.val_batches(max(1, cfg.batch_size // cfg.grad_accum), cfg.seed, cfg.mask_prop, cfg.mask_gap):
        b = batch.to(device)
        with autocast():
            logits = model(b.wav, b.lengths, b.mask)
        parts = scalars(mae_loss(logits, b.targets, b.mask, valid_mask(b.lengths, b.mask.shape[1]), gamma, cfg.delta), "val_")
        k = len(b.lengths)
        for key, v in parts.items():
            sums[key] = sums.get(key, 0.0) + v * k
        n += k
    model.train()
    return {k: v / n for k, v in sums.items()} if n else {}


# Settings that may change between a run and its resumption: they do not alter the trajectory
# (steps only extends it). Anything else differing means the checkpoint belongs to another run.
RESUME_MAY_CHANGE = {"steps", "resume", "num_workers", "device", "threads", "log_every", "val_every",
                     "checkpoint_every", "out", "metrics", "ckpt_dir"}


def check_resumable(state: dict, cfg: TrainConfig, path: Path) -> None:
    old = state.get("config", {}).get("train", {})
    new = asdict(cfg)
    diff = sorted(k for k in new if k not in RESUME_MAY_CHANGE and _norm(old.get(k)) != _norm(new[k]))
    if diff:
        raise ValueError(f"{path}: checkpoint was trained with different settings ({', '.join(diff)}); "
                         f"resume it with the same settings or use another --ckpt-dir")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


# --- the loop --------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> Path:
    rank, world, local_rank = dist_info()
    device = pick_device(cfg.device, local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    per_rank = cfg.batch_size // world
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by world size x --grad-accum "
                         f"({world} x {cfg.grad_accum})")
    micro = per_rank // cfg.grad_accum
    main = rank == 0

    corpus = Corpus(cfg.shards, cfg.targets, n_val=cfg.val_clips, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    random.seed(cfg.seed)  # the global Python and numpy generators too: their states are saved
    np.random.seed(cfg.seed)  # in every checkpoint, so two runs write the same bytes
    model, extra = build_training_model(cfg, corpus.n_streams)
    model.to(device).train()
    gamma = resolve_gamma(cfg, corpus.n_streams).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    ckpt_dir = Path(cfg.ckpt_dir)
    existing = ckpt_io.list_checkpoints(ckpt_dir)
    start = 0
    if existing and not cfg.resume:
        raise FileExistsError(f"{ckpt_dir}: holds checkpoints from an earlier run; pass --resume to continue "
                              f"it or remove the directory")
    if existing:
        state = ckpt_io.load(existing[-1], map_location=device)
        check_resumable(state, cfg, existing[-1])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ckpt_io.set_rng_state(state["rng"])
        start = int(state["step"])
        if main:
            print(f"resuming from {existing[-1]} at step {start}", flush=True)

    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) \
        if world > 1 else model
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    # The settings of the run, without those of one job (threads, device, workers, logging,
    # paths it writes): a job given other cores writes the same checkpoint bytes.
    resolved = {"train": {k: v for k, v in asdict(cfg).items() if k not in RESUME_MAY_CHANGE or k == "steps"},
                "world_size": world, **extra}
    # What makes this model (code commit, run key, settings and data hashes), in every checkpoint.
    prov = provenance.model_provenance(asdict(cfg), resumed_from=state.get("provenance") if existing else None) \
        if main else None
    if main:
        counts = count_parameters(model)
        print(f"model {model.cfg.size} ({model.cfg.input}): {counts['encoder'] / 1e6:.1f} M encoder parameters, "
              f"{counts['total'] / 1e6:.1f} M in all; {len(corpus.train_clips)} training clips, "
              f"{len(corpus.val_clips)} validation clips; batch {cfg.batch_size} = {world} ranks x "
              f"{cfg.grad_accum} accumulation x {micro}", flush=True)

    # What the run computed, nothing about how fast: two runs of the same settings write the same
    # file (DVC versions it). Speed (clips/s) goes to the log lines.
    columns = ["step", "lr"]
    probe = {"loss": 0, "masked_ce": torch.zeros(corpus.n_streams), "unmasked_ce": torch.zeros(corpus.n_streams),
             "masked_acc": torch.zeros(corpus.n_streams)}
    columns += list(scalars(probe)) + list(scalars(probe, "val_"))
    writer = MetricsWriter(cfg.metrics, columns, start) if main else None

    version = ckpt_io.code_version() if main else None  # git runs once per job, not per checkpoint

    def payload(step: int, with_optimizer: bool) -> dict:
        d = {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": step,
             "config": resolved, "code_version": version, "gamma": gamma.tolist(),
             "rng": ckpt_io.rng_state(), "provenance": prov}
        if with_optimizer:
            d["optimizer"] = opt.state_dict()
        return d

    loader = torch.utils.data.DataLoader(
        StepDataset(corpus, cfg.batch_size, cfg.seed, cfg.mask_prop, cfg.mask_gap),
        sampler=range(start, cfg.steps), batch_size=None, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        # its own generator: each new iterator draws a base seed, which must not come from the
        # global RNG (saved in checkpoints), or a resumed job would end in another RNG state
        generator=torch.Generator().manual_seed(cfg.seed),
        prefetch_factor=4 if cfg.num_workers else None)
    t_start = time.perf_counter()  # of this job's steps: elapsed time and ETA of the progress lines
    t_last, steps_since = time.perf_counter(), 0
    step = start
    for step_idx, batch in zip(range(start, cfg.steps), loader):
        step = step_idx + 1
        mine = batch.slice(rank * per_rank, (rank + 1) * per_rank)
        opt.zero_grad(set_to_none=True)
        acc: dict[str, torch.Tensor] = {}
        for m in range(cfg.grad_accum):
            b = mine.slice(m * micro, (m + 1) * micro).to(device)
            sync = m == cfg.grad_accum - 1 or world == 1
            with (nullcontext() if sync else ddp.no_sync()), autocast():
                logits = ddp(b.wav, b.lengths, b.mask)
                parts = mae_loss(logits, b.targets, b.mask, valid_mask(b.lengths, b.mask.shape[1]), gamma, cfg.delta)
            (parts["loss"] / cfg.grad_accum).backward()
            for k, v in parts.items():
                acc[k] = acc.get(k, 0) + v.detach() / cfg.grad_accum
        opt.step()
        steps_since += 1

        if step % cfg.log_every == 0 or step == cfg.steps:
            if world > 1:
                for v in acc.values():
                    dist.all_reduce(v)
                    v /= world
            now = time.perf_counter()
            rate = steps_since * cfg.batch_size / (now - t_last)
            t_last, steps_since = now, 0
            row = {"step": step, "lr": opt.param_groups[0]["lr"], "clips_per_s": rate,
                   "frames_per_s": rate * batch.mask.shape[1], **scalars(acc)}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at step {step}; last checkpoint is kept in {ckpt_dir}")
            if main and cfg.val_clips and (step % cfg.val_every == 0 or step == cfg.steps):
                row.update(validate(model, corpus, cfg, gamma, device, autocast))
            if main:
                writer.write(row)
                print(progress_line(row, cfg.steps, start, time.perf_counter() - t_start), flush=True)
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            if main:
                ckpt_io.save(ckpt_dir / f"step_{step:07d}.pt", payload(step, with_optimizer=True))
            if world > 1:
                dist.barrier()
    out = Path(cfg.out)
    if main:
        ckpt_io.save(out, payload(step, with_optimizer=False))
        print(f"wrote {out} at step {step}", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


# --- command line ----------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig(shards=[], targets=[], out="", ckpt_dir="", metrics="")
    p.add_argument("--shards", nargs="+", required=True, help="shard directories")
    p.add_argument("--targets", nargs="+", required=True, help="per-shard target files (tokens or cluster ids), same order")
    p.add_argument("--out", required=True, help="final model checkpoint")
    p.add_argument("--ckpt-dir", required=True, help="directory for step checkpoints (resume reads it)")
    p.add_argument("--metrics", required=True, help="metrics CSV")
    p.add_argument("--size", default=d.size, choices=["debug", "small", "base", "large"])
    p.add_argument("--input", default=d.input, choices=["mel256", "mel128", "encodec"])
    p.add_argument("--encodec-checkpoint", default=None, help="EnCodec weights for --input encodec")
    p.add_argument("--n-layers", type=int, default=None, help="encoder layers (overrides --size)")
    p.add_argument("--d-model", type=int, default=None, help="model width D (overrides --size)")
    p.add_argument("--n-heads", type=int, default=None, help="attention heads (overrides --size)")
    p.add_argument("--ff-dim", type=int, default=None, help="feed-forward width (overrides --size)")
    p.add_argument("--init-from", default=None, help="start from this checkpoint (self-training)")
    p.add_argument("--reset-head", action="store_true", help="new head for the targets (with --init-from)")
    p.add_argument("--n-streams", type=int, default=None, help="target streams Q (default: from the targets)")
    p.add_argument("--n-classes", type=int, default=d.n_classes, help="classes per stream K")
    p.add_argument("--mask-token", default=d.mask_token, choices=["learned", "zeros"])
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (all ranks)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--betas", type=float, nargs=2, default=list(d.betas))
    p.add_argument("--delta", type=float, default=d.delta, help="weight of the masked-frame loss")
    p.add_argument("--gamma", type=float, nargs="+", default=None, help="per-stream weights gamma_q")
    p.add_argument("--gamma-file", default=None, help="JSON with a 'gamma' list (from estimate-gamma)")
    p.add_argument("--mask-prop", type=float, default=d.mask_prop)
    p.add_argument("--mask-gap", type=int, default=d.mask_gap)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-clips", type=int, default=d.val_clips)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --ckpt-dir")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    gamma = list(args.gamma or [])
    if args.gamma_file:
        if gamma:
            raise ValueError("give --gamma or --gamma-file, not both")
        try:
            gamma = [float(x) for x in json.loads(Path(args.gamma_file).read_text())["gamma"]]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{args.gamma_file}: expected JSON with a 'gamma' list ({exc})") from exc
    return TrainConfig(
        shards=args.shards, targets=args.targets, out=args.out, ckpt_dir=args.ckpt_dir, metrics=args.metrics,
        size=args.size, input=args.input, encodec_checkpoint=args.encodec_checkpoint, n_layers=args.n_layers,
        d_model=args.d_model, n_heads=args.n_heads, ff_dim=args.ff_dim, init_from=args.init_from,
        reset_head=args.reset_head, n_streams=args.n_streams, n_classes=args.n_classes, mask_token=args.mask_token,
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        weight_decay=args.weight_decay, betas=tuple(args.betas), delta=args.delta, gamma=gamma,
        mask_prop=args.mask_prop, mask_gap=args.mask_gap, seed=args.seed, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, val_clips=args.val_clips, val_every=args.val_every, num_workers=args.num_workers,
        device=args.device, resume=args.resume, threads=args.threads)


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain or self-train EnCodecMAE (torchrun for several GPUs)")
    add_train_arguments(p)
    p.set_defaults(func=lambda a: train(config_from_args(a)))
