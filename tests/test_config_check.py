"""Config errors in a few lines: the key path, what is wrong, what is allowed (not the schema)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from workflow_helpers import CI_CONFIG, REPO, edited_config, snakemake

from encodecmae.workflow.config_check import ConfigError, check_config, format_path

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CI = yaml.safe_load(CI_CONFIG.read_text())


def problem(edit) -> str:
    cfg = copy.deepcopy(CI)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        check_config(cfg, SCHEMA)
    return str(info.value)


def test_unknown_key_names_the_path_and_the_allowed_keys():
    msg = problem(lambda c: c["experiments"][2].update(stepz=3))
    assert msg.splitlines() == [
        "invalid configuration (1 problem):",
        "  experiments[2].stepz: unknown key (did you mean 'steps'?)",
        "      allowed keys in experiments[2]: name, label, paper_line, input, size, architecture, sources, "
        "steps, init, targets, train, released",
    ]


def test_misspelled_required_key_is_one_problem():
    msg = problem(lambda c: c["experiments"][2].update(stepz=c["experiments"][2].pop("steps")))
    assert msg.splitlines()[:2] == [
        "invalid configuration (1 problem):",
        "  experiments[2].stepz: unknown key (did you mean 'steps'? it is required)",
    ]
    # a required key missing without a look-alike is its own problem, with its description
    msg = problem(lambda c: c["experiments"][2].pop("steps"))
    assert msg.splitlines()[1:] == ["  experiments[2].steps: missing (required)",
                                    "      Training steps (0 - an untrained model). Required unless released."]


def test_unknown_key_at_the_top_level_and_in_a_named_entry():
    assert "foo: unknown key\n      allowed keys in top level: data_dir, results_dir, corpus," in \
        problem(lambda c: c.update(foo=1))
    msg = problem(lambda c: c["corpus"]["sources"]["speech"].update(n_shard=1))
    assert "corpus.sources.speech.n_shard: unknown key (did you mean 'n_shards'?)" in msg
    assert "allowed keys in corpus.sources.speech: demo, path, archives, youtube, n_shards" in msg


def test_unknown_training_override_lists_the_allowed_names():
    msg = problem(lambda c: c["experiments"][1].update(train={"lrr": 1e-3}))
    assert "experiments[1].train.lrr: unknown key (did you mean 'lr'?)" in msg
    assert "allowed keys in experiments[1].train: batch_size, grad_accum, lr," in msg


def test_wrong_type_says_both_types_and_the_description():
    msg = problem(lambda c: c["training"].update(batch_size="four"))
    assert msg.splitlines()[1:] == [
        "  training.batch_size: wrong type: 'four' is a string, expected an integer",
        "      Global batch (paper - 128).",
    ]
    assert "expected a string or null" in problem(lambda c: c["tasks"]["pitch"].update(sha256=3))


def test_bad_enum_value_lists_the_choices_and_the_description():
    msg = problem(lambda c: c["encodec"].update(weights="fited"))
    lines = msg.splitlines()
    assert lines[1] == "  encodec.weights: 'fited' is not one of pretrained, fitted (did you mean 'fitted'?)"
    assert lines[2].startswith("      pretrained - download the official 24 kHz checkpoint")
    assert len(lines) == 3


def test_range_pattern_and_size_problems():
    assert "training.batch_size: 0 is out of range (must be >= 1)" in problem(lambda c: c["training"].update(batch_size=0))
    assert "experiments[0].name: 'Bad-Name' does not match ^[a-z0-9][a-z0-9_]*$\n      Model name, used in paths." in \
        problem(lambda c: c["experiments"][0].update(name="Bad-Name"))
    assert "training.betas: needs at least 2 entries" in problem(lambda c: c["training"].update(betas=[0.9]))
    assert "tasks: missing (required)\n      HEAR-layout downstream tasks by name." in problem(lambda c: c.pop("tasks"))


def test_alternatives_are_judged_by_the_value_type():
    # targets is "encodec" or {clusters_of: NAME}
    assert "experiments[4].targets.clusters_of: wrong type: 3 is an integer, expected a string" in \
        problem(lambda c: c["experiments"][4].update(targets={"clusters_of": 3}))
    assert "experiments[4].targets: 'encodek' is not one of encodec (did you mean 'encodec'?)" in \
        problem(lambda c: c["experiments"][4].update(targets="encodek"))
    msg = problem(lambda c: c["experiments"][4].update(targets=5))
    assert "experiments[4].targets: wrong type: 5 is an integer, expected a string or object" in msg
    assert "encodec (default) or {clusters_of - NAME}" in msg


def test_several_problems_each_in_two_lines_no_schema_dump():
    def edit(c):
        c["experiments"][2]["stepz"] = 3
        c["training"]["batch_size"] = "four"
        c["encodec"]["weights"] = "fited"

    msg = problem(edit)
    assert msg.startswith("invalid configuration (3 problems):")
    assert len(msg.splitlines()) == 7
    assert "additionalProperties" not in msg and "'type':" not in msg


def test_many_problems_are_counted_not_listed():
    def edit(c):
        for i in range(8):
            c["hear"][f"typo{i}"] = 1

    lines = problem(edit).splitlines()
    assert lines[0] == "invalid configuration (8 problems):"
    assert lines[-1] == "  ... and 3 more" and len(lines) == 1 + 5 * 2 + 1


def test_defaults_are_filled_in_as_snakemake_validate_does():
    from snakemake.utils import validate

    for name in ("config.yaml", "ci.yaml", "paper.yaml", "released.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        ours, theirs = copy.deepcopy(cfg), copy.deepcopy(cfg)
        assert check_config(ours, SCHEMA) is ours
        validate(theirs, str(SCHEMA))
        assert ours == theirs, name
    cfg = copy.deepcopy(CI)
    check_config(cfg, SCHEMA)
    assert cfg["hear"]["layer"] == -1 and cfg["encodec"]["url"].endswith(".th")
    assert cfg["tasks"]["pitch"]["sha256"] is None and cfg["training"]["grad_accum"] == 1


def test_format_path():
    assert format_path(["experiments", 2, "stepz"]) == "experiments[2].stepz"
    assert format_path([]) == "top level"
    assert format_path(["corpus", "sources", "a.b", "n_shards"]) == "corpus.sources['a.b'].n_shards"


def test_imports_no_torch():
    code = "import sys, encodecmae.workflow.config_check, encodecmae.workflow.experiments; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_snakemake_prints_a_short_message_naming_the_key(tmp_path):
    def edit(c):
        c["experiments"][2]["stepz"] = c["experiments"][2].pop("steps")
        c["training"]["batch_size"] = "four"
        c["encodec"]["weights"] = "fited"

    res = snakemake(tmp_path / "run", "-n", config=edited_config(tmp_path, edit), check=False)
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0
    assert "experiments[2].stepz: unknown key (did you mean 'steps'? it is required)" in out
    assert "training.batch_size: wrong type" in out and "encodec.weights: 'fited'" in out
    # snakemake's line naming the Snakefile, ours naming the config file, two per problem, and
    # two of traceback (plus "Creating specified working directory", from -d)
    assert len([line for line in out.splitlines() if not line.startswith("Creating")]) <= 10, out
    assert "additionalProperties" not in out and "Failed validating" not in out
    assert not (tmp_path / "run" / "data").exists()
