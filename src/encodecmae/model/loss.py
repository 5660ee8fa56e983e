"""The paper's weighted cross-entropy.

For one clip with masked frames M and unmasked valid frames U:

    L = sum_q gamma_q [ delta/|M| sum_{t in M} CE_q(t) + (1 - delta)/|U| sum_{t in U} CE_q(t) ]

(alpha = delta/|M|, beta = (1 - delta)/(T_f - |M|) in the paper). The batch loss is the mean of
the per-clip losses, so it splits exactly across micro-batches and data-parallel ranks.
A clip with no masked (or no unmasked) frame contributes nothing to that term.

``norm="batch"`` is the released code's normalisation instead: each mean runs over all the
masked (unmasked) frames of the batch, so a clip weighs by its number of frames, and each
data-parallel rank or micro-batch normalises by its own frames. (The released code also counted
padding frames as unmasked, scored against the codes of the zero padding; our targets hold no
codes for padding, so padding is never scored here. With full 4-s crops there is no padding.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from encodecmae.model.config import LOSS_NORMS


def mae_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor,
             gamma: torch.Tensor, delta: float = 0.9, norm: str = "clip") -> dict[str, torch.Tensor]:
    """Weighted CE and its parts.

    logits [B, T, Q, K], targets [B, Q, T] (int), mask/valid [B, T] bool, gamma [Q].
    Returns ``loss`` (scalar, to backpropagate), ``masked_ce`` and ``unmasked_ce`` [Q] (mean
    CE per codebook over the batch's masked / unmasked frames, for logging) and
    ``masked_acc`` [Q] (top-1 accuracy on masked frames).
    """
    B, T, Q, K = logits.shape
    if targets.shape != (B, Q, T):
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits {(B, Q, T)}")
    if gamma.numel() != Q:
        raise ValueError(f"gamma has {gamma.numel()} weights for {Q} target streams")
    if norm not in LOSS_NORMS:
        raise ValueError(f"unknown loss normalisation {norm!r} (expected one of {LOSS_NORMS})")
    ce = F.cross_entropy(logits.float().reshape(B * T * Q, K), targets.transpose(1, 2).reshape(-1).long(),
                         reduction="none").view(B, T, Q)  # [B, T, Q]
    m = (mask & valid).float()  # [B, T]
    u = (~mask & valid).float()
    g = gamma.to(ce.device, ce.dtype)

    def batch_mean(w: torch.Tensor) -> torch.Tensor:  # [Q]: mean CE over the batch's frames of weight w [B, T]
        return (ce * w[..., None]).sum((0, 1)) / w.sum().clamp_min(1)

    if norm == "clip":
        n_m, n_u = m.sum(1), u.sum(1)  # [B]
        ce_m = (ce * m[..., None]).sum(1) / n_m.clamp_min(1)[:, None]  # [B, Q] per-clip mean over M
        ce_u = (ce * u[..., None]).sum(1) / n_u.clamp_min(1)[:, None]
        loss = (delta * (ce_m * g).sum(1) + (1.0 - delta) * (ce_u * g).sum(1)).mean()  # mean over clips
        with torch.no_grad():
            masked_ce, unmasked_ce = batch_mean(m), batch_mean(u)
    else:  # the batch means are the loss's terms: computed once, logged detached
        masked_ce, unmasked_ce = batch_mean(m), batch_mean(u)  # [Q] means over the batch's M and U
        loss = delta * (masked_ce * g).sum() + (1.0 - delta) * (unmasked_ce * g).sum()
        masked_ce, unmasked_ce = masked_ce.detach(), unmasked_ce.detach()
    with torch.no_grad():
        hit = (logits.argmax(-1) == targets.transpose(1, 2)).float()  # [B, T, Q]
        masked_acc = (hit * m[..., None]).sum((0, 1)) / m.sum().clamp_min(1)
    return {"loss": loss, "masked_ce": masked_ce, "unmasked_ce": unmasked_ce, "masked_acc": masked_acc}
