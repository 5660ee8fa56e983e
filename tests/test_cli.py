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
                          "--out", str(tmp_path / "list.txt")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "list.txt").read_text().splitlines() == [str(tmp_path / "a" / "x.wav")]
