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
    "list-audio": "encodecmae.shards",
    "resample": "encodecmae.shards",
    "fit-codebooks": "encodecmae.targets",
    "tokenize": "encodecmae.targets",
    "estimate-gamma": "encodecmae.targets",
    "download": "encodecmae.download",
    "download-archives": "encodecmae.download",
    "train": "encodecmae.train",
    "dump-features": "encodecmae.selftrain",
    "fit-kmeans": "encodecmae.selftrain",
    "assign-clusters": "encodecmae.selftrain",
    "embed": "encodecmae.extract",
    "embed-task": "encodecmae.extract",
    "score-task": "encodecmae.downstream",
    "make-demo-corpus": "encodecmae.demo",
    "make-demo-task": "encodecmae.demo",
    "make-table": "encodecmae.report",
    "plot-curves": "encodecmae.report",
    "table-metrics": "encodecmae.sharing",
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
