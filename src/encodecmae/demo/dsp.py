"""Signal helpers shared by the demo synthesisers (numpy only).

Seeded generators and choices, levels, mixing at an SNR, zero-phase spectral filters (low-,
high-, band-pass, resonance peaks, formants), envelopes, coloured noise, wavetable oscillators,
an STFT pair and a random microphone/room colouration.

Determinism: every clip or file draws from its own generator ``_rng(seed, *keys)``, seeded from
``(seed, names, index)`` (never from Python's randomised ``hash``), and ``_pick`` chooses by
index, from sorted lists where the caller has a set.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

_TAU = 2.0 * np.pi


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and ``keys`` (ints used as is, anything else by CRC32)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    words = [int(seed)]
    for key in keys:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            words.append(int(key))
        else:
            words.append(zlib.crc32(str(key).encode("utf-8")))
    return np.random.default_rng(np.random.SeedSequence(words))


def _pick(rng: np.random.Generator, options):
    """One element of ``options`` (a sequence), chosen by index so the type is preserved."""
    return options[int(rng.integers(len(options)))]


def _pow2(n: int) -> int:
    return 1 << max(1, int(n - 1).bit_length())


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a length numpy's FFT handles quickly)."""
    best = _pow2(n)
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _peaknorm(x: np.ndarray, peak: float = 1.0) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (peak / m) if m > 0 else x


def _active_rms(x: np.ndarray) -> float:
    """RMS over the span where the signal is not (near) silent."""
    if not x.size:
        return 0.0
    a = np.abs(x)
    loud = np.flatnonzero(a > 1e-3 * (a.max() + 1e-12))
    if loud.size == 0:
        return 0.0
    return _rms(x[loud[0] : loud[-1] + 1])


def _add(out: np.ndarray, x: np.ndarray, start: int) -> None:
    """out[start:start+len(x)] += x, clipped to out's bounds."""
    if start >= len(out) or start + len(x) <= 0:
        return
    a = max(0, start)
    b = min(len(out), start + len(x))
    out[a:b] += x[a - start : b - start]


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros or trim to exactly n samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x))])


def _spectral_filter(x: np.ndarray, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filter: multiply the (zero-padded) spectrum of x by gain(freqs)."""
    n = len(x)
    if n == 0:
        return x
    m = _fast_len(n + 1024)
    spec = np.fft.rfft(x, m)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    return np.fft.irfft(spec * gain(f), m)[:n]


def _fftconv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Causal linear convolution of x with kernel k, trimmed to len(x)."""
    m = _fast_len(len(x) + len(k))
    return np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(k, m), m)[: len(x)]


def _lp(f, fc, order=2):
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _hp(f, fc, order=2):
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def _bp(f, lo, hi, order=2):
    return _hp(f, lo, order) * _lp(f, hi, order)


def _peak(f, fc, bw):
    return 1.0 / (1.0 + ((f - fc) / (0.5 * bw)) ** 2)


def _formant_gain(f, formants, bws=(90.0, 120.0, 180.0), amps=(1.0, 0.55, 0.3), floor=0.02):
    """Sum of resonance peaks; formants [..., 3] broadcast against frequencies f [bins]."""
    formants = np.asarray(formants, dtype=float)
    g = floor
    for k in range(formants.shape[-1]):
        g = g + amps[k] * _peak(f, formants[..., k : k + 1], bws[k])
    return g


def _noise(rng: np.random.Generator, n: int, sr: int, color: float = 0.0) -> np.ndarray:
    """Unit-RMS noise with a 1/f**color power spectrum (0 white, 1 pink, 2 brown)."""
    if not color:
        return _unit(rng.standard_normal(n))
    m = _fast_len(n)  # shape the spectrum of white noise directly (circular, then truncated)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    white = rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))
    spec = white * np.maximum(f, 20.0) ** (-color / 2.0)
    return _unit(np.fft.irfft(spec, m)[:n])


def _envelope(t, attack, decay, sustain, hold, release):
    """Attack / exponential decay to sustain / exponential release after ``hold`` seconds."""

    attack, decay, release = max(attack, 1e-4), max(decay, 1e-4), max(release, 1e-4)
    ia = int(np.searchsorted(t, attack))
    ih = int(np.searchsorted(t, hold, side="right"))
    env = sustain + (1.0 - sustain) * np.exp(-(t - attack) / decay)
    env[:ia] = t[:ia] / attack
    if hold < attack:
        at_hold = hold / attack
    else:
        at_hold = sustain + (1.0 - sustain) * np.exp(-(hold - attack) / decay)
    env[ih:] = at_hold * np.exp(-(t[ih:] - hold) / release)
    return env


_TABLE = 8192


def _table(amps: np.ndarray) -> np.ndarray:
    """One period of sum_k amps[k] sin(2 pi (k+1) x), normalised to peak 1."""
    amps = np.asarray(amps, dtype=float)[: _TABLE // 2 - 1]
    spec = np.zeros(_TABLE // 2 + 1, dtype=complex)
    spec[1 : len(amps) + 1] = -0.5j * _TABLE * amps
    return _peaknorm(np.fft.irfft(spec, _TABLE))


def _wt(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Wavetable oscillator: ``table`` read at phase ``cycles`` (in periods), nearest sample."""
    return table[(cycles * _TABLE).astype(np.int64) & (_TABLE - 1)]  # cycles >= 0


def _n_harmonics(sr: int, fmax: float, cap: int = 60) -> int:
    return int(max(1, min(cap, 0.45 * sr / max(fmax, 1.0))))


def _harmonic(f0: np.ndarray, sr: int, rolloff: float = 1.0, rng=None, odd: bool = False) -> np.ndarray:
    """Band-limited harmonic tone following the per-sample frequency track f0 (peak ~1)."""
    f0 = np.asarray(f0, dtype=float)
    k = np.arange(1, _n_harmonics(sr, float(f0.max())) + 1)
    amps = 1.0 / k**rolloff
    if odd:
        amps = np.where(k % 2 == 1, amps, 0.05 * amps)
    phase0 = rng.random() if rng is not None else 0.0
    return _wt(_table(amps), np.cumsum(f0 / sr) + phase0)


def _nfft(sr: int) -> int:
    return 512 if sr < 32000 else 1024


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(_TAU * np.arange(n) / n)


def _stft(x: np.ndarray, nfft: int) -> np.ndarray:
    """Frames centred on multiples of hop = nfft/4 (Hann window)."""
    hop = nfft // 4
    nfr = len(x) // hop + 1
    xp = np.zeros(nfr * hop + nfft)
    xp[nfft // 2 : nfft // 2 + len(x)] = x
    idx = hop * np.arange(nfr)[:, None] + np.arange(nfft)[None, :]
    return np.fft.rfft(xp[idx] * _hann(nfft), axis=1)


def _istft(spec: np.ndarray, nfft: int, n: int) -> np.ndarray:
    """Weighted overlap-add inverse of ``_stft`` (Hann synthesis window, 75% overlap)."""
    hop = nfft // 4
    frames = np.fft.irfft(spec, nfft, axis=1) * _hann(nfft)
    nfr = frames.shape[0]
    out = np.zeros(nfr * hop + 2 * nfft)
    for j in range(4):  # frames j, j+4, j+8, ... tile without overlap
        g = frames[j::4]
        out[j * hop : j * hop + g.size] += g.reshape(-1)
    return out[nfft // 2 : nfft // 2 + n] / 1.5  # sum of Hann^2 at hop nfft/4 is 1.5


def _mix_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    s = _active_rms(signal)
    r = _rms(noise)
    if s <= 0 or r <= 0:
        return signal + noise * 0.01
    return signal + noise * (s / r) / _db(snr_db)


def _random_eq(rng: np.random.Generator, x: np.ndarray, sr: int, amount: float = 1.0) -> np.ndarray:
    """A gentle random 'microphone/room' colouration: tilt plus one broad bump or dip."""
    tilt = rng.uniform(-3.0, 3.0) * amount  # dB per octave around 1 kHz
    fc = float(np.exp(rng.uniform(np.log(200.0), np.log(0.4 * sr))))
    gain_db = rng.uniform(-6.0, 6.0) * amount

    def g(f):
        octs = np.log2(np.maximum(f, 20.0) / 1000.0)
        bump = gain_db * np.exp(-0.5 * (np.log2(np.maximum(f, 20.0) / fc) / 0.7) ** 2)
        return 10.0 ** ((tilt * octs + bump) / 20.0)

    return _spectral_filter(x, sr, g)
