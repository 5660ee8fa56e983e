"""The Snakemake workflow: config validation, the planned DAG, a real end-to-end run of the CI
configuration, nothing to do on a second run, and exactly the dependants of a changed setting
on a rerun."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import CI_CONFIG, REPO, edited_config, job_stats, snakemake
import yaml


def planned(workdir: Path, config: Path = CI_CONFIG) -> Counter:
    """Jobs a dry run would execute, by rule."""
    res = snakemake(workdir, "-n", "--quiet", "rules", config=config)
    return job_stats(res.stdout + res.stderr)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["experiments"][1].update(stpes=3), "stpes"),
    (lambda c: c["experiments"][1].update(steps="ten"), "ten"),
    (lambda c: c["hear"].update(max_epoch=3), "max_epoch"),
    (lambda c: c["experiments"][2].update(init="mel256_huge"), "experiments[2].init"),
    (lambda c: c["experiments"][4]["targets"].update(clusters_of="nobody"), "clusters_of"),
    (lambda c: c["experiments"][1].update(sources=["podcasts"]), "podcasts"),
])
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path, edit, message):
    res = snakemake(tmp_path / "run", "-n", config=edited_config(tmp_path, edit), check=False)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "run" / "data").exists() and not (tmp_path / "run" / "results").exists()


def test_dag_has_every_stage_sharded(tmp_path):
    jobs = planned(tmp_path)
    n_shards = 3  # one per source in the CI config
    assert jobs["make_demo_corpus"] == 1 and jobs["list_source"] == 3
    assert jobs["resample_shard"] == jobs["tokenize_shard"] == n_shards
    assert jobs["fit_codebooks"] == jobs["estimate_gamma"] == 1
    assert jobs["train_mae"] == 5  # untrained, base, base+ST, large, large+ST
    assert jobs["fit_kmeans"] == 2  # teachers: base (for base+ST) and base+ST (for large+ST)
    assert jobs["dump_teacher_features"] == jobs["assign_clusters"] == 2 * n_shards
    assert jobs["make_demo_task"] == 6
    assert jobs["embed_task"] == jobs["score_task"] == 5 * 6
    assert jobs["make_table"] == 1 and jobs["plot_curves"] == 4


def test_default_config_is_the_demo(tmp_path):
    res = snakemake(tmp_path, "-n", "--quiet", "rules", config=REPO / "config" / "config.yaml")
    assert "train_mae" in res.stdout + res.stderr


# --- a real run (the session's `ci_run`, conftest.py) ----------------------------------------------


@pytest.mark.slow
def test_end_to_end_writes_table_logs_and_benchmarks(ci_run):
    table = pd.read_csv(ci_run / "results" / "table1.csv")
    ours = table[table.source == "ours"]
    assert ours.model.tolist() == ["untrained", "mel256_base", "mel256_base_st", "mel256_large", "mel256_large_st"]
    for col in ["NS", "GC", "SC", "ER", "FSD", "ESC"]:
        assert ours[col].between(0, 100).all() and ours[f"{col}_ci"].ge(0).all()
    assert ours["global"].notna().all()
    paper = table[table.source == "paper"]
    assert paper.label.str.contains("paper").all() and len(paper) == 4  # lines 4, 8, 10, 11
    md = (ci_run / "results" / "table1.md").read_text()
    assert "| Model |" in md and "NS" in md
    # every rule wrote a log; heavy rules a benchmark file
    logs = {p.relative_to(ci_run) for p in ci_run.rglob("logs/**/*.log")}
    for rule in ["make_demo_corpus", "fit_codebooks", "estimate_gamma", "fit_kmeans", "make_table"]:
        assert any(rule in str(p) for p in logs), rule
    for rule in ["list_source", "resample_shard", "tokenize_shard", "train_mae", "dump_teacher_features",
                 "assign_clusters", "make_demo_task", "embed_task", "score_task", "plot_curves"]:
        assert any(f"/{rule}/" in str(p) for p in logs), rule
    assert list((ci_run / "results" / "benchmarks" / "train_mae").glob("*.tsv"))
    # the training curves and the gamma estimate
    assert (ci_run / "results" / "plots" / "mel256_large_st.png").stat().st_size > 1000
    gamma = json.loads((ci_run / "results" / "gamma.json").read_text())["gamma"]
    assert len(gamma) == 8 and abs(sum(gamma) - 1) < 1e-6


@pytest.mark.slow
def test_second_run_has_nothing_to_do(ci_run):
    assert planned(ci_run) == Counter()


@pytest.mark.slow
def test_changing_self_training_steps_reruns_only_its_dependants(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["experiments"][2].update(steps=7))  # mel256_base_st
    jobs = planned(ci_run, cfg)
    assert jobs == Counter({
        "train_mae": 2,  # base+ST, and large+ST which learns base+ST's clusters
        "dump_teacher_features": 3, "fit_kmeans": 1, "assign_clusters": 3,  # base+ST as a teacher
        "embed_task": 12, "score_task": 12, "plot_curves": 2, "make_table": 1, "all": 1,
    })


@pytest.mark.slow
def test_changing_the_downstream_protocol_reruns_only_scoring(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["hear"].update(max_epochs=9))
    assert planned(ci_run, cfg) == Counter({"score_task": 30, "make_table": 1, "all": 1})


@pytest.mark.slow
def test_changing_a_pretraining_setting_keeps_the_data(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["training"].update(lr=5e-4))
    jobs = planned(ci_run, cfg)
    assert jobs["train_mae"] == 5 and "tokenize_shard" not in jobs and "resample_shard" not in jobs
    assert "fit_codebooks" not in jobs and "make_demo_task" not in jobs
