"""HEAR API (hear-eval-kit) for EnCodecMAE checkpoints.

``load_model(path)`` returns a torch.nn.Module carrying ``sample_rate``,
``scene_embedding_size`` and ``timestamp_embedding_size``. HEAR distributes tasks at 16, 22.05,
32, 44.1 and 48 kHz, never 24 kHz, so the model declares 16 kHz and resamples to 24 kHz
internally. Scene embeddings: mean over time of the last encoder layer, after cutting the
audio into 4-s chunks (the paper's protocol). Timestamps are frame centres in milliseconds,
regularly spaced at 1000 / 75 ms. Audio is a torch tensor or a numpy array [n_sounds, n_samples]
(any float or integer dtype, taken as is); outputs are float32 torch tensors, on the input
tensor's device (the CPU for a numpy array), as the HEAR API specifies.

``layer``: an index into ``EncodecMAE.hidden_states`` (-1, the default: the encoder output), or
``"all"``: every layer, as [n_sounds, layers, frames, D] (scene: [n_sounds, layers, D]).

The authors' converted models (``encodecmae import-released``) are embedded as their own HEAR
wrapper (heareval_model/encodecmae.py, through ``extract_features_from_array``) embeds them:

- each 4-s chunk's features are those of exactly its samples (``EncodecMAE.encode`` with
  ``exact_length``: the released mel framing gives Kaldi's 1 + (N - 637) // 318 frames, EnCodec
  ceil(N / 320)); all of them are returned;
- their padding mask counts 320-sample hops of a length: v1 takes the chunk's, so frames past
  its N // 320 are not attended to; v2 takes the whole sound's, capped at 4 s, so a sound of
  4 s or less is masked past N // 320 and every chunk of a longer one is attended to in full;
- v2 drops a trailing piece of 2048 samples or fewer (its ``min_length``); v1 keeps it;
- ``layer="all"`` is their per-layer output: v2, the L block outputs with the last replaced by
  the final output (``hidden_states[:L-1] + [hidden_states[-1]]``); v1, the L block outputs.

That is their wrapper on one sound at a time. In a batch it also depends on the sound's place:
v2 takes sound b's length as N - b (a list comprehension reuses the loop variable), so for
b >= 1 the last frame of every full chunk is masked; v1 masks only the first sound's chunk. Our
embeddings do not depend on the batch.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from encodecmae import CROP_SAMPLES, HOP, SAMPLE_RATE
from encodecmae.training import checkpoints as ckpt_io
from encodecmae.evaluation.embed import embed_clips, frame_times_ms

HEAR_SAMPLE_RATE = 16_000
DEFAULT_CHECKPOINT_ENV = "ENCODECMAE_CHECKPOINT"
V2_MIN_SAMPLES = 2048  # the v2 wrapper embeds a chunk only if it is longer than this (min_length)


class HearModel(nn.Module):
    """``release``: "v1" or "v2" for the authors' converted models (their wrapper's chunking and
    per-layer output), None for a model trained here."""

    def __init__(self, model: nn.Module, sample_rate: int = HEAR_SAMPLE_RATE, layer: int | str = -1,
                 batch_size: int = 16, release: str | None = None):
        super().__init__()
        if not (isinstance(layer, int) or layer == "all"):
            raise ValueError(f"layer must be an index into the hidden states or 'all', got {layer!r}")
        if release not in (None, "v1", "v2"):
            raise ValueError(f"release must be None, 'v1' or 'v2', got {release!r}")
        self.model = model.eval()
        self.sample_rate = int(sample_rate)
        self.scene_embedding_size = int(model.cfg.d_model)
        self.timestamp_embedding_size = int(model.cfg.d_model)
        self.layer, self.batch_size, self.release = layer, batch_size, release

    def frames(self, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[n, samples] at ``sample_rate`` -> [n, frames, D] float32 ([n, layers, frames, D] for "all")."""
        audio = as_tensor(audio)
        if audio.ndim != 2:
            hint = " (one sound: audio[None])" if audio.ndim == 1 else ""
            raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}{hint}")
        device = next(self.model.parameters()).device
        wav = AF.resample(audio.detach().float().cpu(), self.sample_rate, SAMPLE_RATE)
        if self.release is None and self.layer != "all":
            emb = embed_clips(self.model, list(wav.numpy()), self.layer, self.batch_size, device)
            return torch.from_numpy(np.stack(emb)).to(audio.device)
        return self.chunked(wav, device).to(audio.device)

    @torch.no_grad()
    def chunked(self, wav: torch.Tensor, device) -> torch.Tensor:
        """Frame embeddings of [n, N] 24-kHz audio, 4-s chunk by 4-s chunk (see the module doc)."""
        pieces = []
        for start in range(0, wav.shape[1], CROP_SAMPLES):
            piece = wav[:, start : start + CROP_SAMPLES]
            if self.release == "v2" and piece.shape[1] <= V2_MIN_SAMPLES:
                continue
            lengths = self.attended(piece.shape[1], wav.shape[1])
            out = []
            for b in range(0, len(piece), self.batch_size):
                batch = piece[b : b + self.batch_size].to(device)
                hs = self.model.hidden_states(batch, None if lengths is None else lengths.expand(len(batch)),
                                              exact_length=self.release is not None)
                out.append(self.select(hs).float().cpu())
            pieces.append(torch.cat(out))
        if not pieces:
            raise ValueError(f"{wav.shape[1]} samples at 24 kHz: the v2 wrapper embeds nothing shorter than "
                             f"{V2_MIN_SAMPLES + 1}")
        return torch.cat(pieces, dim=-2)

    def attended(self, n_piece: int, n_sound: int) -> torch.Tensor | None:
        """Frames of a chunk the released wrapper attends to ([1]; None: all), see the module doc."""
        if self.release is None:
            return None
        n = n_piece if self.release == "v1" else min(n_sound, CROP_SAMPLES)
        return torch.tensor([max(1, n // HOP)])

    def select(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The returned layer(s) of ``EncodecMAE.hidden_states``: [b, T, D] or [b, layers, T, D]."""
        if self.layer != "all":
            return hidden[self.layer]
        n_blocks = len(hidden) - 1
        layers = {"v2": hidden[: n_blocks - 1] + hidden[-1:], "v1": hidden[:n_blocks], None: hidden}[self.release]
        return torch.stack(layers, dim=1)


def as_tensor(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The audio as a torch tensor: tensors as they are, numpy arrays (or lists) on the CPU."""
    if isinstance(audio, torch.Tensor):
        return audio
    return torch.from_numpy(np.array(audio, copy=True))


def release_of(ckpt: dict) -> str | None:
    """"v1" or "v2" for a model converted from the authors' release, else None."""
    released = (ckpt.get("config") or {}).get("released")
    return released.get("release") if isinstance(released, dict) else None


def load_model(model_file_path: str = "", sample_rate: int = HEAR_SAMPLE_RATE, layer: int | str = -1) -> HearModel:
    """Load a checkpoint (or the one named by $ENCODECMAE_CHECKPOINT when no path is given)."""
    path = model_file_path or os.environ.get(DEFAULT_CHECKPOINT_ENV, "")
    if not path:
        raise ValueError(f"load_model needs a checkpoint path (or set ${DEFAULT_CHECKPOINT_ENV})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = ckpt_io.load(path)
    model = ckpt_io.build_model(ckpt).to(device).eval()
    return HearModel(model, sample_rate, layer, release=release_of(ckpt))


def get_timestamp_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings float32 [n, frames, D], timestamps_ms float32 [n, frames])."""
    audio = as_tensor(audio)
    emb = model.frames(audio)
    ts = torch.from_numpy(frame_times_ms(emb.shape[-2])).to(audio.device)
    return emb, ts[None, :].expand(emb.shape[0], -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> torch.Tensor:
    """float32 [n, D]: mean over time of the last-layer frame embeddings."""
    return model.frames(audio).mean(dim=-2)
