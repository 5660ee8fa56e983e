"""The weighted cross-entropy against a hand computation."""

import math

import pytest
import torch

from encodecmae.model.loss import mae_loss


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    B, T, Q, K = 2, 5, 2, 3
    logits = torch.randn(B, T, Q, K)
    targets = torch.randint(0, K, (B, Q, T))
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], dtype=torch.bool)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)  # clip 1 has 1 padding frame
    gamma = torch.tensor([0.7, 0.3])
    delta = 0.9
    out = mae_loss(logits, targets, mask, valid, gamma, delta)

    def ce(b, t, q):
        p = torch.softmax(logits[b, t, q], -1)
        return -math.log(float(p[targets[b, q, t]]))

    per_clip = []
    for b in range(B):
        M = [t for t in range(T) if mask[b, t] and valid[b, t]]
        U = [t for t in range(T) if not mask[b, t] and valid[b, t]]
        total = 0.0
        for q in range(Q):
            total += gamma[q].item() * (delta / len(M) * sum(ce(b, t, q) for t in M)
                                        + (1 - delta) / len(U) * sum(ce(b, t, q) for t in U))
        per_clip.append(total)
    assert out["loss"].item() == pytest.approx(sum(per_clip) / B, rel=1e-5)
    # logged parts: mean CE per codebook over all masked / unmasked valid frames of the batch
    for q in range(Q):
        m = [ce(b, t, q) for b in range(B) for t in range(T) if mask[b, t] and valid[b, t]]
        u = [ce(b, t, q) for b in range(B) for t in range(T) if not mask[b, t] and valid[b, t]]
        assert out["masked_ce"][q].item() == pytest.approx(sum(m) / len(m), rel=1e-5)
        assert out["unmasked_ce"][q].item() == pytest.approx(sum(u) / len(u), rel=1e-5)


def test_padding_does_not_change_the_loss():
    torch.manual_seed(1)
    logits = torch.randn(1, 6, 1, 4)
    targets = torch.randint(0, 4, (1, 1, 6))
    mask = torch.tensor([[True, False, True, False, False, False]])
    valid = torch.tensor([[True, True, True, True, False, False]])
    a = mae_loss(logits, targets, mask, valid, torch.ones(1))["loss"]
    logits2 = logits.clone()
    logits2[0, 4:] = 100 * torch.randn(2, 1, 4)
    targets2 = targets.clone()
    targets2[0, 0, 4:] = 3
    b = mae_loss(logits2, targets2, mask, valid, torch.ones(1))["loss"]
    assert a.item() == pytest.approx(b.item())


def test_loss_is_a_mean_over_clips_so_it_splits_across_micro_batches():
    torch.manual_seed(2)
    logits = torch.randn(4, 8, 2, 5)
    targets = torch.randint(0, 5, (4, 2, 8))
    mask = torch.rand(4, 8) < 0.5
    mask[:, 0] = True
    mask[:, 1] = False
    valid = torch.ones(4, 8, dtype=torch.bool)
    g = torch.tensor([0.5, 0.5])
    full = mae_loss(logits, targets, mask, valid, g)["loss"]
    halves = [mae_loss(logits[i:i + 2], targets[i:i + 2], mask[i:i + 2], valid[i:i + 2], g)["loss"] for i in (0, 2)]
    assert full.item() == pytest.approx(sum(h.item() for h in halves) / 2, rel=1e-6)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="gamma"):
        mae_loss(torch.randn(1, 2, 2, 3), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool),
                 torch.ones(1, 2, dtype=torch.bool), torch.ones(3))


def test_batch_normalisation_weighs_clips_by_their_frames():
    """norm="batch" (the released code): means over all the batch's masked / unmasked frames."""
    torch.manual_seed(0)
    B, T, Q, K = 2, 6, 2, 5
    logits = torch.randn(B, T, Q, K)
    targets = torch.randint(0, K, (B, Q, T))
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    valid = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    gamma = torch.tensor([0.7, 0.3])
    ce = -torch.log_softmax(logits, -1).gather(-1, targets.transpose(1, 2)[..., None])[..., 0]  # [B, T, Q]
    m, u = mask & valid, ~mask & valid
    want = 0.9 * (ce[m].mean(0) * gamma).sum() + 0.1 * (ce[u].mean(0) * gamma).sum()  # 3 masked, 6 unmasked
    got = mae_loss(logits, targets, mask, valid, gamma, 0.9, norm="batch")["loss"]
    assert torch.allclose(got, want, atol=1e-6)
    per_clip = mae_loss(logits, targets, mask, valid, gamma, 0.9)["loss"]
    assert not torch.allclose(got, per_clip)  # clip 0 has 4 unmasked frames, clip 1 has 2
    full = torch.ones_like(valid)  # with equal frame counts per clip the two agree
    m2 = torch.zeros_like(mask)
    m2[:, :3] = True
    assert torch.allclose(mae_loss(logits, targets, m2, full, gamma, norm="batch")["loss"],
                          mae_loss(logits, targets, m2, full, gamma)["loss"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown loss normalisation"):
        mae_loss(logits, targets, mask, valid, gamma, norm="frames")
