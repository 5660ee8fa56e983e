"""The workflow on SLURM: the resources each training job asks for, the torchrun launch of
multi-GPU jobs, the ./slurm profile, and real runs on a single-node SLURM cluster on 127.0.0.1
(Debian's slurm-wlm and munge, started by scripts/slurm_cluster.sh), started together
(`cluster_runs`): the CI configuration's outputs that take a job of every rule but the report
tables (workflow_helpers.DATA_TARGETS and MODEL_TARGETS), in which a training job is cancelled by
SLURM after its first step checkpoint and resumes from it, every job runs on one thread and every
versioned file must equal that of the session's local run on two cores (conftest.py `ci_run`);
and a training run longer than its time limit. The cluster tests are end-to-end runs (`e2e`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import torch
import yaml

from encodecmae.workflow.experiments import resolve
from encodecmae.workflow.resources import train_resources
from workflow_helpers import (CI_CONFIG, DATA_JOBS, DATA_TARGETS, ENV, MODEL_JOBS, MODEL_TARGETS, REPO,
                              assert_same_versioned_files, copy_data_stage, edited_config, job_stats, slurm_can_run,
                              snakemake_cmd)

LOCAL_RULES = ("index_shards", "index_tokens", "index_clusters")  # `localrule: True` in rules/

CLUSTER = REPO / "scripts" / "slurm_cluster.sh"
SLURMCTLD_LOG = Path("/var/log/slurm/slurmctld.log")

# What the test cluster (2 CPUs, no GPU, no accounting database) cannot provide like a real one:
# its partition is "debug"; without slurmdbd, job states come from squeue (sacct would fail and
# the plugin would wait forever); and the jobs are seconds long, so the first status check comes
# after 2 s instead of 40 s.
TEST_CLUSTER_ARGS = ["--default-resources", "slurm_partition=debug", "--slurm-status-command", "squeue",
                     "--slurm-init-seconds-before-status-checks", "2"]


def load(path: Path = CI_CONFIG) -> dict:
    return yaml.safe_load(path.read_text())


# --- resources (no cluster needed) -------------------------------------------------------------


def test_training_resources_grow_with_the_model():
    exps = resolve(load(REPO / "config" / "paper.yaml"))
    small, base, large = (train_resources(exps[n]) for n in ("mel256_small", "mel256_base", "mel256_large"))
    assert 1 <= small["gpu"] < base["gpu"] < large["gpu"]
    assert small["mem_mb"] < base["mem_mb"] < large["mem_mb"]
    assert small["threads"] < base["threads"] < large["threads"]
    for r in (small, base, large):
        assert r["threads"] == r["gpu"] * r["cpus_per_gpu"] and 0 < r["runtime"] <= 2880
    # self-training runs fewer steps than pretraining, so it asks for less time
    assert train_resources(exps["mel256_base_st"])["runtime"] < base["runtime"]
    # 500k steps of base and large take longer than one 48-h job: two segments each
    assert base["runtime"] == large["runtime"] == 2880 and base["segments"] == large["segments"] == 2
    assert small["segments"] == train_resources(exps["mel256_base_st"])["segments"] == 1


def test_ci_and_demo_models_train_on_cpu():
    for cfg in ("ci.yaml", "config.yaml"):
        for exp in resolve(load(REPO / "config" / cfg)).values():
            r = train_resources(exp)
            assert r["gpu"] == 0 and r["threads"] <= 2 and r["mem_mb"] <= 4000, (cfg, exp.name, r)


def dry_run_commands(tmp_path: Path, *args: str) -> str:
    cmd = snakemake_cmd(tmp_path, "-n", "-p", "--cores", "2", f"{load()['results_dir']}/models/mel256_base/model.pt",
                        *args)
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def test_several_gpus_launch_torchrun_one_gpu_plain_train(tmp_path):
    out = dry_run_commands(tmp_path, "--set-resources", "train_mae:gpu=4", "train_mae:cpus_per_gpu=3",
                           "--set-threads", "train_mae=12")
    # one rank per GPU the job asked for and can see, on one node
    assert "ranks=4; if [ $ranks -gt 1 ]; then ranks=$(python -c 'import sys, torch; print(max(1, min(int(sys.argv[1]), " \
           "torch.cuda.device_count())))' $ranks); fi;" in out
    assert "python -m torch.distributed.run --standalone --nproc_per_node $ranks -m encodecmae" in out
    assert re.search(r"rule train_mae:(?:.|\n)*?resources: .*\bnodes=1\b", out)
    # the job's cores split between the ranks (at least one each)
    assert re.search(r"--threads \$\(\( \$ranks > 1 \? \((\d+) \+ \$ranks - 1\) / \$ranks : \1 \)\)", out)
    out = dry_run_commands(tmp_path, "--set-resources", "train_mae:gpu=1")
    assert "ranks=1; if [ $ranks -gt 1 ]" in out  # so the else branch: plain `python -m encodecmae train`
    assert "else set -- python -m encodecmae; fi; \"$@\" train" in out


def test_under_slurm_training_stops_before_its_time_limit(tmp_path):
    """The training command gets --stop-after (the time limit less 5 minutes; a quarter of a
    limit of a few minutes) inside a SLURM job only: a local run has no limit."""
    for runtime, expected in ((600, 600 * 60 - 300), (2, 30)):
        out = dry_run_commands(tmp_path, "--set-resources", f"train_mae:runtime={runtime}")
        flag = re.search(r"(\$\{SLURM_JOB_ID:\+--stop-after [^}]*\})", out)[1]
        for job_id, want in (("123", f"--stop-after {expected}"), ("", "")):
            got = subprocess.run(["bash", "-c", f"SLURM_JOB_ID={job_id}; echo {flag}"], capture_output=True,
                                 text=True, check=True).stdout.strip()
            assert got == want, (runtime, job_id, got)


def test_the_launch_never_starts_more_ranks_than_visible_gpus(tmp_path):
    """The training rule's launch line run by bash with gpu=4 on this machine (no GPU): one
    plain process, not four torchrun ranks (a 4-rank run would wait for ranks that never start)."""
    out = dry_run_commands(tmp_path, "--set-resources", "train_mae:gpu=4", "--set-threads", "train_mae=8")
    line = re.search(r"(ranks=4; .*?)\"\$@\" train", out)[1]
    launch = subprocess.run(["bash", "-c", line + ' echo "$ranks|$@"'], env=ENV, capture_output=True, text=True,
                            check=True).stdout.strip()
    import torch

    expected = min(4, torch.cuda.device_count())
    if expected > 1:
        assert launch.startswith(f"{expected}|python -m torch.distributed.run --standalone --nproc_per_node {expected}")
    else:
        assert launch == "1|python -m encodecmae"


def test_every_profile_key_says_why():
    lines = (REPO / "slurm" / "config.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*:", line)]
    assert keys and {"executor"} <= {lines[i].split(":")[0] for i in keys}
    assert load(REPO / "slurm" / "config.yaml")["executor"] == "slurm"
    for i in keys:
        assert lines[i - 1].startswith("#"), f"profile key without a comment: {lines[i]}"


# --- a real SLURM cluster ------------------------------------------------------------------------


def daemons_running() -> bool:
    return subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("slurmctld") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("SLURM is not installed and cannot be: installing slurm-wlm and munge needs root and apt-get")
        res = subprocess.run(["bash", str(CLUSTER), "install"], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.skip(f"apt-get install slurm-wlm munge failed: {res.stderr[-2000:]}")
    if not slurm_can_run():
        pytest.skip("starting the SLURM daemons (slurmd runs jobs as any user) needs root")
    started = not daemons_running()
    res = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=300)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        yield
    finally:
        if started:  # stop only the daemons this fixture started
            subprocess.run(["bash", str(CLUSTER), "stop"], timeout=120)


def cancel_after_first_checkpoint(run: Path, stop: threading.Event, cancelled: dict):
    """scancel the SLURM job training mel256_base in the run in ``run`` (told from other runs' by
    its SLURM log's path) as soon as its first step checkpoint appears."""
    ckpt_root = run / load()["results_dir"] / "models" / "mel256_base" / "checkpoints"
    slurm_log = f"{run}/.snakemake/slurm_logs/rule_train_mae/mel256_base/"
    while not stop.is_set():
        if list(ckpt_root.glob("*/step_*.pt")):
            jobs = subprocess.run(["squeue", "-h", "-O", "JobID:20,StdOut:2000"], capture_output=True, text=True).stdout
            ids = [line.split()[0] for line in jobs.splitlines() if line.split()[1].startswith(slurm_log)]
            if ids:
                subprocess.run(["scancel", *ids], check=True)
                cancelled["jobs"] = ids
                cancelled["checkpoints"] = sorted(p.name for p in ckpt_root.glob("*/step_*.pt"))
                return
        time.sleep(0.1)


# mel256_base trained for more steps under a 1-minute limit: each SLURM job stops after a quarter
# of it with a checkpoint (--stop-after 15). One thread trains about 10 steps/s on the 2-core AMD
# EPYC VM (2026-12-07), less beside the other runs: 3 or more jobs there, at least 2 on a machine
# twice as fast.
LONG_STEPS = 400


@pytest.fixture(scope="module")
def cluster_runs(slurm_cluster, ci_run, tmp_path_factory) -> dict:
    """The test cluster's runs of the CI configuration, all at once (most of a run on it is
    waiting for SLURM's status polls, which back off by 10 s while no job finishes), one thread
    per job, through `--profile slurm` from the repository root as a user types it:
    "data", the data stage from nothing (DATA_TARGETS); "models", the models and evaluations
    (MODEL_TARGETS) from a copy of the session's data stage, the job training mel256_base
    cancelled after its first step checkpoint; "long", mel256_base trained for LONG_STEPS steps
    under a 1-minute limit, and beside it "long_local", the same locally on one thread without a
    limit. Returns {name: (workdir, output)} and, as "cancelled", what the cancel saw."""
    root = tmp_path_factory.mktemp("cluster")
    results = load()["results_dir"]
    long_cfg = edited_config(root, lambda c: (c["experiments"][1].update(steps=LONG_STEPS),
                                              c["training"].update(checkpoint_every=100_000, log_every=100)))
    for name in ("models", "long", "long_local"):
        copy_data_stage(ci_run, root / name)
    profile = ["--profile", "slurm", *TEST_CLUSTER_ARGS, "--max-threads", "1"]
    commands = {
        "data": snakemake_cmd(root / "data", *profile, *DATA_TARGETS),
        "models": snakemake_cmd(root / "models", *profile, *MODEL_TARGETS),
        "long": snakemake_cmd(root / "long", *profile, "--set-resources", "train_mae:runtime=1", "--retries", "20",
                              f"{results}/models/mel256_base/model.pt", config=long_cfg),
        "long_local": snakemake_cmd(root / "long_local", "--cores", "1", f"{results}/models/mel256_base/model.pt",
                                    config=long_cfg),
    }
    stop, cancelled = threading.Event(), {}
    watcher = threading.Thread(target=cancel_after_first_checkpoint, args=(root / "models", stop, cancelled))
    watcher.start()
    t0 = time.time()
    procs = {}
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
        runs = {name: (root / name, proc.communicate(timeout=1800)[0]) for name, proc in procs.items()}
    finally:
        for proc in procs.values():  # none is left running when one fails or times out
            if proc.poll() is None:
                proc.kill()
        stop.set()
        watcher.join()
    print(f"the runs on the SLURM test cluster: {time.time() - t0:.0f} s")
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n{runs[name][1][-6000:]}"
    return {**runs, "cancelled": cancelled}


@pytest.mark.e2e
def test_ci_config_on_slurm_resumes_and_matches_a_local_run(cluster_runs, ci_run):
    """A job of every rule but the report tables on the cluster, one thread per job: the data
    stage from nothing and the models and evaluations from the session's data (cluster_runs). The
    local run gave jobs two threads, and the versioned files must not depend on it (this is also
    test_workflow's second run on fewer cores). The rest of a full run would repeat these rules on
    other wildcards."""
    (data, _), (models, _) = cluster_runs["data"], cluster_runs["models"]
    # the local reference is the session's uninterrupted run of the same configuration
    check_slurm_run(data, ci_run, DATA_JOBS, resubmitted=0)
    check_slurm_run(models, ci_run, MODEL_JOBS, resubmitted=1)
    assert_same_versioned_files(data, ci_run, built=DATA_TARGETS)
    check_resumed_training(models, cluster_runs["cancelled"])
    # the same files as the uninterrupted local run on two cores: the resumed model, every
    # intermediate, embedding, score and ASR result, byte for byte (the cancelled job's last
    # checkpoint aside)
    assert_same_versioned_files(models, ci_run, resumed=("mel256_base",), built=MODEL_TARGETS)


def check_slurm_run(cluster: Path, local: Path, expected: Counter, resubmitted: int):
    """The SLURM run in ``cluster`` ran the ``expected`` jobs on one thread each (where the local
    run in ``local`` gave some two), every one but the local rules' through sbatch, and
    ``resubmitted`` of them twice."""
    out = max((cluster / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime).read_text()
    # every job but the local rules (the per-source indexes, which Snakemake runs itself) went
    # through sbatch, and SLURM ran it
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", out)
    planned = job_stats(out)
    assert planned == expected, planned
    n_local = sum(n for rule, n in planned.items() if rule in LOCAL_RULES)
    assert len(submitted) == sum(planned.values()) - n_local + resubmitted
    if SLURMCTLD_LOG.exists():
        ran = set(re.findall(r"(?:Allocate|Started) JobId=(\d+)", SLURMCTLD_LOG.read_text()))
        assert set(submitted) <= ran
    # every job ran on one thread (Snakemake prints `threads: N` for jobs of more), where the
    # local run gave some two
    assert any("threads: 2" in log.read_text() for log in (local / ".snakemake" / "log").glob("*.snakemake.log"))
    assert not re.search(r"^\s+threads: \d+$", out, re.M)


def check_resumed_training(cluster: Path, cancelled: dict):
    """The training job of mel256_base that the test cancelled in the SLURM run in ``cluster``
    was resubmitted and resumed from its checkpoint."""
    results = load()["results_dir"]
    out = max((cluster / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime).read_text()
    # the cancelled training job was resubmitted (profile `retries`) and resumed from its checkpoint
    assert cancelled.get("jobs"), "the training job of mel256_base was never seen running with a checkpoint"
    assert f"SLURM-job '{cancelled['jobs'][0]}' failed, SLURM status is: 'CANCELLED'" in out
    log = (cluster / results / "logs" / "train_mae" / "mel256_base.log").read_text()
    m = re.search(r"resuming from \S+step_(\d+)\.pt at step (\d+)", log)
    assert m, log[-2000:]
    steps = load()["experiments"][1]["steps"]
    assert int(m[1]) == int(m[2]) and 0 < int(m[2]) < steps
    # scancel sends SIGTERM: the job checkpoints the step it is on before it exits, so the resumed
    # step is the last checkpoint seen before the cancel or a later one, never an earlier one
    seen = max(int(re.search(r"\d+", name)[0]) for name in cancelled["checkpoints"])
    assert int(m[2]) >= seen, (m[2], cancelled["checkpoints"])
    # the jobs' history outlives each job's log (replaced on resubmission)
    jobs = next((cluster / results / "models" / "mel256_base" / "checkpoints").glob("*/jobs.log")).read_text()
    assert f"SLURM job {cancelled['jobs'][0]} starts at step 0 of {steps}" in jobs, jobs
    if int(m[2]) > seen:
        assert f"SLURM job {cancelled['jobs'][0]} stops at step {int(m[2])} of {steps} (got SIGTERM)" in jobs, jobs
    assert re.search(rf"SLURM job \d+ starts at step {int(m[2])} of {steps}\n.*finished at step {steps} of {steps}\n$",
                     jobs), jobs
    assert f"at step {steps}" in log


@pytest.mark.e2e
def test_training_longer_than_its_time_limit_finishes_across_submissions(cluster_runs):
    """mel256_base trained for LONG_STEPS steps under a 1-minute limit (cluster_runs' "long"):
    each SLURM job stops after a quarter of it with a checkpoint (--stop-after 15) and exits with
    code 75, the workflow resubmits it (--retries), and the last job writes the weights that an
    uninterrupted local run writes ("long_local")."""
    results = load()["results_dir"]
    target = f"{results}/models/mel256_base/model.pt"
    (cluster, out), (local, _) = cluster_runs["long"], cluster_runs["long_local"]
    stopped = out.count("Error in rule train_mae")  # a job that stopped to be resumed exits with 75
    print(f"{LONG_STEPS} steps in {stopped + 1} SLURM jobs of at most 1 min")
    assert stopped >= 1
    log = (cluster / results / "logs" / "train_mae" / "mel256_base.log").read_text()  # the last job's
    assert re.search(r"resuming from \S+step_\d+\.pt at step \d+", log) and f"at step {LONG_STEPS}" in log
    # every job's start and stop in the checkpoint directory's history: each resumes where the last stopped
    jobs = next((cluster / results / "models" / "mel256_base" / "checkpoints").glob("*/jobs.log")).read_text()
    events = re.findall(r"SLURM job \d+ (starts|stops|finished) at step (\d+)", jobs)
    assert [e for e, _ in events] == ["starts", "stops"] * stopped + ["starts", "finished"], jobs
    assert all(events[i][1] == events[i + 1][1] for i in range(1, len(events) - 1, 2)), jobs
    assert events[0][1] == "0" and events[-1][1] == str(LONG_STEPS), jobs
    a, b = (torch.load(d / target, map_location="cpu", weights_only=False)["model"] for d in (local, cluster))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
