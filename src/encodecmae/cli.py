"""The ``encodecmae`` command line: one subcommand per pipeline step.

Each module that offers commands defines ``register(subparsers)``, which adds its
subcommands with ``set_defaults(func=...)``; ``func(args)`` runs the step. Commands take every
input, output and parameter as an explicit flag and never read a global config file, so a
workflow rule is exactly one call.
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
    "fit-codebooks": "encodecmae.targets.codec",
    "tokenize": "encodecmae.targets.codec",
    "estimate-gamma": "encodecmae.targets.codec",
    "download": "encodecmae.data.download",
    "download-archives": "encodecmae.data.download",
    "train": "encodecmae.training.loop",
    "dump-features": "encodecmae.selftrain.clusters",
    "fit-kmeans": "encodecmae.selftrain.clusters",
    "assign-clusters": "encodecmae.selftrain.clusters",
    "embed": "encodecmae.evaluation.embed",
    "embed-task": "encodecmae.evaluation.embed",
    "score-task": "encodecmae.evaluation.protocol",
    "make-demo-corpus": "encodecmae.demo.synth",
    "make-demo-task": "encodecmae.demo.synth",
    "make-table": "encodecmae.report.table",
    "plot-curves": "encodecmae.report.table",
    "table-metrics": "encodecmae.report.sharing",
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
