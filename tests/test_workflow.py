"""The Snakemake workflow: config validation and the planned DAG (dry runs, in the default test
run); then, under the `e2e` marker, the session's real run of the CI configuration (conftest.py
`ci_run`): its outputs, nothing to do on a second run, and exactly the dependants of a changed
setting (dry runs on that run's outputs), and a second run on one thread per job of a job of
every rule, which must reproduce every versioned file it makes."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (CI_CONFIG, DATA_JOBS, DATA_TARGETS, ENV, MODEL_JOBS, MODEL_TARGETS, REPO,
                              assert_same_versioned_files, edited_config, job_stats, slurm_can_run, snakemake,
                              snakemake_cmd)


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
    assert jobs["dump_teacher_features"] == 2 and jobs["assign_clusters"] == 2 * n_shards  # per teacher, per shard
    assert jobs["make_demo_task"] == 3  # pitch, emotion, events
    assert jobs["embed_task"] == jobs["score_task"] == 5 * 3
    assert jobs["make_table"] == 1 and jobs["plot_curves"] == 4


def test_paper_configuration_plans_from_an_empty_checkout_without_torch(tmp_path):
    """`snakemake -n` of config/paper.yaml in an empty directory: every job planned (downloads
    included), shards sized by duration, self-training O(shards) per teacher; and loading the
    Snakefile imports no torch (a module named torch that raises is first on the path)."""
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch was imported while planning')\n")
    env = {**ENV, "PYTHONPATH": str(blocker.parent)}
    cmd = snakemake_cmd(tmp_path / "run", "-n", config=REPO / "config" / "paper.yaml")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = job_stats(res.stdout + res.stderr)
    check_paper_data_jobs_fit(job_resources(res.stdout + res.stderr))
    shards = {"audioset": 375, "fma": 75, "librilight6k": 481}  # ceil(hours / shard_hours = 12)
    n = sum(shards.values())
    # teachers: mel256_base and mel256_base_st (all sources), their AudioSet-only pair, the LL6K-only base
    teacher_shards = 2 * n + 2 * shards["audioset"] + shards["librilight6k"]
    parts = -(-2_042_985 // 4000)  # AudioSet's unbalanced list in jobs of 4,000 segments
    assert jobs == Counter({
        "download_segment_list": 1, "download_youtube_part": parts,
        "download_source": 2, "list_source": 3, "resample_shard": n, "index_shards": 3,
        # gamma_q: the released constants (config encodec.gamma), so no estimate_gamma job
        "download_encodec": 1, "tokenize_shard": n, "index_tokens": 3,
        "train_mae": 16, "dump_teacher_features": 5, "fit_kmeans": 5, "assign_clusters": teacher_shards,
        "index_clusters": 3 + 1 + 3 + 1 + 1,
        "download_released": 11, "import_released": 11,  # 10 v2 models and the v1 EC->EC base
        "download_hear_task": 6, "prepare_hear_task": 6,
        "embed_task": 27 * 6, "score_task": 27 * 6, "plot_curves": 16, "make_table": 1,
        "download_librispeech": 3, "download_asr_file": 2, "summarize_data": 1,
        # Table 2: 5 models x (train, dev, test) features, a downstream each, its decoding, the table
        "extract_asr_features": 5 * 3, "train_asr": 5, "decode_asr": 5, "make_table2": 1, "all": 1,
    })
    assert sum(jobs.values()) < 12_000
    # nothing placed by hand: every source and task comes from a download rule
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert not [s for s, spec in paper["corpus"]["sources"].items() if "path" in spec]
    assert not [t for t, spec in paper["tasks"].items() if "path" in spec]
    # downloads run where Snakemake runs (which has the internet), never on a compute node
    rules = "".join(f.read_text() for f in (REPO / "rules").glob("*.smk"))
    local = set(re.findall(r"^rule (\w+):\n(?:    .*\n|\n)*?    localrule: True", rules, re.M))
    assert {r for r in jobs if r.startswith("download_")} <= local, local


def job_resources(output: str) -> list[tuple[str, dict[str, str], dict[str, int]]]:
    """(rule, wildcards, resources) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not head or not res:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        resources = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)(?:,|$)", res.group(1))}
        jobs.append((head.group(1), wildcards, resources))
    return jobs


def check_paper_data_jobs_fit(jobs):
    """Every data job of the paper plan is sized from the measured figures and fits: a time limit
    under the partition maximum (never cut, so never capped) and memory a node's share can give."""
    from encodecmae.workflow.resources import MAX_RUNTIME_MIN, data_runtime

    seen = Counter()
    for rule, wildcards, r in jobs:
        if rule not in ("resample_shard", "tokenize_shard", "dump_teacher_features", "assign_clusters", "embed_task",
                        "prepare_hear_task"):
            continue
        seen[rule] += 1
        assert 0 < r["mem_mb"] <= 16_000, (rule, wildcards, r)
        assert r["runtime"] < MAX_RUNTIME_MIN, (rule, wildcards, r)
        if rule == "tokenize_shard":  # shards of at most 12 h (shard_hours) on 8 threads: under an hour
            assert r["runtime"] <= data_runtime("tokenize", 12.0, 8) <= 60, (wildcards, r)
        if rule == "assign_clusters":
            assert r["runtime"] <= 120, (wildcards, r)
    assert set(seen) == {"resample_shard", "tokenize_shard", "dump_teacher_features", "assign_clusters", "embed_task",
                         "prepare_hear_task"}
    by_task = {w["task"]: r["runtime"] for rule, w, r in jobs if rule == "embed_task" and w["model"] == "mel256_large"}
    assert by_task["fsd50k-v1.0-full"] == max(by_task.values())  # 108 h of audio, the most


def test_default_config_is_the_demo(tmp_path):
    res = snakemake(tmp_path, "-n", "--quiet", "rules", config=REPO / "config" / "config.yaml")
    assert "train_mae" in res.stdout + res.stderr


# --- a real run (the session's `ci_run`, conftest.py) ----------------------------------------------


@pytest.mark.e2e
def test_end_to_end_writes_table_logs_and_benchmarks(ci_run):
    table = pd.read_csv(ci_run / "results" / "table1.csv")
    ours = table[table.source == "ours"]
    assert ours.model.tolist() == ["untrained", "mel256_base", "mel256_base_st", "mel256_large", "mel256_large_st"]
    for col in ["NS", "ER", "FSD"]:  # the configuration's three tasks (pitch, emotion, events)
        assert ours[col].between(0, 100).all() and ours[f"{col}_ci"].ge(0).all()
    # the other three columns are empty, and so is the Global score, which needs all six
    assert ours[["GC", "SC", "ESC", "global"]].isna().all().all()
    paper = table[table.source == "paper"]
    assert paper.label.str.contains("paper").all() and len(paper) == 4  # lines 4, 8, 10, 11
    md = (ci_run / "results" / "table1.md").read_text()
    assert "| Model |" in md and "NS" in md
    # every row of ours names its code commit, training run and data (the paper's rows nothing)
    from encodecmae.provenance import code_state
    from encodecmae.report.table import PROVENANCE_COLUMNS

    prov = pd.read_csv(ci_run / "results" / "table1.csv", dtype=str, keep_default_na=False)
    ours_prov = prov[prov.source == "ours"].set_index("model")
    assert (ours_prov.code_commit == code_state()["code_commit"]).all()
    assert (prov[prov.source == "paper"][PROVENANCE_COLUMNS] == "").all().all()
    # the run key leaves out the length: the untrained row is step 0 of the base run; the settings differ
    assert ours_prov.run_key["untrained"] == ours_prov.run_key["mel256_base"] and ours_prov.run_key.nunique() == 4
    assert ours_prov.settings_sha256.nunique() == 5 and ours_prov.eval_data_sha256.nunique() == 1
    train_data = ours_prov.train_data_sha256  # the EnCodec-target models share their data; ST models not
    assert train_data["untrained"] == train_data["mel256_base"] == train_data["mel256_large"]
    assert len({train_data["mel256_base"], train_data["mel256_base_st"], train_data["mel256_large_st"]}) == 3
    assert "Provenance" in md
    # what data the run got: clips and hours per source as the shards hold them, clips per task split
    summary = pd.read_csv(ci_run / "results" / "data_summary.csv").set_index("source")
    assert sorted(summary.index) == ["environment", "music", "speech"]
    for source, row in summary.iterrows():
        manifests = [pd.read_csv(m) for m in (ci_run / "data" / "shards" / source).glob("*/manifest.csv")]
        assert row["clips"] == sum(len(m) for m in manifests) > 0
        assert row["hours"] == pytest.approx(sum(m.n_samples.sum() for m in manifests) / 24000 / 3600)
    data_md = (ci_run / "results" / "data_summary.md").read_text()
    assert "| speech |" in data_md and "## Downstream tasks" in data_md and "| pitch |" in data_md
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


@pytest.mark.e2e
def test_second_run_has_nothing_to_do(ci_run):
    assert planned(ci_run) == Counter()


@pytest.mark.e2e
def test_changing_self_training_steps_reruns_only_its_dependants(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["experiments"][2].update(steps=7))  # mel256_base_st
    jobs = planned(ci_run, cfg)
    assert jobs == Counter({
        "train_mae": 2,  # base+ST, and large+ST which learns base+ST's clusters
        "dump_teacher_features": 1, "fit_kmeans": 1, "assign_clusters": 3,  # base+ST as a teacher,
        "index_clusters": 3,  # and the index of its clusters per source
        "embed_task": 6, "score_task": 6, "plot_curves": 2, "make_table": 1, "all": 1,
        # base+ST is a Table 2 model of the CI configuration: its ASR evaluation reruns
        "extract_asr_features": 3, "train_asr": 1, "decode_asr": 1, "make_table2": 1,
    })
    # base+ST continues its own run (more steps); large+ST's teacher changed, so it starts a new
    # run instead of resuming checkpoints trained on the old clusters
    res = snakemake(ci_run, "-n", "-p", config=cfg)
    out = res.stdout + res.stderr
    ckpt = dict(re.findall(r"--ckpt-dir \S+/models/(\w+)/checkpoints/(\w+)", out))
    done = {m: [d.name for d in (ci_run / "results" / "models" / m / "checkpoints").iterdir()]
            for m in ("mel256_base_st", "mel256_large_st")}
    assert ckpt["mel256_base_st"] in done["mel256_base_st"]
    assert ckpt["mel256_large_st"] not in done["mel256_large_st"]


@pytest.mark.e2e
def test_changing_the_downstream_protocol_reruns_only_scoring(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["hear"].update(max_epochs=9))
    assert planned(ci_run, cfg) == Counter({"score_task": 15, "make_table": 1, "all": 1})


@pytest.mark.e2e
def test_changing_a_pretraining_setting_keeps_the_data(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["training"].update(lr=5e-4))
    jobs = planned(ci_run, cfg)
    assert jobs["train_mae"] == 5 and "tokenize_shard" not in jobs and "resample_shard" not in jobs
    assert "fit_codebooks" not in jobs and "make_demo_task" not in jobs


@pytest.mark.e2e
def test_the_ci_run_has_table2(ci_run):
    """The CI configuration's ASR evaluation ran with the rest: demo speech with an LM built from
    its training transcripts, every layer's features of each model (temporary: gone once used), a
    BiLSTM-CTC downstream each, decoding with and without the LM, and Table 2 beside the paper's
    rows."""
    table = pd.read_csv(ci_run / "results" / "table2.csv")
    ours = table[table.source == "ours"].set_index("model")
    assert list(ours.index) == ["untrained", "mel256_base_st"]
    assert ours[["wer_no_lm", "wer_with_lm", "cer_no_lm"]].ge(0).all().all()
    paper = table[table.source == "paper"]
    assert "paper: Mel256->EC (Base+ST)" in paper.label.tolist() and len(paper) == 12  # all of the paper's rows
    assert table.label.tolist().index("paper: Mel256->EC (Base+ST)") == 2  # right after the row reproducing it
    for model in ours.index:
        scores = json.loads((ci_run / "results" / "asr" / model / "scores.json").read_text())
        assert scores["n_utterances"] >= 20 and scores["cer_all_blank"] == 1.0
        assert scores["settings"] == {"beam": 5, "beam_threshold": 25.0, "lm_weight": 2.0, "word_score": -1.0,
                                      "unk_score": "-inf", "sil_score": 0.0}
        assert scores["downstream"] == {"lstm_layers": 1, "hidden": 16, "proj": 16, "steps": 30, "batch_size": 4,
                                        "lr": 1e-4}
        assert (ci_run / "results" / "logs" / "train_asr" / f"{model}.log").exists()
    md = (ci_run / "results" / "table2.md").read_text()
    assert "| Model | WER w/o LM | WER w/ LM |" in md and "a 1-layer BiLSTM-CTC (16 units per direction" in md
    assert not (ci_run / "data" / "asr_features").exists() or not any((ci_run / "data" / "asr_features").rglob("*.npy"))


@pytest.mark.e2e
def test_adding_a_model_to_table2_runs_only_its_asr_jobs(ci_run, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["asr"]["models"].update(mel256_large_st="Mel256->EC (Large+ST)"))
    assert planned(ci_run, cfg) == Counter({"extract_asr_features": 3, "train_asr": 1, "decode_asr": 1,
                                            "make_table2": 1, "all": 1})
    # a setting of the downstream retrains and decodes each model, extracting its features again
    # (they were temporary)
    cfg = edited_config(tmp_path, lambda c: c["asr"].update(hidden=12))
    assert planned(ci_run, cfg) == Counter({"extract_asr_features": 2 * 3, "train_asr": 2, "decode_asr": 2,
                                            "make_table2": 1, "all": 1})


# --- determinism: a second run on fewer cores makes the same artifacts, byte for byte ------------


@pytest.mark.e2e
def test_a_run_on_one_core_reproduces_every_versioned_artifact(ci_run, tmp_path):
    """The session's run used --cores 2 (jobs with 2 threads where a rule asks for them); this one
    gets one core, so every multi-threaded job runs on one thread, and builds the outputs that
    take a job of every rule but the report tables (DATA_TARGETS, MODEL_TARGETS). Every artifact
    DVC versions that it makes (corpus, shards, codebooks, tokens, gamma, models and checkpoints,
    k-means and clusters, a task, embeddings, scores, plots, ASR results) must come out identical,
    so that a fresh clone's demo run leaves `dvc status` clean (each stage's thread-invariance on
    its own: tests/test_determinism.py). Where the SLURM test cluster can run, its run
    (tests/test_slurm.py) gives every job one thread and makes this comparison, so it is not made
    twice."""
    if slurm_can_run():
        pytest.skip("checked by the SLURM run on one thread per job (tests/test_slurm.py)")
    work = tmp_path / "one_core"
    res = snakemake(work, "--cores", "1", *DATA_TARGETS, *MODEL_TARGETS)
    # in one run, the models' training also tokenises the two sources the data stage leaves out
    other_tokens = Counter({"tokenize_shard": 2, "index_tokens": 2})
    assert job_stats(res.stdout + res.stderr) == DATA_JOBS + MODEL_JOBS + other_tokens
    assert_same_versioned_files(work, ci_run, built=DATA_TARGETS + MODEL_TARGETS)
