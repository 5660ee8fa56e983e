"""The command line: the lazy command table matches what the modules register."""

import subprocess
import sys

from encodecmae.cli import COMMANDS, build_parser


def test_command_table_is_complete_and_exact():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for command, module in COMMANDS.items():  # each command is registered by the module the table names
        only = next(a for a in build_parser([module])._actions if a.dest == "command")
        assert command in only.choices, (command, module)


def test_a_command_runs_from_the_console_script(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    res = subprocess.run([sys.executable, "-m", "encodecmae", "list-audio", "--source-dir", str(tmp_path / "a"),
                          "--n-shards", "1", "--out", str(tmp_path / "list.tsv")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # an empty "wav" has no readable header: listed without a duration, and resample will skip it
    assert (tmp_path / "list.tsv").read_text().splitlines() == ["path\tseconds\tshard", f"{tmp_path / 'a' / 'x.wav'}\t\t0"]


def test_every_command_is_wired_one_way():
    """register(sub) in the stage module, func=cmd_<name> defined in that same module."""
    import importlib

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, p in sub.choices.items():
        func = p.get_default("func")
        assert func.__name__ == "cmd_" + command.replace("-", "_"), (command, func)
        assert func.__module__ == COMMANDS[command], (command, func.__module__)
        assert getattr(importlib.import_module(COMMANDS[command]), func.__name__) is func


def test_planning_code_imports_without_torch():
    """The Snakefile's imports (config check, experiments, resources, training settings)."""
    code = ("import sys, encodecmae.workflow.config_check, encodecmae.workflow.experiments, "
            "encodecmae.workflow.resources, encodecmae.training.config; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)
