"""Training batches: random 4-s crops from sharded 24-kHz audio with precomputed targets.

Every batch is a pure function of (seed, step): the clips and crop offsets of step s are
drawn from ``numpy.random.default_rng([seed, s])`` and the masks from a torch generator seeded
the same way. So a run resumed at step s sees exactly the batches an uninterrupted run would,
the data loader needs no state, and a global batch splits across data-parallel ranks and
gradient-accumulation micro-batches identically however it is partitioned.

Clips are drawn with probability proportional to ``max(1, n_samples // crop)``: a long file is
visited as often as its 4-s pieces would be (the original visits a file duration // 4 times per
epoch), so long audiobooks are not under-sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from encodecmae import CROP_SAMPLES, HOP
from encodecmae.model.masking import span_mask
from encodecmae.data.shards import Shard, load_targets


@dataclass
class Batch:
    wav: torch.Tensor  # [B, crop] float32, zero-padded
    targets: torch.Tensor  # [B, Q, crop // 320] int64 (padding frames hold 0 and are never scored)
    lengths: torch.Tensor  # [B] valid frames
    mask: torch.Tensor  # [B, T] bool, True = masked

    def slice(self, start: int, stop: int) -> "Batch":
        return Batch(self.wav[start:stop], self.targets[start:stop], self.lengths[start:stop], self.mask[start:stop])

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in (self.wav, self.targets, self.lengths, self.mask)))

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.wav, self.targets, self.lengths, self.mask)))


class Corpus:
    """Shards plus one target file per shard; a seeded held-out validation set of clips."""

    def __init__(self, shard_dirs: list[str | Path], target_paths: list[str | Path], n_val: int = 0,
                 seed: int = 0, crop_samples: int = CROP_SAMPLES):
        if len(shard_dirs) != len(target_paths):
            raise ValueError(f"{len(shard_dirs)} shards but {len(target_paths)} target files; give one per shard")
        if not shard_dirs:
            raise ValueError("no shards given")
        self.crop = crop_samples
        self.shards = [Shard.open(p) for p in shard_dirs]
        self.targets = [load_targets(t, s) for t, s in zip(target_paths, self.shards)]
        qs = {t.shape[0] for t in self.targets}
        if len(qs) != 1:
            raise ValueError(f"target files disagree on the number of streams: {sorted(qs)}")
        self.n_streams = qs.pop()
        tables = []
        for i, s in enumerate(self.shards):
            t = s.manifest[["clip_id", "offset", "n_samples"]].copy()
            t.insert(0, "shard", i)
            tables.append(t)
        clips = pd.concat(tables, ignore_index=True)  # sorted by (shard, position): deterministic
        if n_val >= len(clips):
            raise ValueError(f"n_val={n_val} leaves no training clips out of {len(clips)}")
        perm = np.random.default_rng([seed, 10_007]).permutation(len(clips))
        self.val_clips = clips.iloc[np.sort(perm[:n_val])].reset_index(drop=True)
        self.train_clips = clips.iloc[np.sort(perm[n_val:])].reset_index(drop=True)
        visits = np.maximum(1, self.train_clips.n_samples.to_numpy() // self.crop)
        self.weights = visits / visits.sum()

    def _crop(self, shard: int, offset: int, n_samples: int, start: int):
        """One crop: (wav [crop], targets [Q, crop // 320], valid frames)."""
        n = min(self.crop, n_samples - start)
        wav = np.zeros(self.crop, np.float32)
        wav[:n] = self.shards[shard].segment(offset + start, n)
        f0, nf = (offset + start) // HOP, n // HOP
        tgt = np.zeros((self.n_streams, self.crop // HOP), np.int64)
        tgt[:, :nf] = self.targets[shard][:, f0 : f0 + nf]
        return wav, tgt, nf

    def _mask(self, lengths: list[int], mask_key: list[int], mask_prop: float, mask_gap: int,
              mask_starts: str) -> torch.Tensor:
        """Masks [B, T] of a batch of crops with these valid lengths, from a generator seeded by ``mask_key``."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(mask_key).generate_state(1)[0]))
        return span_mask(torch.tensor(lengths, dtype=torch.long), self.crop // HOP, mask_prop, mask_gap,
                         generator=g, starts=mask_starts)

    def _collate(self, items, mask_key: list[int], mask_prop: float, mask_gap: int, mask_starts: str) -> Batch:
        wav, tgt, lengths = zip(*items)
        mask = self._mask(list(lengths), mask_key, mask_prop, mask_gap, mask_starts)
        return Batch(torch.from_numpy(np.stack(wav)), torch.from_numpy(np.stack(tgt)),
                     torch.tensor(lengths, dtype=torch.long), mask)

    def train_batch(self, step: int, batch_size: int, seed: int, mask_prop: float = 0.5, mask_gap: int = 15,
                    mask_starts: str = "anywhere", rows: tuple[int, int] | None = None) -> Batch:
        """The global batch of training step ``step`` (the same on every rank), or its ``rows``
        (start, stop): a data-parallel rank's share. The clips, crops and masks of the whole batch
        are drawn on every rank (cheap: they need only the clips' lengths), so a share equals
        those rows of the global batch; the audio and targets are read only for the rows asked for.
        """
        rng = np.random.default_rng([seed, step])
        idx = rng.choice(len(self.train_clips), size=batch_size, p=self.weights)
        plan = []
        for i in idx:
            row = self.train_clips.iloc[i]
            hop_slots = max(0, (int(row.n_samples) - self.crop) // HOP)
            start = int(rng.integers(0, hop_slots + 1)) * HOP  # crops start on a frame boundary
            plan.append((int(row.shard), int(row.offset), int(row.n_samples), start))
        lo, hi = rows if rows is not None else (0, batch_size)
        lengths = [min(self.crop, n - start) // HOP for _, _, n, start in plan]
        mask = self._mask(lengths, [seed, step, 1], mask_prop, mask_gap, mask_starts)[lo:hi]
        wav, tgt, _ = zip(*(self._crop(*p) for p in plan[lo:hi]))
        return Batch(torch.from_numpy(np.stack(wav)), torch.from_numpy(np.stack(tgt)),
                     torch.tensor(lengths[lo:hi], dtype=torch.long), mask)

    def val_batches(self, batch_size: int, seed: int, mask_prop: float = 0.5, mask_gap: int = 15,
                    mask_starts: str = "anywhere"):
        """Fixed validation batches: the first 4 s of each held-out clip, fixed masks."""
        for b0 in range(0, len(self.val_clips), batch_size):
            rows = self.val_clips.iloc[b0 : b0 + batch_size]
            items = [self._crop(int(r.shard), int(r.offset), int(r.n_samples), 0) for r in rows.itertuples()]
            yield self._collate(items, [seed, b0, 2], mask_prop, mask_gap, mask_starts)


class StepDataset(torch.utils.data.Dataset):
    """Map-style view indexed by step, so a DataLoader can prefetch batches in workers; with
    ``rows``, each step's share of one data-parallel rank."""

    def __init__(self, corpus: Corpus, batch_size: int, seed: int, mask_prop: float, mask_gap: int,
                 mask_starts: str = "anywhere", rows: tuple[int, int] | None = None):
        self.corpus, self.batch_size, self.seed = corpus, batch_size, seed
        self.mask_prop, self.mask_gap, self.mask_starts, self.rows = mask_prop, mask_gap, mask_starts, rows

    def __len__(self):
        return 1 << 40

    def __getitem__(self, step: int) -> Batch:
        return self.corpus.train_batch(step, self.batch_size, self.seed, self.mask_prop, self.mask_gap,
                                       self.mask_starts, self.rows)
