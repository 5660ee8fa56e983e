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

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = [
    "encodecmae.shards",
    "encodecmae.targets",
    "encodecmae.download",
    "encodecmae.train",
    "encodecmae.selftrain",
    "encodecmae.extract",
    "encodecmae.downstream",
    "encodecmae.demo",
    "encodecmae.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="encodecmae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
