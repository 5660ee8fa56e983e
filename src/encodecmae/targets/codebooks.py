"""Fitting EnCodec's RVQ codebooks offline, for the random-init encoder (``fit-codebooks``).

A randomly initialised EnCodec has all-zero codebooks (EnCodec initialises them by k-means on
its first training batch), so it emits token 0 everywhere and gives no training signal. Where
the pretrained weights cannot be had, we keep the random-init encoder and fit its codebooks
offline by residual k-means, which yields a usable, fully reproducible (seeded) tokenizer with
the same shapes and frame layout. :func:`fit_codebooks` writes the "fitted" checkpoint that
:func:`encodecmae.targets.codec.build_encodec` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.progress import progress
from encodecmae.data.shards import Shard
from encodecmae.targets.codec import (
    CODEBOOK_SIZE,
    N_Q,
    encoder_forward,
    map_batched,
    nearest_code,
    new_encodec,
    set_codebook_size,
    to_float,
)

FIT_CROP_SAMPLES = 2 * SAMPLE_RATE  # crops for codebook fitting: short, to cover many clips
KMEANS_ITERS = 10


# --------------------------------------------------------------------------------------------
# Clips and crops
# --------------------------------------------------------------------------------------------


def shard_clips(shard_dirs: Sequence[str | Path]) -> list[np.ndarray]:
    """Every clip of the shards as int16 views into their memory-mapped audio (no copy).

    The clip functions below accept these as they are, so sampling crops reads only the crops.
    """
    clips = []
    for d in shard_dirs:
        shard = Shard.open(d)
        for off, n in zip(shard.manifest.offset, shard.manifest.n_samples):
            clips.append(shard.audio[int(off) : int(off) + int(n)])
    return clips


def random_crops(clips: Sequence[np.ndarray], idx: Sequence[int], crop: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """A random ``crop``-sample window (start on the 320-sample grid) of each clip ``idx[i]``.

    Clips shorter than ``crop`` are taken whole.
    """
    out = []
    for i in idx:
        clip = clips[i]
        n = len(clip)
        if n <= crop:
            out.append(to_float(clip))
            continue
        start = int(rng.integers(0, (n - crop) // HOP + 1)) * HOP
        out.append(to_float(clip[start : start + crop]))
    return out


# --------------------------------------------------------------------------------------------
# k-means and the codebooks
# --------------------------------------------------------------------------------------------


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384):
    """k-means assignment for centred x [N, D]: nearest centroid and squared distance, float32."""
    c2 = centroids.pow(2).sum(1)  # [K]
    idx, dist = [], []
    for xs in x.split(chunk):
        d = xs.pow(2).sum(1, keepdim=True) - 2 * xs @ centroids.T + c2  # [n, K]
        m = d.min(dim=1)
        idx.append(m.indices)
        dist.append(m.values.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, n_iter: int = KMEANS_ITERS,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x [N, D]: (centroids [k, D], cluster sizes [k]).

    Starts from k distinct random points (all points plus random repeats when N < k). A cluster
    that empties is re-seeded at the point that is currently worst quantised, so all k codes stay
    in use when there are at least k distinct points; otherwise the extra codes end up as
    duplicates with size 0. The data are centred first so that float32 distances stay accurate.

    Plain random seeding, not k-means++: on EnCodec encoder frames k-means++ picks outliers, and
    its 1024 sequential steps cost more than the Lloyd iterations; measured on held-out frames,
    random seeding gave lower RVQ error and twice the codebook usage. Ten iterations are as good
    as twenty there.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("kmeans: no data")
    mean = x.mean(dim=0)
    x = x - mean  # [N, D]
    if n >= k:
        init = torch.randperm(n, generator=generator)[:k]
    else:
        extra = torch.randint(0, n, (k - n,), generator=generator)
        init = torch.cat([torch.randperm(n, generator=generator), extra])
    centroids = x[init].clone()  # [k, D]
    for _ in range(n_iter):
        assign, dist = _assign(x, centroids)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        live = counts > 0
        centroids[live] = sums[live] / counts[live, None].to(x.dtype)
        dead = (~live).nonzero().squeeze(1)
        if len(dead):
            worst = dist.topk(min(len(dead), n)).indices
            centroids[dead[: len(worst)]] = x[worst]
    assign, _ = _assign(x, centroids)
    return centroids + mean, torch.bincount(assign, minlength=k)


def _next_residual(residual: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor,
                   sizes: torch.Tensor) -> torch.Tensor:
    """The residual [N, D] handed from one RVQ stage to the next while fitting.

    A frame alone in its cluster has itself as its code, so its in-sample residual is exactly
    zero: with few frames per code (1024 codes, a few thousand frames) these zeros pile up
    stage after stage until the later codebooks are fitted on nothing and collapse to one code.
    Such a frame gets the residual to its second-nearest code instead, i.e. what a similar,
    unseen frame would leave. Measured on held-out frames this removes the collapse and matches
    the plain residual where frames are plentiful (15k frames: same RVQ error).
    """
    out = residual - centroids[assign]
    alone = sizes[assign] == 1
    if alone.any():
        other = nearest_code(residual[alone], centroids, exclude=assign[alone])
        out[alone] = residual[alone] - centroids[other]
    return out


def fit_codebooks(clips: Sequence[np.ndarray], out_path: str | Path, n_q: int = N_Q,
                  k: int = CODEBOOK_SIZE, seed: int = 0, max_frames: int = 12_000,
                  batch_size: int = 8) -> dict:
    """Fit RVQ codebooks for the seeded random-init EnCodec encoder and save a checkpoint.

    The encoder is the random-init 24-kHz EnCodec built under ``torch.manual_seed(seed)``.
    Its output is computed on seeded random 2-s crops of ``clips`` (float or int16 arrays at
    24 kHz) totalling about ``max_frames`` frames (all of the audio if it is shorter): the
    encoder, not k-means, dominates the cost (~10-15x real time on 2 CPU cores), so frames are
    subsampled as audio before encoding. Codebook q is then fitted by k-means on the residual
    left by codebooks < q (see :func:`_next_residual`) and written into the quantiser's buffers
    (embed, embed_avg, cluster_size, inited); with ``k`` < 1024 the quantiser is rebuilt with
    k-entry codebooks. Saves ``{"state_dict", "kind": "fitted", "n_q", "codebook_size", "seed",
    "n_frames"}`` (encoder + quantiser weights) and returns a summary dict.
    """
    t0 = time.time()
    if not 2 <= k <= CODEBOOK_SIZE:
        raise ValueError(f"codebook size must be in 2..{CODEBOOK_SIZE} (EnCodec's), got {k}")
    if not clips:
        raise ValueError("fit_codebooks: no clips")
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = new_encodec()
    if k != CODEBOOK_SIZE:
        set_codebook_size(model, k)
    model.eval()
    model.requires_grad_(False)
    layers = model.quantizer.vq.layers
    if not 1 <= n_q <= len(layers):
        raise ValueError(f"n_q must be in 1..{len(layers)}, got {n_q}")

    # Seeded crops, drawn with probability proportional to clip length, until the budget is met.
    rng = np.random.default_rng(seed)
    lengths = np.array([len(c) for c in clips], dtype=np.float64)
    total_frames = int(lengths.sum()) // HOP
    if total_frames <= max_frames:
        crops = [to_float(c[s : s + FIT_CROP_SAMPLES]) for c in clips for s in range(0, len(c), FIT_CROP_SAMPLES)]
    else:
        n_crops = math.ceil(max_frames / (FIT_CROP_SAMPLES // HOP))
        idx = rng.choice(len(clips), size=n_crops, p=lengths / lengths.sum())
        crops = random_crops(clips, idx, FIT_CROP_SAMPLES, rng)
    encoder = model.encoder
    with torch.no_grad():
        feats = map_batched(lambda w: encoder_forward(encoder, w[:, None, :]), crops, batch_size, "cpu",
                            desc="encode")
    x = torch.cat([f.T for f in feats])  # [n_frames, 128]
    if len(x) > max_frames:
        x = x[torch.from_numpy(rng.choice(len(x), size=max_frames, replace=False))]
    t_encode = time.time() - t0

    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()  # [n_frames, 128]: what is left for codebook q to quantise
    n_used = []
    for q in progress(range(n_q), "k-means", unit="codebook"):
        centroids, _ = kmeans(residual, k, generator=gen)
        assign = nearest_code(residual, centroids)  # the rule tokenize() uses
        sizes = torch.bincount(assign, minlength=k)
        cb = layers[q]._codebook  # EnCodec's buffers, as its own k-means init fills them
        cb.embed.copy_(centroids)
        cb.embed_avg.copy_(centroids)
        cb.cluster_size.copy_(sizes.float())
        cb.inited.fill_(1.0)
        n_used.append(int((sizes > 0).sum()))
        residual = _next_residual(residual, centroids, assign, sizes)

    state = {k_: v for k_, v in model.state_dict().items() if not k_.startswith("decoder.")}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    torch.save({"state_dict": state, "kind": "fitted", "n_q": n_q, "codebook_size": k, "seed": seed,
                "n_frames": len(x)}, tmp)
    tmp.replace(out_path)
    summary = {
        "n_frames": len(x),
        "n_crops": len(crops),
        "seconds_encode": round(t_encode, 2),
        "seconds_total": round(time.time() - t0, 2),
        "n_used": n_used,  # codes used by the fitting frames, per codebook
    }
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser("fit-codebooks", help="fit RVQ codebooks for the random-init EnCodec (no pretrained weights)")
    p.add_argument("--shards", nargs="+", required=True, metavar="DIR", help="shard directories to sample frames from")
    p.add_argument("--out", required=True, help="fitted checkpoint (.pt) to write")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks to fit")
    p.add_argument("--codebook-size", type=int, default=CODEBOOK_SIZE, help="entries per codebook")
    p.add_argument("--seed", type=int, default=0, help="seeds the encoder weights, crops and k-means")
    p.add_argument("--fit-max-frames", type=int, default=12_000, help="encoder frames to fit on (75 per second)")
    p.set_defaults(func=cmd_fit_codebooks)


def cmd_fit_codebooks(args: argparse.Namespace) -> None:
    summary = fit_codebooks(clips=shard_clips(shard_dirs=args.shards), out_path=args.out, n_q=args.n_q,
                            k=args.codebook_size, seed=args.seed, max_frames=args.fit_max_frames)
    print(json.dumps({"out": str(args.out), **summary}))
