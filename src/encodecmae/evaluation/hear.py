"""HEAR API (hear-eval-kit) for EnCodecMAE checkpoints.

``load_model(path)`` returns a torch.nn.Module carrying ``sample_rate``,
``scene_embedding_size`` and ``timestamp_embedding_size``. HEAR distributes tasks at 16, 22.05,
32, 44.1 and 48 kHz, never 24 kHz, so the model declares 16 kHz and resamples to 24 kHz
internally. Scene embeddings: mean over time of the last encoder layer, after cutting the
audio into 4-s chunks (the paper's protocol). Timestamps are frame centres in milliseconds,
regularly spaced at 1000 / 75 ms. Audio is a torch tensor or a numpy array [n_sounds, n_samples]
(any float or integer dtype, taken as is); outputs are float32 torch tensors, on the input
tensor's device (the CPU for a numpy array), as the HEAR API specifies.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from encodecmae import SAMPLE_RATE
from encodecmae.training.checkpoints import load_model as _load_checkpoint
from encodecmae.evaluation.embed import embed_clips, frame_times_ms

HEAR_SAMPLE_RATE = 16_000
DEFAULT_CHECKPOINT_ENV = "ENCODECMAE_CHECKPOINT"


class HearModel(nn.Module):
    def __init__(self, model: nn.Module, sample_rate: int = HEAR_SAMPLE_RATE, layer: int = -1, batch_size: int = 16):
        super().__init__()
        self.model = model.eval()
        self.sample_rate = int(sample_rate)
        self.scene_embedding_size = int(model.cfg.d_model)
        self.timestamp_embedding_size = int(model.cfg.d_model)
        self.layer, self.batch_size = layer, batch_size

    def frames(self, audio: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[n, samples] at ``sample_rate`` -> [n, frames, D] float32."""
        audio = as_tensor(audio)
        if audio.ndim != 2:
            hint = " (one sound: audio[None])" if audio.ndim == 1 else ""
            raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}{hint}")
        device = next(self.model.parameters()).device
        wav = AF.resample(audio.detach().float().cpu(), self.sample_rate, SAMPLE_RATE)
        clips = list(wav.numpy())
        emb = embed_clips(self.model, clips, self.layer, self.batch_size, device)
        return torch.from_numpy(np.stack(emb)).to(audio.device)


def as_tensor(audio: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The audio as a torch tensor: tensors as they are, numpy arrays (or lists) on the CPU."""
    if isinstance(audio, torch.Tensor):
        return audio
    return torch.from_numpy(np.array(audio, copy=True))


def load_model(model_file_path: str = "", sample_rate: int = HEAR_SAMPLE_RATE) -> HearModel:
    """Load a checkpoint (or the one named by $ENCODECMAE_CHECKPOINT when no path is given)."""
    path = model_file_path or os.environ.get(DEFAULT_CHECKPOINT_ENV, "")
    if not path:
        raise ValueError(f"load_model needs a checkpoint path (or set ${DEFAULT_CHECKPOINT_ENV})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return HearModel(_load_checkpoint(path, device), sample_rate)


def get_timestamp_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings float32 [n, frames, D], timestamps_ms float32 [n, frames])."""
    audio = as_tensor(audio)
    emb = model.frames(audio)
    ts = torch.from_numpy(frame_times_ms(emb.shape[1])).to(audio.device)
    return emb, ts[None, :].expand(emb.shape[0], -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor | np.ndarray, model: HearModel) -> torch.Tensor:
    """float32 [n, D]: mean over time of the last-layer frame embeddings."""
    return model.frames(audio).mean(dim=1)
