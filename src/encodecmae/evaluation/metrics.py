"""The HEAR task metrics and the paper's bootstrap confidence intervals.

Scores are numpy arrays [n, n_labels] of class probabilities; targets are class indices [n]
(multiclass tasks) or a multi-hot bool matrix [n, n_labels] (multilabel tasks). ``METRICS``
maps the metric name a task's metadata gives (``evaluation[0]``) to its function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


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
