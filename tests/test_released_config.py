"""config/released.yaml (the authors' released models through our protocol, training nothing), the
released rows of config/paper.yaml, and gamma_q as configured: estimated, or the released constants."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter

import pytest
import yaml
from workflow_helpers import ENV, REPO, edited_config, job_stats, snakemake, snakemake_cmd

from encodecmae.targets.gamma import compare_gamma
from encodecmae.workflow.config_check import check_config
from encodecmae.workflow.experiments import ConfigError, resolve

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# configs/models/encodecmae.gin of the authors' v2 code (QUANTIZER_WEIGHTS)
RELEASED_GAMMA = [0.22407463, 0.1759858, 0.14499009, 0.12150037, 0.10315603, 0.08831368, 0.07608274, 0.06589669]
V2_URL = re.compile(r"https://huggingface\.co/lpepino/encodecmae-v2/resolve/main/(?P<name>[\w.-]+)\.pt")
V1_URL = re.compile(r"https://huggingface\.co/lpepino/encodecmae-(small|base|base-st|large|large-st)/resolve/main/model\.pt")


def load(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    return check_config(cfg, SCHEMA, source=name)


def test_released_configuration_plans_from_an_empty_checkout_without_torch(tmp_path):
    """`snakemake -n` of config/released.yaml in an empty directory: the checkpoints, HEAR tasks and
    LibriSpeech downloaded, every released model converted, embedded, scored and in both tables;
    no corpus, tokens, gamma or training job; loading the Snakefile imports no torch."""
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch was imported while planning')\n")
    env = {**ENV, "PYTHONPATH": str(blocker.parent)}
    cmd = snakemake_cmd(tmp_path / "run", "-n", "-p", config=REPO / "config" / "released.yaml")
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    print(f"released.yaml dry run: {time.perf_counter() - start:.1f} s")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    cfg = load("released.yaml")
    n_models, n_tasks, n_asr = len(cfg["experiments"]), len(cfg["tasks"]), len(cfg["asr"]["models"])
    assert n_models == 10 and n_tasks == 6 and n_asr == 4
    assert job_stats(out) == Counter({
        "download_released": n_models, "import_released": n_models,
        "download_hear_task": n_tasks, "prepare_hear_task": n_tasks,
        "embed_task": n_models * n_tasks, "score_task": n_models * n_tasks, "make_table": 1,
        "download_librispeech": 3, "download_asr_file": 2,
        "extract_asr_features": 3 * n_asr, "train_asr": n_asr, "decode_asr": n_asr, "make_table2": 1, "all": 1,
    })
    # both tables, each with every released row it names
    assert "results/table1.md" in out and "results/table2.md" in out
    table1 = re.search(r"make-table --spec '(\[.*?\])'", out).group(1)
    assert all(f'"name": "{e["name"]}"' in table1 for e in cfg["experiments"])
    assert re.findall(r"make-table2 --spec '(\[.*?\])'", out)[0].count('"name"') == n_asr
    # the v2 checkpoints, from the hub repository the paper's models are in
    downloads = re.findall(r"encodecmae download --url (\S+) --checksum - --out data/released/(\S+)/model\.pt", out)
    assert sorted(downloads) == sorted((spec["url"], name) for name, spec in cfg["released"].items())
    assert all(V2_URL.fullmatch(url).group("name") == name for url, name in downloads)


def test_released_configuration_trains_nothing_and_matches_the_paper_rows():
    released, paper = load("released.yaml"), load("paper.yaml")
    assert released["corpus"]["sources"] == {}
    exps = resolve(released)
    assert all(e.released and e.steps == 0 for e in exps.values())
    # the same rows (names, labels, lines, files) as config/paper.yaml's v2 rows, and its tasks and ASR data
    paper_v2 = [r for r in paper["experiments"] if r.get("released") and V2_URL.fullmatch(paper["released"][r["released"]]["url"])]
    assert released["experiments"] == paper_v2
    assert released["released"] == {r["released"]: paper["released"][r["released"]] for r in paper_v2}
    assert released["tasks"] == paper["tasks"]
    assert {k: v for k, v in released["asr"].items() if k != "models"} == \
        {k: v for k, v in paper["asr"].items() if k != "models"}
    assert released["asr"]["models"] == {"v2_base": "Mel256->EC (Base)", "v2_base_ll6k": "Mel256->EC (Base) LL6K only",
                                         "v2_base_st": "Mel256->EC (Base+ST)", "v2_large_st": "Mel256->EC (Large+ST)"}


def test_paper_released_rows_are_v2_on_their_lines_and_v1_labelled_ec_ec():
    cfg = load("paper.yaml")
    exps = resolve(cfg)
    rows = {e.released: e for e in exps.values() if e.released}
    v2 = {name: e.paper_line for name, e in rows.items() if V2_URL.fullmatch(cfg["released"][name]["url"])}
    assert v2 == {"mel256-ec-small": 1, "ec-ec-base": 2, "mel256-ec-base": 4, "mel256-ec-base-as": 5,
                  "mel256-ec-base-fma": 6, "mel256-ec-base-ll": 7, "mel256-ec-base_st": 8,
                  "mel256-ec-base_st-as-nopn": 9, "mel256-ec-large": 10, "mel256-ec-large_st": 11}
    for name in v2:  # the URL names the file {name}.pt of lpepino/encodecmae-v2
        assert V2_URL.fullmatch(cfg["released"][name]["url"]).group("name") == name
        assert "v2" in rows[name].label and name in rows[name].label
    sizes = {name: e.size for name, e in rows.items()}
    assert sizes["mel256-ec-small"] == "small" and sizes["mel256-ec-large_st"] == "large"
    assert sizes["mel256-ec-base_st-as-nopn"] == sizes["ec-ec-base"] == "base"
    # the first version's files are EC->EC models: on the EC->EC line (2) or none, and said so
    v1 = {name: e for name, e in rows.items() if V1_URL.fullmatch(cfg["released"][name]["url"])}
    assert list(v1) == ["encodecmae-base"]
    assert all(e.paper_line in (None, 2) and "v1 EC->EC" in e.label for e in v1.values())
    assert set(rows) == set(v2) | set(v1) == set(cfg["released"])
    # sha256: null (no digest was at hand offline), the reason beside it in the config
    assert all(spec["sha256"] is None for spec in cfg["released"].values())
    assert "sha256: null - no digest" in (REPO / "config" / "paper.yaml").read_text()


# --- gamma_q -----------------------------------------------------------------------------------


def test_paper_configuration_trains_with_the_released_gamma():
    exps = resolve(load("paper.yaml"))
    trained = {n: e for n, e in exps.items() if not e.released}
    assert not any(e.estimates_gamma for e in exps.values())
    for e in trained.values():
        want = [1.0] if e.teacher else RELEASED_GAMMA  # cluster targets: one stream, weight 1
        assert e.train_params()["gamma"] == want, e.name
    demo = resolve(load("config.yaml"))
    assert [n for n, e in demo.items() if e.estimates_gamma] == ["untrained", "mel256_base", "mel256_large"]
    assert "gamma" not in demo["mel256_base"].train_params() and demo["mel256_base_st"].train_params()["gamma"] == [1.0]


@pytest.mark.parametrize("gamma,message", [
    ([0.5, 0.5], r"encodec\.gamma: 2 weights, but encodec\.n_q is 8"),
    ("estimated", r"encodec\.gamma: 'estimated' is not one of estimate"),
    ([0.5] * 7 + [-0.1], r"encodec\.gamma\[7\]: -0\.1 is out of range"),
])
def test_bad_gamma_names_the_key(gamma, message):
    cfg = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    cfg["encodec"]["gamma"] = gamma
    with pytest.raises(ValueError, match=message):
        resolve(check_config(cfg, SCHEMA))


def test_given_gamma_skips_the_estimate_and_reaches_training(tmp_path):
    """The plan of the CI configuration with encodec.gamma a list: no estimate_gamma job, and the
    training rows get the weights as flags (no gamma.json input); with "estimate" (the default)
    the estimate job is planned and every EnCodec-target row reads its file. The estimate stays
    available with a list: asked for, it runs and compares itself with the list."""
    weights = [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05]
    given = edited_config(tmp_path, lambda c: c["encodec"].update(gamma=weights))
    res = snakemake(tmp_path / "given", "-n", "-p", "--forceall", config=given)
    jobs = job_stats(res.stdout + res.stderr)
    assert "estimate_gamma" not in jobs and jobs["train_mae"] == 5
    train = re.findall(r"^.*train --shards .*$", res.stdout, re.M)
    assert len(train) == 5 and not [c for c in train if "--gamma-file" in c]
    flags = Counter(re.search(r"--gamma ([\d.]+(?: [\d.]+)*)", c).group(1) for c in train)
    assert flags == Counter({" ".join(map(str, weights)): 3, "1.0": 2})  # untrained, base, large; 2 students

    res = snakemake(tmp_path / "estimate", "-n", "-p", "--forceall")
    jobs = job_stats(res.stdout + res.stderr)
    assert jobs["estimate_gamma"] == 1
    train = re.findall(r"^.*train --shards .*$", res.stdout, re.M)
    assert sum("--gamma-file results/gamma.json" in c for c in train) == 3
    assert sum("--gamma 1.0" in c for c in train) == 2

    res = snakemake(tmp_path / "given", "-n", "-p", "results/gamma.json", config=given)
    assert job_stats(res.stdout + res.stderr)["estimate_gamma"] == 1
    assert f"--compare-with {' '.join(map(str, weights))}" in res.stdout


def test_estimate_is_compared_with_the_given_weights():
    out = compare_gamma([0.25, 0.75], [0.2, 0.8])
    assert out["given"] == [0.2, 0.8] and out["difference"] == pytest.approx([0.05, -0.05])
    assert out["max_abs_difference"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="3 given weights for 2 codebooks"):
        compare_gamma([0.5, 0.5], [0.2, 0.3, 0.5])


def test_trained_rows_need_a_corpus():
    cfg = load("released.yaml")
    cfg["experiments"].append({"name": "mine", "steps": 10})
    with pytest.raises(ConfigError, match=r"experiments\[10\]: 'mine' trains on no corpus source"):
        resolve(cfg)


def test_table2_marks_released_rows():
    from encodecmae.report.table2 import build_table2, to_markdown

    spec = [{"name": "v2_base_st", "label": "Released v2 Mel256->EC (Base + ST)", "paper_row": "Mel256->EC (Base+ST)",
             "released": "mel256-ec-base_st"}]
    scores = {"v2_base_st": {"wer_greedy": 0.1441, "wer_lm": 0.099, "cer_greedy": 0.05}}
    table = build_table2(spec, scores, {"v2_base_st": 86.6})
    assert table.source.tolist()[:2] == ["released", "paper"] and table.wer_no_lm.tolist()[:2] == [14.41, 14.41]
    assert "No model of ours" not in to_markdown(table, "LibriSpeech test-clean")
