"""Span masking: exact counts, padding, and the vectorised form against a slow reference loop."""

import math

import pytest
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


def released_reference_mask(ranks: torch.Tensor, length: int, prop: float, gap: int) -> torch.Tensor:
    """The released code's procedure, one clip, plain loops: starts only in [0, max(L - gap, 0)],
    drawn in rank order until at least floor(prop * L) frames are masked; the excess is unmasked
    from the start of the first span drawn among those starting before T - gap."""
    T = ranks.shape[0]
    mask = torch.zeros(T, dtype=torch.bool)
    target = math.floor(prop * length)
    drawn = []
    for s in sorted(range(max(length - gap, 0) + 1), key=lambda s: int(ranks[s])):
        if mask.sum() >= target:
            break
        drawn.append(s)
        mask[s:min(s + gap, length)] = True
    excess = int(mask.sum()) - target
    if excess > 0:
        early = [s for s in drawn if s < T - gap]
        s0 = early[0] if early else drawn[0]
        mask[s0:s0 + excess] = False
    return mask


@pytest.mark.parametrize("starts", ["anywhere", "released"])
def test_vectorised_mask_equals_reference_loop(starts):
    reference = reference_mask if starts == "anywhere" else released_reference_mask
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        B, T = 6, 120
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        prop = [0.5, 0.3, 0.8][trial % 3]
        gap = [15, 5, 1, 40][trial % 4]
        ranks = start_ranks(lengths, T, generator=g)
        fast = span_mask_from_ranks(ranks, lengths, prop, gap, starts)
        assert (fast.sum(1) == torch.floor(lengths * prop)).all()
        for b in range(B):
            slow = reference(ranks[b], int(lengths[b]), prop, gap)
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


def test_per_position_masking_profile_of_both_variants():
    """P(masked) per frame over 4000 clips of 300 frames. Anywhere: about half everywhere but the
    first frames (a span must start at or before them). Released: also low at the end, the last
    frame ~0.05 (implementation_notes.md: ~0.52 mid-clip, ~0.30 over the first and last 15)."""
    lengths = torch.full((4000,), 300)
    profile = {}
    for starts in ("anywhere", "released"):
        m = span_mask(lengths, 300, 0.5, 15, generator=torch.Generator().manual_seed(5), starts=starts)
        assert (m.sum(1) == 150).all()
        profile[starts] = m.float().mean(0)
    anywhere, released = profile["anywhere"], profile["released"]
    for p in (anywhere, released):
        assert 0.49 < p[100:200].mean() < 0.55 and 0.27 < p[:15].mean() < 0.34 and p[0] < 0.08
    assert 0.47 < anywhere[-15:].mean() < 0.55 and 0.45 < anywhere[-1] < 0.56
    assert 0.27 < released[-15:].mean() < 0.34 and 0.03 < released[-1] < 0.08
    # symmetric in the released variant: the last frames as rare as the first
    assert abs(released[-15:].mean() - released[:15].mean()) < 0.03
    with pytest.raises(ValueError, match="unknown mask starts"):
        span_mask(lengths[:1], 300, starts="everywhere")
