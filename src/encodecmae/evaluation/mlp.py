"""The HEAR downstream MLP: its hyper-parameter grid, the model, and training one MLP.

An MLP is trained on frozen clip embeddings with Adam and early stopping on the validation
score, as hear-eval-kit does (the kit's choices are marked "kit:" below). Everything stays in
memory as tensors and each epoch is a handful of full matrix products, so the cost is the MLP
arithmetic itself (no DataLoader, no Lightning).

On the CPU a trained model is the same bits whatever the number of threads: GEMMs run in
MKL's strict reproducible mode (:func:`encodecmae.reproducible_blas`) and batch normalisation
is computed column by column (:class:`BatchNorm1d`).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from encodecmae.evaluation.metrics import METRICS


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

