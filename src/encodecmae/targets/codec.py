"""EnCodec targets: the frozen 24-kHz EnCodec encoder + residual vector quantiser (RVQ).

The MAE predicts, for every 75-Hz frame, the indices that EnCodec's RVQ assigns to it in its
first ``n_q`` = 8 codebooks (6 kbps). The same frozen encoder (without the RVQ) is the input
frontend of the EC->EC variant.

Two kinds of weights are supported, both from LOCAL files (no hub download at run time):

- the official pretrained state dict ``encodec_24khz-d7cc33bc.th`` (see ``download.py``);
- a "fitted" checkpoint written by :func:`fit_codebooks`. A randomly initialised EnCodec has
  all-zero codebooks (EnCodec initialises them by k-means on its first training batch), so it
  emits token 0 everywhere and gives no training signal. Where the pretrained weights cannot be
  had, we keep the random-init encoder and fit its codebooks offline by residual k-means, which
  yields a usable, fully reproducible (seeded) tokenizer with the same shapes and frame layout.

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

import json
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from encodecmae import CROP_SAMPLES, HOP, SAMPLE_RATE
from encodecmae.progress import progress
from encodecmae.data.shards import INT16_SCALE, Shard, save_targets


N_Q = 8  # codebooks used as targets (6 kbps at 75 Hz, 10 bits each)
CODEBOOK_SIZE = 1024
BANDWIDTH_KBPS = 6.0
FIT_CROP_SAMPLES = 2 * SAMPLE_RATE  # crops for codebook fitting: short, to cover many clips
KMEANS_ITERS = 10


# --------------------------------------------------------------------------------------------
# Building the codec
# --------------------------------------------------------------------------------------------


def _new_encodec():
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


def _set_codebook_size(model, k: int) -> None:
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
    model = _new_encodec()
    if checkpoint is not None:
        path = Path(checkpoint)
        state, fitted = _read_checkpoint(path)
        embed = state.get("quantizer.vq.layers.0._codebook.embed")
        if fitted and embed is not None and embed.shape[0] != CODEBOOK_SIZE:
            _set_codebook_size(model, embed.shape[0])
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
# Clips, crops and batching
# --------------------------------------------------------------------------------------------


def _to_float(x: np.ndarray) -> np.ndarray:
    """Audio as float32 in [-1, 1]; int16 PCM (as stored in shards) is rescaled."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / INT16_SCALE
    return x.astype(np.float32, copy=False)


def shard_clips(shard_dirs: Sequence[str | Path]) -> list[np.ndarray]:
    """Every clip of the shards as int16 views into their memory-mapped audio (no copy).

    The clip functions below accept these as they are, so sampling crops reads only the crops.
    """
    clips = []
    for d in shard_dirs:
        shard = Shard.open(d)
        for off, n in zip(shard.manifest.offset, shard.manifest.n_samples):
            clips.append(shard.audio[int(off) : int(off) + int(n)])
    return clips


def _random_crops(clips: Sequence[np.ndarray], idx: Sequence[int], crop: int,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """A random ``crop``-sample window (start on the 320-sample grid) of each clip ``idx[i]``.

    Clips shorter than ``crop`` are taken whole.
    """
    out = []
    for i in idx:
        clip = clips[i]
        n = len(clip)
        if n <= crop:
            out.append(_to_float(clip))
            continue
        start = int(rng.integers(0, (n - crop) // HOP + 1)) * HOP
        out.append(_to_float(clip[start : start + crop]))
    return out


def _map_batched(fn, segments: Sequence[np.ndarray], batch_size: int, device,
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
        wav = torch.from_numpy(np.stack([_to_float(segments[i]) for i in ids])).to(device)  # [b, n]
        res = fn(wav).cpu()
        for k, i in enumerate(ids):
            out[i] = res[k]
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Offline codebooks
# --------------------------------------------------------------------------------------------


def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384):
    """k-means assignment for centred x [N, D]: nearest centroid and squared distance, float32."""
    c2 = centroids.pow(2).sum(1)  # [K]
    idx, dist = [], []
    for xs in x.split(chunk):
        d = xs.pow(2).sum(1, keepdim=True) - 2 * xs @ centroids.T + c2  # [n, K]
        m = d.min(dim=1)
        idx.append(m.indices)
        dist.append(m.values.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, n_iter: int = KMEANS_ITERS,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x [N, D]: (centroids [k, D], cluster sizes [k]).

    Starts from k distinct random points (all points plus random repeats when N < k). A cluster
    that empties is re-seeded at the point that is currently worst quantised, so all k codes stay
    in use when there are at least k distinct points; otherwise the extra codes end up as
    duplicates with size 0. The data are centred first so that float32 distances stay accurate.

    Plain random seeding, not k-means++: on EnCodec encoder frames k-means++ picks outliers, and
    its 1024 sequential steps cost more than the Lloyd iterations; measured on held-out frames,
    random seeding gave lower RVQ error and twice the codebook usage. Ten iterations are as good
    as twenty there.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("kmeans: no data")
    mean = x.mean(dim=0)
    x = x - mean  # [N, D]
    if n >= k:
        init = torch.randperm(n, generator=generator)[:k]
    else:
        extra = torch.randint(0, n, (k - n,), generator=generator)
        init = torch.cat([torch.randperm(n, generator=generator), extra])
    centroids = x[init].clone()  # [k, D]
    for _ in range(n_iter):
        assign, dist = _assign(x, centroids)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        live = counts > 0
        centroids[live] = sums[live] / counts[live, None].to(x.dtype)
        dead = (~live).nonzero().squeeze(1)
        if len(dead):
            worst = dist.topk(min(len(dead), n)).indices
            centroids[dead[: len(worst)]] = x[worst]
    assign, _ = _assign(x, centroids)
    return centroids + mean, torch.bincount(assign, minlength=k)


def _next_residual(residual: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor,
                   sizes: torch.Tensor) -> torch.Tensor:
    """The residual [N, D] handed from one RVQ stage to the next while fitting.

    A frame alone in its cluster has itself as its code, so its in-sample residual is exactly
    zero: with few frames per code (1024 codes, a few thousand frames) these zeros pile up
    stage after stage until the later codebooks are fitted on nothing and collapse to one code.
    Such a frame gets the residual to its second-nearest code instead, i.e. what a similar,
    unseen frame would leave. Measured on held-out frames this removes the collapse and matches
    the plain residual where frames are plentiful (15k frames: same RVQ error).
    """
    out = residual - centroids[assign]
    alone = sizes[assign] == 1
    if alone.any():
        other = nearest_code(residual[alone], centroids, exclude=assign[alone])
        out[alone] = residual[alone] - centroids[other]
    return out


def fit_codebooks(clips: Sequence[np.ndarray], out_path: str | Path, n_q: int = N_Q,
                  k: int = CODEBOOK_SIZE, seed: int = 0, max_frames: int = 12_000,
                  batch_size: int = 8) -> dict:
    """Fit RVQ codebooks for the seeded random-init EnCodec encoder and save a checkpoint.

    The encoder is the random-init 24-kHz EnCodec built under ``torch.manual_seed(seed)``.
    Its output is computed on seeded random 2-s crops of ``clips`` (float or int16 arrays at
    24 kHz) totalling about ``max_frames`` frames (all of the audio if it is shorter): the
    encoder, not k-means, dominates the cost (~10-15x real time on 2 CPU cores), so frames are
    subsampled as audio before encoding. Codebook q is then fitted by k-means on the residual
    left by codebooks < q (see :func:`_next_residual`) and written into the quantiser's buffers
    (embed, embed_avg, cluster_size, inited); with ``k`` < 1024 the quantiser is rebuilt with
    k-entry codebooks. Saves ``{"state_dict", "kind": "fitted", "n_q", "codebook_size", "seed",
    "n_frames"}`` (encoder + quantiser weights) and returns a summary dict.
    """
    t0 = time.time()
    if not 2 <= k <= CODEBOOK_SIZE:
        raise ValueError(f"codebook size must be in 2..{CODEBOOK_SIZE} (EnCodec's), got {k}")
    if not clips:
        raise ValueError("fit_codebooks: no clips")
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = _new_encodec()
    if k != CODEBOOK_SIZE:
        _set_codebook_size(model, k)
    model.eval()
    model.requires_grad_(False)
    layers = model.quantizer.vq.layers
    if not 1 <= n_q <= len(layers):
        raise ValueError(f"n_q must be in 1..{len(layers)}, got {n_q}")

    # Seeded crops, drawn with probability proportional to clip length, until the budget is met.
    rng = np.random.default_rng(seed)
    lengths = np.array([len(c) for c in clips], dtype=np.float64)
    total_frames = int(lengths.sum()) // HOP
    if total_frames <= max_frames:
        crops = [_to_float(c[s : s + FIT_CROP_SAMPLES]) for c in clips for s in range(0, len(c), FIT_CROP_SAMPLES)]
    else:
        n_crops = math.ceil(max_frames / (FIT_CROP_SAMPLES // HOP))
        idx = rng.choice(len(clips), size=n_crops, p=lengths / lengths.sum())
        crops = _random_crops(clips, idx, FIT_CROP_SAMPLES, rng)
    encoder = model.encoder
    with torch.no_grad():
        feats = _map_batched(lambda w: encoder_forward(encoder, w[:, None, :]), crops, batch_size, "cpu",
                             desc="encode")
    x = torch.cat([f.T for f in feats])  # [n_frames, 128]
    if len(x) > max_frames:
        x = x[torch.from_numpy(rng.choice(len(x), size=max_frames, replace=False))]
    t_encode = time.time() - t0

    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()  # [n_frames, 128]: what is left for codebook q to quantise
    n_used = []
    for q in progress(range(n_q), "k-means", unit="codebook"):
        centroids, _ = kmeans(residual, k, generator=gen)
        assign = nearest_code(residual, centroids)  # the rule tokenize() uses
        sizes = torch.bincount(assign, minlength=k)
        cb = layers[q]._codebook  # EnCodec's buffers, as its own k-means init fills them
        cb.embed.copy_(centroids)
        cb.embed_avg.copy_(centroids)
        cb.cluster_size.copy_(sizes.float())
        cb.inited.fill_(1.0)
        n_used.append(int((sizes > 0).sum()))
        residual = _next_residual(residual, centroids, assign, sizes)

    state = {k_: v for k_, v in model.state_dict().items() if not k_.startswith("decoder.")}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    torch.save({"state_dict": state, "kind": "fitted", "n_q": n_q, "codebook_size": k, "seed": seed,
                "n_frames": len(x)}, tmp)
    tmp.replace(out_path)
    summary = {
        "n_frames": len(x),
        "n_crops": len(crops),
        "seconds_encode": round(t_encode, 2),
        "seconds_total": round(time.time() - t0, 2),
        "n_used": n_used,  # codes used by the fitting frames, per codebook
    }
    return summary


# --------------------------------------------------------------------------------------------
# Diagnostics: codebook usage and per-codebook loss weights
# --------------------------------------------------------------------------------------------


def codebook_usage(tokens, codebook_size: int = CODEBOOK_SIZE) -> dict:
    """Per-codebook number of distinct codes and entropy (bits) of tokens [..., n_q, T].

    ``codebook_size`` only sizes the histograms (any K up to it is fine)."""
    t = torch.as_tensor(np.asarray(tokens)) if not isinstance(tokens, torch.Tensor) else tokens
    t = t.long().movedim(-2, 0).reshape(t.shape[-2], -1)  # [n_q, everything else]
    n_used, entropy = [], []
    for row in t:
        counts = torch.bincount(row, minlength=codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        n_used.append(int((counts > 0).sum()))
        entropy.append(float(-(p * p.log2()).sum()) + 0.0)  # + 0.0 turns -0.0 into 0.0
    return {"n_used": n_used, "entropy_bits": entropy}


def estimate_gamma(tokenizer: EncodecTokenizer, clips: Sequence[np.ndarray], n_clips: int = 150,
                   seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """Per-codebook loss weights gamma [n_q]: mean quantisation error of each RVQ stage.

    The paper sets gamma_q to "the average quantization error for the q-th codebook computed
    over 150 random training samples, normalized to sum to 1.0". Here the error of codebook q
    is the mean (over all frames of the sample) squared norm of the residual it leaves,
    ||r_q - c_q(r_q)||^2 (see :func:`rvq_encode`); the sample is ``n_clips`` clips drawn
    without replacement (all clips if fewer), one random 4-s crop each, seeded by ``seed``.
    """
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(clips), size=min(n_clips, len(clips)), replace=False)
    crops = _random_crops(clips, np.sort(idx), CROP_SAMPLES, rng)
    errs = _map_batched(tokenizer.stage_errors, crops, batch_size, tokenizer.device)  # each [n_q, T]
    err = torch.cat(errs, dim=1).double().mean(dim=1)  # [n_q]: pooled over every frame
    return (err / err.sum()).numpy()


# --------------------------------------------------------------------------------------------
# Shard tokenisation
# --------------------------------------------------------------------------------------------


def tokenize_shard(shard_dir: str | Path, checkpoint: str | Path | None, out_path: str | Path,
                   n_q: int = N_Q, batch_size: int = 16, chunk_seconds: float = 10.0,
                   device: str = "cpu") -> np.ndarray:
    """Write the EnCodec tokens of every clip of a shard as int16 [n_q, shard.n_frames].

    Clips are whole multiples of 320 samples, so clip frame t is shard frame offset // 320 + t
    and each clip gets exactly n_samples // 320 token frames. Long clips are cut into
    ``chunk_seconds`` chunks (a multiple of 320 samples), each tokenised on its own (the codec
    restarts at every chunk boundary, as it does at the start of a 4-s training crop); chunks of
    equal length are batched.
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
    segments = [shard.audio[o : o + n] for o, n in starts]  # int16 memmap views
    tokens = _map_batched(tokenizer.tokenize, segments, batch_size, device, desc=f"tokenize {shard.path.name}")
    targets = np.zeros((n_q, shard.n_frames), dtype=np.int16)
    for (o, n), tok in zip(starts, tokens):
        assert tok.shape == (n_q, n // HOP), tok.shape
        targets[:, o // HOP : o // HOP + n // HOP] = tok.numpy()
    save_targets(out_path, targets)
    return targets


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_fit(args) -> None:
    summary = fit_codebooks(shard_clips(args.shards), args.out, n_q=args.n_q, k=args.codebook_size,
                            seed=args.seed, max_frames=args.max_frames)
    print(json.dumps({"out": str(args.out), **summary}))


def _cmd_tokenize(args) -> None:
    tokens = tokenize_shard(args.shard, args.checkpoint, args.out, n_q=args.n_q, batch_size=args.batch_size,
                            chunk_seconds=args.chunk_seconds, device=args.device)
    print(json.dumps({"out": str(args.out), "n_frames": tokens.shape[1], **codebook_usage(tokens)}))


def _cmd_gamma(args) -> None:
    tokenizer = EncodecTokenizer(args.checkpoint, n_q=args.n_q).to(args.device)
    clips = shard_clips(args.shards)
    gamma = estimate_gamma(tokenizer, clips, n_clips=args.n_clips, seed=args.seed)
    result = {"gamma": [float(g) for g in gamma], "n_clips": min(args.n_clips, len(clips)), "n_q": args.n_q}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def register(sub) -> None:
    p = sub.add_parser("fit-codebooks", help="fit RVQ codebooks for the random-init EnCodec (no pretrained weights)")
    p.add_argument("--shards", nargs="+", required=True, metavar="DIR", help="shard directories to sample frames from")
    p.add_argument("--out", required=True, help="fitted checkpoint (.pt) to write")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks to fit")
    p.add_argument("--codebook-size", type=int, default=CODEBOOK_SIZE, help="entries per codebook")
    p.add_argument("--seed", type=int, default=0, help="seeds the encoder weights, crops and k-means")
    p.add_argument("--max-frames", type=int, default=12_000, help="encoder frames to fit on (75 per second)")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("tokenize", help="EnCodec tokens of every clip of a shard")
    p.add_argument("--shard", required=True, metavar="DIR", help="shard directory")
    p.add_argument("--checkpoint", required=True, help="EnCodec weights: official state dict or fitted checkpoint")
    p.add_argument("--out", required=True, help="int16 [n_q, n_frames] .npy to write")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks to keep")
    p.add_argument("--batch-size", type=int, default=16,
                   help="chunks per forward pass (on CPU small batches run faster: 1-4)")
    p.add_argument("--chunk-seconds", type=float, default=10.0, help="long clips are tokenised in chunks this long")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_cmd_tokenize)

    p = sub.add_parser("estimate-gamma", help="per-codebook loss weights from RVQ quantisation errors")
    p.add_argument("--shards", nargs="+", required=True, metavar="DIR", help="shard directories to sample clips from")
    p.add_argument("--checkpoint", required=True, help="EnCodec weights: official state dict or fitted checkpoint")
    p.add_argument("--out", required=True, help="JSON to write: {gamma, n_clips, n_q}")
    p.add_argument("--n-q", type=int, default=N_Q, help="codebooks")
    p.add_argument("--n-clips", type=int, default=150, help="random clips (one 4-s crop each)")
    p.add_argument("--seed", type=int, default=0, help="seeds the clip and crop sample")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(func=_cmd_gamma)
