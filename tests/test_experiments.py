"""Experiment rows of a workflow config -> what each training rule gets."""

from pathlib import Path

import pytest
import yaml

from encodecmae.workflow.experiments import ConfigError, resolve, train_args

REPO = Path(__file__).resolve().parents[1]


def config(name="config.yaml"):
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_demo_rows_resolve_with_inheritance():
    exps = resolve(config())
    assert list(exps) == ["untrained", "mel256_base", "mel256_base_st", "mel256_large", "mel256_large_st"]
    st = exps["mel256_large_st"]
    assert st.init == "mel256_large" and st.teacher == "mel256_base_st" and st.targets_kind == "clusters"
    assert st.arch == exps["mel256_large"].arch and st.sources == ["speech", "music", "environment"]
    p = st.train_params()
    assert p["n_streams"] == 1 and p["gamma"] == [1.0] and p["reset_head"] is True and p["steps"] == 100
    assert p["lr"] == 3e-4 and p["d_model"] == 128  # shared training settings and the architecture
    base = exps["mel256_base"].train_params()
    assert "n_streams" not in base and "reset_head" not in base and base["input"] == "mel256"


def test_paper_rows_cover_table1():
    exps = resolve(config("paper.yaml"))
    lines = sorted(e.paper_line for e in exps.values() if e.paper_line)
    assert lines == list(range(1, 13))
    assert exps["ec_base"].input == "encodec" and exps["mel128_base"].input == "mel128"
    assert exps["mel256_base_as"].sources == ["audioset"]
    assert exps["mel256_large_st"].teacher == "mel256_base_st"  # large + ST learns base + ST's clusters
    assert exps["mel256_large"].size == "large" and exps["mel256_small"].size == "small"


def test_run_key_ignores_length_but_not_settings():
    cfg = config()
    a = resolve(cfg)["mel256_base"]
    cfg["experiments"][1]["steps"] = 999
    assert resolve(cfg)["mel256_base"].run_key() == a.run_key()  # more steps continue the same run
    cfg["training"]["lr"] = 5e-4
    assert resolve(cfg)["mel256_base"].run_key() != a.run_key()


def test_train_args_render_kebab_case_flags():
    flags = train_args({"size": "base", "steps": 10, "betas": [0.9, 0.95], "reset_head": True, "x_y": False})
    assert flags == "--size base --steps 10 --betas 0.9 0.95 --reset-head"


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["experiments"].append(dict(c["experiments"][1])), "duplicate"),
    (lambda c: c["experiments"][2].update(init="nope"), r"experiments\[2\]\.init"),
    (lambda c: c["experiments"][1].update(architecture="huge"), r"experiments\[1\]\.architecture"),
    (lambda c: c["experiments"][2].update(size="large"), "keeps its architecture"),
    (lambda c: c["experiments"][1].update(sources=["radio"]), r"experiments\[1\]\.sources"),
])
def test_bad_rows_name_the_key(edit, message):
    cfg = config()
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        resolve(cfg)
