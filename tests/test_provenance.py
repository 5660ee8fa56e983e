"""Provenance: the code commit (not HEAD) and its dirtiness in throwaway git repositories, the
data hashes against coreutils, and the records that training, embedding and scoring write, up to
the provenance columns of Table 1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodecmae import provenance as pv

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=repo, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit_all(repo: Path, msg: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    """A checkout laid out like the project: code, README, dvc.lock, results/metrics.json."""
    root = tmp_path / "repo"
    for rel, text in {"src/pkg/code.py": "x = 1\n", "Snakefile": "rule all:\n", "README.md": "# r\n",
                      "dvc.lock": "schema: '2.0'\n", "results/metrics.json": "{}\n", "docs/notes.md": "n\n",
                      ".dvc/config": "", ".gitignore": "/data/\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git(root, "init", "-q", "-b", "main")
    return root


@needs_git
def test_code_commit_is_the_last_commit_that_changed_code(repo):
    c1 = commit_all(repo, "code")
    assert pv.code_state(repo) == {"code_commit": c1, "code_dirty": False}
    # publishing a run: dvc.lock, results/metrics.json, Markdown and the DVC remote are not code
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "results" / "metrics.json").write_text('{"a": 1}\n')
    (repo / "README.md").write_text("# r\nresults\n")
    (repo / "docs" / "notes.md").write_text("more\n")
    (repo / ".dvc" / "config").write_text("[core]\n    remote = shared\n")
    assert pv.code_state(repo) == {"code_commit": c1, "code_dirty": False}  # uncommitted: not dirty
    c2 = commit_all(repo, "results")
    assert c2 != c1 and pv.code_state(repo) == {"code_commit": c1, "code_dirty": False}
    # ignored files are not code either
    (repo / "data").mkdir()
    (repo / "data" / "big.npy").write_bytes(b"\0" * 10)
    assert pv.code_state(repo)["code_dirty"] is False

    (repo / "src" / "pkg" / "code.py").write_text("x = 2\n")
    assert pv.code_state(repo) == {"code_commit": c1, "code_dirty": True}
    c3 = commit_all(repo, "code change")
    assert pv.code_state(repo) == {"code_commit": c3, "code_dirty": False}
    (repo / "src" / "pkg" / "new" / "mod.py").parent.mkdir()
    (repo / "src" / "pkg" / "new" / "mod.py").write_text("")  # untracked, not ignored: dirty
    assert pv.code_state(repo) == {"code_commit": c3, "code_dirty": True}
    (repo / "src" / "pkg" / "new" / "mod.py").unlink()
    (repo / "Snakefile").unlink()  # a deleted tracked file: dirty
    assert pv.code_state(repo) == {"code_commit": c3, "code_dirty": True}


@needs_git
def test_outside_a_checkout_the_commit_is_unknown(repo, tmp_path, monkeypatch):
    unknown = {"code_commit": "unknown", "code_dirty": None}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert pv.code_state(plain) == unknown  # not a git repository
    assert pv.code_state(tmp_path / "missing") == unknown
    assert pv.code_state(repo) == unknown  # a repository without commits
    head = commit_all(repo, "code")
    # a package installed inside some checkout (a virtual environment in it) is not its code
    assert pv.code_state(repo / "src") == unknown
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all
        assert pv.code_state(repo) == unknown
    with monkeypatch.context() as m:
        m.setenv("GIT_DIR", str(plain))  # the caller's git environment does not leak in
        assert pv.code_state(repo) == {"code_commit": head, "code_dirty": False}


@needs_git
def test_a_shallow_clone_cannot_name_the_code_commit(repo, tmp_path):
    commit_all(repo, "code")
    (repo / "README.md").write_text("# r\nresults\n")
    commit_all(repo, "readme")
    full, shallow = tmp_path / "full", tmp_path / "shallow"
    git(tmp_path, "clone", "-q", f"file://{repo}", str(full))
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    assert pv.code_state(full) == pv.code_state(repo)  # a fresh clone records the same
    assert pv.code_state(shallow) == {"code_commit": "unknown", "code_dirty": False}


@needs_git
def test_this_checkout():
    root = pv.package_root()
    if not (root / ".git").exists():
        pytest.skip("not running from a git checkout")
    expected = git(root, "log", "-1", "--format=%H", "--", *pv.CODE_PATHSPEC)
    state = pv.code_state()
    assert state["code_commit"] == expected and len(expected) == 40
    assert isinstance(state["code_dirty"], bool)
    from encodecmae.training.checkpoints import code_version

    assert code_version().split("+g")[1][:12] == expected[:12]


def test_merge_code_states():
    a, b = {"code_commit": "a", "code_dirty": False}, {"code_commit": "b", "code_dirty": False}
    assert pv.merge_code_states(a, a) == a
    assert pv.merge_code_states(a, b, {"code_commit": "a+b", "code_dirty": False}) == {"code_commit": "a+b",
                                                                                        "code_dirty": False}
    assert pv.merge_code_states(a, {**b, "code_dirty": None})["code_dirty"] is None
    assert pv.merge_code_states({**a, "code_dirty": True}, {**b, "code_dirty": None})["code_dirty"] is True
    assert pv.merge_code_states(None) == {"code_commit": "unknown", "code_dirty": None}


# --- data hashes ---------------------------------------------------------------------------------


def coreutils(cmd: str, cwd: Path) -> str:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum")
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, check=True, capture_output=True, text=True).stdout.split()[0]


def fake_shards(root: Path, n: int = 2) -> tuple[list[Path], list[Path]]:
    shards, targets = [], []
    for i in range(n):
        d = root / "shards" / f"{i:03d}"
        d.mkdir(parents=True)
        (d / "manifest.csv").write_text(f"clip_id,source,offset,n_samples\nc{i},s,0,{320 * (i + 1)}\n")
        t = root / "tokens" / f"{i:03d}.npy"
        t.parent.mkdir(exist_ok=True)
        np.save(t, np.full((2, i + 1), i, dtype=np.int16))
        shards.append(d)
        targets.append(t)
    return shards, targets


def test_train_data_hash_is_sha256sum_of_manifests_and_targets_in_order(tmp_path, monkeypatch):
    shards, targets = fake_shards(tmp_path)
    monkeypatch.setattr(pv, "CHUNK", 7)  # streamed in chunks: the same digest
    digest = pv.train_data_sha256(shards, targets)
    files = [f for s, t in zip(shards, targets) for f in (s / "manifest.csv", t)]
    lines = "".join(hashlib.sha256(f.read_bytes()).hexdigest() + "\n" for f in files)
    assert digest == hashlib.sha256(lines.encode()).hexdigest()
    cmd = "sha256sum " + " ".join(str(f.relative_to(tmp_path)) for f in files) + " | cut -d' ' -f1 | sha256sum"
    assert digest == coreutils(cmd, tmp_path)
    assert pv.train_data_sha256(shards[::-1], targets[::-1]) != digest  # order matters
    np.save(targets[1], np.zeros((2, 2), dtype=np.int16))
    assert pv.train_data_sha256(shards, targets) != digest
    with pytest.raises(ValueError, match="2 shards but 1 target"):
        pv.train_data_sha256(shards, targets[:1])


def test_task_data_hash_covers_every_file_and_its_path(tmp_path):
    task = tmp_path / "task"
    for rel in ["task_metadata.json", "train.json", "16000/train/a.wav", "16000/train/b b.wav", "16000/test/c.wav"]:
        (task / rel).parent.mkdir(parents=True, exist_ok=True)
        (task / rel).write_bytes(rel.encode() * 3)
    digest = pv.task_data_sha256(task)
    cmd = ("find . -type f ! -name .snakemake_timestamp | sed 's|^\\./||' | LC_ALL=C sort "
           "| xargs -d '\\n' sha256sum | sha256sum")
    assert digest == coreutils(cmd, task)
    (task / ".snakemake_timestamp").write_text("")  # Snakemake's marker is not data
    assert pv.task_data_sha256(task) == digest
    (task / "16000" / "train" / "a.wav").rename(task / "16000" / "train" / "z.wav")
    assert pv.task_data_sha256(task) != digest  # a renamed clip is other data
    (task / "16000" / "train" / "z.wav").rename(task / "16000" / "train" / "a.wav")
    (task / "extra.txt").write_text("")
    assert pv.task_data_sha256(task) != digest
    with pytest.raises(FileNotFoundError):
        pv.task_data_sha256(tmp_path / "none")


def test_settings_exclude_paths_and_how_the_job_runs(tmp_path):
    shards, targets = fake_shards(tmp_path)
    cfg = {"shards": [str(s) for s in shards], "targets": [str(t) for t in targets], "out": "a/model.pt",
           "ckpt_dir": "a/checkpoints/0123abcd45", "metrics": "m.csv", "lr": 1e-4, "betas": (0.9, 0.95), "steps": 10,
           "threads": 4, "device": "auto", "num_workers": 4, "resume": True, "log_every": 5, "val_every": 5,
           "checkpoint_every": 5, "init_from": None, "encodec_checkpoint": None}
    p = pv.model_provenance(cfg, root=tmp_path)
    assert p["code_commit"] == "unknown" and p["code_dirty"] is None
    assert p["run_key"] == "0123abcd45"
    assert p["settings"] == {"betas": [0.9, 0.95], "lr": 1e-4, "steps": 10}
    assert p["settings_sha256"] == hashlib.sha256(b'{"betas":[0.9,0.95],"lr":0.0001,"steps":10}').hexdigest()
    assert p["train_data_sha256"] == pv.train_data_sha256(shards, targets)
    assert p["init_from"] is None and p["encodec_sha256"] is None
    moved = {**cfg, "out": "/elsewhere/model.pt", "metrics": "/x.csv", "threads": 1, "device": "cuda",
             "num_workers": 0, "resume": False, "log_every": 1, "val_every": 1, "checkpoint_every": 1}
    assert pv.model_provenance(moved, root=tmp_path) == p
    assert pv.model_provenance({**cfg, "lr": 3e-4}, root=tmp_path)["settings_sha256"] != p["settings_sha256"]
    assert pv.model_provenance({**cfg, "steps": 11}, root=tmp_path)["settings_sha256"] != p["settings_sha256"]
    # a run resumed under another commit names both
    resumed = pv.model_provenance(cfg, resumed_from={"code_commit": "abc", "code_dirty": False}, root=tmp_path)
    assert resumed["code_commit"] == "abc+unknown" and resumed["code_dirty"] is None


# --- training -> embedding -> scoring -> Table 1 ------------------------------------------------------


def write_audio_task(root: Path, paper_task: str = "NS") -> Path:
    """A 2-class train/valid/test task with 16-kHz clips (low vs high tone)."""
    rng = np.random.default_rng(0)
    meta = {"task_name": "tiny", "paper_task": paper_task, "mode": "train_valid_test",
            "prediction_type": "multiclass", "evaluation": ["top1_acc"], "sample_rate": 16000,
            "label_vocabulary": ["low", "high"]}
    root.mkdir(parents=True)
    (root / "task_metadata.json").write_text(json.dumps(meta))
    t = np.arange(8000) / 16000
    for split in ("train", "valid", "test"):
        labels = {}
        (root / "16000" / split).mkdir(parents=True)
        for i in range(6):
            label = ["low", "high"][i % 2]
            f = 220.0 * (4 if label == "high" else 1) * (1 + 0.05 * rng.random())
            sf.write(root / "16000" / split / f"{split}_{i}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32),
                     16000)
            labels[f"{split}_{i}.wav"] = [label]
        (root / f"{split}.json").write_text(json.dumps(labels))
    return root


def run_cli(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "encodecmae", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_provenance_flows_from_training_to_table1(tone_corpus, tmp_path):
    import torch

    from encodecmae.training import checkpoints as ckpt_io
    from encodecmae.evaluation.embed import embed_task
    from encodecmae.report.table import make_table
    from encodecmae.training.config import TrainConfig
    from encodecmae.training.loop import train

    torch.set_num_threads(1)
    shards, targets = tone_corpus
    models = tmp_path / "results" / "models"
    cfg = TrainConfig(shards=[str(s) for s in shards], targets=[str(t) for t in targets],
                      out=str(models / "tiny" / "model.pt"), ckpt_dir=str(models / "tiny" / "checkpoints" / "runkey01"),
                      metrics=str(tmp_path / "metrics.csv"), size="debug", steps=2, batch_size=2, checkpoint_every=100,
                      val_clips=0, num_workers=0, device="cpu", threads=1)
    train(cfg)
    model_prov = ckpt_io.load(cfg.out)["provenance"]
    assert pv.checkpoint_provenance(cfg.out) == model_prov
    assert model_prov["run_key"] == "runkey01"
    assert model_prov["code_commit"] == pv.code_state()["code_commit"]

    task = write_audio_task(tmp_path / "tasks" / "tiny")
    npz = tmp_path / "results" / "embeddings" / "tiny" / "tiny.npz"
    embed_task(cfg.out, task, npz, layer=-1)
    emb_prov = pv.read_npz_provenance(npz)
    assert emb_prov == {**pv.code_state(), "layer": -1, "task_data_sha256": pv.task_data_sha256(task),
                        "model": model_prov}

    scores = tmp_path / "results" / "scores" / "tiny" / "tiny.json"
    run_cli("score-task", "--task-dir", str(task), "--embeddings", str(npz), "--out", str(scores),
            "--max-epochs", "3", "--grid-points", "1", "--bootstrap", "5", "--threads", "1")
    prov = json.loads(scores.read_text())["provenance"]
    assert prov["model"] == model_prov
    assert prov["embedding"] == {k: v for k, v in emb_prov.items() if k != "model"}
    assert prov["task_data_sha256"] == pv.task_data_sha256(task)
    assert {k: prov[k] for k in ("code_commit", "code_dirty")} == pv.code_state()

    # the row of Table 1 (one task: the Global score is left empty)
    table = make_table([{"name": "tiny", "label": "tiny", "paper_line": None}], [scores], [task], [cfg.out],
                       tmp_path / "table1.csv", tmp_path / "table1.md")
    row = table.iloc[0]
    assert row["code_commit"] == pv.code_state()["code_commit"] and row["code_dirty"] == pv.code_state()["code_dirty"]
    assert row["run_key"] == "runkey01"
    assert row["settings_sha256"] == model_prov["settings_sha256"][:12]
    assert row["train_data_sha256"] == pv.train_data_sha256(shards, targets)[:12]
    assert row["eval_data_sha256"] == pv.combine_sha256([pv.task_data_sha256(task)])[:12]

    # embeddings of another version of the task are refused
    (task / "valid.json").write_text((task / "valid.json").read_text() + "\n")
    with pytest.raises(ValueError, match="embed the task again"):
        pv.scores_provenance(npz, task)
