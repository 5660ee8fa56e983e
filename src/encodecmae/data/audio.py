"""Audio input: read anything soundfile reads, mix to mono, resample to 24 kHz.

torchaudio.load needs torchcodec + FFmpeg, which we do not want to require, so files are read
with soundfile (WAV, FLAC, MP3, OGG/Vorbis/Opus) and resampled with torchaudio's sinc
resampler, which is pure torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

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


def _info(path: Path):
    """soundfile's header of ``path``; AudioError for an unreadable file or too many channels."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if info.channels > MAX_CHANNELS:
        raise AudioError(f"{path}: {info.channels} channels (at most {MAX_CHANNELS} are mixed to mono)")
    return info


def _check_block(path: Path, data: np.ndarray) -> None:
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: audio holds NaN or Inf samples")


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Return the file at ``path`` as float32 mono at ``target_sr`` Hz (the whole file at once;
    :func:`stream_audio` reads it a block at a time, with the same checks).

    Raises AudioError naming the file when it cannot be read (a truncated FLAC, MP3 or Ogg file
    fails to decode; of a truncated WAV file libsndfile reads the frames that are there), is
    empty, has more than MAX_CHANNELS channels, or holds NaN/Inf.
    """
    path = Path(path)
    _info(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if data.size == 0:
        raise AudioError(f"{path}: audio is empty")
    _check_block(path, data)
    mono = data.mean(axis=1)  # [samples, channels] -> [samples]
    return resample(mono, sr, target_sr)


def stream_audio(path: str | Path, target_sr: int = SAMPLE_RATE, block_seconds: float = 60.0) -> Iterator[np.ndarray]:
    """The file at ``path`` as float32 mono blocks at ``target_sr``, read and resampled about
    ``block_seconds`` at a time: memory holds one block whatever the file's length, and the
    blocks put together equal ``load_audio(path)`` (to float rounding; tests/test_data.py).

    Each block is resampled with a context of input samples on both sides, the left one a whole
    number of resampling periods (``orig_sr / gcd`` samples), so that the sinc kernel sees what
    it sees in the whole signal and the outputs line up. Raises AudioError as ``load_audio``.
    """
    path = Path(path)
    sr = int(_info(path).samplerate)
    g = math.gcd(sr, int(target_sr))
    o, n = sr // g, int(target_sr) // g
    width = math.ceil(6 * o / (min(o, n) * 0.99))  # torchaudio's kernel half-width (lowpass_filter_width 6)
    left = math.ceil(width / o) * o  # context before a block: whole periods
    right = left + o  # after it: more than the kernel reaches
    block = max(o, int(block_seconds * sr) // o * o)
    buf = np.zeros(left, np.float32)  # the signal is zero before its start, as resample pads it
    done = 0  # input samples whose outputs were yielded
    total = 0
    try:
        with sf.SoundFile(str(path)) as f:
            for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                _check_block(path, data)
                total += len(data)
                buf = np.concatenate([buf, data.mean(axis=1)])
                while len(buf) - left >= block + right:
                    out = resample(buf[: left + block + right], sr, target_sr)
                    yield out[left // o * n : (left + block) // o * n]
                    buf = buf[block:]
                    done += block
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if total == 0:
        raise AudioError(f"{path}: audio is empty")
    rest = len(buf) - left
    if rest > 0:
        out = resample(buf, sr, target_sr)
        need = math.ceil(n * total / o) - done // o * n
        yield out[left // o * n : left // o * n + need]
