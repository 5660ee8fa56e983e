"""HEAR downstream protocol (scene-level tasks), implemented without ``heareval``.

The official hear-eval-kit pins numpy 1.19 / numba 0.48 and does not install on current
Python, so this package re-implements the part of it the EnCodecMAE paper uses: an MLP trained
on frozen clip embeddings, a small hyper-parameter grid, early stopping on the validation
score, fold handling, the task metrics, and the paper's bootstrap confidence intervals. The
specification is the HEAR benchmark's downstream evaluation as hear-eval-kit runs it for
scene-level tasks, with the grid, metrics and intervals the EnCodecMAE paper reports; the
kit's choices that it leaves implicit are followed and marked "kit:" in the code.

This module runs the protocol over a task's splits or folds (:func:`evaluate_task`) and offers
the ``score-task`` command. The parts live beside it: the task folder and its embeddings in
:mod:`encodecmae.evaluation.tasks`, the MLP and its grid in :mod:`encodecmae.evaluation.mlp`,
the metrics and the bootstrap in :mod:`encodecmae.evaluation.metrics`.

Inputs
------
A HEAR-style task directory (``task_metadata.json`` and one ``{split}.json`` of
``{filename: [label, ...]}`` per split) and an ``.npz`` of embeddings holding, for every
split, ``emb_{split}`` (float32 [n, D]) and ``files_{split}`` (the filenames, same row order).
Audio is never read: labels come from the json files, features from the npz.

On the CPU a score is the same bits whatever the number of threads (or ``workers``): GEMMs run
in MKL's strict reproducible mode (:func:`encodecmae.reproducible_blas`) and batch
normalisation is computed column by column (:class:`encodecmae.evaluation.mlp.BatchNorm1d`).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from encodecmae import provenance
from encodecmae.evaluation.metrics import METRICS, bootstrap_ci
from encodecmae.evaluation.mlp import (
    MAX_EPOCHS,
    PATIENCE,
    HParams,
    TrainResult,
    hparam_grid,
    predict,
    train_mlp,
)
from encodecmae.evaluation.tasks import Task, gather, load_task, task_splits


def _parallel_map(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(x) for x in items]``, on ``workers`` threads when ``workers > 1``.

    Why threads: torch releases the GIL inside its kernels, and every run owns its random
    generators, so independent MLP trainings overlap without pickling data into processes.
    Each run's ops go single-threaded (torch's intra-op threads are split between the
    workers for the duration): for these small matrices, one run per core beats several cores
    per run, and OpenMP teams from concurrent runs would oversubscribe the cores.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


def evaluate_task(
    task_dir: str | Path,
    embeddings_path: str | Path,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    n_grid_points: int = 8,
    n_bootstrap: int = 100,
    patience: int = PATIENCE,
    workers: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the HEAR protocol on one task and return the result record (see ``score-task``).

    Grid search on split 0 (the only split of a train/valid/test task): every grid point is
    trained and the best validation score wins (ties: the earlier point in the shuffled
    grid). kit: split 0's model from the search is reused; the winning setting is retrained on
    every other split. The task score is the plain mean of the per-split test scores.

    Every training run is seeded with ``seed``; ``workers`` > 1 trains that many MLPs at once
    on threads. On the CPU the result is the same bits whatever ``workers`` and the number of
    threads (see the module docstring; tests/test_determinism.py).
    """
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    task = load_task(task_dir, embeddings_path, device=device)
    splits = task_splits(task)
    n_labels = len(task.labels)

    def train_on(split: dict[str, list[str]], hp: HParams) -> TrainResult:
        x_tr, y_tr = gather(task, split["train"])
        x_va, y_va = gather(task, split["valid"])
        y_tr_t = torch.from_numpy(y_tr).to(device)
        y_tr_t = y_tr_t.long() if y_tr.ndim == 1 else y_tr_t.float()
        result = train_mlp(
            x_tr, y_tr_t, x_va, y_va, hp, n_labels, task.prediction_type, task.metric,
            seed=seed, max_epochs=max_epochs, patience=patience,
        )
        say(f"{task.name} test {split['test'][0]} {hp}: valid {result.best_valid_score:.4f} "
            f"(best epoch {result.best_epoch}, ran {result.epochs_run})")
        return result

    grid_points = hparam_grid(n_grid_points)
    grid_results = _parallel_map(lambda hp: train_on(splits[0], hp), grid_points, workers)
    grid = [
        {
            "hparams": asdict(hp),
            "valid_score": r.best_valid_score,
            "best_epoch": r.best_epoch,
            "epochs_run": r.epochs_run,
        }
        for hp, r in zip(grid_points, grid_results)
    ]
    best = max(range(len(grid_points)), key=lambda i: grid_results[i].best_valid_score)
    best_hp = grid_points[best]  # max() keeps the first of equal scores, as the kit's sort
    results = [grid_results[best]]
    results += _parallel_map(lambda split: train_on(split, best_hp), splits[1:], workers)

    fold_scores, test_sets, per_split = _test_splits(task, splits, results)
    score = float(np.mean(fold_scores))
    ci = bootstrap_ci(test_sets, task.metric, score=score, n_bootstrap=n_bootstrap, seed=seed)

    n_train = sum(len(task.splits[n].files) for n in splits[0]["train"])
    return {
        "task": task.name,
        "metric": task.metric,
        "score": score,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "ci_pm": ci.pm,
        "fold_scores": fold_scores,
        "hparams": asdict(best_hp),
        "grid": grid,
        "splits": per_split,
        "n_train": n_train,  # training clips of split 0 (the grid-search split)
        "n_test": int(sum(len(t) for _, t in test_sets)),  # all scored test clips
        "embedding_dim": task.embedding_dim,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
    }


def _test_splits(
    task: Task, splits: list[dict[str, list[str]]], results: list[TrainResult]
) -> tuple[list[float], list[tuple[np.ndarray, np.ndarray]], list[dict]]:
    """Each split's model on its test set: the test scores, the (probabilities, targets) of
    each test set, and the per-split record."""
    fold_scores, test_sets, per_split = [], [], []
    for split, result in zip(splits, results):
        x_te, y_te = gather(task, split["test"])
        probs = predict(result.model, x_te, task.prediction_type)
        test_score = METRICS[task.metric](probs, y_te)
        fold_scores.append(test_score)
        test_sets.append((probs, y_te))
        per_split.append(
            {
                "test": split["test"][0],
                "test_score": test_score,
                "valid_score": result.best_valid_score,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
            }
        )
    return fold_scores, test_sets, per_split


def score_task(
    task_dir: str | Path,
    embeddings: str | Path,
    out: str | Path,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    n_grid_points: int = 8,
    n_bootstrap: int = 100,
    patience: int = PATIENCE,
    workers: int = 1,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict:
    """:func:`evaluate_task` with the provenance of the score, written to ``out`` as JSON.

    The provenance (which code, model and task data made this score) is checked against the
    embeddings' record before any training. The run time goes to ``log`` only: the scores file
    holds what the run computed, so that two runs of the same code on the same data write the
    same bytes (DVC compares them). Returns the record written.
    """
    say = log or (lambda msg: None)
    prov = provenance.scores_provenance(embeddings, task_dir)
    result = evaluate_task(
        task_dir,
        embeddings,
        seed=seed,
        max_epochs=max_epochs,
        n_grid_points=n_grid_points,
        n_bootstrap=n_bootstrap,
        patience=patience,
        workers=workers,
        device=device,
        log=log,
    )
    result["provenance"] = prov
    seconds = result.pop("seconds")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    say(
        f"{result['task']}: {result['metric']} = {100 * result['score']:.1f} "
        f"± {100 * result['ci_pm']:.1f} ({seconds:.1f} s) -> {out}"
    )
    return result


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def cmd_score_task(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    score_task(
        task_dir=args.task_dir,
        embeddings=args.embeddings,
        out=args.out,
        seed=args.seed,
        max_epochs=args.max_epochs,
        n_grid_points=args.grid_points,
        n_bootstrap=args.bootstrap,
        patience=args.patience,
        workers=args.workers,
        device=args.device,
        log=print,
    )


def register(sub) -> None:
    p = sub.add_parser(
        "score-task",
        help="HEAR downstream protocol (MLP grid, early stopping, bootstrap CI) on one task",
        description="Train the HEAR MLP grid on a task's embeddings (grid search on split 0, "
        "best setting retrained on every fold) and write the test score, its bootstrap "
        "interval and the search record as JSON.",
    )
    p.add_argument("--task-dir", type=Path, required=True, help="HEAR task directory")
    p.add_argument("--embeddings", type=Path, required=True, help=".npz with emb_/files_ per split")
    p.add_argument("--out", type=Path, required=True, help="result JSON to write")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every training run and of the bootstrap")
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument("--grid-points", type=int, default=8, help="grid points evaluated (of 16)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap iterations")
    p.add_argument("--patience", type=int, default=PATIENCE, help="validations without improvement")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's setting)")
    p.add_argument("--workers", type=int, default=1,
                   help="MLPs trained at once on threads (up to the number of cores)")
    p.add_argument("--device", default="cpu", help="torch device for the MLPs")
    p.set_defaults(func=cmd_score_task)
