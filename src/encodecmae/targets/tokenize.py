"""EnCodec tokens of every clip of a shard, in the shard's frame layout (``tokenize``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.data.shards import Shard, save_targets
from encodecmae.targets.codec import N_Q, EncodecTokenizer, map_batched
from encodecmae.progress import Progress
from encodecmae.provenance import sha256_file
from encodecmae.resume import BlockStore
from encodecmae.targets.gamma import codebook_usage


def tokenize_shard(shard_dir: str | Path, checkpoint: str | Path | None, out_path: str | Path,
                   n_q: int = N_Q, batch_size: int = 16, chunk_seconds: float = 10.0,
                   device: str = "cpu", block_seconds: float = 600.0) -> np.ndarray:
    """Write the EnCodec tokens of every clip of a shard as int16 [n_q, shard.n_frames].

    Clips are whole multiples of 320 samples, so clip frame t is shard frame offset // 320 + t
    and each clip gets exactly n_samples // 320 token frames. Long clips are cut into
    ``chunk_seconds`` chunks (a multiple of 320 samples), each tokenised on its own (the codec
    restarts at every chunk boundary, as it does at the start of a 4-s training crop); chunks of
    equal length are batched, ``block_seconds`` of audio at a time.
    """
    chunk = chunk_seconds * SAMPLE_RATE
    if chunk <= 0 or chunk != int(chunk) or int(chunk) % HOP:
        raise ValueError(f"chunk_seconds={chunk_seconds} is not a positive multiple of {HOP} samples")
    chunk = int(chunk)
    shard = Shard.open(shard_dir)
    tokenizer = EncodecTokenizer(checkpoint, n_q=n_q).to(device)
    starts = []  # (shard sample offset, n_samples) per chunk
    for off, n in zip(shard.manifest.offset, shard.manifest.n_samples):
        off, n = int(off), int(n)
        if off % HOP or n % HOP:
            raise ValueError(f"{shard.path}: clip at offset {off} with {n} samples is off the {HOP}-sample grid")
        starts += [(off + s, min(chunk, n - s)) for s in range(0, n, chunk)]
    targets = np.zeros((n_q, shard.n_frames), dtype=np.int16)
    per_block = max(1, int(block_seconds * SAMPLE_RATE) // chunk)
    # a killed job's rerun continues after its last finished block (encodecmae.resume)
    store = BlockStore(out_path, {"shard": sha256_file(shard.path / "manifest.csv"), "samples": len(shard.audio),
                                  "checkpoint": sha256_file(checkpoint) if checkpoint else None, "n_q": n_q,
                                  "chunk": chunk, "per_block": per_block, "batch_size": batch_size})
    bar = Progress(f"tokenize {shard.path.name}", total=len(starts), unit="chunk")
    for b0 in range(0, len(starts), per_block):  # memory holds one block of chunks, not the shard
        block = starts[b0 : b0 + per_block]
        f0, f1 = block[0][0] // HOP, (block[-1][0] + block[-1][1]) // HOP  # the block's frames, contiguous
        done = store.get(f"{b0:09d}")
        if done is None:
            segments = [shard.audio[o : o + n] for o, n in block]  # int16 memmap views
            for (o, n), tok in zip(block, map_batched(tokenizer.tokenize, segments, batch_size, device)):
                assert tok.shape == (n_q, n // HOP), tok.shape
                targets[:, o // HOP : o // HOP + n // HOP] = tok.numpy()
            shard.release()
            store.put(f"{b0:09d}", targets[:, f0:f1])
        else:
            targets[:, f0:f1] = done
        bar.update(len(block))
    bar.close()
    save_targets(out_path, targets)
    store.close()
    return targets


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register(sub) -> None:
    p = sub.add_parser("tokenize", help="EnCodec tokens of every clip of a shard")
    p.add_argument("--shard", required=True, metavar="DIR", help="shard directory")
    p.add_argument("--checkpoint", required=True, help="EnCodec weights: official state dict or fitted checkpoint")
    p.add_argument("--out", required=True, help="int16 [n_q, n_frames] .npy to write")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks to keep")
    p.add_argument("--batch-size", type=int, default=16,
                   help="chunks per forward pass (on CPU small batches run faster: 1-4)")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="long clips are tokenised in chunks this long")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--block-seconds", type=float, default=600.0,
                   help="audio read and tokenised at a time; a killed job's rerun continues after the last block")
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> None:
    tokens = tokenize_shard(shard_dir=args.shard, checkpoint=args.checkpoint, out_path=args.out, n_q=args.n_q,
                            batch_size=args.batch_size, chunk_seconds=args.chunk_seconds, device=args.device,
                            block_seconds=args.block_seconds)
    print(json.dumps({"out": str(args.out), "n_frames": tokens.shape[1], **codebook_usage(tokens=tokens)}))
