"""Peak memory of the data jobs against the length of their input.

Builds synthetic 16-kHz sources (so that resampling to 24 kHz runs): a shard of 10-s clips
totalling 1 h, one totalling 4 h, and a single 2-h file; then runs, each in a fresh process so
that its peak resident memory (``ru_maxrss``) is its own:

- ``resample``: ``list-audio`` + ``resample`` of the source into one shard;
- ``tokenize``: ``tokenize`` of that shard with the 24-kHz EnCodec architecture (random
  weights: the pretrained checkpoint's arithmetic and size);
- ``assign``: ``assign-clusters`` of that shard with an untrained debug-size teacher and
  random centroids (the work of the rule; the model's size only adds a constant);
- ``embed``: ``embed-task`` of the source as one split of a HEAR-layout task (16 kHz, so the
  clips are resampled as a 16-kHz HEAR task's are), with the debug-size teacher.

    python benchmarks/bench_memory.py                       # 1 h, 4 h, 2-h file; every stage
    python benchmarks/bench_memory.py --hours 0.25 1 --long-file-hours 0.5 --stages resample

Prints one line per (input, stage): audio hours, wall seconds, peak RSS in MiB; then the
ratio of the largest to the smallest peak per stage (the target: under 1.3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = """
import json, resource, sys, time
t = time.perf_counter()
from encodecmae.cli import main
main(sys.argv[1:])
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


STAGES = ("resample", "tokenize", "assign", "embed")


def run(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_source(root: Path, hours: float, single_file: bool, sr: int = 16_000) -> Path:
    """Tones with noise at ``sr``: 10-s clips, or one file, ``hours`` in all (written in blocks)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    total = int(hours * 3600 * sr)
    lengths = [total] if single_file else [10 * sr] * max(1, total // (10 * sr))
    for i, n in enumerate(lengths):
        with sf.SoundFile(root / f"clip{i:05d}.wav", "w", sr, 1, subtype="PCM_16") as f:
            for s in range(0, n, 60 * sr):
                m = min(60 * sr, n - s)
                t = (s + np.arange(m)) / sr
                f.write((0.3 * np.sin(2 * np.pi * (200 + 50 * (i % 7)) * t) + 0.01 * rng.standard_normal(m))
                        .astype(np.float32))
    return root


def as_task(src: Path) -> Path:
    """The 16-kHz files of ``src`` as the one split of a HEAR-layout task (links, not copies)."""
    task = src.parent / "task"
    split = task / "16000" / "test"
    split.mkdir(parents=True, exist_ok=True)
    labels = {}
    for f in sorted(src.glob("*.wav")):
        if not (split / f.name).exists():
            (split / f.name).symlink_to(f.resolve())
        labels[f.name] = ["a"]
    (task / "test.json").write_text(json.dumps(labels))
    for empty in ("train", "valid"):
        (task / f"{empty}.json").write_text("{}")
    (task / "task_metadata.json").write_text(json.dumps(
        {"task_name": "bench", "mode": "train_valid_test", "sample_rate": 16000,
         "prediction_type": "multiclass", "label_vocabulary": ["a"]}))
    return task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0], help="shards of 10-s clips")
    ap.add_argument("--long-file-hours", type=float, default=2.0, help="a single file this long (0: none)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--workdir", default=None, help="keep the inputs here (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        cases = [(f"{h:g} h of 10-s clips", h, False) for h in args.hours]
        if args.long_file_hours:
            cases.append((f"one {args.long_file_hours:g}-h file", args.long_file_hours, True))
        teacher = km = encodec = None
        if "tokenize" in args.stages:
            import torch

            from encodecmae.targets.codec import new_encodec

            torch.manual_seed(0)
            encodec = work / "encodec_random.th"
            torch.save(new_encodec().state_dict(), encodec)
        if "assign" in args.stages or "embed" in args.stages:
            teacher, km = work / "teacher.pt", work / "km.npz"
            import torch

            from encodecmae.model.config import ModelConfig
            from encodecmae.model.transformer import EncodecMAE
            from encodecmae.training import checkpoints

            torch.manual_seed(0)
            model = EncodecMAE(ModelConfig.from_size("debug"))
            checkpoints.save(teacher, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": 0})
            np.savez(km, centroids=np.random.default_rng(0).standard_normal((1024, 64)).astype(np.float32),
                     info="{}")
        peaks: dict[str, list[float]] = {s: [] for s in args.stages}
        for name, hours, single in cases:
            key = name.replace(" ", "_").replace("-", "")
            t0 = time.perf_counter()
            src = make_source(work / key / "src", hours, single)
            print(f"# {name}: inputs written in {time.perf_counter() - t0:.0f} s", flush=True)
            shard = work / key / "shard"
            if {"resample", "tokenize", "assign"} & set(args.stages):
                listing = work / key / "list.tsv"
                run("list-audio", "--source-dir", str(src), "--n-shards", "1", "--out", str(listing))
                r = run("resample", "--file-list", str(listing), "--shard", "0", "--out", str(shard))
                if "resample" in args.stages:
                    peaks["resample"].append(r["peak_mib"])
                    print(f"resample  {name:>22}: {hours:5.2f} h, {r['seconds']:7.1f} s, peak {r['peak_mib']:7.0f} MiB",
                          flush=True)
            jobs = {
                "tokenize": lambda: ("tokenize", "--shard", str(shard), "--checkpoint", str(encodec),
                                     "--out", str(work / key / "tokens.npy"), "--batch-size", "4"),
                "assign": lambda: ("assign-clusters", "--checkpoint", str(teacher), "--kmeans", str(km),
                                   "--shard", str(shard), "--out", str(work / key / "clusters.npy"), "--device", "cpu"),
                "embed": lambda: ("embed-task", "--checkpoint", str(teacher), "--task-dir", str(as_task(src)),
                                  "--out", str(work / key / "embeddings.npz"), "--device", "cpu"),
            }
            for stage in ("tokenize", "assign", "embed"):
                if stage in args.stages:
                    r = run(*jobs[stage]())
                    peaks[stage].append(r["peak_mib"])
                    print(f"{stage:9} {name:>22}: {hours:5.2f} h, {r['seconds']:7.1f} s, "
                          f"peak {r['peak_mib']:7.0f} MiB", flush=True)
        for stage, p in peaks.items():
            if p:
                print(f"{stage}: peak {min(p):.0f}-{max(p):.0f} MiB, largest / smallest {max(p) / min(p):.2f}")


if __name__ == "__main__":
    main()
