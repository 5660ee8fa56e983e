"""Sharing the pipeline's artifacts with DVC, round trip: ``dvc repro`` (dvc.yaml) of the CI
configuration in a git copy of the project (which records the session's run, conftest.py
``ci_run``), ``dvc push`` to a remote, clone, ``dvc pull``; restore (``snakemake --cores 1
--touch --forceall``) and Snakemake has nothing to do; a changed setting then plans exactly its
dependants. The push and pull once through a local directory remote and once through an S3
remote (moto's server on 127.0.0.1, credentials from the environment only). The round trips
are end-to-end runs (`e2e`); the choice of configuration in dvc.yaml is checked by a dry run."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from workflow_helpers import CI_CONFIG, REPO, edited_config, job_stats

BIN = Path(sys.executable).parent
RESTORE = ["snakemake", "--cores", "1", "--touch", "--forceall"]  # the README's restore command

pytest.importorskip("dvc", reason="the dvc extra is not installed (pip install -e '.[dvc]')")


def env(**extra: str) -> dict[str, str]:
    e = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
         "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
         "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    e.update(extra)
    return e


def run(cwd: Path, *cmd: str, env_: dict | None = None, timeout: int = 3000) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), cwd=cwd, env=env_ or env(), capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} (in {cwd}) failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}")
    return res


def planned(workdir: Path, config: Path | None = None) -> Counter:
    """Jobs a dry run of the project's own Snakefile would execute in ``workdir``, by rule."""
    args = ["--configfile", str(config)] if config else []
    res = run(workdir, sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", *args)
    return job_stats(res.stdout + res.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def origin(tmp_path_factory, ci_run):
    """A git copy of the project whose config/config.yaml is the CI config, after `dvc repro`
    with every DVC-tracked artifact and dvc.lock committed. The session's finished CI run (its
    outputs, mtimes and Snakemake metadata) is copied in first, so the stages' Snakemake targets
    find nothing to do and `dvc repro` only records and caches what that run computed."""
    root = tmp_path_factory.mktemp("dvc") / "origin"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if rel in ("dvc.lock",) or rel.startswith(("data/", "results/")) or not src.is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / rel)
    shutil.copy2(CI_CONFIG, root / "config" / "config.yaml")
    for part in ("data", "results", ".snakemake/metadata"):
        shutil.copytree(ci_run / part, root / part, dirs_exist_ok=True)
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")  # data/ and results/ are ignored by git: DVC tracks them
    run(root, "git", "commit", "-q", "-m", "project")
    t0 = time.time()
    res = run(root, "dvc", "repro")
    out = res.stdout + res.stderr
    print(f"dvc repro (CI config, outputs present): {time.time() - t0:.0f} s")
    assert "Nothing to be done" in out and "Finished job" not in out, out[-3000:]
    assert (root / "dvc.lock").exists() and (root / "results" / "metrics.json").exists()
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "results")
    status = run(root, "dvc", "status").stdout
    assert "up to date" in status, status
    return root


def test_the_stages_run_the_configuration_named_in_dvc_yaml(tmp_path):
    """dvc.yaml's `config` variable picks the configuration: with config/paper.yaml every stage
    runs Snakemake with it and tracks its settings as params (nothing runs here)."""
    root = tmp_path / "proj"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        if rel != "dvc.lock" and (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    dvc_yaml = (root / "dvc.yaml").read_text()
    assert "  - config: config/config.yaml\n" in dvc_yaml  # the committed choice: the demo
    (root / "dvc.yaml").write_text(dvc_yaml.replace("  - config: config/config.yaml\n", "  - config: config/paper.yaml\n"))
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "project")
    dry = run(root, "dvc", "repro", "--dry", "tokens").stdout
    assert "snakemake --configfile config/paper.yaml --cores all --until tokenize_shard" in dry
    status = run(root, "dvc", "status").stdout
    stages = re.findall(r"^(\w+):$", status, re.M)
    assert stages == ["tokens", "pretrain", "hear", "asr", "report"]
    assert status.count("new:                config/paper.yaml") == 5 and "config/config.yaml" not in status
    outs = [next(iter(o)) if isinstance(o, dict) else o
            for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values() for o in stage["outs"]]
    assert "data/shards" in outs and not [o for o in outs if o.startswith("data/downloads")]  # each user's own
    assert "results/models/*/checkpoints/" in (root / ".dvcignore").read_text()


@pytest.fixture
def s3_server(tmp_path):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
             "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="encodecmae-artifacts")
    yield endpoint, creds
    server.stop()


def push_and_pull(origin: Path, tmp_path: Path, name: str, url: str, options: dict[str, str], env_: dict) -> Path:
    """Configure remote ``name`` in ``origin`` (committed: a clone knows it), `dvc push` to it, clone
    ``origin`` and `dvc pull` there: every versioned file arrives (`dvc status` checks each
    against dvc.lock), the step checkpoints stay behind. Returns the clone."""
    run(origin, "dvc", "remote", "add", "-f", name, url)
    for key, value in options.items():
        run(origin, "dvc", "remote", "modify", name, key, value)
    config = (origin / ".dvc" / "config").read_text()
    assert "access_key" not in config and "secret" not in config  # credentials stay in the environment
    run(origin, "git", "commit", "-q", "-am", f"remote {name}")
    t0 = time.time()
    run(origin, "dvc", "push", "-r", name, env_=env_)
    push = time.time() - t0

    clone = tmp_path / f"clone_{name}"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "results" / "table1.csv").exists() and not (clone / ".snakemake").exists()
    t0 = time.time()
    run(clone, "dvc", "pull", "-r", name, env_=env_)
    print(f"{name}: push {push:.1f} s, pull {time.time() - t0:.1f} s")
    assert "up to date" in run(clone, "dvc", "status").stdout
    for rel in ["results/table1.csv", "results/scores/mel256_large_st/events.json", "results/models/mel256_base/model.pt",
                "data/selftrain/mel256_base/kmeans.npz", "data/tokens/speech/000.npy"]:
        assert (clone / rel).read_bytes() == (origin / rel).read_bytes(), rel
    # step checkpoints (weights + optimizer state, for resuming where they were computed) stay behind
    assert list((origin / "results" / "models").glob("*/checkpoints/*/step_*.pt"))
    assert not list((clone / "results" / "models").glob("*/checkpoints"))
    return clone


@pytest.mark.e2e
def test_round_trip_through_a_local_directory_remote(origin, tmp_path):
    """Push, clone and pull; then the README's restore command makes Snakemake count the pulled
    results as up to date, and a changed setting plans only its dependants there."""
    clone = push_and_pull(origin, tmp_path, "shared", str(tmp_path / "remote"), {}, env())
    # after a pull, mtimes are arbitrary: make them as bad as can be (results older than data)
    old = time.time() - 86400
    for f in (clone / "results").rglob("*"):
        os.utime(f, (old, old))
    assert planned(clone)["train_mae"] == 5  # Snakemake would retrain everything
    t0 = time.time()
    run(clone, *RESTORE)
    print(f"restore: {time.time() - t0:.1f} s")
    assert planned(clone) == Counter()
    assert "up to date" in run(clone, "dvc", "status").stdout  # the restore changed no tracked content

    # a changed setting plans only its dependants, exactly as on the machine that ran the pipeline
    cfg = edited_config(tmp_path, lambda c: c["hear"].update(max_epochs=9))
    assert planned(clone, cfg) == planned(origin, cfg) == Counter({"score_task": 15, "make_table": 1, "all": 1})
    cfg = edited_config(tmp_path, lambda c: c["training"].update(lr=5e-4))
    jobs = planned(clone, cfg)
    assert jobs == planned(origin, cfg)
    assert jobs["train_mae"] == 5 and jobs["score_task"] == 15
    assert not {"make_demo_corpus", "resample_shard", "tokenize_shard", "fit_codebooks", "make_demo_task"} & set(jobs)


@pytest.mark.e2e
def test_round_trip_through_an_s3_remote(origin, tmp_path, s3_server):
    """The same push and pull through an S3 server, credentials from the environment only. What
    follows a pull (restore, plans) depends only on the pulled files, which `dvc status` checks
    against dvc.lock: the local-directory round trip tests it."""
    endpoint, creds = s3_server
    push_and_pull(origin, tmp_path, "s3", "s3://encodecmae-artifacts/encodecmae", {"endpointurl": endpoint},
                  env(**creds))
