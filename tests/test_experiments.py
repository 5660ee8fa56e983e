"""Experiment rows of a workflow config -> what each training rule gets."""

import copy
from pathlib import Path

import pytest
import yaml

from encodecmae.training.config import to_args
from encodecmae.workflow.experiments import ConfigError, resolve, run_keys, source_shards

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
    lines = sorted(e.paper_line for e in exps.values() if e.paper_line and not e.released)
    assert lines == list(range(1, 13))
    # the released models sit on their lines, beside the retrained ones (tests/test_released_config.py)
    released = {e.released: e.paper_line for e in exps.values() if e.released}
    assert {released[n] for n in ("mel256-ec-small", "mel256-ec-base", "mel256-ec-base_st", "mel256-ec-large",
                                  "mel256-ec-large_st")} == {1, 4, 8, 10, 11}
    assert exps["v2_large_st"].size == "large" and exps["v2_base_st"].steps == 0
    assert exps["ec_base"].input == "encodec" and exps["mel128_base"].input == "mel128"
    assert exps["mel256_base_as"].sources == ["audioset"]
    assert exps["mel256_large_st"].teacher == "mel256_base_st"  # large + ST learns base + ST's clusters
    assert exps["mel256_large"].size == "large" and exps["mel256_small"].size == "small"


def test_paper_configuration_trains_the_released_architecture_with_two_ablations():
    """The authors' v2 code: a shared feed-forward block, zeros at masked positions, a positional
    scale on the encoder input and another in the decoder, the 318-sample mel framing, mask spans
    ending inside the clip, batch-normalised loss."""
    exps = resolve(config("paper.yaml"))
    released = dict(feedforward="shared", mask_token="zeros", positions="per_stack", mel_framing="released",
                    mask_starts="released", loss_norm="batch")
    trained = {n: e for n, e in exps.items() if not e.released}
    for name, e in trained.items():
        differ = {k for k, v in released.items() if e.train[k] != v}
        assert differ == {"aligned_mel": {"mel_framing"}, "ff_per_layer": {"feedforward"}}.get(
            name.removeprefix("mel256_base_"), set()), name
    # a student keeps the architecture of the model it starts from, whatever the training section says
    cfg = config("paper.yaml")
    cfg["experiments"].insert(1, {"name": "per_layer", "size": "base", "steps": 10, "train": {"feedforward": "per_layer"}})
    cfg["experiments"].insert(2, {"name": "per_layer_st", "init": "per_layer", "targets": {"clusters_of": "per_layer"},
                                  "steps": 5})
    assert resolve(cfg)["per_layer_st"].train["feedforward"] == "per_layer"
    assert "--feedforward per_layer" in to_args(resolve(cfg)["per_layer_st"].train_params())


def keys(cfg: dict) -> dict[str, str]:
    return run_keys(cfg, resolve(cfg), source_shards(cfg["corpus"]))


def test_run_key_ignores_length_but_not_settings():
    cfg = config()
    a = keys(cfg)
    assert a["untrained"] == a["mel256_base"]  # the untrained row is step 0 of the base run
    cfg["experiments"][1]["steps"] = 999
    assert keys(cfg)["mel256_base"] == a["mel256_base"]  # more steps continue the same run
    cfg["training"]["lr"] = 5e-4
    assert keys(cfg)["mel256_base"] != a["mel256_base"]


def test_run_key_covers_what_the_resume_check_compares():
    """A changed shard list, gamma's inputs or a teacher (retrained or trained longer) make a new
    run, not a resume error or a resumed stale run; settings that change neither keep the key."""
    cfg = config()
    a = keys(cfg)
    assert len({a[n] for n in ("mel256_base", "mel256_base_st", "mel256_large", "mel256_large_st")}) == 4

    more_shards = copy.deepcopy(cfg)
    more_shards["corpus"]["sources"]["speech"]["n_shards"] += 1
    b = keys(more_shards)
    assert all(b[n] != a[n] for n in a)  # every row trains on speech

    gamma_inputs = copy.deepcopy(cfg)
    gamma_inputs["encodec"]["gamma_clips"] += 1
    b = keys(gamma_inputs)
    assert b["mel256_base"] != a["mel256_base"] and b["mel256_large"] != a["mel256_large"]

    longer_teacher = copy.deepcopy(cfg)
    next(e for e in longer_teacher["experiments"] if e["name"] == "mel256_base")["steps"] += 10
    b = keys(longer_teacher)
    assert b["mel256_base"] == a["mel256_base"]  # the teacher itself continues its run ...
    assert b["mel256_base_st"] != a["mel256_base_st"]  # ... but its student (init and teacher) starts again
    assert b["mel256_large_st"] != a["mel256_large_st"]  # and so does the student of that student
    assert b["mel256_large"] == a["mel256_large"]  # a row that does not depend on it keeps its run

    given_gamma = copy.deepcopy(cfg)  # weights given instead of estimated: new runs, except for students
    given_gamma["encodec"]["gamma"] = [0.125] * 8
    b = keys(given_gamma)
    assert b["mel256_base"] != a["mel256_base"] and b["mel256_large"] != a["mel256_large"]
    other_weights = copy.deepcopy(given_gamma)
    other_weights["encodec"]["gamma"][0] = 0.5
    assert keys(other_weights)["mel256_base"] != b["mel256_base"]
    given_gamma["encodec"]["gamma_clips"] += 1  # not an input of a given gamma
    assert keys(given_gamma) == b
    explicit = copy.deepcopy(cfg)  # "estimate", written or the default, keeps the runs trained before it existed
    explicit["encodec"]["gamma"] = "estimate"
    assert keys(explicit) == a

    retrained_teacher = copy.deepcopy(cfg)
    retrained_teacher["selftraining"]["k"] += 1
    b = keys(retrained_teacher)
    assert b["mel256_base_st"] != a["mel256_base_st"] and b["mel256_base"] == a["mel256_base"]

    for section, key in (("encodec", "batch_size"), ("hear", "max_epochs")):  # execution and evaluation only
        other = copy.deepcopy(cfg)
        other.setdefault(section, {})[key] = 3
        assert keys(other) == a


def test_train_args_render_kebab_case_flags():
    flags = to_args({"size": "base", "steps": 10, "betas": [0.9, 0.95], "reset_head": True, "x_y": False})
    assert flags == "--size base --steps 10 --betas 0.9 0.95 --reset-head"


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["experiments"].append(dict(c["experiments"][1])), "duplicate"),
    (lambda c: c["experiments"][2].update(init="nope"), r"experiments\[2\]\.init"),
    (lambda c: c["experiments"][1].update(architecture="huge"), r"experiments\[1\]\.architecture"),
    (lambda c: c["experiments"][2].update(size="large"), "keeps its architecture"),
    (lambda c: c["experiments"][1].update(sources=["radio"]), r"experiments\[1\]\.sources"),
    (lambda c: c["experiments"][2].update(train={"feedforward": "shared"}), r"experiments\[2\]\.train: feedforward"),
    (lambda c: c["experiments"][1].pop("steps"), r"experiments\[1\]\.steps: missing"),
    (lambda c: c["experiments"].append({"name": "rel", "released": "base"}), r"released: 'base' is not defined"),
    (lambda c: (c.update(released={"base": {"url": "x"}}),
                c["experiments"].insert(1, {"name": "rel", "released": "base", "steps": 5})), "remove steps"),
    (lambda c: (c.update(released={"base": {"url": "x"}}), c["experiments"].insert(1, {"name": "rel", "released": "base"}),
                c["experiments"][3].update(init="rel")), r"init: 'rel' is a released model"),
])
def test_bad_rows_name_the_key(edit, message):
    cfg = config()
    edit(cfg)
    with pytest.raises(ConfigError, match=message):
        resolve(cfg)


def test_training_settings_are_defined_once():
    """The schema's training section, an experiment row's train keys and the train command's
    flags all come from TrainConfig, with the same defaults."""
    import argparse

    from encodecmae.model.config import INPUTS, SIZES
    from encodecmae.training.config import TrainConfig, add_arguments, defaults, training_keys

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    training = schema["properties"]["training"]["properties"]
    assert set(training) == set(training_keys())
    from dataclasses import fields

    choices = {f.name: f.metadata["choices"] for f in fields(TrainConfig)}
    for key, spec in training.items():
        default = defaults()[key]
        assert spec["default"] == (list(default) if isinstance(default, tuple) else default), key
        assert tuple(spec.get("enum", ())) == tuple(choices[key] or ()), key
    row = schema["properties"]["experiments"]["items"]["properties"]
    assert sorted(row["train"]["propertyNames"]["enum"]) == sorted(training_keys())
    assert row["size"]["enum"] == list(SIZES) and row["input"]["enum"] == list(INPUTS)
    # every field is a flag of the same name with the same default
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(flags) == set(TrainConfig.__dataclass_fields__)
    for name, default in defaults().items():
        got = flags[name].default
        assert (got if got is not None else []) == (list(default) if isinstance(default, tuple) else default) \
            or got == default, name
    assert flags["size"].choices == tuple(SIZES) and flags["batch_size"].option_strings == ["--batch-size"]


def test_experiment_rows_become_train_flags():
    exps = resolve(config())
    base = to_args(exps["mel256_base"].train_params())
    # the demo's encodec.codebook_size is the base model's classes; the students learn k clusters
    assert "--n-classes 256" in base and "--lr 0.0003" in base and "--d-model 96" in base
    assert "--n-classes 64" in to_args(exps["mel256_base_st"].train_params())


def test_asr_models_must_be_experiments():
    cfg = config("paper.yaml")
    assert list(cfg["asr"]["models"]) == ["mel256_base", "mel256_base_ll6k", "mel256_base_st", "mel256_base_ll6k_st",
                                          "mel256_large_st"]
    resolve(cfg)
    cfg["asr"]["models"]["mel256_huge"] = None
    with pytest.raises(ConfigError, match=r"asr.models: \['mel256_huge'\] are not experiments"):
        resolve(cfg)


def test_a_released_rows_input_follows_its_release():
    from encodecmae.workflow.experiments import released_input

    v2 = "https://huggingface.co/lpepino/encodecmae-v2/resolve/main/{}.pt"
    assert released_input("mel256-ec-base", {"url": v2.format("mel256-ec-base")}) == "mel256"
    assert released_input("ec-ec-base", {"url": v2.format("ec-ec-base")}) == "encodec"
    assert released_input("mel128-ec-base", {"url": v2.format("mel128-ec-base")}) == "mel128"
    # v1: every model is EC->EC
    assert released_input("encodecmae-base",
                          {"url": "https://huggingface.co/lpepino/encodecmae-base/resolve/main/model.pt"}) == "encodec"
