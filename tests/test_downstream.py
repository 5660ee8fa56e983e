"""HEAR downstream protocol on tiny synthetic tasks (labels json + embeddings npz, no audio)."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from sklearn.model_selection import ParameterGrid

from encodecmae import provenance
from encodecmae.evaluation import metrics, mlp, protocol, tasks
from encodecmae.evaluation.mlp import HParams

# The 8 grid points the kit evaluates: ParameterGrid order shuffled after seed_everything(42).
KIT_GRID_8 = [
    HParams(1, 1e-4, "xavier_normal"),
    HParams(2, 1e-3, "xavier_uniform"),
    HParams(1, 1e-3, "xavier_normal"),
    HParams(1, 3.2e-4, "xavier_normal"),
    HParams(2, 3.2e-4, "xavier_normal"),
    HParams(2, 3.2e-4, "xavier_uniform"),
    HParams(2, 3.2e-3, "xavier_normal"),
    HParams(2, 3.2e-3, "xavier_uniform"),
]



@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test MLPs are tiny: one thread is as fast, and immune to OpenMP spin-waiting when
    the cores are shared (on a busy 2-core machine two threads made this file ~15x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# Synthetic tasks
# ------------------------------------------------------------------------------------------


def write_task(
    root: Path,
    splits: dict[str, tuple[np.ndarray, list[list[str]]]],
    vocab: list[str],
    mode: str,
    prediction_type: str = "multiclass",
    metric: str = "top1_acc",
) -> tuple[Path, Path]:
    """Write task_metadata.json, {split}.json and an embeddings npz; return (task_dir, npz)."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "task_name": "synthetic",
        "mode": mode,
        "prediction_type": prediction_type,
        "evaluation": [metric],
        "sample_rate": 16000,
        "label_vocabulary": vocab,
    }
    if mode == "folds":
        meta["nfolds"] = len(splits)
    (root / "task_metadata.json").write_text(json.dumps(meta))
    arrays = {}
    for split, (x, labels) in splits.items():
        files = [f"{split}_{i:04d}.wav" for i in range(len(x))]
        (root / f"{split}.json").write_text(json.dumps(dict(zip(files, labels))))
        arrays[f"emb_{split}"] = x.astype(np.float32)
        arrays[f"files_{split}"] = np.array(files)
    npz = root / "embeddings.npz"
    np.savez(npz, **arrays)
    return root, npz


def clusters(rng, n: int, centers: np.ndarray, noise: float = 1.0):
    """Gaussian clusters around ``centers``; returns (x, class indices)."""
    y = rng.integers(0, len(centers), size=n)
    return centers[y] + noise * rng.standard_normal((n, centers.shape[1])), y


def as_labels(y, vocab):
    return [[vocab[i]] for i in y]


@pytest.fixture
def separable_folds(tmp_path):
    """4-fold, 4-class task with clusters far apart: any reasonable MLP gets every clip right."""
    rng = np.random.default_rng(0)
    vocab = ["a", "b", "c", "d"]
    centers = 10.0 * rng.standard_normal((4, 16))
    splits = {}
    for f in range(4):
        x, y = clusters(rng, 40, centers, noise=0.5)
        splits[tasks.fold_name(f)] = (x, as_labels(y, vocab))
    return write_task(tmp_path / "sep", splits, vocab, mode="folds")


@pytest.fixture
def random_label_task(tmp_path):
    """train/valid/test task whose labels ignore the features: test accuracy must be chance."""
    rng = np.random.default_rng(1)
    vocab = ["w", "x", "y", "z"]
    splits = {
        s: (rng.standard_normal((n, 16)), as_labels(rng.integers(0, 4, n), vocab))
        for s, n in [("train", 300), ("valid", 150), ("test", 800)]
    }
    return write_task(tmp_path / "rand", splits, vocab, mode="train_valid_test")


def split_tensors(task_dir, npz, split_index=0):
    task = tasks.load_task(task_dir, npz)
    names = tasks.task_splits(task)[split_index]
    x_tr, y_tr = tasks.gather(task, names["train"])
    x_va, y_va = tasks.gather(task, names["valid"])
    x_te, y_te = tasks.gather(task, names["test"])
    y_tr_t = torch.from_numpy(y_tr)
    y_tr_t = y_tr_t.long() if y_tr.ndim == 1 else y_tr_t.float()
    return task, (x_tr, y_tr_t), (x_va, y_va), (x_te, y_te)


# ------------------------------------------------------------------------------------------
# Grid, splits, model
# ------------------------------------------------------------------------------------------


def test_grid_choice_with_seed_42_is_the_kits():
    assert mlp.hparam_grid() == KIT_GRID_8
    # Same points as the kit's own construction: sklearn ParameterGrid, then random.shuffle
    # with the global generator freshly seeded with 42.
    kit = list(
        ParameterGrid(
            {
                "hidden_layers": [1, 2],
                "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
                "initialization": ["xavier_uniform", "xavier_normal"],
            }
        )
    )
    random.Random(42).shuffle(kit)
    assert [HParams(c["hidden_layers"], c["lr"], c["initialization"]) for c in kit[:8]] == KIT_GRID_8
    full = mlp.hparam_grid(16)
    assert len(set(full)) == 16 and full[:8] == KIT_GRID_8
    assert mlp.hparam_grid(3) == KIT_GRID_8[:3]
    with pytest.raises(ValueError):
        mlp.hparam_grid(17)


def test_fold_split_assignment():
    splits = tasks.fold_splits(5)
    assert splits[0] == {"train": [2, 3, 4], "valid": [1], "test": [0]}
    assert splits[4] == {"train": [1, 2, 3], "valid": [0], "test": [4]}
    for i, s in enumerate(splits):
        assert s["test"] == [i] and s["valid"] == [(i + 1) % 5]
        assert sorted(s["train"] + s["valid"] + s["test"]) == list(range(5))
    assert [s["test"][0] for s in splits] == list(range(5))
    assert sorted(s["valid"][0] for s in splits) == list(range(5))
    with pytest.raises(ValueError):
        tasks.fold_splits(2)


def test_task_splits_name_the_folds(separable_folds):
    task = tasks.load_task(*separable_folds)
    assert tasks.task_splits(task)[3] == {"train": ["fold01", "fold02"], "valid": ["fold00"], "test": ["fold03"]}


def test_mlp_layers_and_initialisation():
    torch.manual_seed(0)
    m = mlp.build_mlp(768, 10, hidden_layers=2, init="xavier_uniform")
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU"] * 2 + ["Linear"]
    assert m[2].p == 0.1 and m[0].out_features == 1024 and m[8].in_features == 1024
    # xavier_uniform bound = gain * sqrt(6 / (fan_in + fan_out)); gain 1 first, sqrt(2) after ReLU.
    amax = [m[i].weight.detach().abs().max().item() for i in (0, 4, 8)]
    assert np.sqrt(6 / (768 + 1024)) * 0.99 < amax[0] <= np.sqrt(6 / (768 + 1024))
    assert amax[1] == pytest.approx(np.sqrt(2) * np.sqrt(6 / 2048), rel=0.01)
    assert amax[2] == pytest.approx(np.sqrt(2) * np.sqrt(6 / 1034), rel=0.05)
    n = mlp.build_mlp(768, 10, hidden_layers=1, init="xavier_normal")
    assert len(n) == 5
    assert n[0].weight.std().item() == pytest.approx(np.sqrt(2 / (768 + 1024)), rel=0.02)
    assert n[4].weight.std().item() == pytest.approx(np.sqrt(2) * np.sqrt(2 / 1034), rel=0.1)


def test_dropout_matches_nn_dropout_semantics():
    x = torch.ones(200, 1024)
    drop = mlp.Dropout(0.1, torch.Generator().manual_seed(0))
    y = drop(x)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.1, abs=0.005)
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))  # survivors scaled like nn.Dropout
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    again = mlp.Dropout(0.1, torch.Generator().manual_seed(0))(x)
    assert torch.equal(y, again)
    drop.eval()
    assert drop(x) is x


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


def test_map_hand_examples():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    assert metrics.mean_average_precision(scores, np.array([[1], [0], [1], [0]])) == pytest.approx((1 + 2 / 3) / 2)
    # Tied scores are one threshold: precision 1/2 at recall 1.
    assert metrics.mean_average_precision(np.array([[0.5], [0.5], [0.1]]), np.array([[0], [1], [0]])) == 0.5
    # A class absent from the targets is left out of the macro average.
    two = metrics.mean_average_precision(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 0]]))
    assert two == 1.0


def test_map_equals_sklearn_on_present_classes():
    rng = np.random.default_rng(3)
    targets = rng.random((300, 12)) < 0.15
    targets[:, 5] = False  # absent class
    scores = np.round(rng.random((300, 12)) + 0.8 * targets, 1)  # many ties
    present = targets.any(0)
    expected = average_precision_score(targets[:, present], scores[:, present], average="macro")
    assert metrics.mean_average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_top1_accuracy():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert metrics.top1_accuracy(scores, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert metrics.METRICS["pitch_acc"] is metrics.top1_accuracy


# ------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------


def one_hot_predictions(correct: np.ndarray):
    """Scores/targets for 2 classes where clip i is right iff correct[i]."""
    targets = np.zeros(len(correct), dtype=np.int64)
    scores = np.where(correct[:, None], [[1.0, 0.0]], [[0.0, 1.0]])
    return scores, targets


def test_bootstrap_hand_example_and_pm_definition():
    correct = np.ones(40, dtype=bool)
    correct[7] = False  # 39/40 right: the interval is lopsided, high is capped at 1
    scores, targets = one_hot_predictions(correct)
    ci = metrics.bootstrap_ci([(scores, targets)], "top1_acc", n_bootstrap=100, seed=5)
    # The documented procedure, written out: 100 resamples with replacement, percentiles.
    rng = np.random.default_rng(5)
    values = [correct[rng.integers(0, 40, size=40)].mean() for _ in range(100)]
    low, high = np.percentile(values, [2.5, 97.5])
    assert (ci.low, ci.high) == pytest.approx((low, high))
    assert ci.high == 1.0 and ci.low < 0.95
    score = 39 / 40
    assert ci.pm == pytest.approx(max(score - low, high - score))
    assert ci.pm == pytest.approx(score - ci.low)  # the low bound is the furthest


def test_bootstrap_contains_score_width_and_seed():
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.7
    scores, targets = one_hot_predictions(correct)
    score = correct.mean()
    ci = metrics.bootstrap_ci([(scores, targets)], "top1_acc", n_bootstrap=100, seed=0)
    assert ci.low < score < ci.high
    # Binomial: half-width ~ 1.96 * sqrt(p(1-p)/n) = 0.045.
    assert 0.03 < (ci.high - ci.low) / 2 < 0.06
    assert metrics.bootstrap_ci([(scores, targets)], "top1_acc", seed=0) == ci
    assert metrics.bootstrap_ci([(scores, targets)], "top1_acc", seed=1) != ci


def test_bootstrap_resamples_within_each_fold():
    # Fold A always right, fold B always wrong: within-fold resampling keeps every iteration at
    # exactly (1 + 0) / 2, so the interval collapses; pooled resampling would not.
    fold_a = one_hot_predictions(np.ones(30, dtype=bool))
    fold_b = one_hot_predictions(np.zeros(30, dtype=bool))
    ci = metrics.bootstrap_ci([fold_a, fold_b], "top1_acc", n_bootstrap=50)
    assert (ci.low, ci.high, ci.pm) == (0.5, 0.5, 0.0)
    assert metrics.bootstrap_ci([fold_a, fold_b], "top1_acc", score=0.6, n_bootstrap=50).pm == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def test_separable_clusters_reach_accuracy_one(separable_folds):
    task_dir, npz = separable_folds
    # Short runs (patience 5) keep the test fast; both grid points reach valid accuracy 1.
    r = protocol.evaluate_task(task_dir, npz, max_epochs=30, n_grid_points=2, n_bootstrap=20, patience=5)
    assert r["task"] == "synthetic" and r["metric"] == "top1_acc"
    assert r["score"] >= 0.99 and min(r["fold_scores"]) >= 0.975  # 1.0 here; 1 miss of 40 tolerated
    assert r["ci_low"] <= r["score"] <= r["ci_high"] == 1.0
    assert r["n_test"] == 160 and r["n_train"] == 80 and r["embedding_dim"] == 16
    assert [g["hparams"] for g in r["grid"]] == [vars(h) for h in KIT_GRID_8[:2]]
    best = max(r["grid"], key=lambda g: g["valid_score"])  # first of equals, like the kit
    assert r["hparams"] == best["hparams"]
    assert [s["test"] for s in r["splits"]] == ["fold00", "fold01", "fold02", "fold03"]
    json.dumps(r)  # the record is JSON-serialisable


def test_random_labels_score_chance_and_test_uses_restored_model(random_label_task):
    task_dir, npz = random_label_task
    r = protocol.evaluate_task(task_dir, npz, max_epochs=30, n_grid_points=1, n_bootstrap=30)
    assert abs(r["score"] - 0.25) < 0.07  # 800 test clips: sd 0.015
    assert r["ci_low"] <= r["score"] <= r["ci_high"]
    assert r["n_train"] == 300 and r["n_test"] == 800 and len(r["fold_scores"]) == 1
    # The reported test score is that of the best-validation model trained with the same seed.
    task, train, valid, test = split_tensors(task_dir, npz)
    res = mlp.train_mlp(*train, *valid, KIT_GRID_8[0], 4, "multiclass", "top1_acc", seed=0, max_epochs=30)
    assert metrics.top1_accuracy(mlp.predict(res.model, test[0], "multiclass"), test[1]) == r["score"]
    # Deterministic given the seed, also when two grid points train at once on threads.
    def strip(record):
        return {k: v for k, v in record.items() if k != "seconds"}

    one = protocol.evaluate_task(task_dir, npz, max_epochs=9, n_grid_points=2, n_bootstrap=10)
    two = protocol.evaluate_task(task_dir, npz, max_epochs=9, n_grid_points=2, n_bootstrap=10, workers=2)
    assert strip(one) == strip(two)
    assert torch.get_num_threads() == 1  # restored after the threaded section


def test_multilabel_map(tmp_path):
    rng = np.random.default_rng(2)
    vocab = ["l0", "l1", "l2", "l3", "l4"]

    def make(n):
        x = rng.standard_normal((n, 12))
        return x, [[vocab[j] for j in range(5) if x[i, j] > 0.5] for i in range(n)]  # some empty

    splits = {s: make(n) for s, n in [("train", 200), ("valid", 100), ("test", 300)]}
    task_dir, npz = write_task(tmp_path / "ml", splits, vocab, "train_valid_test", "multilabel", "mAP")
    r = protocol.evaluate_task(task_dir, npz, max_epochs=60, n_grid_points=2, n_bootstrap=20, patience=5)
    assert r["metric"] == "mAP"
    assert r["score"] > 0.9
    assert r["ci_low"] <= r["score"] <= r["ci_high"] and r["ci_pm"] < 0.05


def test_early_stopping_stops_after_patience_validations(random_label_task):
    _, train, valid, _ = split_tensors(*random_label_task)
    hp = HParams(1, 3.2e-3, "xavier_uniform")
    res = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", max_epochs=300, patience=4)
    assert res.stopped_early and res.epochs_run < 300
    assert res.epochs_run == res.best_epoch + 4 * 3  # 4 validations, every 3 epochs, no gain
    assert [e for e, _ in res.history] == list(range(3, res.epochs_run + 1, 3))
    scores = [s for _, s in res.history]
    assert all(s <= res.best_valid_score for s in scores[-4:])
    # Without enough patience to trigger, training runs to max_epochs.
    full = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", max_epochs=12, patience=100)
    assert not full.stopped_early and full.epochs_run == 12 and len(full.history) == 4
    # Fewer epochs than the validation interval: validated once, at the end.
    short = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", max_epochs=2)
    assert short.history and short.history[0][0] == 2 and short.best_epoch == 2


def test_best_checkpoint_is_restored(random_label_task):
    _, train, valid, _ = split_tensors(*random_label_task)
    hp = HParams(1, 3.2e-3, "xavier_normal")
    res = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", max_epochs=60, patience=5)
    scores = [s for _, s in res.history]
    assert res.best_valid_score == max(scores)
    first_best = next(e for e, s in res.history if s == max(scores))
    assert res.best_epoch == first_best  # ties keep the earlier state
    assert res.best_epoch < res.epochs_run and scores[-1] < res.best_valid_score
    recomputed = metrics.top1_accuracy(mlp.predict(res.model, valid[0], "multiclass"), valid[1])
    assert recomputed == res.best_valid_score  # the returned model is the kept one, not the last


def test_training_is_deterministic_given_seed(random_label_task):
    _, train, valid, _ = split_tensors(*random_label_task)
    hp = HParams(1, 1e-3, "xavier_uniform")
    a = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", seed=3, max_epochs=9)
    torch.manual_seed(1234)  # the global generator plays no part
    torch.rand(7)
    b = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", seed=3, max_epochs=9)
    c = mlp.train_mlp(*train, *valid, hp, 4, "multiclass", "top1_acc", seed=4, max_epochs=9)
    assert a.history == b.history
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert not torch.equal(a.model[0].weight, c.model[0].weight)


# ------------------------------------------------------------------------------------------
# Input checking and command line
# ------------------------------------------------------------------------------------------


def test_embedding_rows_follow_files_order(tmp_path):
    vocab = ["a", "b"]
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    task_dir, npz = write_task(
        tmp_path / "order",
        {s: (x, [["a"], ["b"], ["b"]]) for s in ("train", "valid", "test")},
        vocab,
        "train_valid_test",
    )
    arrays = dict(np.load(npz))
    arrays["emb_test"], arrays["files_test"] = arrays["emb_test"][::-1], arrays["files_test"][::-1]
    np.savez(npz, **arrays)
    test = tasks.load_task(task_dir, npz).splits["test"]
    assert test.files == ["test_0002.wav", "test_0001.wav", "test_0000.wav"]
    assert test.y.tolist() == [1, 1, 0] and test.x[:, 0].tolist() == [4.0, 2.0, 0.0]


@pytest.fixture
def small_task(tmp_path):
    rng = np.random.default_rng(0)
    vocab = ["a", "b"]
    splits = {s: (rng.standard_normal((6, 4)), as_labels(rng.integers(0, 2, 6), vocab)) for s in ("train", "valid", "test")}
    return write_task(tmp_path / "small", splits, vocab, "train_valid_test")


def test_bad_inputs_name_the_file(small_task, tmp_path):
    task_dir, npz = small_task
    (task_dir / "valid.json").rename(task_dir / "valid.json.bak")
    with pytest.raises(FileNotFoundError, match="valid.json"):
        tasks.load_task(task_dir, npz)
    (task_dir / "valid.json.bak").rename(task_dir / "valid.json")

    arrays = dict(np.load(npz))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**arrays, "files_test": np.array([f"x{i}.wav" for i in range(6)])})
    with pytest.raises(ValueError, match=r"bad\.npz.*test\.json"):
        tasks.load_task(task_dir, bad)
    np.savez(bad, **{k: v for k, v in arrays.items() if k != "emb_valid"})
    with pytest.raises(ValueError, match=r"bad\.npz.*emb_valid"):
        tasks.load_task(task_dir, bad)
    np.savez(bad, **{**arrays, "emb_train": arrays["emb_train"][:5]})
    with pytest.raises(ValueError, match=r"bad\.npz.*emb_train"):
        tasks.load_task(task_dir, bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        tasks.load_task(task_dir, tmp_path / "missing.npz")

    labels = json.loads((task_dir / "test.json").read_text())
    first = next(iter(labels))
    (task_dir / "test.json").write_text(json.dumps({**labels, first: ["a", "b"]}))
    with pytest.raises(ValueError, match=r"test\.json.*2 labels"):
        tasks.load_task(task_dir, npz)
    (task_dir / "test.json").write_text(json.dumps({**labels, first: ["zzz"]}))
    with pytest.raises(ValueError, match=r"test\.json.*'zzz'"):
        tasks.load_task(task_dir, npz)


def test_score_task_command(small_task, tmp_path):
    task_dir, npz = small_task
    parser = argparse.ArgumentParser()
    protocol.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "out" / "result.json"
    args = parser.parse_args(
        ["score-task", "--task-dir", str(task_dir), "--embeddings", str(npz), "--out", str(out),
         "--seed", "1", "--max-epochs", "6", "--grid-points", "2", "--bootstrap", "10",
         "--patience", "3", "--threads", "1"]
    )
    torch.set_num_threads(2)  # the autouse fixture restores the session's setting
    assert args.func(args) is None
    assert torch.get_num_threads() == 1
    result = json.loads(out.read_text())
    for key in ("task", "metric", "score", "ci_low", "ci_high", "ci_pm", "fold_scores", "hparams",
                "grid", "n_train", "n_test", "embedding_dim"):
        assert key in result
    assert len(result["grid"]) == 2 and set(result["grid"][0]) >= {"hparams", "valid_score"}
    assert result["n_test"] == 6 and result["embedding_dim"] == 4 and result["seed"] == 1
    # provenance: this checkout's code, the task folder as scored; the embeddings record nothing
    assert result["provenance"] == {**provenance.code_state(), "task_data_sha256": task_folder_sha256(task_dir),
                                    "embedding": None, "model": None}


def task_folder_sha256(task_dir: Path) -> str:
    """sha256 over "<sha256 of file>  <relative path>\n" of the folder's files, sorted by path."""
    files = sorted(f.relative_to(task_dir).as_posix() for f in task_dir.rglob("*") if f.is_file())
    lines = "".join(f"{hashlib.sha256((task_dir / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def test_scores_name_the_model_and_data_of_their_embeddings(small_task, tmp_path):
    task_dir, npz = small_task
    moved = tmp_path / "emb.npz"  # outside the task folder (as in the workflow)
    npz.rename(moved)
    model = {"code_commit": "c" * 40, "code_dirty": False, "run_key": "0123456789", "settings_sha256": "5" * 64,
             "train_data_sha256": "7" * 64, "init_from": None}
    emb = {"code_commit": "e" * 40, "code_dirty": True, "layer": -1, "task_data_sha256": task_folder_sha256(task_dir)}
    np.savez(moved, **dict(np.load(moved)), provenance=provenance.to_npz_value({**emb, "model": model}))
    out = tmp_path / "result.json"
    parser = argparse.ArgumentParser()
    protocol.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["score-task", "--task-dir", str(task_dir), "--embeddings", str(moved), "--out", str(out),
                              "--max-epochs", "2", "--grid-points", "1", "--bootstrap", "5", "--threads", "1"])
    assert args.func(args) is None
    prov = json.loads(out.read_text())["provenance"]
    assert prov == {**provenance.code_state(), "task_data_sha256": emb["task_data_sha256"], "embedding": emb,
                    "model": model}
    # embeddings of another version of the task are refused before any training
    (task_dir / "test.json").write_text((task_dir / "test.json").read_text() + " ")
    with pytest.raises(ValueError, match=r"emb\.npz.*embed the task again"):
        args.func(args)
