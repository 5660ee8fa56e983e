"""Training the ASR downstream: Adam, CTC, the best dev-WER model kept; resumable to the bit.

Randomness: a step's batch is a pure function of (seed, step) and the global torch generator is
re-seeded from (seed, step) before each step (dropout, SpecAugment), so a resumed run gives the
same bits as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from encodecmae.device import resolve_device
from encodecmae.evaluation.asr.decoding import greedy_decode, wer
from encodecmae.evaluation.asr.downstream import (
    AsrDownstream,
    SpecAugmentConfig,
    ctc_loss,
)
from encodecmae.evaluation.asr.features import AsrFeatures, collate
from encodecmae.evaluation.asr.text import VOCAB
from encodecmae.progress import format_duration

LOG_EVERY = 100  # steps per metrics row (and progress line)
KEEP_CHECKPOINTS = 2  # newest step checkpoints kept (each holds weights, Adam state and the best weights)
# how a job runs, not what it trains: left out of the saved config, so that the files a run writes
# do not depend on the machine or the scheduler's time limit (a SLURM job gets --stop-after)
JOB_OPTIONS = ("device", "threads", "workers", "stop_after")
RESUME_MAY_CHANGE = {"steps", *JOB_OPTIONS}
DEFAULT_BATCH_SIZE = 16  # s3prl's -d asr in effect: its buckets of 32 are all halved (superb_asr_protocol.md)


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """The utterances of step ``step``: ``batch_size`` distinct ones (all if fewer) drawn by a
    generator seeded with (seed, step), so a resumed run replays the same batches."""
    return np.random.default_rng([seed, step]).choice(n, size=min(batch_size, n), replace=False)


def step_seed(seed: int, step: int) -> int:
    """The seed of the global torch generator for step ``step`` (dropout and SpecAugment)."""
    return int(np.random.SeedSequence([seed, step, 1]).generate_state(1, np.uint64)[0] >> 1)


class StepBatches(torch.utils.data.Dataset):
    """Item ``s``: the collated batch of step s + 1 (what a DataLoader over range(start, steps) prefetches)."""

    def __init__(self, data: AsrFeatures, batch_size: int, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, s: int) -> dict[str, torch.Tensor]:
        return collate([self.data[int(i)] for i in batch_indices(self.seed, s + 1, len(self.data), self.batch_size)])

    def loader(self, start: int, steps: int, workers: int, dev: torch.device) -> torch.utils.data.DataLoader:
        """The batches of steps start + 1 .. steps, prefetched by ``workers`` processes."""
        return torch.utils.data.DataLoader(self, sampler=range(start, steps), batch_size=None, num_workers=workers,
                                           pin_memory=dev.type == "cuda",
                                           generator=torch.Generator().manual_seed(self.seed),
                                           prefetch_factor=4 if workers else None)


@torch.no_grad()
def predict(model: AsrDownstream, data: AsrFeatures, device, batch_size: int = 32):
    """(index, log_probs [T, V] float32 CPU) of every utterance, in batches of similar length."""
    was = model.training
    model.eval()
    order = sorted(range(len(data)), key=lambda i: data.n_frames[i])
    try:
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            batch = collate([data[i] for i in idx])
            lp = model(batch["feats"].to(device), batch["lengths"].to(device)).float().log_softmax(-1).cpu()
            for k, i in enumerate(idx):
                yield i, lp[k, : data.n_frames[i]]
    finally:
        model.train(was)


def evaluate_greedy(model: AsrDownstream, data: AsrFeatures, device, batch_size: int = 32) -> float:
    """Greedy WER of ``model`` on a features set."""
    hyps = [""] * len(data)
    for i, lp in predict(model, data, device, batch_size):
        hyps[i] = greedy_decode(lp)
    return wer(data.transcripts, hyps)


class MetricsCsv:
    """The metrics CSV (step, loss, dev_wer), a row at a time. It is rewritten from the rows a
    resumed checkpoint holds, so the file need not survive between jobs (a workflow deletes a
    stopped job's outputs before resubmitting it)."""

    COLUMNS = ("step", "loss", "dev_wer")

    def __init__(self, path: str | Path, rows: list[dict]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:
            f.write(",".join(self.COLUMNS) + "\n")
        for r in rows:
            self.write(r)

    def write(self, row: dict) -> None:
        cells = [str(int(row["step"])), repr(float(row["loss"])),
                 repr(float(row["dev_wer"])) if row.get("dev_wer") is not None else ""]
        with open(self.path, "a") as f:
            f.write(",".join(cells) + "\n")


def _prune(ckpt_dir: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    from encodecmae.training.checkpoints import list_checkpoints

    for old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink()


def _feature_sets(train_dir: str | Path, dev_dir: str | Path) -> tuple[AsrFeatures, AsrFeatures]:
    train_set, dev_set = AsrFeatures(train_dir), AsrFeatures(dev_dir)
    if (dev_set.n_layers, dev_set.dim) != (train_set.n_layers, train_set.dim):
        raise ValueError(f"{dev_dir}: features of {dev_set.n_layers} layers x {dev_set.dim}, but {train_dir} has "
                         f"{train_set.n_layers} x {train_set.dim} (not the same upstream)")
    return train_set, dev_set


def _resume(ckpt_dir: Path, resume: bool, config: dict, model, opt, dev) -> SimpleNamespace:
    """The run's state: fresh, or loaded (weights, Adam, RNG states included) from the newest
    step checkpoint in ``ckpt_dir``, which must have been trained with the same ``config``."""
    from encodecmae.training import checkpoints as ckpt_io

    run = SimpleNamespace(step=0, best={"step": None, "dev_wer": math.inf, "model": None}, window=[0.0, 0],
                          rows=[])
    existing = ckpt_io.list_checkpoints(ckpt_dir)
    if existing and not resume:
        raise FileExistsError(f"{ckpt_dir}: holds checkpoints from an earlier run; pass --resume to continue it or "
                              f"remove the directory")
    if existing:
        state = torch.load(existing[-1], map_location=dev, weights_only=False)
        old = state.get("config", {})
        diff = sorted(k for k in config if k not in RESUME_MAY_CHANGE and old.get(k) != config[k])
        if diff:
            raise ValueError(f"{existing[-1]}: checkpoint was trained with different settings ({', '.join(diff)}); "
                             f"resume it with the same settings or use another --ckpt-dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ckpt_io.set_rng_state(state["rng"])
        run.step, run.best, run.window, run.rows = (int(state["step"]), state["best"], list(state["window"]),
                                                    list(state["metrics"]))
        print(f"resuming from {existing[-1]} at step {run.step}", flush=True)
    return run


def _save_step(ckpt_dir: Path, step: int, model, opt, run: SimpleNamespace, config: dict,
               code_version: str) -> Path:
    from encodecmae.training import checkpoints as ckpt_io

    path = ckpt_dir / f"step_{step:07d}.pt"
    ckpt_io.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "rng": ckpt_io.rng_state(), "best": run.best, "window": run.window, "metrics": run.rows,
                        "config": config, "code_version": code_version})
    _prune(ckpt_dir)
    return path


def _log_row(step: int, steps: int, evaluate: bool, run: SimpleNamespace, model, dev_set: AsrFeatures, dev,
             batch_size: int, since: tuple[int, float]) -> dict:
    """The metrics row of ``step`` (the mean loss since the previous row; the dev WER at an
    evaluation, which also updates the best model) and its progress line."""
    row = {"step": step, "loss": run.window[0] / max(run.window[1], 1)}
    run.window = [0.0, 0]
    line = f"train-asr: step {step}/{steps} ({100 * step / steps:.0f}%), loss {row['loss']:.4f}"
    if evaluate:
        row["dev_wer"] = evaluate_greedy(model, dev_set, dev, batch_size)
        if row["dev_wer"] < run.best["dev_wer"]:
            run.best = {"step": step, "dev_wer": row["dev_wer"],
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        line += f", dev WER {row['dev_wer']:.4f} (best {run.best['dev_wer']:.4f} at step {run.best['step']})"
    start, t0 = since
    elapsed = time.perf_counter() - t0
    line += f", {(step - start) / elapsed:.2f} steps/s, elapsed {format_duration(elapsed)}, " \
            f"ETA {format_duration((steps - step) * elapsed / (step - start))}"
    print(line, flush=True)
    return row


def train_asr(train_dir: str | Path, dev_dir: str | Path, out: str | Path, ckpt_dir: str | Path,
              steps: int = 200_000, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = 1e-4, clip: float = 1.0,
              eval_every: int = 2000, seed: int = 0, device: str = "cpu", threads: int = 0, proj: int = 1024,
              hidden: int = 1024, resume: bool = False, stop_after: float = 0.0, metrics: str | Path | None = None,
              lstm_layers: int = 2, dropout: float = 0.2, specaug: SpecAugmentConfig | None = SpecAugmentConfig(),
              workers: int = 0, log_every: int = LOG_EVERY) -> Path:
    """Train the ASR downstream on a features folder; write the best-dev model to ``out``.

    Adam (lr ``lr``, no scheduler), CTC, gradient norm clipped to ``clip`` (a step whose gradient
    norm is not finite is skipped, as s3prl does); every ``eval_every`` steps and at the last one,
    greedy WER on ``dev_dir`` (model selection: the lowest, earliest on ties). A step checkpoint
    (weights, Adam state, step, RNG states, the best weights so far) is written in ``ckpt_dir`` at
    every evaluation (the newest ``KEEP_CHECKPOINTS`` kept) and when the job must stop
    (``stop_after`` seconds, SIGTERM, SIGUSR1: it then exits with EXIT_CONTINUE = 75);
    ``resume`` continues from the newest, replaying the same batches and random draws, so the
    result is the same bits as an uninterrupted run's. Metrics (step, loss: the mean since the
    previous row, dev_wer) go to ``metrics`` (default ``ckpt_dir/metrics.csv``) every
    ``log_every`` steps and at evaluations.

    ``out``: {"model": best weights, "settings": AsrDownstream settings, "vocab", "step",
    "dev_wer", "config", "features": the training features' meta}.
    """
    from encodecmae.training import checkpoints as ckpt_io
    from encodecmae.training.loop import EXIT_CONTINUE, Stopper

    if min(steps, batch_size, eval_every, lstm_layers) < 1:
        raise ValueError(f"--steps, --batch-size, --eval-every and --lstm-layers must be positive (got {steps}, "
                         f"{batch_size}, {eval_every}, {lstm_layers})")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    train_set, dev_set = _feature_sets(train_dir, dev_dir)
    ckpt_dir = Path(ckpt_dir)
    config = {"steps": steps, "batch_size": batch_size, "lr": lr, "clip": clip, "eval_every": eval_every,
              "seed": seed, "proj": proj, "hidden": hidden, "lstm_layers": lstm_layers, "dropout": dropout,
              "specaug": None if specaug is None else asdict(specaug), "n_train": len(train_set),
              "n_dev": len(dev_set), "n_layers": train_set.n_layers, "dim": train_set.dim,
              "train_features": train_set.meta.get("checkpoint_sha256"), "device": str(dev), "threads": threads,
              "workers": workers, "stop_after": stop_after}
    config = json.loads(json.dumps(config))  # tuples as lists: compared with a checkpoint's
    saved = {k: v for k, v in config.items() if k not in JOB_OPTIONS}

    torch.manual_seed(seed)
    random.seed(seed)  # the global Python and numpy generators too: their states are saved in
    np.random.seed(seed)  # every checkpoint, so two runs write the same bytes (as pretraining)
    model = AsrDownstream(train_set.n_layers, train_set.dim, proj, hidden, lstm_layers, dropout, len(VOCAB),
                          specaug).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    run = _resume(ckpt_dir, resume, config, model, opt, dev)
    start = run.step
    if start > steps:
        raise ValueError(f"{ckpt_dir}: already at step {start}, past --steps {steps}")
    # start == steps: a finished run whose model file is missing; it is written from the checkpoint
    code_version = ckpt_io.code_version()
    writer = MetricsCsv(metrics or ckpt_dir / "metrics.csv", run.rows)
    print(f"train-asr: {len(train_set)} training and {len(dev_set)} dev utterances, features {train_set.n_layers} "
          f"layers x {train_set.dim}; downstream {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
          f"parameters; steps {start + 1}..{steps}, batch {batch_size}, device {dev}", flush=True)
    loader = StepBatches(train_set, batch_size, seed).loader(start, steps, workers, dev)
    stop, proc = Stopper(stop_after), SimpleNamespace(world=1, device=dev)
    model.train()
    since = (start, time.perf_counter())
    for step, batch in zip(range(start + 1, steps + 1), loader):
        _train_step(model, opt, batch, step, seed, clip, dev, run)
        evaluate = step % eval_every == 0 or step == steps
        if evaluate or step % log_every == 0:
            run.rows.append(_log_row(step, steps, evaluate, run, model, dev_set, dev, batch_size, since))
            writer.write(run.rows[-1])
            if evaluate:
                _save_step(ckpt_dir, step, model, opt, run, saved, code_version)
        if step < steps and stop.now(proc):
            path = _save_step(ckpt_dir, step, model, opt, run, saved, code_version)
            print(f"stopping at step {step} of {steps} ({stop.reason}); a new job resumes from {path}", flush=True)
            raise SystemExit(EXIT_CONTINUE)
    payload = {"model": {k: v.cpu() for k, v in run.best["model"].items()}, "settings": model.settings,
               "vocab": list(VOCAB), "step": run.best["step"], "dev_wer": run.best["dev_wer"], "steps": steps,
               "config": saved, "code_version": code_version,
               "features": {k: train_set.meta.get(k) for k in FEATURE_KEYS}}
    ckpt_io.save(out, payload)
    print(f"wrote {out}: best dev WER {run.best['dev_wer']:.4f} at step {run.best['step']} of {steps}", flush=True)
    return Path(out)


# what a model file repeats of its training features' meta
FEATURE_KEYS = ("n_layers", "dim", "layers", "frame_rate", "checkpoint", "checkpoint_sha256", "layer_mix")


def _train_step(model, opt, batch: dict, step: int, seed: int, clip: float, dev, run: SimpleNamespace) -> None:
    torch.manual_seed(step_seed(seed, step))  # dropout and SpecAugment: a function of (seed, step)
    logits = model(batch["feats"].to(dev, non_blocking=True), batch["lengths"].to(dev))
    loss = ctc_loss(logits, batch["lengths"].to(dev), batch["targets"].to(dev), batch["target_lengths"].to(dev))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if torch.isfinite(norm):
        opt.step()
    else:
        print(f"step {step}: gradient norm {float(norm)}, update skipped", flush=True)
    run.window[0] += float(loss.detach())
    run.window[1] += 1


def load_downstream(path: str | Path, device: str | torch.device = "cpu") -> tuple[AsrDownstream, dict]:
    """The model written by :func:`train_asr` (eval mode) and its file's dictionary."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: ASR model not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable ASR model ({exc})") from exc
    if not isinstance(payload, dict) or "settings" not in payload or "model" not in payload:
        raise ValueError(f"{path}: not an ASR model written by train-asr")
    if list(payload.get("vocab", VOCAB)) != list(VOCAB):
        raise ValueError(f"{path}: trained with another vocabulary")
    model = AsrDownstream.from_settings(payload["settings"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload
