"""Results: training-curve plots (loss, masked/unmasked cross-entropy, masked accuracy).

``plot-curves`` reads one training metrics CSV (``train`` output) and writes a PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def plot_curves(metrics_csv: str | Path, out_png: str | Path, title: str = "") -> None:
    """Training curves: loss, masked/unmasked CE and masked accuracy against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(metrics_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if len(df):
        axes[0].plot(df["step"], df["loss"], label="train loss")
        axes[0].plot(df["step"], df["masked_ce"], label="masked CE")
        axes[0].plot(df["step"], df["unmasked_ce"], label="unmasked CE")
        if "val_loss" in df and df["val_loss"].notna().any():
            v = df[df["val_loss"].notna()]
            axes[0].plot(v["step"], v["val_loss"], "o-", label="validation loss")
        axes[1].plot(df["step"], df["masked_acc"], label="masked top-1 accuracy")
    else:
        axes[0].text(0.5, 0.5, "no training steps", ha="center", va="center", transform=axes[0].transAxes)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8) if ax.lines else None
    axes[0].set_ylabel("cross-entropy (nats)")
    fig.suptitle(title or Path(metrics_csv).parent.name)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def cmd_plot_curves(args: argparse.Namespace) -> None:
    plot_curves(metrics_csv=args.metrics, out_png=args.out, title=args.title)


def register(sub) -> None:
    p = sub.add_parser("plot-curves", help="plot a training metrics CSV")
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    p.set_defaults(func=cmd_plot_curves)
