"""The EnCodec codec: the frozen 24-kHz EnCodec encoder + residual vector quantiser (RVQ).

The MAE predicts, for every 75-Hz frame, the indices that EnCodec's RVQ assigns to it in its
first ``n_q`` = 8 codebooks (6 kbps). The same frozen encoder (without the RVQ) is the input
frontend of the EC->EC variant.

Two kinds of weights are supported, both from LOCAL files (no hub download at run time):

- the official pretrained state dict ``encodec_24khz-d7cc33bc.th`` (see
  :mod:`encodecmae.data.download`);
- a "fitted" checkpoint written by :func:`encodecmae.targets.codebooks.fit_codebooks` (the
  random-init encoder with RVQ codebooks fitted offline; see that module).

Frame arithmetic: the encoder downsamples by 320 with causal padding, so N samples give
T = ceil(N / 320) frames; a 4-s crop (96,000 samples) gives exactly 300.

Thread count: on the CPU, the encoder's output, hence the fitted codebooks, the tokens and
gamma, are the same bits whatever the number of intra-op threads (tests/test_determinism.py).
Two things in PyTorch would otherwise make them depend on it, both handled by
:func:`encoder_forward`: its choice of convolution algorithm and the seams between threads in
elementwise ops (see :class:`_ThreadInvariantOps`). k-means and the nearest-code search use
only kernels that split work over output elements, and float64 GEMMs in MKL's strict mode
(:func:`encodecmae.reproducible_blas`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from encodecmae.progress import progress
from encodecmae.data.shards import INT16_SCALE


N_Q = 8  # codebooks used as targets (6 kbps at 75 Hz, 10 bits each)
CODEBOOK_SIZE = 1024
BANDWIDTH_KBPS = 6.0


# --------------------------------------------------------------------------------------------
# Building the codec
# --------------------------------------------------------------------------------------------


def new_encodec():
    """The 24-kHz EnCodec architecture with random weights (uses torch's global RNG)."""
    from encodec import EncodecModel

    with warnings.catch_warnings():
        # encodec 0.1.1 wraps every conv in the deprecated torch.nn.utils.weight_norm.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return EncodecModel.encodec_model_24khz(pretrained=False)


def _read_checkpoint(path: Path) -> tuple[dict, bool]:
    """(state_dict, is_fitted) from an official state dict or a :func:`fit_codebooks` file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EnCodec checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, ...
        raise RuntimeError(f"{path}: cannot read EnCodec checkpoint ({exc})") from exc
    if isinstance(obj, dict) and obj.get("kind") == "fitted":
        return obj["state_dict"], True
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, False
    raise RuntimeError(f"{path}: not an EnCodec state dict nor a fitted-codebook checkpoint")


def set_codebook_size(model, k: int) -> None:
    """Give ``model`` a fresh (all-zero, un-inited) RVQ with k-entry codebooks.

    Fitted codebooks may be smaller than EnCodec's 1024 entries (small runs predict fewer
    classes); the codebook tensors then have exactly k rows, so tokens lie in [0, k).
    """
    from encodec.quantization import ResidualVectorQuantizer

    old = model.quantizer
    model.quantizer = ResidualVectorQuantizer(dimension=old.dimension, n_q=old.n_q, bins=k)


def build_encodec(checkpoint: str | Path | None):
    """The frozen 24-kHz EnCodec (eval mode, no grad, 6 kbps) with weights from ``checkpoint``.

    ``checkpoint`` is the official ``encodec_24khz-d7cc33bc.th`` state dict or a fitted
    checkpoint from :func:`fit_codebooks` (encoder + quantiser only: the decoder is never used
    for targets, so it stays randomly initialised; codebooks may have fewer than 1024 entries).
    ``None`` gives the random-init model, whose all-zero codebooks emit only token 0 (the
    starting point of :func:`fit_codebooks`).
    """
    model = new_encodec()
    if checkpoint is not None:
        path = Path(checkpoint)
        state, fitted = _read_checkpoint(path)
        embed = state.get("quantizer.vq.layers.0._codebook.embed")
        if fitted and embed is not None and embed.shape[0] != CODEBOOK_SIZE:
            set_codebook_size(model, embed.shape[0])
        try:
            missing, unexpected = model.load_state_dict(state, strict=not fitted)
        except RuntimeError as exc:
            raise RuntimeError(f"{path}: weights do not fit the 24-kHz EnCodec ({exc})") from exc
        if fitted:
            bad = [k for k in missing if not k.startswith("decoder.")] + list(unexpected)
            if bad:
                raise RuntimeError(f"{path}: fitted checkpoint lacks or adds keys {bad[:5]}")
    model.set_target_bandwidth(BANDWIDTH_KBPS)
    model.eval()
    model.requires_grad_(False)
    return model


# Elementwise ops on at most this many elements run on one thread (PyTorch's grain size for
# splitting an elementwise op between threads is 32768).
SERIAL_NUMEL = 16384


def _serial_elementwise(fn, x: torch.Tensor, *args) -> torch.Tensor:
    """``fn(x, *args)`` for an elementwise ``fn``, applied to fixed chunks of SERIAL_NUMEL
    elements of x (in memory order), each small enough to run on one thread."""
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    for s in range(0, flat.numel(), SERIAL_NUMEL):
        out[s : s + SERIAL_NUMEL] = fn(flat[s : s + SERIAL_NUMEL], *args)
    return out.view(x.shape)


class _ThreadInvariantOps(TorchFunctionMode):
    """Runs the EnCodec encoder so that its CPU output does not depend on the thread count.

    - Convolutions: PyTorch computes a 1x1 convolution of a batch smaller than 16 with its own
      im2col + GEMM code when it has one thread, with oneDNN when it has more, and the two
      round differently (this made 3 tokens of a CI shard and the fitted codebooks change
      between 1 and 2 threads). Every float32 CPU ``conv1d`` goes to oneDNN here, whatever the
      thread count, batch or size; oneDNN's result does not depend on the threads (measured:
      1-4 threads, batches 1-16, every layer of the encoder).
    - ELU: an elementwise op is split between threads at element ``ceil(n / threads)``, and
      the elements before each seam that do not fill a SIMD vector go through the scalar code
      path, whose exp() rounds differently from the vectorised one. With 1, 2 or 4 threads
      the seams fall on whole vectors for every shape of this encoder, with 3 they do not
      (measured). ELU runs here on chunks small enough for one thread.

    On other devices and dtypes every call passes through unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv1d and _onednn_ok(args[0]):
            return _onednn_conv1d(*args, **kwargs)
        if func is F.elu and args[0].device.type == "cpu" and args[0].numel() > SERIAL_NUMEL:
            x = args[0]
            alpha = args[1] if len(args) > 1 else kwargs.get("alpha", 1.0)
            inplace = args[2] if len(args) > 2 else kwargs.get("inplace", False)
            y = _serial_elementwise(F.elu, x, alpha)
            return x.copy_(y) if inplace else y
        return func(*args, **kwargs)


def _onednn_ok(x) -> bool:
    return (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _onednn_conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv1d`` computed by oneDNN (``torch.mkldnn_convolution``)."""
    if isinstance(padding, str):  # "same" / "valid": leave them to PyTorch
        return F.conv1d(x, weight, bias, stride, padding, dilation, groups)

    def one(v):
        return [int(v)] if isinstance(v, int) else [int(u) for u in v]

    unbatched = x.dim() == 2
    if unbatched:
        x = x[None]
    y = torch.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, one(padding), one(stride),
                                 one(dilation), groups)
    return y[0] if unbatched else y


def encoder_forward(encoder: nn.Module, wav: torch.Tensor) -> torch.Tensor:
    """The EnCodec ``encoder`` on wav [B, 1, N]: [B, 128, ceil(N / 320)], the same bits with any
    number of CPU threads (see :class:`_ThreadInvariantOps`)."""
    with _ThreadInvariantOps():
        return encoder(wav)


class EncodecTokenizer(nn.Module):
    """Frozen EnCodec encoder + the first ``n_q`` RVQ codebooks.

    ``checkpoint`` is a path for :func:`build_encodec` (or ``None`` for random init), or an
    already built ``EncodecModel``. Only the encoder and the first ``n_q`` codebooks are kept, so
    a model that embeds this module (EC->EC) does not carry the decoder or 24 unused codebooks.
    """

    def __init__(self, checkpoint=None, n_q: int = N_Q):
        super().__init__()
        from encodec import EncodecModel

        model = checkpoint if isinstance(checkpoint, EncodecModel) else build_encodec(checkpoint)
        if not 1 <= n_q <= len(model.quantizer.vq.layers):
            raise ValueError(f"n_q must be in 1..{len(model.quantizer.vq.layers)}, got {n_q}")
        self.n_q = n_q
        self.encoder = model.encoder
        self.codebooks = nn.ModuleList(model.quantizer.vq.layers[:n_q])  # EnCodec VectorQuantization
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """The codec is frozen: it stays in eval mode whatever the enclosing model does."""
        return super().train(False)

    @property
    def codebook_size(self) -> int:
        """Entries per codebook K: tokens lie in [0, K) (1024 for the pretrained EnCodec)."""
        return self.codebooks[0].codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> encoder output [B, 128, ceil(N / 320)], in float32 outside autocast."""
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, N], got shape {tuple(wav.shape)}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return encoder_forward(self.encoder, wav.float()[:, None, :])  # [B, 1, N] -> [B, 128, T]

    @torch.no_grad()
    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] float -> encoder output [B, T, 128], T = ceil(N / 320)."""
        return self._encode(wav).transpose(1, 2)

    @torch.no_grad()
    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] float -> RVQ codes [B, n_q, T] int64, T = ceil(N / 320)."""
        return rvq_encode(self.codebooks, self._encode(wav))[0]

    @torch.no_grad()
    def stage_errors(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> squared quantisation error of each RVQ stage [B, n_q, T] (float64)."""
        return rvq_encode(self.codebooks, self._encode(wav))[1]


# --------------------------------------------------------------------------------------------
# Residual vector quantisation
# --------------------------------------------------------------------------------------------


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, exclude: torch.Tensor | None = None,
                 chunk: int = 16384) -> torch.Tensor:
    """Index of the nearest codeword to each row of x [N, D] in codebook [K, D] ([N] int64).

    Computed in float64. EnCodec's own rule, ||x||^2 - 2 x.c + ||c||^2 in float32, cancels
    catastrophically when the frames share a large common offset, as the random-init encoder's
    do (variance is 0.2% of their energy): it then disagrees with the exact nearest code on ~5%
    of frames and flips with batch size or device. float64 also makes the result immune to TF32
    matmuls. ``exclude`` [N] optionally names one code per row that may not be chosen.
    """
    x, codebook = x.double(), codebook.double()
    c2 = codebook.pow(2).sum(1)  # [K]
    out = []
    for j, xs in enumerate(x.split(chunk)):
        d = c2 - 2 * xs @ codebook.T  # [n, K]: ||x - c||^2 - ||x||^2
        if exclude is not None:
            d.scatter_(1, exclude[j * chunk : j * chunk + len(xs), None], float("inf"))
        out.append(d.argmin(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def rvq_encode(layers: Sequence[nn.Module], emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual VQ of emb [B, D, T] with n_q EnCodec ``VectorQuantization`` layers (e.g. the
    first ``quantizer.vq.layers``): (codes [B, n_q, T] int64, stage errors [B, n_q, T] float64).

    Stage q quantises the residual r_q it receives (r_0 = emb) to its nearest codeword c_q;
    its error is ||r_q - c_q||^2 = ||r_{q+1}||^2, the residual it leaves for the next stage.
    Same rule as EnCodec's ``encode`` (its 24-kHz layers have no projections), with the
    distances in float64 (see :func:`nearest_code`).
    """
    B, D, T = emb.shape
    residual = emb.transpose(1, 2).reshape(B * T, D).double()  # [B*T, D]
    codes, errors = [], []
    for layer in layers:
        codebook = layer._codebook.embed.double()  # [K, D]
        idx = nearest_code(residual, codebook)  # [B*T]
        residual = residual - codebook[idx]
        codes.append(idx)
        errors.append(residual.pow(2).sum(dim=1))
    codes_t = torch.stack(codes, dim=1).reshape(B, T, -1).transpose(1, 2)  # [B, n_q, T]
    errors_t = torch.stack(errors, dim=1).reshape(B, T, -1).transpose(1, 2)  # [B, n_q, T]
    return codes_t, errors_t


# --------------------------------------------------------------------------------------------
# Audio batches through the codec
# --------------------------------------------------------------------------------------------


def to_float(x: np.ndarray) -> np.ndarray:
    """Audio as float32 in [-1, 1]; int16 PCM (as stored in shards) is rescaled."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / INT16_SCALE
    return x.astype(np.float32, copy=False)


def map_batched(fn, segments: Sequence[np.ndarray], batch_size: int, device,
                desc: str | None = None) -> list[torch.Tensor]:
    """``fn(wav [b, n]) -> [b, ...]`` over ``segments``, batching equal-length segments.

    Returns one output per segment, in input order, on the CPU. Equal lengths mean no padding,
    so a segment's result does not depend on what it is batched with.
    """
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(segments):
        by_len.setdefault(len(s), []).append(i)
    batches = [ids[j : j + batch_size] for ids in by_len.values() for j in range(0, len(ids), batch_size)]
    out: list[torch.Tensor | None] = [None] * len(segments)
    for ids in progress(batches, desc or "", unit="batch", disable=desc is None):
        wav = torch.from_numpy(np.stack([to_float(segments[i]) for i in ids])).to(device)  # [b, n]
        res = fn(wav).cpu()
        for k, i in enumerate(ids):
            out[i] = res[k]
    return out  # type: ignore[return-value]
