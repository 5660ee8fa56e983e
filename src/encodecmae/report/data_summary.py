"""What data a run obtained: ``results/data_summary.md`` (and ``.csv``), per corpus source and
per downstream task.

A reproduction is only as good as the data it got. AudioSet is fetched from YouTube, where
20-30 % of the videos are gone (removed, private, blocked), and every corpus has files that
cannot be decoded: the reader of our tables must see, per source, how many clips and hours went
into the shards, how many files were skipped and why, and for downloaded segments how many were
obtained, unavailable (permanent) or failed (transient, retried by a rerun).

Inputs are the files the workflow already writes, found by their place in the data tree:

- ``.../shards/SOURCE/SHARD/manifest.csv`` (clips and samples) with its ``skipped.csv`` beside it;
- ``.../downloads/SOURCE/status/PART.tsv``, the status tables of YouTube downloads
  (``encodecmae.data.youtube``);
- task directories (clips per split, from their split JSONs).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from encodecmae import SAMPLE_RATE

# A skipped file's reason (free text from encodecmae.data.shards) -> its kind.
SKIP_KINDS = [
    ("unreadable", re.compile(r"cannot read|decode|error", re.I)),
    ("empty", re.compile(r"empty", re.I)),
    ("nan", re.compile(r"nan|inf", re.I)),
    ("too short", re.compile(r"too short", re.I)),
    ("channels", re.compile(r"channels", re.I)),
]


def skip_kind(reason: str) -> str:
    for kind, pattern in SKIP_KINDS:
        if pattern.search(str(reason)):
            return kind
    return "other"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def source_rows(manifests: list[str | Path], status_tables: list[str | Path]) -> pd.DataFrame:
    """One row per corpus source: clips and hours in its shards, files skipped by kind, and for
    downloaded segments the count per state and the reasons of the losses."""
    rows: dict[str, dict] = {}

    def row(source: str) -> dict:
        return rows.setdefault(source, {"source": source, "shards": 0, "clips": 0, "hours": 0.0, "skipped": 0,
                                        "skipped_by_kind": Counter(), "segments": 0, "downloaded": 0,
                                        "unavailable": 0, "failed": 0, "lost_by_reason": Counter()})

    for path in map(Path, manifests):
        r = row(path.parents[1].name)
        manifest = pd.read_csv(path, usecols=["clip_id", "n_samples"])
        r["shards"] += 1
        r["clips"] += len(manifest)
        r["hours"] += float(manifest["n_samples"].sum()) / SAMPLE_RATE / 3600
        skipped_path = path.with_name("skipped.csv")
        if skipped_path.exists():
            skipped = pd.read_csv(skipped_path)
            r["skipped"] += len(skipped)
            r["skipped_by_kind"].update(skip_kind(x) for x in skipped.get("reason", []))
    for path in map(Path, status_tables):
        r = row(path.parents[1].name)
        status = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        r["segments"] += len(status)
        for state in ("downloaded", "unavailable", "failed"):
            r[state] += int((status["state"] == state).sum())
        lost = status[status["state"] != "downloaded"]
        r["lost_by_reason"].update(f"{s}/{why}" for s, why in zip(lost["state"], lost["reason"]))
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        return table
    table["obtained"] = [r["downloaded"] / r["segments"] if r["segments"] else float("nan") for r in rows.values()]
    table["skipped_by_kind"] = [_counts(c) for c in table["skipped_by_kind"]]
    table["lost_by_reason"] = [_counts(c) for c in table["lost_by_reason"]]
    return table.sort_values("source").reset_index(drop=True)


def task_rows(task_dirs: list[str | Path]) -> pd.DataFrame:
    """One row per downstream task: its split mode, clips per split and the audio's sample rate."""
    from encodecmae.evaluation.tasks import metadata_path, read_metadata, split_files, task_sample_rate, task_split_names

    rows = []
    for task_dir in map(Path, task_dirs):
        meta = read_metadata(task_dir)
        mode, splits = task_split_names(meta, metadata_path(task_dir))
        clips = {s: len(split_files(task_dir, s)) for s in splits}
        rows.append({"task": task_dir.name, "mode": mode, "sample_rate": task_sample_rate(meta),
                     "source_sample_rate": meta.get("source_sample_rate", task_sample_rate(meta)),
                     "clips": sum(clips.values()), "splits": ", ".join(f"{s} {n}" for s, n in clips.items())})
    return pd.DataFrame(rows)


def markdown(sources: pd.DataFrame, tasks: pd.DataFrame) -> str:
    lines = ["# Data summary", "",
             "What this run obtained, from the shards' manifests and skip lists, the download status tables",
             "and the task directories (`encodecmae summarize-data`).", "", "## Pretraining corpus", ""]
    lines += ["| source | shards | clips | hours | files skipped (why) |", "|---|---:|---:|---:|---|"]
    for _, r in sources.iterrows():
        lines.append(f"| {r['source']} | {r['shards']} | {r['clips']:,} | {r['hours']:,.2f} | "
                     f"{r['skipped']:,} ({r['skipped_by_kind']}) |")
    lines.append(f"| **all** | {sources['shards'].sum()} | {sources['clips'].sum():,} | {sources['hours'].sum():,.2f} | "
                 f"{sources['skipped'].sum():,} |")
    downloaded = sources[sources["segments"] > 0]
    if len(downloaded):
        lines += ["", "## Segments downloaded from YouTube", "",
                  "Unavailable: gone for good (removed, private, blocked; never retried). Failed: a transient",
                  "error (network, HTTP 429/5xx, timeout, truncated), retried by the next run.", "",
                  "| source | segments | downloaded | obtained | unavailable | failed | losses by reason |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for _, r in downloaded.iterrows():
            lines.append(f"| {r['source']} | {r['segments']:,} | {r['downloaded']:,} | {100 * r['obtained']:.1f} % | "
                         f"{r['unavailable']:,} | {r['failed']:,} | {r['lost_by_reason']} |")
    if len(tasks):
        lines += ["", "## Downstream tasks", "", "| task | mode | clips | per split | audio at | prepared from |",
                  "|---|---|---:|---|---:|---:|"]
        for _, r in tasks.iterrows():
            lines.append(f"| {r['task']} | {r['mode']} | {r['clips']:,} | {r['splits']} | {r['sample_rate']} Hz | "
                         f"{r['source_sample_rate']} Hz |")
    return "\n".join(lines) + "\n"


def summarize(manifests, status_tables, task_dirs, out_md, out_csv) -> pd.DataFrame:
    sources = source_rows(manifests, status_tables)
    if sources.empty:
        raise ValueError("no shard manifests given: nothing to summarise")
    tasks = task_rows(task_dirs)
    Path(out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(out_md).write_text(markdown(sources, tasks))
    sources.to_csv(out_csv, index=False)
    for _, r in sources.iterrows():
        got = f"; {r['downloaded']}/{r['segments']} segments downloaded" if r["segments"] else ""
        print(f"{r['source']}: {r['clips']} clips, {r['hours']:.2f} h in {r['shards']} shards, "
              f"{r['skipped']} files skipped{got}", flush=True)
    return sources


def register(sub) -> None:
    p = sub.add_parser("summarize-data", help="per source and task: clips, hours, skipped files, download losses")
    p.add_argument("--manifests", nargs="+", required=True, help="the shards' manifest.csv (skipped.csv beside each)")
    p.add_argument("--status", nargs="*", default=[], help="status tables of YouTube downloads (download-youtube)")
    p.add_argument("--task-dirs", nargs="*", default=[], help="prepared task directories")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)
    p.set_defaults(func=cmd_summarize_data)


def cmd_summarize_data(args: argparse.Namespace) -> None:
    summarize(args.manifests, args.status, args.task_dirs, args.out_md, args.out_csv)
