"""Provenance: which code, settings and data made a result.

Every model file, embeddings file and scores file records where it came from, and Table 1
carries it per row, so a number can be traced to the code commit, the run's settings and the
exact data:

- the **code commit**: the last git commit that changed the code, i.e. anything in the checkout
  but ``dvc.lock``, ``results/``, Markdown files, DVC's own configuration, and the tests and
  benchmarks, which no workflow job runs (``CODE_PATHSPEC``).
  Not HEAD: publishing a run commits ``dvc.lock``, ``results/metrics.json`` and the README after
  it, and a fresh clone of that commit must reproduce every output bit for bit. ``code_dirty``
  says whether a tracked or untracked (not ignored) file under the same pathspec differs from
  that commit. Outside a git checkout (an installed package, no ``git``) the commit is
  ``"unknown"`` and ``code_dirty`` null; finding them never fails.
- the **settings**: the training settings that shape the result and their SHA-256
  (``settings_sha256``), and the run key (the name of the step-checkpoint directory, a hash of
  the settings that define the trajectory; see ``encodecmae.workflow.experiments.run_keys``).
- the **data**: SHA-256 digests over the training inputs (``train_data_sha256``) and over a
  task's folder (``task_data_sha256``).

Data hashes are hashes of per-file SHA-256 digests, so they can be checked with coreutils
(files are streamed, never read whole)::

    # train_data_sha256: for each shard in training order, its manifest, then its targets
    sha256sum s0/manifest.csv t0.npy s1/manifest.csv t1.npy | cut -d' ' -f1 | sha256sum
    # task_data_sha256: every file of the task folder, sorted by relative path
    cd TASK && find . -type f ! -name .snakemake_timestamp | sed 's|^\\./||' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum | sha256sum

Nothing recorded depends on the machine, the time, absolute paths or thread counts: for a given
code commit, configuration and data the records are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from encodecmae.training.config import EXECUTION_FIELDS, INPUT_FIELDS

UNKNOWN = "unknown"
# What counts as code: the whole checkout except what publishing a run commits after it
# (dvc.lock, results/metrics.json, the README's figures), DVC's remote configuration, and the
# tests and benchmarks (no job runs them: fixing a test does not make the results stale).
CODE_PATHSPEC = (".", ":(exclude)dvc.lock", ":(exclude)results", ":(exclude)*.md", ":(exclude).dvc",
                 ":(exclude).dvcignore", ":(exclude)tests", ":(exclude)benchmarks")
# Files that tools leave in a directory output without changing its data (Snakemake's mtime
# carrier of directory outputs appears after `--touch`): not part of a task's data.
IGNORED_NAMES = frozenset({".snakemake_timestamp"})
CHUNK = 1 << 20



# --- code ---------------------------------------------------------------------------------------


def package_root() -> Path:
    """The directory two levels above this package: the checkout, when it runs from ``src/``."""
    return Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> str:
    # Repository discovery must start at ``root``, whatever the caller's environment points at.
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")}
    res = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                         timeout=30, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    return res.stdout


def code_state(root: str | Path | None = None) -> dict:
    """``{"code_commit": SHA or "unknown", "code_dirty": bool or None}`` of the checkout at
    ``root`` (default: the one this package runs from). ``root`` must be the top of a git work
    tree: a package installed inside some other repository (a virtual environment in a checkout)
    is not that repository's code."""
    root = Path(root).resolve() if root is not None else package_root()
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
        if top != root:
            raise RuntimeError(f"{root} is not the top of a git work tree")
        commit = _git(root, "log", "-1", "--format=%H", "--", *CODE_PATHSPEC).strip()
        if not commit:
            raise RuntimeError("no commit")
        shallow = root / _git(root, "rev-parse", "--git-path", "shallow").strip()  # relative to root, or absolute
        if shallow.exists() and commit in shallow.read_text().split():
            # history cut here (shallow clone): the code may have changed in a commit not fetched
            commit = UNKNOWN
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHSPEC).strip())
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError):
        return {"code_commit": UNKNOWN, "code_dirty": None}
    return {"code_commit": commit, "code_dirty": dirty}


def merge_code_states(*states: Mapping | None) -> dict:
    """One code state for a result that several runs made (a training resumed under another
    commit): the distinct commits in order joined with '+'; dirty if any was, unknown (None) if
    any was unknown and none dirty."""
    commits: list[str] = []
    dirty: list = []
    for s in states:
        if not s:
            continue
        for c in str(s.get("code_commit") or UNKNOWN).split("+"):
            if c not in commits:
                commits.append(c)
        dirty.append(s.get("code_dirty"))
    if not commits:
        return {"code_commit": UNKNOWN, "code_dirty": None}
    return {"code_commit": "+".join(commits),
            "code_dirty": True if True in dirty else (None if None in dirty else False)}


# --- data ---------------------------------------------------------------------------------------


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes with hashlib's ``algo`` (sha256, sha1, md5, ...)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def sha256_json(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_of_files(files: Iterable[str | Path]) -> str:
    """SHA-256 of the lines "<sha256 of file>\\n", in the given order (``sha256sum FILES | cut -d' '
    -f1 | sha256sum``)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{sha256_file(f)}\n".encode())
    return h.hexdigest()


def train_data_sha256(shards: Iterable[str | Path], targets: Iterable[str | Path]) -> str:
    """The training inputs: for each shard in order, its ``manifest.csv`` and its target file
    (EnCodec tokens or cluster ids). The shard's audio is identified through them (the manifest
    names every clip, its source and length; the targets are computed from the audio), not hashed
    itself: at the paper's scale it is terabytes."""
    shards, targets = list(shards), list(targets)
    if len(shards) != len(targets):
        raise ValueError(f"{len(shards)} shards but {len(targets)} target files")
    return sha256_of_files(f for s, t in zip(shards, targets) for f in (Path(s) / "manifest.csv", Path(t)))


def task_files(task_dir: str | Path) -> list[str]:
    """Relative POSIX paths of every file under ``task_dir``, sorted (symbolic links followed)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise FileNotFoundError(f"{task_dir}: not a task directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(task_dir, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if name not in IGNORED_NAMES:
                out.append((Path(dirpath) / name).relative_to(task_dir).as_posix())
    return sorted(out)


def task_data_sha256(task_dir: str | Path) -> str:
    """SHA-256 of the lines "<sha256 of file>  <relative path>\\n" of every file of the task
    folder, sorted by path (``sha256sum`` run in the folder on the sorted file list)."""
    h = hashlib.sha256()
    for rel in task_files(task_dir):
        h.update(f"{sha256_file(Path(task_dir) / rel)}  {rel}\n".encode())
    return h.hexdigest()


def combine_sha256(digests: Iterable[str]) -> str:
    """SHA-256 of the lines "<digest>\\n" (several data hashes as one, in the given order)."""
    return hashlib.sha256("".join(f"{d}\n" for d in digests).encode()).hexdigest()


# --- records --------------------------------------------------------------------------------------


def result_settings(train_config: Mapping) -> dict:
    """The training settings that shape the resulting model: every TrainConfig field but the
    execution-only ones and the input paths (recorded by content instead). ``steps`` is one."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(train_config.items())
            if k not in EXECUTION_FIELDS and k not in INPUT_FIELDS}


def model_provenance(train_config: Mapping, resumed_from: Mapping | None = None,
                     root: str | Path | None = None) -> dict:
    """The ``provenance`` of a model file written by ``train`` with settings ``train_config``
    (TrainConfig as a dict).

    A run initialised from a checkpoint (self-training) records that file's SHA-256 and its
    provenance (``init_from``); one with a frozen EnCodec encoder the SHA-256 of the EnCodec
    weights (``encodec_sha256``). ``resumed_from``: the provenance of the step checkpoint the run
    resumed from; when that part of the run ran under another commit, both are named (``A+B``).

    An untrained model (``steps`` 0) gets the same fields: ``train_data_sha256`` then names the
    inputs the run was given (their targets set the head's stream count) though no step used them.
    """
    cfg = dict(train_config)
    settings = result_settings(cfg)
    code = merge_code_states(resumed_from, code_state(root)) if resumed_from else code_state(root)
    init = cfg.get("init_from")
    enc = cfg.get("encodec_checkpoint")
    return {
        **code,
        "run_key": Path(cfg["ckpt_dir"]).name,
        "settings": settings,
        "settings_sha256": sha256_json(settings),
        "train_data_sha256": train_data_sha256(cfg["shards"], cfg["targets"]),
        "init_from": None if not init else {"sha256": sha256_file(init), "provenance": checkpoint_provenance(init)},
        "encodec_sha256": sha256_file(enc) if enc else None,
    }


def checkpoint_provenance(path: str | Path) -> dict | None:
    """The ``provenance`` recorded in a model file (None for files written before it existed)."""
    import torch

    try:  # memory-mapped: the weights are not read
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    prov = ckpt.get("provenance") if isinstance(ckpt, dict) else None
    return dict(prov) if prov else None


def embedding_provenance(checkpoint: str | Path, task_dir: str | Path, layer: int,
                         root: str | Path | None = None) -> dict:
    """The provenance of a task's embeddings: the embedding run's code, its layer, the task
    folder's hash, and the model's provenance (None if its file has none)."""
    return {**code_state(root), "layer": int(layer), "task_data_sha256": task_data_sha256(task_dir),
            "model": checkpoint_provenance(checkpoint)}


def to_npz_value(prov: Mapping):
    """A provenance dict as an array ``np.savez`` stores without pickling (a JSON string)."""
    import numpy as np

    return np.array(json.dumps(prov, sort_keys=True))


def read_npz_provenance(npz_path: str | Path) -> dict | None:
    """The provenance stored in an embeddings file (None if it has none)."""
    import numpy as np

    with np.load(npz_path, allow_pickle=False) as npz:
        if "provenance" not in npz.files:
            return None
        return json.loads(str(npz["provenance"]))


def scores_provenance(embeddings: str | Path, task_dir: str | Path, root: str | Path | None = None) -> dict:
    """The provenance block of a scores file: the scoring run's code, the task folder's hash,
    the embedding run (code, layer) and the model's provenance, both from the embeddings file.

    Raises ValueError when the embeddings record a different task folder hash: they were made
    from another version of the task."""
    emb = read_npz_provenance(embeddings)
    task_hash = task_data_sha256(task_dir)
    if emb and emb.get("task_data_sha256") not in (None, task_hash):
        raise ValueError(f"{embeddings}: made from task data {emb['task_data_sha256'][:12]}, but {task_dir} "
                         f"now hashes to {task_hash[:12]}; embed the task again")
    model = emb.pop("model", None) if emb else None
    return {**code_state(root), "task_data_sha256": task_hash, "embedding": emb, "model": model}


def result_code_states(scores_prov: Mapping | None) -> list[dict]:
    """Every code state that made a score: the model's training (and its init chain), the
    embedding run and the scoring run."""
    if not scores_prov:
        return [{"code_commit": UNKNOWN, "code_dirty": None}]
    states = []
    model = scores_prov.get("model")
    while model:
        states.append(model)
        model = (model.get("init_from") or {}).get("provenance")
    if scores_prov.get("embedding"):
        states.append(scores_prov["embedding"])
    states.append(scores_prov)
    return states
