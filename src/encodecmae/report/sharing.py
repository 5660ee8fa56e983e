"""Sharing results through DVC: Table 1 as a small metrics JSON (``dvc metrics show/diff``).

``table-metrics`` reads ``results/table1.csv`` (``make-table`` output) and writes, for each of
our models (trained here, or released weights evaluated here), its six task scores, their "±",
the Global score and the encoder's parameter count (the paper's rows are left out: they never
change). The DVC ``report`` stage runs it after
Snakemake; it is not a workflow rule.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def table_metrics(table_csv: str | Path) -> dict[str, dict[str, float]]:
    import pandas as pd

    from encodecmae.report.table import PROVENANCE_COLUMNS

    table = pd.read_csv(table_csv)
    ours = table[table["source"] != "paper"]
    metrics = {}
    for _, row in ours.iterrows():
        values = {}
        for col, v in row.items():
            if col in ("model", "label", "source", *PROVENANCE_COLUMNS):  # hashes may read as numbers
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isnan(v):
                values[col] = v
        metrics[str(row["model"])] = values
    return metrics


def write_table_metrics(table_csv: str | Path, out: str | Path) -> dict:
    metrics = table_metrics(table_csv)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def cmd_table_metrics(args: argparse.Namespace) -> None:
    write_table_metrics(table_csv=args.table, out=args.out)


def register(sub) -> None:
    p = sub.add_parser("table-metrics", help="Table 1 (CSV) as a metrics JSON for DVC: scores per model")
    p.add_argument("--table", required=True, help="results/table1.csv")
    p.add_argument("--out", required=True, help="the JSON to write")
    p.set_defaults(func=cmd_table_metrics)
