"""HEAR downstream protocol (scene-level tasks), implemented without ``heareval``.

The official hear-eval-kit pins numpy 1.19 / numba 0.48 and does not install on current
Python, so this module re-implements the part of it the EnCodecMAE paper uses: an MLP trained
on frozen clip embeddings, a small hyper-parameter grid, early stopping on the validation
score, fold handling, the task metrics, and the paper's bootstrap confidence intervals.
``/work/shared/reference/hear_protocol.md`` is the specification; the kit's choices that the
specification leaves implicit are followed and marked "kit:" below.

Inputs
------
A HEAR-style task directory (``task_metadata.json`` and one ``{split}.json`` of
``{filename: [label, ...]}`` per split) and an ``.npz`` of embeddings holding, for every
split, ``emb_{split}`` (float32 [n, D]) and ``files_{split}`` (the filenames, same row order).
Audio is never read: labels come from the json files, features from the npz.

Everything stays in memory as tensors and each epoch is a handful of full matrix products, so
the cost is the MLP arithmetic itself (no DataLoader, no Lightning).

On the CPU a score is the same bits whatever the number of threads (or ``workers``): GEMMs run
in MKL's strict reproducible mode (:func:`encodecmae.reproducible_blas`) and batch
normalisation is computed column by column (:class:`BatchNorm1d`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from encodecmae import provenance


# --------------------------------------------------------------------------------------------
# Hyper-parameter grid
# --------------------------------------------------------------------------------------------

HIDDEN_LAYERS = (1, 2)
LEARNING_RATES = (3.2e-3, 1e-3, 3.2e-4, 1e-4)
INITIALIZATIONS = ("xavier_uniform", "xavier_normal")
GRID_SHUFFLE_SEED = 42

HIDDEN_DIM = 1024
DROPOUT = 0.1
BATCH_SIZE = 1024
CHECK_VAL_EVERY = 3
PATIENCE = 20
MAX_EPOCHS = 500


@dataclass(frozen=True)
class HParams:
    """One point of the downstream grid (the parts of the kit's grid that vary)."""

    hidden_layers: int
    lr: float
    init: str  # "xavier_uniform" | "xavier_normal"


def hparam_grid(n_points: int = 8, shuffle_seed: int = GRID_SHUFFLE_SEED) -> list[HParams]:
    """The grid points the kit evaluates: the first ``n_points`` of the shuffled 16-point grid.

    kit: the grid is ``sklearn.model_selection.ParameterGrid(PARAM_GRID)``, which iterates the
    product over the *alphabetically sorted* keys (hidden_layers, initialization, lr; the other
    keys have one value), and is shuffled with Python's ``random`` right after
    ``seed_everything(42)``. So the order of the product matters: this is
    ``itertools.product(hidden_layers, init, lr)`` shuffled by ``random.Random(42)``. (A product
    in the order hidden_layers, lr, init would select a different 8 points.)
    """
    points = [
        HParams(hidden_layers=h, lr=lr, init=init)
        for h, init, lr in itertools.product(HIDDEN_LAYERS, INITIALIZATIONS, LEARNING_RATES)
    ]
    random.Random(shuffle_seed).shuffle(points)
    if not 1 <= n_points <= len(points):
        raise ValueError(f"n_grid_points must be in 1..{len(points)}, got {n_points}")
    return points[:n_points]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

_INIT_FNS = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}


class Dropout(nn.Module):
    """``nn.Dropout`` that draws its masks from a given generator.

    Same computation as ``nn.Dropout(p)`` (zero each unit with probability p in training,
    scale the rest by 1/(1-p), identity in eval), but with a per-run random stream, so that
    several MLPs can train at once in threads and each stays reproducible from its seed. With
    ``generator=None`` it uses torch's global generator, like ``nn.Dropout``.
    """

    def __init__(self, p: float, generator: torch.Generator | None = None):
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep.div_(1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` (same parameters, buffers and state dict) whose training step on the
    CPU does not depend on the number of threads.

    The fused CPU kernel sums the batch statistics of an [n, C] input in per-thread partial
    sums over the rows, so the normalised output changes in the last bits with the thread
    count (measured: 1 vs 2 threads for batches of 37 to 1024 rows; with MKL's thread-dependent
    GEMMs it changed the CI run's genre score from 14 % to 15 %). Here the statistics of a
    training batch are column means over rows, which PyTorch reduces column by column, each
    column on one thread. Same definition as ``nn.BatchNorm1d``: normalised by the biased
    variance, running variance updated with the unbiased one. Evaluation (running statistics)
    and other devices use ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.device.type == "cpu" and x.dim() == 2 and self.momentum is not None):
            return super().forward(x)
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"BatchNorm1d needs more than 1 value per channel in training, got {n}")
        mean = x.mean(0)
        xc = x - mean
        var = (xc * xc).mean(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
        y = xc * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


def build_mlp(
    in_dim: int,
    n_labels: int,
    hidden_layers: int,
    init: str,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """``hidden_layers`` x [Linear -> BatchNorm1d -> Dropout(0.1) -> ReLU] -> Linear.

    kit: the weight of each Linear is re-initialised with xavier, gain
    ``calculate_gain(previous activation)``: 1 for the first Linear (the embedding's activation
    is unknown, treated as linear), sqrt(2) for every Linear after a ReLU, the output layer
    included. Biases follow PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn here
    from ``generator`` (a CPU generator; it also drives the dropout masks while the model is on
    the CPU) so that the whole model is a function of one seed.
    """
    if init not in _INIT_FNS:
        raise ValueError(f"unknown init {init!r}; expected one of {sorted(_INIT_FNS)}")
    init_fn = _INIT_FNS[init]

    def linear(fan_in: int, fan_out: int, gain: float) -> nn.Linear:
        layer = nn.Linear(fan_in, fan_out)
        init_fn(layer.weight, gain=gain, generator=generator)
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        return layer

    layers: list[nn.Module] = []
    dim, gain = in_dim, nn.init.calculate_gain("linear")
    for _ in range(hidden_layers):
        layers += [
            linear(dim, HIDDEN_DIM, gain),
            BatchNorm1d(HIDDEN_DIM),
            Dropout(DROPOUT, generator),
            nn.ReLU(),
        ]
        dim, gain = HIDDEN_DIM, nn.init.calculate_gain("relu")
    layers.append(linear(dim, n_labels, gain))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def top1_accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of clips whose argmax prediction is the (single) target class.

    ``targets`` are class indices [n]. Used for both ``top1_acc`` and ``pitch_acc``.
    """
    return float(np.mean(np.argmax(scores, axis=1) == targets))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Macro average precision over the classes with at least one positive in ``targets``.

    Same value as ``sklearn.metrics.average_precision_score(targets[:, present],
    scores[:, present], average="macro")`` (tied scores form one threshold, as in sklearn;
    the tests check equality), computed for all classes at once with array operations: about
    twice as fast as sklearn's per-class loop, which matters for the 100 bootstrap resamples
    of FSD50K's 10k-clip, 200-class test set (~0.25 s vs ~0.55 s each here).

    AP of one class = (1/P) * sum over its positives of the precision at the end of the
    tie group holding that positive, with the clips ranked by decreasing score.
    Classes without positives are skipped (their AP is undefined); the kit averaged over all
    classes, which only differs when a class is absent from the test set.
    """
    targets = np.asarray(targets, dtype=bool)
    present = targets.any(axis=0)
    if not present.any():
        return float("nan")
    # One row per class (contiguous rows sort fast); clips ranked by decreasing score. The
    # order inside a group of tied scores is irrelevant: only group ends are used.
    y = np.ascontiguousarray(targets[:, present].T)
    s = np.ascontiguousarray(np.asarray(scores, dtype=np.float64)[:, present].T)
    n = s.shape[1]
    order = np.argsort(-s, axis=1)
    s_sorted = np.take_along_axis(s, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1)
    tps = np.cumsum(y_sorted, axis=1)
    precision = tps / np.arange(1, n + 1)
    # Last clip of each group of equal scores: only there is a threshold (and a precision).
    group_end = np.ones_like(s_sorted, dtype=bool)
    group_end[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    end_index = np.where(group_end, np.arange(n), n)
    end_index = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(precision, end_index, axis=1)
    ap = (y_sorted * precision_at_end).sum(axis=1) / tps[:, -1]
    return float(np.mean(ap))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "top1_acc": top1_accuracy,
    "pitch_acc": top1_accuracy,
    "mAP": mean_average_precision,
}


# --------------------------------------------------------------------------------------------
# Training one MLP
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained MLP restored to its best-validation state, and how it got there."""

    model: nn.Sequential
    best_valid_score: float
    best_epoch: int  # 1-based epoch after which the kept state was validated
    epochs_run: int
    stopped_early: bool
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, valid score)


def predict(model: nn.Module, x: torch.Tensor, prediction_type: str) -> np.ndarray:
    """Class probabilities (softmax or sigmoid) in eval mode, as float64 numpy [n, n_labels]."""
    model.eval()
    with torch.inference_mode():
        logits = model(x)
        multiclass = prediction_type == "multiclass"
        probs = torch.softmax(logits, 1) if multiclass else torch.sigmoid(logits)
    return probs.double().cpu().numpy()


def train_mlp(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_valid: torch.Tensor,
    y_valid: np.ndarray,
    hp: HParams,
    n_labels: int,
    prediction_type: str,
    metric: str,
    seed: int = 0,
    max_epochs: int = MAX_EPOCHS,
    patience: int = PATIENCE,
    check_every: int = CHECK_VAL_EVERY,
    batch_size: int = BATCH_SIZE,
) -> TrainResult:
    """Train one MLP with Adam and early stopping; return it restored to its best validation.

    ``y_train`` holds class indices (multiclass, for cross-entropy) or a float multi-hot
    matrix (multilabel, for BCE-with-logits); ``y_valid`` is the numpy target the metric takes.

    kit (Lightning ``EarlyStopping``/``ModelCheckpoint`` with ``min_delta=0``): the validation
    score is computed after every ``check_every``-th epoch; a score counts as an improvement
    only if strictly greater than the best so far (ties keep the earlier state); training stops
    once ``patience`` validations in a row brought no improvement, or after ``max_epochs``.
    If ``max_epochs < check_every`` the model is validated once at the end, so that there is
    always a kept state. The training set is reshuffled every epoch and split into batches of
    ``batch_size``; a final batch of one clip is skipped, since BatchNorm cannot train on it.

    All randomness (initial weights, batch order, dropout masks) comes from generators seeded
    with ``seed`` and owned by this run, not from torch's global generator: a run is
    reproducible from its seed whatever ran before or runs alongside it in another thread.
    """
    device = x_train.device
    gen = torch.Generator().manual_seed(seed)  # initial weights, batch order
    model = build_mlp(x_train.shape[1], n_labels, hp.hidden_layers, hp.init, gen).to(device)
    if device.type != "cpu":
        dropout_gen = torch.Generator(device=device).manual_seed(seed)
        for layer in model:
            if isinstance(layer, Dropout):
                layer.generator = dropout_gen
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr)
    loss_fn: nn.Module = (
        nn.CrossEntropyLoss() if prediction_type == "multiclass" else nn.BCEWithLogitsLoss()
    )
    score_fn = METRICS[metric]
    n = x_train.shape[0]

    best_score, best_epoch, best_state = -math.inf, 0, None
    history: list[tuple[int, float]] = []
    bad_checks, stopped_early, epoch = 0, False, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()

        is_last = epoch == max_epochs
        if epoch % check_every == 0 or (is_last and not history):
            score = score_fn(predict(model, x_valid, prediction_type), y_valid)
            history.append((epoch, score))
            if score > best_score:
                best_score, best_epoch, bad_checks = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_checks += 1
                if bad_checks >= patience:
                    stopped_early = True
                    break

    if best_state is None:  # every validation score was NaN
        raise RuntimeError(f"no finite validation score for {hp} (history: {history})")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_score, best_epoch, epoch, stopped_early, history)


# --------------------------------------------------------------------------------------------
# Task loading
# --------------------------------------------------------------------------------------------


def fold_splits(n_folds: int) -> list[dict[str, list[int]]]:
    """kit ``data_splits_from_folds``: split i tests on fold i, validates on fold (i+1) mod k
    and trains on the other k-2 folds."""
    if n_folds < 3:
        raise ValueError(f"fold tasks need at least 3 folds, got {n_folds}")
    splits = []
    for i in range(n_folds):
        valid = (i + 1) % n_folds
        train = [j for j in range(n_folds) if j not in (i, valid)]
        splits.append({"train": train, "valid": [valid], "test": [i]})
    return splits


def fold_name(i: int) -> str:
    return f"fold{i:02d}"


@dataclass
class SplitData:
    """The clips of one split of the task: features and targets in the same row order."""

    name: str
    files: list[str]
    x: torch.Tensor  # float32 [n, D]
    y: np.ndarray  # int64 [n] class indices (multiclass) or bool [n, C] (multilabel)


@dataclass
class Task:
    name: str
    mode: str
    prediction_type: str
    metric: str
    labels: list[str]
    splits: dict[str, SplitData]  # by split name (train/valid/test or fold00..)

    @property
    def embedding_dim(self) -> int:
        return next(iter(self.splits.values())).x.shape[1]


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing task file")
    with open(path) as f:
        return json.load(f)


# hear-preprocess's split_mode -> our mode
HEAR_SPLIT_MODES = {"trainvaltest": "train_valid_test", "new_split_kfold": "folds", "presplit_kfold": "folds"}


def task_split_names(meta: dict, meta_path: str | Path) -> tuple[str, list[str]]:
    """The task's mode (train_valid_test or folds) and its split names, from our metadata
    (``mode``) or hear-preprocess's (``split_mode``)."""
    mode = meta.get("mode") or HEAR_SPLIT_MODES.get(meta.get("split_mode", ""))
    if mode == "train_valid_test":
        return mode, ["train", "valid", "test"]
    if mode == "folds":
        if "nfolds" not in meta:
            raise ValueError(f"{meta_path}: mode 'folds' needs 'nfolds'")
        return mode, [fold_name(i) for i in range(int(meta["nfolds"]))]
    raise ValueError(f"{meta_path}: unknown split mode {meta.get('mode', meta.get('split_mode'))!r} "
                     f"(expected mode train_valid_test/folds or a hear-preprocess split_mode)")


def label_vocabulary(meta: dict, task_dir: Path) -> list:
    """Labels in index order: ``label_vocabulary`` in the metadata, else hear-preprocess's
    ``labelvocabulary.csv`` (columns idx, label)."""
    if "label_vocabulary" in meta:
        return list(meta["label_vocabulary"])
    csv_path = task_dir / "labelvocabulary.csv"
    if not csv_path.exists():
        raise ValueError(f"{task_dir}: no label_vocabulary in task_metadata.json and no labelvocabulary.csv")
    import pandas as pd

    return pd.read_csv(csv_path).sort_values("idx")["label"].tolist()


def load_task(task_dir: str | Path, embeddings_path: str | Path, device: str = "cpu") -> Task:
    """Read the task metadata, every split's labels and the matching embeddings.

    Embedding rows are reordered to follow ``files_{split}``; the set of files must equal the
    set of clips in ``{split}.json`` exactly, otherwise the embeddings do not belong to this
    task (or are incomplete) and an error names both files.
    """
    task_dir, embeddings_path = Path(task_dir), Path(embeddings_path)
    meta_path = task_dir / "task_metadata.json"
    meta = _read_json(meta_path)
    for key in ("task_name", "prediction_type", "evaluation"):
        if key not in meta:
            raise ValueError(f"{meta_path}: missing key {key!r}")
    mode, split_names = task_split_names(meta, meta_path)
    ptype = meta["prediction_type"]
    if ptype not in ("multiclass", "multilabel"):
        raise ValueError(f"{meta_path}: unknown prediction_type {ptype!r}")
    metric = meta["evaluation"][0]
    if metric not in METRICS:
        raise ValueError(f"{meta_path}: unsupported metric {metric!r}; known: {sorted(METRICS)}")

    labels = [str(label) for label in label_vocabulary(meta, task_dir)]
    label_index = {label: i for i, label in enumerate(labels)}
    if len(label_index) != len(labels):
        raise ValueError(f"{meta_path}: duplicate labels in label_vocabulary")

    if not embeddings_path.exists():
        raise FileNotFoundError(f"{embeddings_path}: missing embeddings file")
    splits: dict[str, SplitData] = {}
    with np.load(embeddings_path, allow_pickle=False) as npz:
        for split in split_names:
            label_path = task_dir / f"{split}.json"
            file_labels: dict[str, list] = _read_json(label_path)
            for key in (f"emb_{split}", f"files_{split}"):
                if key not in npz.files:
                    raise ValueError(
                        f"{embeddings_path}: no array {key!r} (has {sorted(npz.files)})"
                    )
            emb = np.asarray(npz[f"emb_{split}"], dtype=np.float32)
            files = [str(f) for f in npz[f"files_{split}"]]
            if emb.ndim != 2 or emb.shape[0] != len(files):
                raise ValueError(
                    f"{embeddings_path}: emb_{split} has shape {emb.shape} but files_{split} "
                    f"lists {len(files)} files"
                )
            if len(set(files)) != len(files):
                raise ValueError(f"{embeddings_path}: files_{split} has duplicate filenames")
            missing = sorted(set(file_labels) - set(files))
            extra = sorted(set(files) - set(file_labels))
            if missing or extra:
                raise ValueError(
                    f"{embeddings_path}: files_{split} does not match {label_path}: "
                    f"{len(missing)} labelled clips without embedding (e.g. {missing[:3]}), "
                    f"{len(extra)} embeddings without label (e.g. {extra[:3]})"
                )
            if not np.isfinite(emb).all():
                raise ValueError(f"{embeddings_path}: emb_{split} contains NaN or inf")
            y = _encode_labels(file_labels, files, label_index, ptype, label_path)
            splits[split] = SplitData(split, files, torch.from_numpy(emb).to(device), y)
    dims = {s.x.shape[1] for s in splits.values()}
    if len(dims) != 1:
        raise ValueError(f"{embeddings_path}: splits have different embedding sizes {sorted(dims)}")
    return Task(meta["task_name"], mode, ptype, metric, labels, splits)


def _encode_labels(
    file_labels: dict[str, list],
    files: Sequence[str],
    label_index: dict[str, int],
    prediction_type: str,
    label_path: Path,
) -> np.ndarray:
    """Targets in the row order of ``files``: class indices, or a multi-hot bool matrix."""
    multi_hot = np.zeros((len(files), len(label_index)), dtype=bool)
    for row, f in enumerate(files):
        clip_labels = file_labels[f]
        if not isinstance(clip_labels, list):
            clip_labels = [clip_labels]
        for label in clip_labels:
            if str(label) not in label_index:
                raise ValueError(f"{label_path}: label {label!r} of {f!r} not in label_vocabulary")
            multi_hot[row, label_index[str(label)]] = True
    if prediction_type == "multilabel":
        return multi_hot
    counts = multi_hot.sum(axis=1)
    if (counts != 1).any():
        row = int(np.flatnonzero(counts != 1)[0])
        raise ValueError(f"{label_path}: multiclass clip {files[row]!r} has {counts[row]} labels")
    return multi_hot.argmax(axis=1).astype(np.int64)


def task_splits(task: Task) -> list[dict[str, list[str]]]:
    """The train/valid/test split names of every evaluation split of the task."""
    if task.mode == "train_valid_test":
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    k = len(task.splits)
    return [{role: [fold_name(i) for i in ids] for role, ids in s.items()} for s in fold_splits(k)]


def _gather(task: Task, names: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    parts = [task.splits[n] for n in names]
    return torch.cat([p.x for p in parts]), np.concatenate([p.y for p in parts])


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


@dataclass
class Interval:
    low: float
    high: float
    pm: float  # distance from the score to the furthest bound (the paper's "±")


def bootstrap_ci(
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    metric: str,
    score: float | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Percentile bootstrap interval of the task score.

    ``folds`` is one (scores, targets) pair per test set. Each iteration resamples every test
    set with replacement, within itself (a fold task's score is the mean of per-fold
    metrics, so the resample keeps the fold structure), and averages the per-fold metrics.
    The interval is the (alpha/2, 1-alpha/2) percentiles of the ``n_bootstrap`` values (the
    paper: 100 iterations, 2.5 / 97.5); "±" is max(|score - low|, |high - score|), with
    ``score`` the metric on the full test sets unless given.
    """
    fn = METRICS[metric]
    if score is None:
        score = float(np.mean([fn(s, t) for s, t in folds]))
    rng = np.random.default_rng(seed)
    values = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        per_fold = []
        for s, t in folds:
            idx = rng.integers(0, len(t), size=len(t))
            per_fold.append(fn(s[idx], t[idx]))
        values[b] = np.mean(per_fold)
    low, high = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(float(low), float(high), float(max(abs(score - low), abs(high - score))))


# --------------------------------------------------------------------------------------------
# Whole task
# --------------------------------------------------------------------------------------------


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
        x_tr, y_tr = _gather(task, split["train"])
        x_va, y_va = _gather(task, split["valid"])
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

    fold_scores, test_sets, per_split = [], [], []
    for split, result in zip(splits, results):
        x_te, y_te = _gather(task, split["test"])
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _score_task_cmd(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # which code, model and task data made this score (checked against the embeddings' record first)
    prov = provenance.scores_provenance(args.embeddings, args.task_dir)
    result = evaluate_task(
        args.task_dir,
        args.embeddings,
        seed=args.seed,
        max_epochs=args.max_epochs,
        n_grid_points=args.grid_points,
        n_bootstrap=args.bootstrap,
        patience=args.patience,
        workers=args.workers,
        device=args.device,
        log=print,
    )
    result["provenance"] = prov
    # The time goes to the log only: the scores file holds what the run computed, so that two
    # runs of the same code on the same data write the same bytes (DVC compares them).
    seconds = result.pop("seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{result['task']}: {result['metric']} = {100 * result['score']:.1f} "
        f"± {100 * result['ci_pm']:.1f} ({seconds:.1f} s) -> {args.out}"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
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
    p.set_defaults(func=_score_task_cmd)
