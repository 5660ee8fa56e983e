"""HEAR-layout task folders: the one place that reads them.

A task folder holds ``task_metadata.json``, one ``{split}.json`` of ``{filename: [label, ...]}``
per split, and the audio under ``{sample_rate}/{split}/{filename}``. The metadata is ours
(``mode``, ``label_vocabulary``, ``paper_task``) or hear-preprocess's (``split_mode``,
``nfolds``, with the labels in ``labelvocabulary.csv``). This module reads the metadata, the
split names and folds, the label vocabulary and the clip lists, and loads a task together with
its embeddings: an ``.npz`` holding, for every split, ``emb_{split}`` (float32 [n, D]) and
``files_{split}`` (the filenames, same row order), with the labels encoded as the MLP's targets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from encodecmae.evaluation.metrics import METRICS

if TYPE_CHECKING:
    import torch

METADATA_FILE = "task_metadata.json"
DEFAULT_SAMPLE_RATE = 16000  # of a task whose metadata names none


# --------------------------------------------------------------------------------------------
# Reading the folder
# --------------------------------------------------------------------------------------------


def _read_json(path: Path, missing: str = "missing task file"):
    if not path.exists():
        raise FileNotFoundError(f"{path}: {missing}")
    with open(path) as f:
        return json.load(f)


def metadata_path(task_dir: str | Path) -> Path:
    return Path(task_dir) / METADATA_FILE


def read_metadata(task_dir: str | Path) -> dict:
    """The task's ``task_metadata.json``."""
    missing = f"missing task metadata (is {Path(task_dir)} a task directory?)"
    return _read_json(metadata_path(task_dir), missing)


def task_sample_rate(meta: dict) -> int:
    """The sample rate of the task's audio folder (``{sample_rate}/{split}/``)."""
    return int(meta.get("sample_rate", DEFAULT_SAMPLE_RATE))


def split_files(task_dir: str | Path, split: str) -> list[str]:
    """The file names of a split's clips (the keys of ``{split}.json``), sorted."""
    path = Path(task_dir) / f"{split}.json"
    return sorted(_read_json(path, f"split listed by {metadata_path(task_dir)} is missing"))


def clip_path(task_dir: str | Path, sample_rate: int, split: str, filename: str) -> Path:
    """Where a clip's audio is: ``{task_dir}/{sample_rate}/{split}/{filename}``."""
    return Path(task_dir) / str(sample_rate) / split / filename


def hear_task_name(meta: dict) -> str:
    """A task's full HEAR name, ``task_name-version-mode`` as the leaderboard's columns
    (hear-preprocess writes the three apart; the demo's tasks carry the full name in ``task_name``)."""
    name = meta.get("task_name", "")
    parts = [name] + [str(meta[k]) for k in ("version", "mode") if meta.get(k) and f"-{meta[k]}" not in name]
    return "-".join(parts)


def task_short_name(task_dir: str | Path) -> tuple[str, str | None]:
    """Which paper column a task fills: metadata ``paper_task``, else its HEAR name, else its
    family (a 5-h NSynth fills the paper's 50-h NSynth column). The second value is the task's
    full HEAR name where it is another version of the paper's task, else None."""
    from encodecmae.evaluation.scores import HEAR_TO_SHORT, PAPER_TASKS  # pandas: only for the report

    meta_path = metadata_path(task_dir)
    meta = json.loads(meta_path.read_text())
    if meta.get("paper_task"):
        short, variant = meta["paper_task"], None
    else:
        full = hear_task_name(meta)
        families = {hear.split("-")[0]: short for hear, short in HEAR_TO_SHORT.items()}
        short = HEAR_TO_SHORT.get(full) or families.get(full.split("-")[0])
        variant = None if full in HEAR_TO_SHORT else full
    if short not in PAPER_TASKS:
        raise ValueError(f"{meta_path}: cannot tell which paper task this is (set 'paper_task' to one of "
                         f"{list(PAPER_TASKS)})")
    return short, variant


# --------------------------------------------------------------------------------------------
# Splits, folds and labels
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


# hear-preprocess's split_mode -> our mode
HEAR_SPLIT_MODES = {"trainvaltest": "train_valid_test", "new_split_kfold": "folds", "presplit_kfold": "folds"}


def task_split_names(meta: dict, meta_path: str | Path) -> tuple[str, list[str]]:
    """The task's mode (train_valid_test or folds) and its split names, from our metadata
    (``mode``) or hear-preprocess's (``split_mode``)."""
    # hear-preprocess writes its own "mode" too (the task's size: "full", "50h"): ours only when
    # it is one of ours, else the split mode
    mode = meta.get("mode") if meta.get("mode") in ("train_valid_test", "folds") else None
    mode = mode or HEAR_SPLIT_MODES.get(meta.get("split_mode", ""))
    if mode == "train_valid_test":
        return mode, ["train", "valid", "test"]
    if mode == "folds":
        if "nfolds" not in meta:
            raise ValueError(f"{meta_path}: mode 'folds' needs 'nfolds'")
        return mode, [fold_name(i) for i in range(int(meta["nfolds"]))]
    raise ValueError(f"{meta_path}: unknown split mode {meta.get('mode', meta.get('split_mode'))!r} "
                     f"(expected mode train_valid_test/folds or a hear-preprocess split_mode)")


def label_vocabulary(meta: dict, task_dir: str | Path) -> list:
    """Labels in index order: ``label_vocabulary`` in the metadata, else hear-preprocess's
    ``labelvocabulary.csv`` (columns idx, label)."""
    if "label_vocabulary" in meta:
        return list(meta["label_vocabulary"])
    csv_path = Path(task_dir) / "labelvocabulary.csv"
    if not csv_path.exists():
        raise ValueError(f"{task_dir}: no label_vocabulary in task_metadata.json and no labelvocabulary.csv")
    import pandas as pd

    return pd.read_csv(csv_path).sort_values("idx")["label"].tolist()


# --------------------------------------------------------------------------------------------
# A task with its embeddings
# --------------------------------------------------------------------------------------------


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


def load_task(task_dir: str | Path, embeddings_path: str | Path, device: str = "cpu") -> Task:
    """Read the task metadata, every split's labels and the matching embeddings.

    Embedding rows are reordered to follow ``files_{split}``; the set of files must equal the
    set of clips in ``{split}.json`` exactly, otherwise the embeddings do not belong to this
    task (or are incomplete) and an error names both files.
    """
    task_dir, embeddings_path = Path(task_dir), Path(embeddings_path)
    meta_path = metadata_path(task_dir)
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
            splits[split] = _load_split(npz, embeddings_path, task_dir, split, label_index, ptype, device)
    dims = {s.x.shape[1] for s in splits.values()}
    if len(dims) != 1:
        raise ValueError(f"{embeddings_path}: splits have different embedding sizes {sorted(dims)}")
    return Task(meta["task_name"], mode, ptype, metric, labels, splits)


def _load_split(
    npz,
    embeddings_path: Path,
    task_dir: Path,
    split: str,
    label_index: dict[str, int],
    prediction_type: str,
    device: str,
) -> SplitData:
    """One split's embeddings (from the open ``npz``) and targets, checked against ``{split}.json``."""
    import torch  # not at the top: reading a task's metadata (make-table) needs no torch

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
    y = _encode_labels(file_labels, files, label_index, prediction_type, label_path)
    return SplitData(split, files, torch.from_numpy(emb).to(device), y)


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


def gather(task: Task, names: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """Features and targets of the named splits, concatenated in that order."""
    import torch

    parts = [task.splits[n] for n in names]
    return torch.cat([p.x for p in parts]), np.concatenate([p.y for p in parts])

