"""The ``encodecmae`` command line: one subcommand per pipeline step.

Every command is wired the same way. The stage module that offers it defines
``register(sub)``, which adds the subcommand's parser with its flags and
``set_defaults(func=cmd_NAME)``, and ``cmd_NAME(args)``, which calls the library function of that
step with the parsed flags. Commands take every input, output and parameter as an explicit flag
and never read a global config file, so a workflow rule is exactly one call; a flag is named as
the workflow config key it comes from (``encodec.fit_max_frames`` -> ``--fit-max-frames``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> the module that registers it. Only that module is imported to run a command
# (importing all of them costs seconds of torch/sklearn start-up in every workflow job);
# ``encodecmae --help`` imports them all. tests/test_cli.py checks the table is complete.
COMMANDS = {
    "list-audio": "encodecmae.data.shards",
    "resample": "encodecmae.data.shards",
    "index-files": "encodecmae.data.shards",
    "fit-codebooks": "encodecmae.targets.codebooks",
    "tokenize": "encodecmae.targets.tokenize",
    "estimate-gamma": "encodecmae.targets.gamma",
    "download": "encodecmae.data.download",
    "download-archives": "encodecmae.data.download",
    "download-youtube": "encodecmae.data.youtube",
    "prepare-hear-task": "encodecmae.data.hear_tasks",
    "train": "encodecmae.training.loop",
    "import-released": "encodecmae.model.released",
    "dump-features": "encodecmae.selftrain.clusters",
    "fit-kmeans": "encodecmae.selftrain.clusters",
    "assign-clusters": "encodecmae.selftrain.clusters",
    "embed": "encodecmae.evaluation.embed",
    "embed-task": "encodecmae.evaluation.embed",
    "score-task": "encodecmae.evaluation.protocol",
    "extract-asr-features": "encodecmae.evaluation.asr.commands",
    "train-asr": "encodecmae.evaluation.asr.commands",
    "decode-asr": "encodecmae.evaluation.asr.commands",
    "make-demo-corpus": "encodecmae.demo.corpus",
    "make-demo-task": "encodecmae.demo.tasks",
    "make-demo-asr": "encodecmae.demo.asr",
    "make-table": "encodecmae.report.table",
    "plot-curves": "encodecmae.report.curves",
    "table-metrics": "encodecmae.report.sharing",
    "summarize-data": "encodecmae.report.data_summary",
    "make-table2": "encodecmae.report.table2",
}


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encodecmae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules or dict.fromkeys(COMMANDS.values()):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    modules = [COMMANDS[argv[0]]] if argv and argv[0] in COMMANDS else None
    args = build_parser(modules).parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
