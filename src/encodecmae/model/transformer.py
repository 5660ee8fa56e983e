"""The EnCodecMAE model, top to bottom as in the paper's Figure 1.

waveform X_a [B, N]
  -> features X_f [B, T, F]          (log-mel or frozen EnCodec encoder, 75 frames/s)
  -> Linear(F, D) + sinusoidal positions (learnable scale), added *before* masking
  -> drop the masked frames -> X_v [B, Tv, D]
  -> encoder: n_layers ResiDual transformer blocks -> X_e [B, Tv, D]
  -> Linear(D, D), re-insert mask tokens at masked positions, add positions again -> X_d [B, T, D]
  -> decoder: 2 ResiDual blocks -> head Linear(D, Q*K) -> logits [B, T, Q, K]

Settings where the released code differs from the paper's text (``ModelConfig``): one feed-forward
block shared by all layers of a stack (``feedforward="shared"``; attention and norms stay per
layer), zeros instead of a learned mask token and the mel framing (see ``features``). The
positional scales: v2 (the paper's code) has one for the encoder input and one in the decoder,
our default ``positions="per_stack"``; v1 had one for both (``positions="shared"``). Attention
heads are D // n_heads wide, as released: 12 heads of 85 for the large model's D=1024.

ResiDual ("pre-post LN", arXiv 2304.14802) keeps two streams: a post-LN stream, normalised
after each residual add, and an un-normalised residual stream that sums every sublayer
output. The stack's output is ``x_post + LayerNorm(x_res)``.

On the CPU every pass, training steps included, gives the same bits whatever the number of
intra-op threads (tests/test_determinism.py), given two things. GEMMs run in MKL's strict
conditional-numerical-reproducibility mode (:func:`encodecmae.reproducible_blas`, switched on when the
package is imported): otherwise MKL picks kernels and splits the inner dimension of a GEMM
between threads depending on their number. And :class:`LayerNorm` computes the weight and
bias gradients of its CPU backward column by column (PyTorch's fused kernel adds per-thread
partial sums).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from encodecmae.model.config import ModelConfig
from encodecmae.model.features import build_frontend
from encodecmae.model.masking import gather_frames, scatter_frames, valid_mask, visible_indices




# MKL's strict reproducible mode is requested when the package is imported (see
# encodecmae.reproducible_blas): before this module's first GEMM.


class _LayerNormFunction(torch.autograd.Function):
    """``F.layer_norm`` over the last dimension whose weight and bias gradients are column sums.

    Forward and input gradient are PyTorch's fused kernels (row by row, so the same bits with
    any thread count); the fused backward's weight and bias gradients, which add per-thread
    partial sums over the rows, are replaced by ``sum(0)`` of [rows, D] tensors, which PyTorch
    reduces column by column, each column on one thread.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        d = x.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(grad, x, [d], mean, rstd, weight, bias,
                                                               [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = (grad * ((x - mean) * rstd)).reshape(-1, d).sum(0)
        if ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, d).sum(0)
        return grad_x, grad_w, grad_b, None


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension (same parameters, state dict and forward
    values) whose backward on the CPU does not depend on the number of threads.

    PyTorch's fused CPU backward adds per-thread partial sums over the rows for the weight and
    bias gradients, so they changed in the last bits between 1 and 2 threads (and the weights
    after one step); :class:`_LayerNormFunction` sums them column by column. It costs 2.0 ms
    against 1.3 ms for forward + backward of a [16, 300, 96] batch on one thread. Without
    gradients and off the CPU this is ``nn.LayerNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_grad_enabled() and self.weight is not None
                and self.bias is not None and len(self.normalized_shape) == 1):
            return _LayerNormFunction.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal table times a learnable scalar (init 1.0)."""

    def __init__(self, d_model: int, max_len: int = 10_000):
        super().__init__()
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10_000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, n_frames: int) -> torch.Tensor:
        if n_frames > self.pe.shape[0]:
            raise ValueError(f"sequence of {n_frames} frames exceeds the position table ({self.pe.shape[0]})")
        return self.scale * self.pe[:n_frames]  # [T, D]


class SelfAttention(nn.Module):
    """Multi-head self-attention, no biases, as the released code's ``MultiHeadAttention``.

    Each head is ``D // n_heads`` wide, so the projections are ``n_heads * (D // n_heads)`` wide:
    D=1024 with 12 heads (the released large model) gives 12 heads of 85, a 1020-wide attention
    and a score scale of 85^-0.5 (scaled_dot_product_attention's default, 1/sqrt(head width)).
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if not 1 <= n_heads <= d_model:
            raise ValueError(f"n_heads {n_heads} must be in 1..d_model ({d_model})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        width = n_heads * self.head_dim
        self.qkv = nn.Linear(d_model, 3 * width, bias=False)  # no bias, as the original
        self.out = nn.Linear(width, d_model, bias=False)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # keep [B, T]: padding keys are never attended to
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


def feedforward(d_model: int, ff_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Linear(ff_dim, d_model))


class ResiDualBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ff_dim: int, ff: nn.Module | None = None):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads)
        self.ff = ff if ff is not None else feedforward(d_model, ff_dim)  # ``ff``: the stack's shared block
        self.ln_attn = LayerNorm(d_model)
        self.ln_ff = LayerNorm(d_model)

    def forward(self, x_post, x_res, keep):
        a = self.attn(x_post, keep)
        x_post, x_res = self.ln_attn(x_post + a), x_res + a
        f = self.ff(x_post)
        return self.ln_ff(x_post + f), x_res + f


class ResiDualStack(nn.Module):
    """``n_layers`` ResiDual blocks and the output norm. ``shared_ff``: the blocks share one
    feed-forward module (the same object in every block, so the optimiser sees its parameters
    once, its gradient sums the contributions of every layer, and the state dict lists it under
    every block: ``blocks.i.ff.*`` are one tensor)."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, ff_dim: int, shared_ff: bool = False):
        super().__init__()
        shared = feedforward(d_model, ff_dim) if shared_ff else None
        self.blocks = nn.ModuleList(ResiDualBlock(d_model, n_heads, ff_dim, shared) for _ in range(n_layers))
        self.ln_out = LayerNorm(d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, return_all: bool = False):
        """x [B, T, D] -> output [B, T, D]; with return_all, also every block's post-LN stream."""
        x_post, x_res = x, x
        layers = []
        for block in self.blocks:
            x_post, x_res = block(x_post, x_res, keep)
            layers.append(x_post)
        out = x_post + self.ln_out(x_res)
        return (out, layers) if return_all else out


class EncodecMAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.frontend = build_frontend(cfg.input, cfg.encodec_checkpoint, cfg.mel_mean, cfg.mel_std,
                                       cfg.mel_framing)
        self.in_proj = nn.Linear(self.frontend.dim, D)
        self.enc_pos = SinusoidalPositions(D)
        shared_ff = cfg.feedforward == "shared"
        self.encoder = ResiDualStack(cfg.n_layers, D, cfg.n_heads, cfg.ff_dim, shared_ff)
        self.enc_to_dec = nn.Linear(D, D)
        self.mask_token = nn.Parameter(torch.zeros(D), requires_grad=cfg.mask_token == "learned")
        # the released code adds one positional module, with one learned scale, to both inputs
        self.dec_pos = self.enc_pos if cfg.positions == "shared" else SinusoidalPositions(D)
        self.decoder = ResiDualStack(cfg.dec_layers, D, cfg.n_heads, cfg.ff_dim, shared_ff)
        self.head = nn.Linear(D, cfg.n_streams * cfg.n_classes)
        self._init_weights()

    def _init_weights(self):
        # xavier_uniform Linear with zero bias, LayerNorm 1/0, as the original; the frontend
        # (a frozen codec, or a parameter-free mel) keeps its own weights.
        for name, child in self.named_children():
            if name == "frontend":
                continue
            for m in child.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if self.cfg.mask_token == "learned":
            nn.init.normal_(self.mask_token, std=0.02)

    def reset_head(self, n_streams: int, n_classes: int) -> None:
        """New Q x K head (self-training: 1 stream of k-means cluster ids)."""
        self.cfg = replace(self.cfg, n_streams=n_streams, n_classes=n_classes)
        device = self.head.weight.device
        self.head = nn.Linear(self.cfg.d_model, n_streams * n_classes).to(device)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # --- pieces -------------------------------------------------------------------------

    def embed_input(self, wav: torch.Tensor, exact_length: bool = False) -> torch.Tensor:
        """[B, N] waveform -> [B, T, D] projected features with positions (before masking).

        ``exact_length``: the features of exactly these N samples, as the authors' code computes
        them at inference (``features``: no padding to whole hops; the released mel framing then
        has Kaldi's frame count).
        """
        feats = self.frontend(wav, exact_length=True) if exact_length else self.frontend(wav)
        x = self.in_proj(feats)  # [B, T, D]
        return x + self.enc_pos(x.shape[1])

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Training pass.

        wav [B, N] at 24 kHz (N = 320 T), lengths [B] valid frames, mask [B, T] bool (True =
        masked) -> logits [B, T, Q, K] for every frame (padding frames carry garbage and are
        never scored).
        """
        x = self.embed_input(wav)  # [B, T, D]
        B, T, D = x.shape
        ids, keep = visible_indices(mask, lengths)  # [B, Tv], [B, Tv]
        enc = self.encoder(gather_frames(x, ids), keep)  # [B, Tv, D]: masked frames dropped
        enc = self.enc_to_dec(enc)
        fill = self.mask_token.to(enc.dtype).expand(B, T, D)
        xd = scatter_frames(fill, enc, ids, keep) + self.dec_pos(T).to(enc.dtype)  # [B, T, D]
        dec = self.decoder(xd, valid_mask(lengths, T))
        return self.head(dec).view(B, T, self.cfg.n_streams, self.cfg.n_classes)

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None,
               exact_length: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Unmasked encoder pass for extraction.

        Returns the encoder output [B, T, D] (the "last layer") and the list of every block's
        post-LN stream [n_layers x [B, T, D]] (the last one is the last layer *before* the
        final ResiDual output norm, which self-training clusters). ``lengths`` [B]: frames
        attended to (default: all; more than T means all). ``exact_length``: see ``embed_input``.
        """
        x = self.embed_input(wav, exact_length)
        B, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        return self.encoder(x, valid_mask(lengths.to(x.device), T), return_all=True)

    def hidden_states(self, wav: torch.Tensor, lengths: torch.Tensor | None = None,
                      exact_length: bool = False) -> list[torch.Tensor]:
        """Encoder activations, [n_layers + 1 x [B, T, D]].

        Index i < n_layers is block i's post-LN stream; index -1 is the encoder output (the
        "last layer" used for embeddings); index -2 is the last block before the final
        ResiDual output norm (the self-training teacher's features). ``exact_length``: see
        ``encode``.
        """
        out, layers = self.encode(wav, lengths, exact_length)
        return layers + [out]


def count_parameters(model: EncodecMAE, per_use: bool = False) -> dict[str, int]:
    """Parameter counts by part (what Table 1's "Params" is compared against).

    Distinct weights by default: a shared feed-forward block counts once (what the optimiser
    updates and a checkpoint stores). ``per_use``: counted once per layer that uses it, as
    torchinfo's summary of the released model does, which is how the paper counts. The
    attention is n_heads * (D // n_heads) wide, so the large model's 12 heads of 85 count
    4 x 1020 x 1024 per layer. Buffers (EnCodec codebooks, the sinusoid table) are not counted.
    """
    def n(m):
        return sum(p.numel() for p in m.parameters())

    def stack(s: ResiDualStack):
        return sum(n(b) for b in s.blocks) + n(s.ln_out) if per_use else n(s)

    dec_pos = 0 if model.dec_pos is model.enc_pos else model.dec_pos.scale.numel()
    mask_token = model.mask_token.numel() if model.mask_token.requires_grad else 0  # "zeros": no parameter
    parts = {
        "frontend": n(model.frontend),
        "in_proj": n(model.in_proj),
        "encoder": stack(model.encoder) + model.enc_pos.scale.numel(),
        "decoder": n(model.enc_to_dec) + stack(model.decoder) + dec_pos + mask_token,
        "head": n(model.head),
    }
    parts["total"] = sum(parts.values())
    return parts


def paper_param_count(model: EncodecMAE) -> int:
    """Parameters as Table 1 counts them: the encoder blocks, per use, plus a frozen EnCodec frontend.

    With the released attention (12 heads of D // 12) this gives 43.3 M (small), 86.6 M (base)
    and 251.5 M (large) against the paper's 43.6, 86.6 and 261.6 M, and 94.0 M for EC->EC base
    (+ 7.4 M of EnCodec encoder), with the feed-forward block shared or not (tests/test_model.py).
    """
    c = count_parameters(model, per_use=True)
    return c["encoder"] + c["frontend"]
