"""Audio input: read anything soundfile reads, mix to mono, resample to 24 kHz.

torchaudio.load needs torchcodec + FFmpeg, which we do not want to require, so files are read
with soundfile (WAV, FLAC, MP3, OGG/Vorbis/Opus) and resampled with torchaudio's sinc
resampler, which is pure torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from encodecmae import SAMPLE_RATE


class AudioError(ValueError):
    """Raised for audio that cannot be used; the message names the file."""


def resample(wav: np.ndarray | torch.Tensor, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 signal (or [..., samples] batch) between integer rates."""
    wav_t = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if int(orig_sr) != int(target_sr):
        wav_t = AF.resample(wav_t, int(orig_sr), int(target_sr))
    return wav_t.numpy()


MAX_CHANNELS = 8  # more is not a recording to mix down (and would cost that many times the memory)


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Return the file at ``path`` as float32 mono at ``target_sr`` Hz.

    Raises AudioError naming the file when it cannot be read (a truncated FLAC, MP3 or Ogg file
    fails to decode; of a truncated WAV file libsndfile reads the frames that are there), is
    empty, has more than MAX_CHANNELS channels, or holds NaN/Inf.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.channels > MAX_CHANNELS:
            raise AudioError(f"{path}: {info.channels} channels (at most {MAX_CHANNELS} are mixed to mono)")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if data.size == 0:
        raise AudioError(f"{path}: audio is empty")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio holds NaN or Inf samples")
    mono = data.mean(axis=1)  # [samples, channels] -> [samples]
    return resample(mono, sr, target_sr)
