"""Span masking: exact counts, padding, and the vectorised form against a slow reference loop."""

import math

import torch

from encodecmae.model.masking import (gather_frames, scatter_frames, span_mask, span_mask_from_ranks, start_ranks,
                                valid_mask, visible_indices)


def reference_mask(ranks: torch.Tensor, length: int, prop: float, gap: int) -> torch.Tensor:
    """The original procedure, one clip, plain loops: draw starts in rank order until at least
    prop * length frames are masked, then unmask the excess from the end of the last span."""
    T = ranks.shape[0]
    mask = torch.zeros(T, dtype=torch.bool)
    target = prop * length
    starts = sorted(range(length), key=lambda s: int(ranks[s]))
    for s in starts:
        if mask.sum() >= target:
            break
        last_new = [t for t in range(s, min(s + gap, length)) if not mask[t]]
        mask[last_new] = True
    excess = int(mask.sum()) - math.floor(prop * length)
    for t in reversed(last_new) if excess > 0 else []:
        if excess == 0:
            break
        mask[t] = False
        excess -= 1
    return mask


def test_vectorised_mask_equals_reference_loop():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        B, T = 6, 120
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        prop = [0.5, 0.3, 0.8][trial % 3]
        gap = [15, 5, 1, 40][trial % 4]
        ranks = start_ranks(lengths, T, generator=g)
        fast = span_mask_from_ranks(ranks, lengths, prop, gap)
        for b in range(B):
            slow = reference_mask(ranks[b], int(lengths[b]), prop, gap)
            assert torch.equal(fast[b], slow), (trial, b)


def test_exact_counts_and_padding_never_masked():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([300, 299, 150, 31, 1, 2])
    mask = span_mask(lengths, 300, 0.5, 15, generator=g)
    assert mask.sum(1).tolist() == [150, 149, 75, 15, 0, 1]
    assert not (mask & ~valid_mask(lengths, 300)).any()


def test_masked_frames_come_in_spans():
    g = torch.Generator().manual_seed(2)
    lengths = torch.full((64,), 300)
    mask = span_mask(lengths, 300, 0.5, 15, generator=g)
    # run lengths of masked frames: spans of 15 that may merge; only the clipped last span
    # (end of clip or excess removal) can be shorter, so at most 2 short runs per clip
    for row in mask:
        runs, n = [], 0
        for v in row.tolist() + [False]:
            if v:
                n += 1
            elif n:
                runs.append(n)
                n = 0
        assert sum(r < 15 for r in runs) <= 2
    # every position is masked about half of the time
    assert 0.3 < mask.float().mean(0)[20:280].min() and mask.float().mean(0)[20:280].max() < 0.7


def test_visible_gather_scatter_roundtrip():
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([10, 7, 3])
    mask = span_mask(lengths, 10, 0.5, 2, generator=g)
    ids, keep = visible_indices(mask, lengths)
    n_vis = (valid_mask(lengths, 10) & ~mask).sum(1)
    assert ids.shape[1] == int(n_vis.max()) and keep.sum(1).tolist() == n_vis.tolist()
    x = torch.arange(3 * 10, dtype=torch.float32).view(3, 10, 1)
    v = gather_frames(x, ids)
    for b in range(3):
        expected = [t for t in range(int(lengths[b])) if not mask[b, t]]
        assert v[b, : len(expected), 0].long().tolist() == [b * 10 + t for t in expected]
        assert ids[b, : len(expected)].tolist() == expected  # in time order
    back = scatter_frames(torch.full_like(x, -1.0), v, ids, keep)
    visible = valid_mask(lengths, 10) & ~mask
    assert torch.equal(back[visible], x[visible]) and (back[~visible] == -1).all()
