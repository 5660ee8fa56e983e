"""Span masking and the MAE gather/scatter of visible frames, vectorised over the batch.

The original procedure, per clip of ``L`` valid frames: draw span starts (without
replacement, in random order) and mask the ``gap`` frames after each start, clipped at the
end, until at least ``prop * L`` frames are masked; then unmask the excess so that exactly
``floor(prop * L)`` frames are masked.

Vectorised form (same distribution, no Python loop over clips): give every valid start a
random rank (argsort of uniform noise, as MAE's ``random_masking``); frame t is first
covered by the span whose start has the smallest rank among starts in ``[t - gap + 1, t]``
(a min-pool over a window of ``gap``). Drawing starts in rank order covers frames in order of
that "first rank", so the first ``floor(prop * L)`` frames in (first rank, position) order
are exactly the frames masked by the loop, with the excess removed from the last span. The
slow reference loop in tests/test_masking.py checks this frame for frame.

``starts="released"`` is the released code's variant of the procedure: span starts are drawn
only from ``[0, max(L - gap, 0)]``, so no span runs past the end, and the excess is unmasked
from the start of the first span drawn (of those starting before ``T - gap``, ``T`` the padded
length), not from the end of the last. The last frames of a clip are then masked far less often
(tests/test_masking.py measures the per-position profile of both).

Padding frames (t >= L) are never masked, never visible and never scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from encodecmae.model.config import MASK_STARTS


def valid_mask(lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """[B] lengths -> [B, T] bool, True on real (non-padding) frames."""
    return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]


def start_ranks(lengths: torch.Tensor, n_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random order in which span starts are drawn: [B, T] long, rank of each start.

    Padding positions get ranks after every valid one, so they are never drawn first.
    """
    noise = torch.rand(lengths.shape[0], n_frames, generator=generator, device=lengths.device)
    noise = noise.masked_fill(~valid_mask(lengths, n_frames), 2.0)  # padding after valid
    return noise.argsort(dim=1).argsort(dim=1)  # [B, T] rank of start t


def span_mask_from_ranks(ranks: torch.Tensor, lengths: torch.Tensor, prop: float, gap: int,
                         starts: str = "anywhere") -> torch.Tensor:
    """[B, T] start ranks -> [B, T] bool mask with exactly floor(prop * L) masked frames per clip."""
    if starts not in MASK_STARTS:
        raise ValueError(f"unknown mask starts {starts!r} (expected one of {MASK_STARTS})")
    B, T = ranks.shape
    valid = valid_mask(lengths, T)
    pos = torch.arange(T, device=ranks.device)[None, :]
    # where a span may start: any valid frame, or (released) only where it ends inside the clip
    may_start = valid if starts == "anywhere" else pos <= (lengths - gap).clamp_min(0)[:, None]
    big = T + 1  # larger than any rank
    r = ranks.masked_fill(~may_start, big).float()
    # first_rank[t] = min over starts s in [t - gap + 1, t] of rank[s]  (spans run forward)
    first = -F.max_pool1d(F.pad(-r[:, None], (gap - 1, 0), value=-float(big)), gap, stride=1)[:, 0]
    first = first.masked_fill(~valid, float(big))
    # Order frames by (first rank, position); mask the first n_mask of them.
    key = first * T + pos
    order_pos = key.argsort(dim=1).argsort(dim=1)  # [B, T] position of frame t in that order
    n_mask = torch.floor(lengths.float() * prop).long()  # [B]
    if starts == "anywhere":
        return (order_pos < n_mask[:, None]) & valid
    # Released: every span up to the one that reaches n_mask is masked whole ...
    in_order = first.gather(1, key.argsort(dim=1))  # [B, T] first ranks in masking order
    last_rank = in_order.gather(1, (n_mask - 1).clamp_min(0)[:, None])  # rank of the span reaching n_mask
    drawn = (first <= last_rank) & valid & (n_mask > 0)[:, None]
    excess = drawn.sum(1) - n_mask  # [B], < gap
    # ... then `excess` frames are unmasked from the start of the first span drawn among those that
    # start before T - gap (T the padded length; when there is none, the first span drawn)
    early = r.masked_fill((pos >= T - gap) | (r > last_rank), big)
    s0 = torch.where(early.min(1).values < big, early.argmin(1), r.argmin(1))
    hole = (pos >= s0[:, None]) & (pos < (s0 + excess)[:, None])
    return drawn & ~hole


def span_mask(lengths: torch.Tensor, n_frames: int, prop: float = 0.5, gap: int = 15,
              generator: torch.Generator | None = None, starts: str = "anywhere") -> torch.Tensor:
    """Sample a span mask: [B] valid lengths -> [B, T] bool (True = masked)."""
    return span_mask_from_ranks(start_ranks(lengths, n_frames, generator), lengths, prop, gap, starts)


def visible_indices(mask: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the visible frames, for dropping masked frames from the encoder input.

    Returns ``ids`` [B, Tv] (visible positions in increasing order, then filler) and
    ``keep`` [B, Tv] bool (True where ``ids`` points at a real visible frame), with Tv the
    largest number of visible frames in the batch.
    """
    B, T = mask.shape
    visible = valid_mask(lengths, T) & ~mask
    n_vis = visible.sum(dim=1)  # [B]
    pos = torch.arange(T, device=mask.device)[None, :]
    key = (~visible).long() * T + pos  # visible first, each group in time order
    tv = int(n_vis.max().item()) if B else 0
    ids = key.argsort(dim=1)[:, :tv]  # [B, Tv]
    keep = torch.arange(tv, device=mask.device)[None, :] < n_vis[:, None]
    return ids, keep


def gather_frames(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, T, D], ids [B, Tv] -> [B, Tv, D]."""
    return x.gather(1, ids[..., None].expand(-1, -1, x.shape[-1]))


def scatter_frames(fill: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Put ``values`` [B, Tv, D] back at positions ``ids`` of ``fill`` [B, T, D] where ``keep``."""
    out = fill.clone()
    b, j = keep.nonzero(as_tuple=True)
    out[b, ids[b, j]] = values[b, j].to(out.dtype)
    return out
