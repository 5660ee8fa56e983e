"""Training and tokenisation throughput.

Prints, for each model size, clips/s and frames/s of a full training step (forward, weighted
CE, backward, AdamW step) on 4-s crops, on the CPU and on CUDA when present (bf16 autocast
there, as in training), and EnCodec tokenisation speed as a multiple of real time.

    python benchmarks/bench_train.py                    # all sizes, CPU (+ CUDA if present)
    python benchmarks/bench_train.py --sizes debug base --devices cpu --steps 3
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from encodecmae import CROP_FRAMES, CROP_SAMPLES, SAMPLE_RATE
from encodecmae.model.loss import mae_loss
from encodecmae.model.masking import span_mask, valid_mask
from encodecmae.model.config import ModelConfig
from encodecmae.model.transformer import EncodecMAE

DEFAULT_BATCH = {"cpu": {"debug": 16, "small": 4, "base": 4, "large": 2},
                 "cuda": {"debug": 128, "small": 128, "base": 128, "large": 64}}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(size: str, device: torch.device, batch: int, steps: int, warmup: int = 1) -> dict:
    torch.manual_seed(0)
    model = EncodecMAE(ModelConfig.from_size(size)).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95),
                            weight_decay=0.05)
    wav = 0.1 * torch.randn(batch, CROP_SAMPLES, device=device)
    lengths = torch.full((batch,), CROP_FRAMES, device=device)
    mask = span_mask(lengths.cpu(), CROP_FRAMES).to(device)
    targets = torch.randint(0, 1024, (batch, 8, CROP_FRAMES), device=device)
    gamma = torch.full((8,), 1 / 8, device=device)
    valid = valid_mask(lengths, CROP_FRAMES)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = mae_loss(model(wav, lengths, mask), targets, mask, valid, gamma)["loss"]
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"clips_s": batch / dt, "frames_s": batch * CROP_FRAMES / dt, "step_s": dt, "peak_gib": mem}


def bench_tokenize(device: torch.device, batch: int, reps: int) -> float:
    from encodecmae.targets.codec import EncodecTokenizer

    tok = EncodecTokenizer(None).to(device)
    wav = 0.1 * torch.randn(batch, CROP_SAMPLES, device=device)
    tok.tokenize(wav)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        tok.tokenize(wav)
    sync(device)
    dt = (time.perf_counter() - t0) / reps
    return batch * CROP_SAMPLES / SAMPLE_RATE / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["debug", "small", "base", "large"])
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    ap.add_argument("--batch", type=int, default=0, help="override the per-device default batch")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'device':6} {'size':6} {'batch':>5} {'step s':>8} {'clips/s':>9} {'frames/s':>10} {'peak GiB':>9}")
    for dev_name in args.devices:
        device = torch.device(dev_name)
        for size in args.sizes:
            batch = args.batch or DEFAULT_BATCH[device.type][size]
            r = bench_train(size, device, batch, args.steps)
            print(f"{dev_name:6} {size:6} {batch:5d} {r['step_s']:8.3f} {r['clips_s']:9.2f} {r['frames_s']:10.0f} "
                  f"{r['peak_gib']:9.2f}", flush=True)
    for dev_name in args.devices:
        device = torch.device(dev_name)
        batch = 16 if device.type == "cpu" else 128
        print(f"tokenize {dev_name}: {bench_tokenize(device, batch, 2 if device.type == 'cpu' else 10):.1f} x real time "
              f"(EnCodec 24 kHz encoder + 8-codebook RVQ, batch {batch} x 4 s)", flush=True)


if __name__ == "__main__":
    main()
