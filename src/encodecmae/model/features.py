"""Input features at 75 frames/s.

Log-mel filterbank, Kaldi-compatible (the original implementation used
torchaudio.compliance.kaldi.fbank: DC removal, pre-emphasis 0.97, Hann window, FFT padded to
a power of two, Kaldi's mel banks, no dither, no energy), but batched and with the paper's
exact hop of 320 samples: Kaldi's ``frame_shift`` in milliseconds rounds 13.333 ms down to 319
samples, which drifts against EnCodec's 320-sample hop. Framing follows Kaldi's
``snip_edges=False``: the signal is reflected by 160 samples at both ends, so frame t covers
samples [320 t - 160, 320 t + 480) and is centred on EnCodec frame t's hop span. A signal of
N samples (N a multiple of 320) gives N // 320 frames: 96,000 samples -> 300 frames.

``framing="released"`` is the released code's framing instead (Kaldi's ``frame_shift=13.28``,
``frame_length=26.56`` ms: a 318-sample shift, a 637-sample window, ``snip_edges=True``, so frame t
covers samples [318 t, 318 t + 637)): a 4-s crop gives 300 frames as well, but the centre of
frame t, half a hop after EnCodec frame t's at t = 0, drifts 2 samples earlier per frame, to 440
samples (1.4 hops) before it at frame 299. As the released code did, the longer sequence is
cropped to N // 320 frames; signals shorter than 2.1 s, which give fewer frames than that, are
zero-padded. This is the authors' MelspectrogramProcessor (configs/features/mel.gin at HEAD:
``torchaudio.compliance.kaldi.fbank`` with frame_shift=13.28, frame_length=26.56, hanning,
htk_compat, no energy, no dither, 256 bins, then (x + 6.12) / 4.82; tests/test_features.py
compares the two). At inference the released code computes it on exactly the samples it is
given (1 + (N - 637) // 318 frames): ``exact_length=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchaudio.compliance.kaldi import get_mel_banks

from encodecmae import HOP, SAMPLE_RATE
from encodecmae.model.config import MEL_MEAN, MEL_STD

WIN = 2 * HOP  # 640-sample window (26.7 ms)
# The released code's Kaldi framing at 24 kHz: int(24000 * 13.28 ms), int(24000 * 26.56 ms).
RELEASED_SHIFT, RELEASED_WIN = 318, 637


def pad_to_hop(wav: torch.Tensor) -> torch.Tensor:
    """Zero-pad [..., N] on the right to a whole number of 320-sample frames."""
    rem = (-wav.shape[-1]) % HOP
    return F.pad(wav, (0, rem)) if rem else wav


def n_frames(n_samples: int) -> int:
    """Frames for a signal of ``n_samples`` (after padding to a multiple of the hop)."""
    return math.ceil(n_samples / HOP)


class LogMel(nn.Module):
    """[B, N] waveform at 24 kHz -> [B, ceil(N/320), n_mels] normalised log-mel."""

    def __init__(self, n_mels: int = 256, mean: float = MEL_MEAN, std: float = MEL_STD,
                 low_freq: float = 20.0, preemphasis: float = 0.97, framing: str = "aligned"):
        super().__init__()
        if framing not in ("aligned", "released"):
            raise ValueError(f"unknown mel framing {framing!r} (expected aligned or released)")
        self.n_mels = n_mels
        self.mean, self.std = mean, std
        self.preemphasis = preemphasis
        self.framing = framing
        self.win, self.shift = (WIN, HOP) if framing == "aligned" else (RELEASED_WIN, RELEASED_SHIFT)
        self.n_fft = 1 << (self.win - 1).bit_length()  # 1024 for both, as Kaldi's round_to_power_of_two
        banks, _ = get_mel_banks(n_mels, self.n_fft, float(SAMPLE_RATE), low_freq, 0.0, 100.0, -500.0, 1.0)
        banks = F.pad(banks, (0, 1))  # Kaldi drops the Nyquist bin; [n_mels, n_fft/2 + 1]
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)  # [n_fft/2+1, n_mels]
        # Kaldi's "hanning" window is the symmetric Hann window.
        self.register_buffer("window", torch.hann_window(self.win, periodic=False), persistent=False)

    @property
    def dim(self) -> int:
        return self.n_mels

    def frames(self, wav: torch.Tensor, exact_length: bool = False) -> torch.Tensor:
        """[B, N] -> [B, ceil(N/320), win] analysis frames of the framing.

        ``exact_length`` (released framing only): the frames of exactly these N samples, as
        Kaldi's ``snip_edges`` gives them to the released code at inference:
        1 + (N - 637) // 318 frames, no padding, no cropping.
        """
        if exact_length:
            if self.framing != "released":
                raise ValueError("LogMel: exact-length frames exist for the released framing only")
            if wav.shape[-1] < self.win:
                raise ValueError(f"LogMel: {wav.shape[-1]} samples are shorter than one {self.win}-sample frame")
            return wav.float().unfold(-1, self.win, self.shift)  # [B, 1 + (N - 637) // 318, 637]
        wav = pad_to_hop(wav.float())  # [B, N]
        if wav.shape[-1] == 0:
            raise ValueError("LogMel: empty waveform")
        n_out = wav.shape[-1] // HOP
        if self.framing == "aligned":
            pad = (WIN - HOP) // 2  # 160
            # Kaldi mirrors the edges including the edge sample: [x2 x1 x0 | x0 x1 x2 ...]
            x = torch.cat([wav[:, :pad].flip(-1), wav, wav[:, -pad:].flip(-1)], dim=-1)  # [B, N + 320]
            return x.unfold(-1, WIN, HOP)  # [B, T, 640]
        need = self.win + self.shift * (n_out - 1)  # samples that give n_out frames with snip_edges
        x = F.pad(wav, (0, max(0, need - wav.shape[-1])))
        return x.unfold(-1, self.win, self.shift)[:, :n_out]  # [B, T, 637]

    def forward(self, wav: torch.Tensor, exact_length: bool = False) -> torch.Tensor:
        frames = self.frames(wav, exact_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)  # remove DC offset per frame
        prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - self.preemphasis * prev) * self.window
        spec = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)  # [B, T, 513]
        mel = spec @ self.banks  # [B, T, n_mels]
        logmel = mel.clamp_min(torch.finfo(torch.float32).eps).log()
        return (logmel - self.mean) / self.std


def build_frontend(input_kind: str, encodec_checkpoint: str | None = None,
                   mel_mean: float = MEL_MEAN, mel_std: float = MEL_STD, mel_framing: str = "aligned") -> nn.Module:
    """The feature extractor for an input kind: ``mel256``, ``mel128`` or ``encodec``.

    Every frontend maps [B, N] waveforms to [B, ceil(N/320), dim] and exposes ``dim``.
    """
    if input_kind.startswith("mel"):
        return LogMel(int(input_kind[3:]), mel_mean, mel_std, framing=mel_framing)
    if input_kind == "encodec":
        from encodecmae.targets.codec import EncodecTokenizer

        return EncodecFeatures(EncodecTokenizer(encodec_checkpoint))
    raise ValueError(f"unknown input kind {input_kind!r} (expected mel128, mel256 or encodec)")


class EncodecFeatures(nn.Module):
    """The frozen EnCodec encoder as an input frontend (the EC->EC variant)."""

    dim = 128

    def __init__(self, tokenizer: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # the codec stays frozen in eval mode
        super().train(mode)
        self.tokenizer.eval()
        return self

    def forward(self, wav: torch.Tensor, exact_length: bool = False) -> torch.Tensor:
        """[B, N] -> [B, ceil(N/320), 128]. Padded with zeros to whole hops first, unless
        ``exact_length``: then EnCodec pads the last partial hop itself (by reflection), as
        the released code's inference gives it these samples."""
        wav = wav.float() if exact_length else pad_to_hop(wav.float())
        with torch.no_grad():
            return self.tokenizer.features(wav)  # [B, T, 128]
