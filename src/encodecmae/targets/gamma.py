"""Per-codebook loss weights gamma_q from RVQ quantisation errors (``estimate-gamma``), and
codebook usage statistics of tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from encodecmae import CROP_SAMPLES
from encodecmae.targets.codebooks import random_crops, shard_clips
from encodecmae.targets.codec import CODEBOOK_SIZE, N_Q, EncodecTokenizer, map_batched


def codebook_usage(tokens, codebook_size: int = CODEBOOK_SIZE) -> dict:
    """Per-codebook number of distinct codes and entropy (bits) of tokens [..., n_q, T].

    ``codebook_size`` only sizes the histograms (any K up to it is fine)."""
    t = torch.as_tensor(np.asarray(tokens)) if not isinstance(tokens, torch.Tensor) else tokens
    t = t.long().movedim(-2, 0).reshape(t.shape[-2], -1)  # [n_q, everything else]
    n_used, entropy = [], []
    for row in t:
        counts = torch.bincount(row, minlength=codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        n_used.append(int((counts > 0).sum()))
        entropy.append(float(-(p * p.log2()).sum()) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return {"n_used": n_used, "entropy_bits": entropy}


def estimate_gamma(tokenizer: EncodecTokenizer, clips: Sequence[np.ndarray], n_clips: int = 150,
                   seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """Per-codebook loss weights gamma [n_q]: mean quantisation error of each RVQ stage.

    The paper sets gamma_q to "the average quantization error for the q-th codebook computed
    over 150 random training samples, normalized to sum to 1.0". Here the error of codebook q
    is the mean (over all frames of the sample) squared norm of the residual it leaves,
    ||r_q - c_q(r_q)||^2 (see :func:`rvq_encode`); the sample is ``n_clips`` clips drawn
    without replacement (all clips if fewer), one random 4-s crop each, seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(clips), size=min(n_clips, len(clips)), replace=False)
    crops = random_crops(clips, np.sort(idx), CROP_SAMPLES, rng)
    errs = map_batched(tokenizer.stage_errors, crops, batch_size, tokenizer.device)  # each [n_q, T]
    err = torch.cat(errs, dim=1).double().mean(dim=1)  # [n_q]: pooled over every frame
    return (err / err.sum()).numpy()


def compare_gamma(estimate: Sequence[float], given: Sequence[float]) -> dict:
    """The estimate beside given weights (the released models' constants, config encodec.gamma):
    per codebook the difference estimate - given, and the largest absolute difference."""
    if len(estimate) != len(given):
        raise ValueError(f"{len(given)} given weights for {len(estimate)} codebooks")
    diff = [float(e) - float(g) for e, g in zip(estimate, given)]
    return {"given": [float(g) for g in given], "difference": diff, "max_abs_difference": max(map(abs, diff))}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser("estimate-gamma", help="per-codebook loss weights from RVQ quantisation errors")
    p.add_argument("--shards", nargs="+", required=True, metavar="DIR", help="shard directories to sample clips from")
    p.add_argument("--checkpoint", required=True, help="EnCodec weights: official state dict or fitted checkpoint")
    p.add_argument("--out", required=True, help="JSON to write: {gamma, n_clips, n_q}")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks")
    p.add_argument("--gamma-clips", type=int, default=150, help="random clips (one 4-s crop each)")
    p.add_argument("--seed", type=int, default=0, help="seeds the clip and crop sample")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--compare-with", nargs="+", type=float, default=None, metavar="G",
                   help="weights to compare the estimate with (one per codebook); written under 'compared'")
    p.set_defaults(func=cmd_estimate_gamma)


def cmd_estimate_gamma(args: argparse.Namespace) -> None:
    tokenizer = EncodecTokenizer(checkpoint=args.checkpoint, n_q=args.n_q).to(args.device)
    clips = shard_clips(shard_dirs=args.shards)
    gamma = estimate_gamma(tokenizer=tokenizer, clips=clips, n_clips=args.gamma_clips, seed=args.seed)
    result = {"gamma": [float(g) for g in gamma], "n_clips": min(args.gamma_clips, len(clips)), "n_q": args.n_q}
    if args.compare_with:
        result["compared"] = compare_gamma(gamma, args.compare_with)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
