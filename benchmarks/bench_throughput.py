"""Throughput of the data and inference jobs, in seconds of audio per second of wall time.

These are the figures ``encodecmae.workflow.resources`` sizes the cluster jobs' time limits
with (a job's work in hours of audio / throughput). Each stage runs the library function its
workflow rule calls, in this process, on synthetic audio, with 1 and with 2 torch threads
(so the second figure gives the thread scaling):

- ``resample``: ``write_shard`` of 44.1-kHz stereo MP3 files and of 16-kHz FLAC files to a
  24-kHz shard (FMA's format and Libri-Light's; AudioSet arrives as 24-kHz FLAC);
- ``tokenize``: ``tokenize_shard`` with the 24-kHz EnCodec architecture (random weights: the
  same arithmetic as the pretrained checkpoint), 8 codebooks;
- ``assign``: ``assign_clusters`` with a teacher of each size (mel256 input, the released
  architecture) and 1,024 random centroids, which is the encoder's cost plus the exact search;
- ``embed``: ``embed_clips`` of 4-s chunks with each size's encoder (HEAR embedding and the
  teacher features of ``dump-features`` run this).

    python benchmarks/bench_throughput.py                          # all stages, 1 and 2 threads
    python benchmarks/bench_throughput.py --stages tokenize --seconds 120 --threads 1

Prints one line per (stage, threads): audio seconds, wall seconds, x real time; then the
speed-up of the highest thread count over one thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from encodecmae import SAMPLE_RATE

SIZES = ("small", "base", "large")


def tones(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([x] * channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


def make_shard(work: Path, seconds: float) -> Path:
    from encodecmae.data.shards import write_shard

    src = work / "shard_src"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(max(1, int(seconds // 10))):
        sf.write(src / f"c{i:04d}.wav", tones(10.0, SAMPLE_RATE, seed=i), SAMPLE_RATE, subtype="PCM_16")
        files.append(src / f"c{i:04d}.wav")
    write_shard(files, work / "shard")
    return work / "shard"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_resample(work: Path, seconds: float, fmt: str) -> tuple[float, float]:
    from encodecmae.data.shards import write_shard

    src = work / f"resample_{fmt}"
    src.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(max(1, int(seconds // 30))):
        if fmt == "mp3":
            path, sr, ch, kw = src / f"t{i:04d}.mp3", 44_100, 2, {"format": "MP3"}
        else:
            path, sr, ch, kw = src / f"t{i:04d}.flac", 16_000, 1, {"subtype": "PCM_16"}
        sf.write(path, tones(30.0, sr, ch, seed=i), sr, **kw)
        files.append(path)
    return 30.0 * len(files), timed(lambda: write_shard(files, work / f"out_{fmt}"))


def bench_tokenize(work: Path, shard: Path, seconds: float) -> tuple[float, float]:
    from encodecmae.targets.codec import new_encodec
    from encodecmae.targets.tokenize import tokenize_shard

    ckpt = work / "encodec_random.th"
    if not ckpt.exists():
        torch.manual_seed(0)
        torch.save(new_encodec().state_dict(), ckpt)
    return seconds, timed(lambda: tokenize_shard(shard, ckpt, work / "tokens.npy", batch_size=4))


def teacher(work: Path, size: str) -> Path:
    from encodecmae.model.config import ModelConfig
    from encodecmae.model.transformer import EncodecMAE
    from encodecmae.training import checkpoints

    path = work / f"teacher_{size}.pt"
    if not path.exists():
        torch.manual_seed(0)
        cfg = ModelConfig.from_size(size, feedforward="shared", mask_token="zeros", positions="shared",
                                    mel_framing="released")
        model = EncodecMAE(cfg)
        checkpoints.save(path, {"model": model.state_dict(), "model_config": cfg.to_dict(), "step": 0})
    return path


def bench_assign(work: Path, shard: Path, seconds: float, size: str) -> tuple[float, float]:
    from encodecmae.model.config import SIZES as DIMS
    from encodecmae.selftrain.clusters import assign_clusters

    km = work / f"km_{size}.npz"
    d = DIMS[size][1]
    np.savez(km, centroids=np.random.default_rng(0).standard_normal((1024, d)).astype(np.float32), info="{}")
    ckpt = teacher(work, size)
    return seconds, timed(lambda: assign_clusters(ckpt, km, shard, work / "ids.npy", device="cpu"))


def bench_embed(work: Path, seconds: float, size: str) -> tuple[float, float]:
    from encodecmae.evaluation.embed import embed_clips
    from encodecmae.training.checkpoints import load_model

    model = load_model(teacher(work, size), torch.device("cpu"))
    clips = [tones(4.0, SAMPLE_RATE, seed=i) for i in range(max(1, int(seconds // 4)))]
    return 4.0 * len(clips), timed(lambda: embed_clips(model, clips, -1, 16, "cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", default=["resample", "tokenize", "assign", "embed"],
                    choices=["resample", "tokenize", "assign", "embed"])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=120.0, help="audio per measurement (large: half)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available", flush=True)
    rows: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard = make_shard(work, args.seconds)
        small_shard = make_shard(work / "half", args.seconds / 2)
        cases = []
        if "resample" in args.stages:
            cases += [("resample mp3 44.1k stereo", lambda: bench_resample(work, 4 * args.seconds, "mp3")),
                      ("resample flac 16k", lambda: bench_resample(work, 4 * args.seconds, "flac"))]
        if "tokenize" in args.stages:
            cases.append(("tokenize encodec-24k", lambda: bench_tokenize(work, shard, args.seconds)))
        for size in args.sizes:
            sh, sec = (small_shard, args.seconds / 2) if size == "large" else (shard, args.seconds)
            if "assign" in args.stages:
                cases.append((f"assign {size}", lambda sh=sh, sec=sec, size=size: bench_assign(work, sh, sec, size)))
            if "embed" in args.stages:
                cases.append((f"embed {size}", lambda sec=sec, size=size: bench_embed(work, sec, size)))
        for name, fn in cases:
            for n in args.threads:
                torch.set_num_threads(n)
                audio, wall = fn()
                rows.setdefault(name, {})[n] = audio / wall
                print(f"{name:>28}  threads {n}: {audio:6.0f} s of audio in {wall:6.1f} s, "
                      f"{audio / wall:7.1f}x real time", flush=True)
    if len(args.threads) > 1:
        hi = max(args.threads)
        for name, r in rows.items():
            print(f"{name:>28}  speed-up at {hi} threads: {r[hi] / r[min(args.threads)]:.2f}")


if __name__ == "__main__":
    main()
