"""Table 1 from score files: scores, the paper's rows and the provenance columns of each row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from encodecmae.provenance import combine_sha256
from encodecmae.report.table import PROVENANCE_COLUMNS, SHORT, make_table
from encodecmae.report.sharing import table_metrics

# config order of the tasks differs from the paper's column order (NS GC SC ER FSD ESC)
TASKS = {"scenes": "ESC", "pitch": "NS", "genre": "GC", "keywords": "SC", "emotion": "ER", "events": "FSD"}


def h(c: str) -> str:
    return c * 64


def model_prov(run_key: str, commit: str = h("a")[:40], init: dict | None = None) -> dict:
    return {"code_commit": commit, "code_dirty": False, "run_key": run_key, "settings": {"steps": 1},
            "settings_sha256": h("5"), "train_data_sha256": h("7"), "encodec_sha256": None,
            "init_from": None if init is None else {"sha256": h("9"), "provenance": init}}


def write_scores(root: Path, model: str, task: str, score: float, prov: dict | None) -> Path:
    f = root / "scores" / model / f"{task}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    result = {"task": task, "score": score, "ci_pm": 0.01}
    if prov is not None:
        result["provenance"] = prov
    f.write_text(json.dumps(result))
    return f


def scores_prov(task: str, model: dict | None, commit: str = h("a")[:40], dirty=False) -> dict:
    return {"code_commit": commit, "code_dirty": dirty, "task_data_sha256": h(str(list(TASKS).index(task))),
            "embedding": {"code_commit": commit, "code_dirty": dirty, "layer": -1,
                          "task_data_sha256": h(str(list(TASKS).index(task)))},
            "model": model}


@pytest.fixture
def tasks(tmp_path):
    dirs = []
    for name, short in TASKS.items():
        d = tmp_path / "tasks" / name
        d.mkdir(parents=True)
        (d / "task_metadata.json").write_text(json.dumps({"task_name": name, "paper_task": short}))
        dirs.append(d)
    return dirs


def test_table_rows_name_their_code_run_and_data(tmp_path, tasks, debug_checkpoint):
    teacher = model_prov("teacher0001", commit=h("c")[:40])
    files = []
    for i, task in enumerate(TASKS):
        # "base": everything from one commit; "st": initialised from a model of another commit,
        # and one task re-scored from a dirty tree of a third; "old": score files without provenance
        files.append(write_scores(tmp_path, "base", task, 0.5, scores_prov(task, model_prov("basekey001"))))
        st_prov = scores_prov(task, model_prov("stkey00001", init=teacher))
        if task == "events":
            st_prov = {**st_prov, "code_commit": h("d")[:40], "code_dirty": True}
        files.append(write_scores(tmp_path, "st", task, 0.6, st_prov))
        files.append(write_scores(tmp_path, "old", task, 0.4, None))
    spec = [{"name": "base", "label": "base", "paper_line": 4}, {"name": "st", "label": "base + ST", "paper_line": None},
            {"name": "old", "label": "old", "paper_line": None}]
    out_csv, out_md = tmp_path / "table1.csv", tmp_path / "table1.md"
    checkpoints = []
    for m in spec:  # results/models/MODEL/model.pt
        checkpoints.append(tmp_path / "models" / m["name"] / "model.pt")
        checkpoints[-1].parent.mkdir(parents=True)
        shutil.copy(debug_checkpoint, checkpoints[-1])
    table = make_table(spec, files, tasks, checkpoints, out_csv, out_md)

    assert list(table.columns[-len(PROVENANCE_COLUMNS):]) == PROVENANCE_COLUMNS
    rows = {(r["model"], r["source"]): r for _, r in table.iterrows()}
    eval_hash = combine_sha256(h(str(list(TASKS).index(t))) for t in sorted(TASKS, key=lambda t: SHORT.index(TASKS[t])))
    base = rows[("base", "ours")]
    assert base["code_commit"] == h("a")[:40] and base["code_dirty"] is False
    assert (base["run_key"], base["settings_sha256"], base["train_data_sha256"]) == ("basekey001", h("5")[:12], h("7")[:12])
    assert base["eval_data_sha256"] == eval_hash[:12]
    st = rows[("st", "ours")]
    # commits in order of the first score file (NS): model, its init, embedding and scoring; then FSD's scoring
    assert st["code_commit"] == f"{h('a')[:40]}+{h('c')[:40]}+{h('d')[:40]}" and st["code_dirty"] is True
    assert st["run_key"] == "stkey00001"
    old = rows[("old", "ours")]
    assert old["code_commit"] == "unknown" and pd.isna(old["code_dirty"])
    assert old["run_key"] == old["train_data_sha256"] == old["eval_data_sha256"] == "unknown"
    paper = rows[("base", "paper")]
    assert all(pd.isna(paper[c]) for c in PROVENANCE_COLUMNS)

    # the CSV reads back with the same values; the metrics JSON for DVC keeps only numbers
    back = pd.read_csv(out_csv, dtype={c: str for c in PROVENANCE_COLUMNS if c != "code_dirty"})
    assert back.loc[0, "code_commit"] == h("a")[:40] and back.loc[0, "eval_data_sha256"] == eval_hash[:12]
    metrics = table_metrics(out_csv)
    assert set(metrics["base"]) == {*SHORT, *(f"{s}_ci" for s in SHORT), "global", "params_m"}

    md = out_md.read_text()
    assert f"- base: {h('a')[:12]}; run basekey001; settings {h('5')[:12]}, train {h('7')[:12]}, eval {eval_hash[:12]}" in md
    assert f"- base + ST: {h('a')[:12]}+{h('c')[:12]}+{h('d')[:12]} (dirty); run stkey00001" in md
    assert "- old: unknown (dirty: unknown); run unknown" in md
    assert max(len(line) for line in md.splitlines() if line.startswith("- ")) < 160


def test_rows_of_one_paper_line_come_together_then_the_paper(tmp_path, tasks, debug_checkpoint):
    """Per paper line: our retrained model, the released weights through our protocol, the paper."""
    from encodecmae.report.table import table_order

    spec = [{"name": "rel_base", "label": "released base", "paper_line": 4, "released": "base"},
            {"name": "small", "label": "small", "paper_line": 1},
            {"name": "base", "label": "base", "paper_line": 4},
            {"name": "ablation", "label": "ablation", "paper_line": None}]
    order = [m.get("name", f"paper {m['paper_line']}") for m in table_order(spec)]
    assert order == ["base", "rel_base", "paper 4", "small", "paper 1", "ablation"]
    files, checkpoints = [], []
    for m in spec:
        for task in TASKS:
            files.append(write_scores(tmp_path, m["name"], task, 0.5, None))
        checkpoints.append(tmp_path / "models" / m["name"] / "model.pt")
        checkpoints[-1].parent.mkdir(parents=True)
        shutil.copy(debug_checkpoint, checkpoints[-1])
    table = make_table(spec, files, tasks, checkpoints, tmp_path / "t.csv", tmp_path / "t.md")
    assert list(zip(table["model"], table["source"])) == [
        ("base", "ours"), ("rel_base", "released"), ("base", "paper"), ("small", "ours"), ("small", "paper"),
        ("ablation", "ours")]
    md = (tmp_path / "t.md").read_text()
    assert "| released base |" in md and "| *paper (4)" in md and "- released base: unknown" in md
    assert set(table_metrics(tmp_path / "t.csv")) == {"base", "rel_base", "small", "ablation"}


def test_hear_preprocess_metadata_names_the_paper_column(tmp_path):
    """hear-preprocess writes task_name, version and mode apart; a 5-h NSynth fills the 50-h
    column and is named as another version."""
    from encodecmae.evaluation.tasks import hear_task_name, task_short_name

    def task(name, meta):
        d = tmp_path / name
        d.mkdir()
        (d / "task_metadata.json").write_text(json.dumps(meta))
        return d

    full = task("esc", {"task_name": "esc50", "version": "v2.0.0", "mode": "full"})
    assert hear_task_name({"task_name": "esc50", "version": "v2.0.0", "mode": "full"}) == "esc50-v2.0.0-full"
    assert task_short_name(full) == ("ESC", None)
    five = task("ns", {"task_name": "nsynth_pitch", "version": "v2.2.3", "mode": "5h"})
    assert task_short_name(five) == ("NS", "nsynth_pitch-v2.2.3-5h")
    assert task_short_name(task("demo", {"task_name": "demo_pitch", "paper_task": "NS"})) == ("NS", None)
    with pytest.raises(ValueError, match="cannot tell which paper task"):
        task_short_name(task("other", {"task_name": "beijing_opera", "version": "v1.0", "mode": "full"}))
