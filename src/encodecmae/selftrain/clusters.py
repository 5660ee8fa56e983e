"""Self-training targets, in three steps (three workflow rules), as the HuBERT recipe:

1. ``dump-features`` (one job per teacher): teacher activations of the last encoder layer,
   before the final ResiDual output norm, for a seeded sample of 4-s crops of every shard
   (``frames_per_crop`` random frames of each crop);
2. ``fit-kmeans``: k-means (k=1024) on a seeded sample of 10,000 of those frames;
3. ``assign-clusters`` (per shard): the teacher labels every frame of every 4-s chunk of the
   shard with its nearest centroid, in the shard frame layout of the EnCodec tokens, reading
   the shard a block of chunks at a time (memory does not grow with the shard or its clips).

The student then trains from the teacher checkpoint with a new 1-stream head and gamma = [1]
(``encodecmae train --init-from TEACHER --reset-head --n-streams 1 --gamma 1``). The large
model's targets are the same three steps with the base + ST model as teacher.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from encodecmae import CROP_SAMPLES, HOP, SAMPLE_RATE
from encodecmae.training.checkpoints import load_model
from encodecmae.device import resolve_device
from encodecmae.evaluation.embed import chunk_bounds, embed_clips
from encodecmae.progress import progress
from encodecmae.provenance import sha256_file
from encodecmae.resume import BlockStore
from encodecmae.data.shards import Shard, save_targets
from encodecmae.targets.codec import nearest_code

TEACHER_LAYER = -2  # last block, before the final ResiDual output norm
# Threads of scikit-learn's k-means (OpenMP and BLAS). Not the job's: see fit_kmeans.
KMEANS_THREADS = 1


def dump_features(checkpoint: str | Path, shard_dirs: list[str | Path], out: str | Path, n_crops: int,
                  frames_per_crop: int = 1, seed: int = 0, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """Teacher frames from ``n_crops`` seeded random 4-s crops of each shard -> [n, D] float32 .npy
    (shards in path order, so the file does not depend on the order they are given in)."""
    dev = resolve_device(device)
    model = load_model(checkpoint, dev)
    dirs = sorted(map(str, shard_dirs))
    arr = np.concatenate([shard_features(model, d, n_crops, frames_per_crop, seed, batch_size, dev)
                          for d in progress(dirs, "dump-features", unit="shard")])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npy")
    np.save(tmp, arr)
    tmp.rename(out)
    return arr


def shard_features(model, shard_dir: str | Path, n_crops: int, frames_per_crop: int, seed: int, batch_size: int,
                   dev: torch.device) -> np.ndarray:
    """Teacher frames of ``n_crops`` seeded random 4-s crops of one shard: [n, D] float32."""
    shard = Shard.open(shard_dir)
    # Seed from (seed, shard name) so shards sample independently but reproducibly.
    rng = np.random.default_rng([seed, *Path(shard_dir).name.encode()])
    lens = shard.manifest.n_samples.to_numpy()
    visits = np.maximum(1, lens // CROP_SAMPLES)
    idx = rng.choice(len(lens), size=n_crops, p=visits / visits.sum())
    crops = []
    for i in idx:
        n = int(lens[i])
        start = int(rng.integers(0, max(0, (n - CROP_SAMPLES) // HOP) + 1)) * HOP
        crops.append(shard.segment(int(shard.manifest.offset.iloc[i]) + start, min(CROP_SAMPLES, n - start)))
    feats = embed_clips(model, crops, TEACHER_LAYER, batch_size, dev)
    picked = [f[rng.choice(len(f), size=min(frames_per_crop, len(f)), replace=False)] for f in feats]
    return np.concatenate(picked).astype(np.float32)


def fit_kmeans(feature_files: list[str | Path], out: str | Path, k: int = 1024, n_frames: int = 10_000,
               seed: int = 0, max_iter: int = 300) -> dict:
    """k-means on a seeded sample of ``n_frames`` teacher frames; writes centroids [k, D] (.npz).

    scikit-learn's Lloyd step sums the points of each cluster in per-thread buffers and adds
    the buffers in the order the threads finish, so its centroids change in the last bits
    with the number of threads (2 of the 512 values in the CI run, by 1e-7), and the cluster
    ids of the students' targets with them. It runs here on ``KMEANS_THREADS`` = 1 thread
    whatever the job has, which makes the result a function of the features and the seed
    only. Cost: k=1024 on 10,000 768-d frames (the paper's setting) takes 11 s in one thread
    against 5.4 s in two for k-means++ and two Lloyd iterations (this project's CPU); the demo's
    k=64 takes under a second.
    """
    feats = np.concatenate([np.load(f) for f in sorted(map(str, feature_files))])
    if len(feats) < k:
        raise ValueError(f"k-means with k={k} needs at least {k} frames; the feature files "
                         f"{[str(f) for f in feature_files]} hold {len(feats)}")
    rng = np.random.default_rng(seed)
    sample = feats[np.sort(rng.choice(len(feats), size=min(n_frames, len(feats)), replace=False))]
    with threadpool_limits(limits=KMEANS_THREADS):
        km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed).fit(sample.astype(np.float64))
    centroids = km.cluster_centers_.astype(np.float32)
    info = {"k": k, "n_frames": int(len(sample)), "inertia": float(km.inertia_), "n_iter": int(km.n_iter_),
            "seed": seed, "used_clusters": int(len(np.unique(km.labels_)))}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, centroids=centroids, info=json.dumps(info))
    return info


def load_centroids(path: str | Path) -> np.ndarray:
    with np.load(path) as z:
        if "centroids" not in z:
            raise ValueError(f"{path}: no 'centroids' array (not a fit-kmeans output)")
        return z["centroids"]


def assign_clusters(checkpoint: str | Path, kmeans: str | Path, shard_dir: str | Path, out: str | Path,
                    batch_size: int = 16, device: str = "cpu", block_seconds: float = 600.0) -> np.ndarray:
    """Cluster id of every frame of a shard -> int16 [1, n_frames] in the shard frame layout.

    The shard is read as its clips' 4-s chunks (each embedded on its own, as extraction does),
    ``block_seconds`` of audio at a time, so memory holds one block's activations whatever the
    length of the shard or of a clip (an hour-long audiobook is 900 chunks like any others).
    """
    dev = resolve_device(device)
    model = load_model(checkpoint, dev)
    centroids = torch.from_numpy(load_centroids(kmeans)).to(dev)
    shard = Shard.open(shard_dir)
    ids = np.zeros((1, shard.n_frames), np.int16)
    chunks = [(int(o) + s, e - s) for o, n in zip(shard.manifest.offset, shard.manifest.n_samples)
              for s, e in chunk_bounds(int(n))]  # (shard offset, samples), 4 s at most
    per_block = max(1, int(block_seconds * SAMPLE_RATE) // CROP_SAMPLES)
    # a killed job's rerun continues after its last finished block (encodecmae.resume)
    store = BlockStore(out, {"shard": sha256_file(Path(shard_dir) / "manifest.csv"), "samples": len(shard.audio),
                             "checkpoint": sha256_file(checkpoint), "kmeans": sha256_file(kmeans),
                             "per_block": per_block, "batch_size": batch_size})
    for b0 in progress(range(0, len(chunks), per_block), f"assign {Path(shard_dir).name}", unit="block"):
        block = chunks[b0 : b0 + per_block]
        f0, f1 = block[0][0] // HOP, -(-(block[-1][0] + block[-1][1]) // HOP)  # the block's frames
        done = store.get(f"{b0:09d}")
        if done is not None:
            ids[:, f0:f1] = done
            continue
        feats = embed_clips(model, [shard.segment(o, n) for o, n in block], TEACHER_LAYER, batch_size, dev)
        for (o, _), f in zip(block, feats):
            lab = nearest_code(torch.from_numpy(f).to(dev), centroids).cpu().numpy()  # exact, float64
            ids[0, o // HOP : o // HOP + len(lab)] = lab
        shard.release()
        store.put(f"{b0:09d}", ids[:, f0:f1])
    save_targets(out, ids)
    store.close()
    return ids


def register(sub) -> None:
    p = sub.add_parser("dump-features", help="teacher activations of seeded 4-s crops of every shard")
    p.add_argument("--checkpoint", required=True, help="teacher checkpoint")
    p.add_argument("--shards", nargs="+", required=True, help="shard directories")
    p.add_argument("--out", required=True, help=".npy [n, D]")
    p.add_argument("--crops-per-shard", type=int, required=True, help="crops from each shard")
    p.add_argument("--frames-per-crop", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_dump_features)

    p = sub.add_parser("fit-kmeans", help="k-means on a seeded sample of teacher frames")
    p.add_argument("--features", nargs="+", required=True, help="dump-features outputs")
    p.add_argument("--out", required=True, help=".npz with centroids")
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--n-frames", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-iter", type=int, default=300)
    p.set_defaults(func=cmd_fit_kmeans)

    p = sub.add_parser("assign-clusters", help="label every frame of a shard with the teacher's clusters")
    p.add_argument("--checkpoint", required=True, help="teacher checkpoint")
    p.add_argument("--kmeans", required=True, help="fit-kmeans output")
    p.add_argument("--shard", required=True)
    p.add_argument("--out", required=True, help="int16 [1, frames] .npy")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--block-seconds", type=float, default=600.0,
                   help="audio read and labelled at a time; a killed job's rerun continues after the last block")
    p.set_defaults(func=cmd_assign_clusters)


def cmd_dump_features(args: argparse.Namespace) -> None:
    dump_features(args.checkpoint, args.shards, args.out, n_crops=args.crops_per_shard,
                  frames_per_crop=args.frames_per_crop, seed=args.seed, batch_size=args.batch_size, device=args.device)


def cmd_fit_kmeans(args: argparse.Namespace) -> None:
    info = fit_kmeans(args.features, args.out, k=args.k, n_frames=args.n_frames, seed=args.seed,
                      max_iter=args.max_iter)
    print(json.dumps(info))


def cmd_assign_clusters(args: argparse.Namespace) -> None:
    assign_clusters(args.checkpoint, args.kmeans, args.shard, args.out, batch_size=args.batch_size, device=args.device,
                    block_seconds=args.block_seconds)
