"""Embedded demo data: a synthetic pretraining corpus and six small HEAR-layout tasks.

Everything is synthesised with numpy from a seed (no download), so the whole pipeline can run
end to end on a laptop. The data only stands in for the paper's (AudioSet/FMA/Libri-Light for
pretraining; NSynth pitch, GTZAN, Speech Commands, CREMA-D, FSD50K and ESC-50 downstream): it
mirrors their structure (sources, file variety, task layout, label types, split schemes), not
their content.

- ``make_pretrain_corpus(out_dir, seed, minutes)``: ``out_dir/{speech,music,environment}/``
  files of 1-60 s at 16/22.05/24/44.1/48 kHz, mono and stereo, WAV 16-bit / WAV float / FLAC,
  plus ``out_dir/files.tsv``.
- ``make_task(name, out_dir, seed)``: one task of ``TASKS`` in the HEAR layout under
  ``out_dir/name/`` (``task_metadata.json``, ``labelvocabulary.csv``, ``{split}.json``,
  ``16000/{split}/{file}``).
  As in hear-preprocess, the keys of ``{split}.json`` are the audio file names, ``.wav``
  included: the clip is ``16000/{split}/{key}``.

Default task sizes (seed 0; 42.4 minutes in all):

========  =====  ===========================  ======  ===========  =========  =========
task      paper  split                        labels  clips        clip       metric
========  =====  ===========================  ======  ===========  =========  =========
pitch     NS     train/valid/test 6/2/2       24      240 (8.0')   2.0 s      pitch_acc
genre     GC     10 folds                     10      100 (8.3')   5.0 s      top1_acc
keywords  SC     train/valid/test 12/4/4      12      240 (4.0')   1.0 s      top1_acc
emotion   ER     5 folds                      6       180 (7.5')   2.5 s      top1_acc
events    FSD    train/valid/test ~60/20/20%  16      192 (6.2')   0.5-8 s    mAP
scenes    ESC    5 folds                      20      200 (8.3')   2.5 s      top1_acc
========  =====  ===========================  ======  ===========  =========  =========

A logistic regression on mean+std of a 64-band log-mel scores (seed 0, full size) pitch 0.79,
genre 0.68, keywords 0.52, emotion 0.48, events mAP 0.62, scenes 0.60: far above chance, far from
perfect.

Determinism: every clip or file draws from its own generator, seeded from ``(seed, names,
index)`` (never from Python's randomised ``hash``), choices are made from sorted lists, and the
writers avoid timestamps (the PEAK chunk of float WAVs is zeroed), so one seed gives
byte-identical files. Outputs are written to a hidden temporary sibling directory and renamed
into place at the end, so an interrupted run leaves no half-written output.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

TASK_SAMPLE_RATE = 16_000
CORPUS_SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)
# (file extension, soundfile format, soundfile subtype)
CORPUS_FORMATS = (("wav", "WAV", "PCM_16"), ("wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"))
SOURCES = ("speech", "music", "environment")
FILES_TSV_COLUMNS = ("source", "path", "sample_rate", "channels", "seconds")

_TAU = 2.0 * np.pi


# ----------------------------------------------------------------------------------------------
# Seeds and small DSP helpers (numpy only)
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Speech-like sounds: formant synthesis of phone sequences
# ----------------------------------------------------------------------------------------------

_VOWELS = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "e": (420, 2100, 2700),
    "E": (530, 1840, 2480), "ae": (660, 1720, 2410), "a": (750, 1250, 2500),
    "A": (730, 1090, 2440), "O": (570, 840, 2410), "o": (450, 800, 2400),
    "U": (440, 1020, 2240), "u": (300, 870, 2240), "V": (640, 1190, 2390),
    "@": (500, 1500, 2500), "3": (490, 1350, 1690),
}
# consonant -> parts (duration s, voicing amp, noise amp, noise band (lo, hi) | "asp" | None,
# formants | None (taken from the neighbouring vowel))
_CONSONANTS = {
    "m": [(0.07, 0.35, 0.0, None, (250, 1100, 2300))],
    "n": [(0.07, 0.35, 0.0, None, (250, 1600, 2600))],
    "l": [(0.06, 0.6, 0.0, None, (360, 1300, 2700))],
    "r": [(0.06, 0.6, 0.0, None, (420, 1300, 1600))],
    "w": [(0.06, 0.6, 0.0, None, (300, 700, 2200))],
    "j": [(0.06, 0.6, 0.0, None, (280, 2200, 3000))],
    "s": [(0.11, 0.0, 0.5, (4500, 7500), None)],
    "S": [(0.11, 0.0, 0.5, (2200, 5000), None)],
    "f": [(0.10, 0.0, 0.2, (1200, 7000), None)],
    "T": [(0.09, 0.0, 0.15, (1500, 7500), None)],
    "h": [(0.07, 0.0, 0.35, "asp", None)],
    "z": [(0.09, 0.25, 0.35, (4500, 7500), None)],
    "v": [(0.08, 0.3, 0.15, (1200, 7000), None)],
    "p": [(0.06, 0, 0, None, None), (0.015, 0, 0.7, (400, 1600), None), (0.04, 0, 0.25, "asp", None)],
    "t": [(0.05, 0, 0, None, None), (0.015, 0, 0.7, (3000, 7000), None), (0.04, 0, 0.25, "asp", None)],
    "k": [(0.06, 0, 0, None, None), (0.02, 0, 0.7, (1500, 3500), None), (0.04, 0, 0.25, "asp", None)],
    "b": [(0.05, 0.12, 0.0, None, (200, 800, 2200)), (0.012, 0.2, 0.4, (400, 1600), None)],
    "d": [(0.045, 0.12, 0.0, None, (200, 1600, 2600)), (0.012, 0.2, 0.4, (3000, 7000), None)],
    "g": [(0.05, 0.12, 0.0, None, (200, 1900, 2500)), (0.015, 0.2, 0.4, (1500, 3500), None)],
}
_ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "S", "t", "T", "v", "w", "z")
_CODAS = ("d", "f", "k", "l", "m", "n", "p", "r", "s", "t", "z")
_NUCLEI = tuple(sorted(_VOWELS))


def _speaker(rng: np.random.Generator) -> dict:
    """Random speaker: pitch, vocal-tract scale, rate, pitch range, brightness, breathiness."""
    kind = rng.random()
    if kind < 0.45:
        f0, tract = rng.uniform(85, 150), rng.uniform(0.9, 1.04)
    elif kind < 0.9:
        f0, tract = rng.uniform(160, 250), rng.uniform(1.05, 1.18)
    else:
        f0, tract = rng.uniform(240, 330), rng.uniform(1.18, 1.3)
    return dict(
        f0=f0, tract=tract, rate=rng.uniform(0.85, 1.2), range=rng.uniform(0.6, 1.4),
        bright=rng.uniform(700.0, 2000.0), breath=rng.uniform(0.0, 0.15), jitter=rng.uniform(0.1, 0.4),
        vib=0.0, creak=0.0, shift=0.0, rise=0.15,
    )


def _syllables(rng: np.random.Generator, k: int, pause_p: float = 0.15) -> list[str]:
    phones: list[str] = []
    for i in range(k):
        if rng.random() < 0.75:
            phones.append(_pick(rng, _ONSETS))
        phones.append(_pick(rng, _NUCLEI))
        if rng.random() < 0.35:
            phones.append(_pick(rng, _CODAS))
        if i < k - 1 and rng.random() < pause_p:
            phones.append("_")
    return phones


def _speak(rng: np.random.Generator, sr: int, phones: list[str], voice: dict) -> np.ndarray:
    """Formant-synthesise a phone sequence (peak 1): harmonic source plus noise, shaped per frame."""
    rate = voice["rate"]
    durs, va, na, lo, hi, asp, forms, is_vowel = [], [], [], [], [], [], [], []
    for p in phones:
        if p == "_":
            parts = [(rng.uniform(0.06, 0.2), 0.0, 0.0, None, None)]
        elif p in _VOWELS:
            parts = [(0.12 * rng.lognormal(0.0, 0.25), 1.0, 0.0, None, _VOWELS[p])]
        else:
            parts = [(d * rng.lognormal(0.0, 0.15), v, nz, band, F) for d, v, nz, band, F in _CONSONANTS[p]]
        for d, v, nz, band, F in parts:
            durs.append(d / rate)
            va.append(v)
            na.append(nz)
            asp.append(1.0 if band == "asp" else 0.0)
            lo.append(band[0] if isinstance(band, tuple) else 0.0)
            hi.append(band[1] if isinstance(band, tuple) else 0.0)
            forms.append(F)
            is_vowel.append(p in _VOWELS)
    nxt = None
    for i in range(len(forms) - 1, -1, -1):  # consonants take the next vowel's formants
        if forms[i] is None:
            forms[i] = nxt
        else:
            nxt = forms[i]
    prev = _VOWELS["@"]
    for i in range(len(forms)):
        if forms[i] is None:
            forms[i] = prev
        prev = forms[i]

    lead = 0.03
    bounds = lead + np.concatenate([[0.0], np.cumsum(durs)])
    total = bounds[-1] + lead + 0.05
    n = int(total * sr)
    nfft = _nfft(sr)
    hop = nfft // 4
    nfr = n // hop + 1
    tf = np.arange(nfr) * hop / sr
    seg = np.clip(np.searchsorted(bounds, tf, side="right") - 1, 0, len(durs) - 1)
    inside = (tf >= bounds[0]) & (tf < bounds[-1])
    k = max(1, int(round(0.015 * sr / hop)))

    def track(values):
        a = np.where(inside, np.asarray(values, dtype=float)[seg], 0.0)
        return np.convolve(a, np.ones(k) / k, mode="same")

    vaf, naf, aspf = track(va), track(na), track(asp)
    lof = np.where(inside, np.asarray(lo)[seg], 0.0)
    hif = np.where(inside, np.asarray(hi)[seg], 0.0)
    centers = 0.5 * (bounds[:-1] + bounds[1:])
    forms_a = np.asarray(forms, dtype=float)
    F = np.stack([np.interp(tf, centers, forms_a[:, j]) for j in range(3)], axis=1) * voice["tract"]

    # pitch contour in semitones: declination, accents on vowels, optional final rise, jitter
    T = max(bounds[-1], 1e-3)
    semis = voice["shift"] - 2.0 * voice["range"] * tf / T
    for c, v in zip(centers, is_vowel):
        if v and rng.random() < 0.6:
            width = 0.07 / rate
            semis = semis + rng.uniform(1.0, 4.0) * voice["range"] * np.exp(-0.5 * ((tf - c) / width) ** 2)
    if rng.random() < voice.get("rise", 0.15):
        semis = semis + 4.0 * voice["range"] * np.clip((tf - (T - 0.25)) / 0.25, 0.0, 1.0)
    jit = np.convolve(rng.standard_normal(nfr), np.ones(3) / 3, mode="same")
    semis = semis + voice["jitter"] * jit
    if voice.get("vib", 0.0) > 0:
        semis = semis + voice["vib"] * np.sin(_TAU * rng.uniform(5.0, 8.0) * tf)
    f0f = voice["f0"] * 2.0 ** (semis / 12.0)
    f0 = np.interp(np.arange(n) / sr, tf, f0f)
    cyc = np.cumsum(f0 / sr) + rng.random()
    k_h = np.arange(1, _n_harmonics(sr, float(f0.max())) + 1)
    src = _wt(_table(1.0 / k_h), cyc)
    if voice.get("creak", 0.0) > 0:
        src = src * (1.0 + voice["creak"] * np.where(np.floor(cyc) % 2 == 0, 1.0, -1.0))
    noise = 0.1 * rng.standard_normal(n)

    f = np.fft.rfftfreq(nfft, 1.0 / sr)
    fg = _formant_gain(f, F)
    glott = _lp(f, voice["bright"], 1)
    hv = vaf[:, None] * fg * glott[None, :]
    band = _bp(f[None, :], np.maximum(lof, 1.0)[:, None], np.maximum(hif, 1.0)[:, None], 2)
    hn = (naf * (1.0 - aspf) * (hif > 0))[:, None] * band
    hn = hn + (naf * aspf)[:, None] * fg * _hp(f, 400.0, 1)[None, :]
    hn = hn + voice["breath"] * vaf[:, None] * fg * _hp(f, 1000.0, 1)[None, :]
    y = _istft(_stft(src, nfft) * hv + _stft(noise, nfft) * hn, nfft, n)
    return _peaknorm(y)


def _utterance(rng, sr, voice, k):
    return _speak(rng, sr, _syllables(rng, k), voice)


# ----------------------------------------------------------------------------------------------
# Music-like sounds: instruments, drums and genre-like arrangements
# ----------------------------------------------------------------------------------------------

INSTRUMENTS = ("brass", "flute", "mallet", "organ", "piano", "pluck", "reed", "string", "synth", "vocal")


def _instrument(rng: np.random.Generator, name: str) -> dict:
    """Random parameters of one instrument (a timbre family)."""
    p: dict = dict(name=name, tilt=rng.uniform(0.8, 1.4), cache={})
    if name == "pluck":
        p.update(pos=rng.uniform(0.08, 0.3), decay=rng.uniform(0.3, 1.5), bdecay=rng.uniform(0.08, 0.4))
    elif name == "piano":
        p.update(decay=rng.uniform(0.5, 2.0), bdecay=rng.uniform(0.15, 0.5))
    elif name == "organ":
        draw = rng.uniform(0.0, 1.0, 8) ** 2
        draw[0] = 1.0
        p.update(draw=draw)
    elif name == "brass":
        p.update(attack=rng.uniform(0.03, 0.1), tilt=rng.uniform(0.6, 1.1))
    elif name == "reed":
        p.update(even=rng.uniform(0.05, 0.4))
    elif name == "flute":
        p.update(breath=rng.uniform(0.02, 0.1), h2=rng.uniform(0.1, 0.5))
    elif name == "string":
        p.update(attack=rng.uniform(0.08, 0.3), vib=rng.uniform(0.002, 0.006))
    elif name == "synth":
        p.update(square=bool(rng.random() < 0.5), fdecay=rng.uniform(0.05, 0.6))
    elif name == "mallet":
        p.update(ratios=(1.0, rng.uniform(3.8, 4.1), rng.uniform(9.0, 10.5)), decay=rng.uniform(0.3, 1.2))
    elif name == "vocal":
        p.update(vowel=_VOWELS[_pick(rng, ("a", "o", "u", "E", "A"))], vib=rng.uniform(0.004, 0.01))
    elif name == "bass":
        p.update(decay=rng.uniform(0.4, 1.5), tilt=rng.uniform(1.5, 2.5))
    else:
        raise ValueError(f"unknown instrument {name!r}")
    return p


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _tables(sr: int, inst: dict, midi: float, vib: float) -> tuple[np.ndarray, np.ndarray]:
    """(bright, dark) wavetables of ``inst`` at pitch ``midi`` (cached on the instrument)."""
    key = round(float(midi), 3)
    if key in inst["cache"]:
        return inst["cache"][key]
    name = inst["name"]
    f0 = _midi_hz(midi)
    k = np.arange(1, _n_harmonics(sr, f0 * (1 + 2 * vib)) + 1).astype(float)
    tilt = inst["tilt"]
    if name == "pluck":
        bright, dark = np.abs(np.sin(np.pi * k * inst["pos"])) / k**tilt + 1e-3, 1.0 / k**3
    elif name in ("piano", "string"):
        bright, dark = 1.0 / k**tilt, 1.0 / k**2.5
    elif name == "organ":
        bright = np.zeros(len(k))
        for h, w in zip((1, 2, 3, 4, 5, 6, 8, 10), inst["draw"]):
            if h <= len(k):
                bright[h - 1] = w
        dark = bright
    elif name == "brass":
        bright, dark = 1.0 / k**tilt, 1.0 / k**3
    elif name == "reed":
        bright = np.where(k % 2 == 1, 1.0, inst["even"]) / k**tilt
        dark = bright
    elif name == "flute":
        bright = np.array([1.0, inst["h2"], 0.12, 0.05, 0.02])[: len(k)]
        dark = bright
    elif name == "synth":
        bright = (np.where(k % 2 == 1, 1.0, 0.0) if inst["square"] else 1.0) / k
        dark = 1.0 / k**3
    elif name == "vocal":
        bright = _formant_gain(k * f0, inst["vowel"], floor=0.01).ravel() / np.sqrt(k)
        dark = bright
    elif name == "bass":
        bright, dark = 1.0 / k**1.2, 1.0 / k**tilt
    else:
        raise ValueError(f"unknown instrument {name!r}")
    inst["cache"][key] = (_table(bright), _table(dark))
    return inst["cache"][key]


def _note(rng: np.random.Generator, sr: int, inst: dict, midi, hold: float, velocity: float = 1.0):
    """A note (or a chord: ``midi`` a sequence) of ``inst`` held ``hold`` seconds, plus its release."""
    name = inst["name"]
    midis = [float(midi)] if np.isscalar(midi) else [float(m) for m in midi]
    release = {"string": 0.2, "vocal": 0.15, "piano": 0.15, "brass": 0.1, "flute": 0.1}.get(name, 0.06)
    if name in ("pluck", "piano", "mallet"):  # decaying notes: stop once the decay is ~-50 dB
        hold = min(hold, 6.0 * inst["decay"])
    n = int((hold + 4 * release) * sr)
    t = np.arange(n) / sr
    vib = {"string": inst.get("vib", 0.0), "vocal": inst.get("vib", 0.0), "flute": 0.004, "brass": 0.003}
    vib = vib.get(name, 0.0)
    if vib:
        mod = 1.0 + vib * np.minimum(1.0, t / 0.3) * np.sin(_TAU * rng.uniform(4.5, 6.5) * t)
        base_cycles = np.cumsum(mod) / sr
    else:
        base_cycles = t
    out = np.zeros(n)

    if name == "mallet":
        for m in midis:
            f0 = _midi_hz(m)
            cyc = f0 * base_cycles + rng.random()
            for r, a, tau in zip(inst["ratios"], (1.0, 0.4, 0.15), (1.0, 0.3, 0.12)):
                if r * f0 < 0.45 * sr:
                    out += a * np.sin(_TAU * r * cyc) * np.exp(-t / (tau * inst["decay"]))
        return velocity * out * np.minimum(1.0, t / 0.001)

    if name == "pluck":
        env, w = _envelope(t, 0.002, inst["decay"], 0.0, hold, release), np.exp(-t / inst["bdecay"])
    elif name == "piano":
        env, w = _envelope(t, 0.003, inst["decay"], 0.0, hold, release), np.exp(-t / inst["bdecay"])
    elif name == "bass":
        env, w = _envelope(t, 0.005, inst["decay"], 0.3, hold, release), np.exp(-t / 0.15)
    elif name == "brass":
        env = _envelope(t, inst["attack"], 0.2, 0.8, hold, release)
        w = np.minimum(1.0, t / inst["attack"]) * (0.4 + 0.6 * velocity)
    elif name == "synth":
        env, w = _envelope(t, 0.005, 0.3, 0.7, hold, release), 0.2 + 0.8 * np.exp(-t / inst["fdecay"])
    elif name == "string":
        env, w = _envelope(t, inst["attack"], 0.3, 0.9, hold, release), 0.7
    elif name == "organ":
        env, w = _envelope(t, 0.01, 0.1, 1.0, hold, release), None
    elif name == "reed":
        env, w = _envelope(t, 0.03, 0.2, 0.9, hold, release), None
    elif name == "flute":
        env, w = _envelope(t, 0.08, 0.3, 0.85, hold, release), None
    else:  # vocal
        env, w = _envelope(t, 0.08, 0.3, 0.9, hold, release), None
    bright = np.zeros(n)
    dark = np.zeros(n) if w is not None else None
    for m in midis:
        tb, td = _tables(sr, inst, m, vib)
        cyc = _midi_hz(m) * base_cycles + rng.random()
        bright += _wt(tb, cyc)
        if dark is not None:
            dark += _wt(td, cyc)
        if name == "flute":
            f0 = _midi_hz(m)
            breath = _spectral_filter(rng.standard_normal(n), sr, lambda f: _bp(f, f0, 6 * f0, 1))
            bright += inst["breath"] * _unit(breath)
    out = bright if w is None else w * bright + (1.0 - w) * dark
    return velocity * env * out


def _kick(rng, sr):
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    f_hi, f_lo = rng.uniform(120, 200), rng.uniform(40, 65)
    f = f_lo + (f_hi - f_lo) * np.exp(-t / rng.uniform(0.02, 0.06))
    x = np.sin(_TAU * np.cumsum(f) / sr) * np.exp(-t / rng.uniform(0.1, 0.3))
    click = rng.standard_normal(n) * np.exp(-t / 0.004) * rng.uniform(0.05, 0.3)
    return _peaknorm(x + click)


def _snare(rng, sr):
    n = int(0.3 * sr)
    t = np.arange(n) / sr
    tone = np.sin(_TAU * rng.uniform(170, 260) * t) * np.exp(-t / rng.uniform(0.03, 0.08))
    hi = min(9000.0, 0.45 * sr)
    nz = _spectral_filter(rng.standard_normal(n), sr, lambda f: _bp(f, 1000.0, hi, 1))
    nz = _unit(nz) * np.exp(-t / rng.uniform(0.06, 0.18))
    return _peaknorm(rng.uniform(0.3, 0.8) * tone + nz)


def _hat(rng, sr, open_=False):
    n = int((0.4 if open_ else 0.1) * sr)
    t = np.arange(n) / sr
    lo = min(rng.uniform(5000, 8000), 0.35 * sr)
    nz = _spectral_filter(rng.standard_normal(n), sr, lambda f: _hp(f, lo, 2))
    return _peaknorm(nz * np.exp(-t / (rng.uniform(0.12, 0.3) if open_ else rng.uniform(0.015, 0.04))))


def _ride(rng, sr):
    n = int(0.8 * sr)
    t = np.arange(n) / sr
    base = rng.uniform(300, 500)
    x = np.zeros(n)
    for r in (1.0, 1.48, 1.65, 2.13, 2.69, 3.41):
        fr = min(base * r * 4, 0.4 * sr)
        x += np.sign(np.sin(_TAU * fr * t + rng.random() * _TAU))
    x = _spectral_filter(x, sr, lambda f: _hp(f, min(3000.0, 0.3 * sr), 2))
    return _peaknorm(x * np.exp(-t / rng.uniform(0.3, 0.7)))


_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10), "blues": (0, 3, 5, 6, 7, 10),
}
_CHORDS = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "m7": (0, 3, 7, 10), "maj7": (0, 4, 7, 11),
    "5": (0, 7, 12), "9": (0, 4, 7, 10, 14), "m9": (0, 3, 7, 10, 14), "dim": (0, 3, 6),
}
# Genre-like styles. Patterns are 16 steps per bar: 'x' strong hit, 'o' soft hit, '.' rest.
# comp: chord rhythm patterns, or "arp8" / "arp16" (arpeggios) / "pad" (one sustained chord per bar).
_GENRES = {
    "blues": dict(
        tempo=(70, 110), swing=0.64, scales=("blues", "mixolydian"),
        progs=([(0, "7"), (5, "7"), (0, "7"), (7, "7")], [(0, "7"), (0, "7"), (5, "7"), (0, "7")]),
        drums=[dict(kick="x.....x.x.....x.", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.")],
        comp_inst=("pluck", "piano"), comp=("x.x.x.x.x.x.x.x.", "x..ox..ox..ox..o"), comp_len=2, comp_reg=52,
        dist=(0.0, 0.4), bass_inst=("bass",), bass=("walk", "boogie"), lead_inst=("pluck", "reed"),
        lead_density=(0.2, 0.5), lead_reg=64,
    ),
    "classical": dict(
        tempo=(60, 120), swing=0.5, scales=("major", "minor"),
        progs=([(0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")],
               [(0, "min"), (5, "min"), (7, "maj"), (0, "min")],
               [(0, "maj"), (9, "min"), (2, "min"), (7, "7")]),
        drums=None, comp_inst=("string", "piano"), comp=("arp8", "arp16", "pad"), comp_len=16, comp_reg=52,
        dist=(0.0, 0.0), bass_inst=("string", "piano"), bass=("sustain",),
        lead_inst=("string", "flute", "reed"),
        lead_density=(0.4, 0.8), lead_reg=69,
    ),
    "country": dict(
        tempo=(100, 140), swing=0.5, scales=("major",),
        progs=([(0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")],
               [(0, "maj"), (0, "maj"), (7, "maj"), (0, "maj")]),
        drums=[dict(kick="x.......x.......", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.")],
        comp_inst=("pluck",), comp=("x.x.x.x.x.x.x.x.", "x..xx.x.x..xx.x."), comp_len=2, comp_reg=55,
        dist=(0.0, 0.0), bass_inst=("bass",), bass=("rootfifth",), lead_inst=("pluck", "string"),
        lead_density=(0.3, 0.6), lead_reg=67,
    ),
    "disco": dict(
        tempo=(112, 128), swing=0.5, scales=("minor", "dorian"),
        progs=([(0, "m7"), (5, "m7")], [(0, "m7"), (10, "maj"), (8, "maj7"), (10, "maj")]),
        drums=[dict(kick="x...x...x...x...", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.",
                    ohat="..x...x...x...x.")],
        comp_inst=("string", "synth"), comp=("..x...x...x...x.", ".x.x.x.x.x.x.x.x"), comp_len=1, comp_reg=60,
        dist=(0.0, 0.0), bass_inst=("bass", "synth"), bass=("octave",), lead_inst=("string", "synth"),
        lead_density=(0.1, 0.4), lead_reg=72,
    ),
    "hiphop": dict(
        tempo=(80, 100), swing=0.57, scales=("minor", "dorian"),
        progs=([(0, "m7"), (8, "maj7")], [(0, "m9"), (5, "m7")]),
        drums=[dict(kick="x......x..x.....", snare="....x.......x...", hat="x.x.x.x.x.x.x.x."),
               dict(kick="x.x.......x..x..", snare="....x.......x...", hat="xxxxxxxxxxxxxxxx")],
        comp_inst=("piano", "synth"), comp=("x.......x.......", "x..............."), comp_len=6, comp_reg=55,
        dist=(0.0, 0.0), bass_inst=("bass",), bass=("sparse",), lead_inst=("vocal", "synth"),
        lead_density=(0.0, 0.25), lead_reg=67,
    ),
    "jazz": dict(
        tempo=(100, 200), swing=0.66, scales=("dorian", "mixolydian"),
        progs=([(2, "m7"), (7, "7"), (0, "maj7"), (9, "7")], [(2, "m9"), (7, "9"), (0, "maj7"), (0, "maj7")]),
        drums=[dict(ride="x...x.xxx...x.xx", hat="....x.......x...", kick="o...............")],
        comp_inst=("piano",), comp=("x.....x.........", "...x......x....."), comp_len=3, comp_reg=53,
        dist=(0.0, 0.0), bass_inst=("bass",), bass=("walk",), lead_inst=("reed", "brass"),
        lead_density=(0.4, 0.8), lead_reg=65,
    ),
    "metal": dict(
        tempo=(140, 200), swing=0.5, scales=("phrygian", "minor"),
        progs=([(0, "5"), (1, "5"), (3, "5"), (0, "5")], [(0, "5"), (0, "5"), (8, "5"), (7, "5")]),
        drums=[dict(kick="xxxxxxxxxxxxxxxx", snare="....x.......x...", hat="x...x...x...x..."),
               dict(kick="x.x.x.x.x.x.x.x.", snare="....x.......x...", ohat="x...x...x...x...")],
        comp_inst=("synth",), comp=("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx"), comp_len=1, comp_reg=40,
        dist=(4.0, 12.0), bass_inst=("bass",), bass=("root16",), lead_inst=("synth",),
        lead_density=(0.0, 0.3), lead_reg=64,
    ),
    "pop": dict(
        tempo=(95, 125), swing=0.5, scales=("major",),
        progs=([(0, "maj"), (7, "maj"), (9, "min"), (5, "maj")],
               [(9, "min"), (5, "maj"), (0, "maj"), (7, "maj")]),
        drums=[dict(kick="x.......x.x.....", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.")],
        comp_inst=("piano", "synth"), comp=("x...x...x...x...", "x..x..x...x..x.."), comp_len=3, comp_reg=57,
        dist=(0.0, 0.0), bass_inst=("bass", "synth"), bass=("root8",), lead_inst=("vocal", "synth"),
        lead_density=(0.3, 0.6), lead_reg=67,
    ),
    "reggae": dict(
        tempo=(65, 90), swing=0.55, scales=("minor", "major"),
        progs=([(0, "min"), (10, "maj")], [(0, "maj"), (5, "maj"), (7, "maj"), (5, "maj")]),
        drums=[dict(kick="........x.......", snare="........x.......", hat="x.x.x.x.x.x.x.x.")],
        comp_inst=("organ", "pluck"), comp=("..x...x...x...x.", "....x.......x..."), comp_len=1, comp_reg=57,
        dist=(0.0, 0.0), bass_inst=("bass",), bass=("reggae",), lead_inst=("organ", "brass"),
        lead_density=(0.0, 0.3), lead_reg=67,
    ),
    "rock": dict(
        tempo=(105, 150), swing=0.5, scales=("minor", "mixolydian", "major"),
        progs=([(0, "5"), (5, "5"), (7, "5"), (5, "5")], [(0, "5"), (10, "5"), (5, "5"), (0, "5")]),
        drums=[dict(kick="x.......x.x.....", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.")],
        comp_inst=("pluck", "synth"), comp=("x.x.x.x.x.x.x.x.", "x...x...x...x.x."), comp_len=2, comp_reg=45,
        dist=(1.5, 5.0), bass_inst=("bass",), bass=("root8",), lead_inst=("pluck", "synth"),
        lead_density=(0.2, 0.5), lead_reg=64,
    ),
}
GENRES = tuple(sorted(_GENRES))


def _render_genre(rng: np.random.Generator, sr: int, n: int, genre: str) -> np.ndarray:
    """A genre-like arrangement (drums, bass, chords, lead) of exactly n samples (peak 1)."""
    g = _GENRES[genre]
    tempo = rng.uniform(*g["tempo"])
    step = 60.0 / tempo / 4.0
    swing = g["swing"] + (rng.uniform(-0.03, 0.03) if g["swing"] > 0.5 else 0.0)
    key = int(rng.integers(12))
    scale = _SCALES[_pick(rng, g["scales"])]
    prog = _pick(rng, g["progs"])
    bar_offset = int(rng.integers(len(prog)))
    n_steps = int(np.ceil(n / sr / step)) + 1
    sub = (0.0, swing / 2.0, swing, swing + (1.0 - swing) / 2.0)
    start_step = int(rng.integers(0, 16))  # start anywhere in the bar

    def when(s):
        beat, q = divmod(s, 4)
        return int(((beat + sub[q]) * 4 * step + rng.normal(0.0, 0.004)) * sr)

    def chord_at(s):
        root, shape = prog[((s + start_step) // 16 + bar_offset) % len(prog)]
        return root, _CHORDS[shape]

    drums = np.zeros(n)
    if g["drums"] is not None:
        pats = _pick(rng, g["drums"])
        sounds = {"kick": _kick(rng, sr), "snare": _snare(rng, sr), "hat": _hat(rng, sr),
                  "ohat": _hat(rng, sr, open_=True), "ride": _ride(rng, sr)}
        levels = {"kick": 1.0, "snare": 0.6, "hat": 0.3, "ohat": 0.35, "ride": 0.35}
        for voice in sorted(pats):
            pat = pats[voice]
            lev = levels[voice] * _db(rng.uniform(-3, 3))
            for s in range(n_steps):
                ch = pat[(s + start_step) % 16]
                if ch != "." and rng.random() > 0.03:
                    vel = (1.0 if ch == "x" else 0.45) * rng.uniform(0.8, 1.0)
                    _add(drums, sounds[voice] * vel * lev, when(s))

    comp = np.zeros(n)
    inst = _instrument(rng, _pick(rng, g["comp_inst"]))
    style = _pick(rng, g["comp"])
    reg = g["comp_reg"] + int(rng.integers(-2, 3))
    for s in range(n_steps):
        pos = (s + start_step) % 16
        root, shape = chord_at(s)
        base = reg + (key + root - reg) % 12
        if style in ("arp8", "arp16"):
            every = 2 if style == "arp8" else 1
            if pos % every == 0:
                notes = [base + iv for iv in shape] + [base + 12]
                m = notes[(pos // every) % len(notes)]
                _add(comp, _note(rng, sr, inst, m, every * step * 1.5, rng.uniform(0.6, 0.9)), when(s))
        elif style == "pad":
            if pos == 0 or s == 0:
                chord = [base + iv for iv in shape]
                _add(comp, _note(rng, sr, inst, chord, (16 - pos) * step, 0.5), when(s))
        else:
            ch = style[pos]
            if ch != ".":
                vel = (1.0 if ch == "x" else 0.6) * rng.uniform(0.7, 1.0)
                chord = [base + iv for iv in shape]
                _add(comp, _note(rng, sr, inst, chord, g["comp_len"] * step, vel / len(shape) * 2), when(s))
    drive = rng.uniform(*g["dist"])
    if drive > 0:
        comp = np.tanh(drive * _peaknorm(comp)) / np.tanh(drive)

    bass = np.zeros(n)
    binst = _instrument(rng, _pick(rng, g["bass_inst"]))
    bstyle = _pick(rng, g["bass"])
    walk = 0
    for s in range(n_steps):
        pos = (s + start_step) % 16
        root, shape = chord_at(s)
        low = 36 + (key + root) % 12
        m, hold = None, 2
        if bstyle == "walk" and pos % 4 == 0:
            m = low + (shape[walk % len(shape)] if pos else 0)
            walk += 1
            hold = 4
        elif bstyle == "boogie" and pos % 2 == 0:
            m = low + (0, 4, 7, 9, 10, 9, 7, 4)[pos // 2]
        elif bstyle == "rootfifth" and pos % 8 == 0:
            m = low + (0 if pos == 0 else 7)
            hold = 4
        elif bstyle == "octave" and pos % 2 == 0:
            m = low + (12 if pos % 4 == 2 else 0)
        elif bstyle == "root8" and pos % 2 == 0:
            m = low
        elif bstyle == "root16":
            m, hold = low, 1
        elif bstyle == "sparse" and "x..x..x...x....."[pos] == "x":
            m, hold = low, 3
        elif bstyle == "reggae" and "x..x..x.x.....x."[pos] == "x":
            m = low + (0, 0, 7, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 10, 0)[pos]
        elif bstyle == "sustain" and (pos == 0 or s == 0):
            m, hold = low, 16 - pos
        if m is not None:
            _add(bass, _note(rng, sr, binst, m, hold * step, rng.uniform(0.7, 1.0)), when(s))

    lead = np.zeros(n)
    linst = _instrument(rng, _pick(rng, g["lead_inst"]))
    density = rng.uniform(*g["lead_density"])
    degree = int(rng.integers(len(scale)))
    s = 0
    while s < n_steps and density > 0:
        if rng.random() < density:
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 2 * len(scale)))
            octave, d = divmod(degree, len(scale))
            m = g["lead_reg"] + (key + scale[d] - g["lead_reg"]) % 12 + 12 * octave
            hold = int(_pick(rng, (1, 2, 2, 3, 4)))
            _add(lead, _note(rng, sr, linst, m, hold * step, rng.uniform(0.6, 1.0)), when(s))
            s += hold
        else:
            s += 2

    mix = np.zeros(n)
    for track, level in ((drums, 0.9), (bass, 0.7), (comp, 0.6), (lead, 0.5)):
        if np.any(track):
            mix += _peaknorm(track) * level * _db(rng.uniform(-4, 4))
    return _peaknorm(mix)


def _render_solo(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """A solo instrument playing a melody or chords (FMA-like solo pieces)."""
    inst = _instrument(rng, _pick(rng, INSTRUMENTS))
    scale = _SCALES[_pick(rng, ("major", "minor", "dorian"))]
    key = int(rng.integers(12)) + 48
    out = np.zeros(n)
    t = rng.uniform(0.0, 0.05)
    beat = 60.0 / rng.uniform(60, 140)
    degree = 7
    while t < n / sr:
        d = beat * _pick(rng, (0.5, 1.0, 1.0, 2.0))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 20))
        octave, idx = divmod(degree, len(scale))
        m = key + scale[idx] + 12 * octave
        notes = [m] if rng.random() < 0.7 else [m, m + 4 if 4 in scale else m + 3, m + 7]
        _add(out, _note(rng, sr, inst, notes, d * 0.9, rng.uniform(0.5, 1.0) / len(notes)), int(t * sr))
        t += d
    return _peaknorm(out)


# ----------------------------------------------------------------------------------------------
# Environment-like sounds
# ----------------------------------------------------------------------------------------------


def _times(rng, dur, gap, first=(0.0, 0.15), length=0.0):
    """Onset times in [0, dur): first onset in ``first``, then gaps drawn by ``gap()``."""
    out = []
    t = rng.uniform(*first) * max(dur, 0.0)
    while t < max(dur - length * 0.5, 1e-3) or not out:
        out.append(t)
        t += gap()
    return [x for x in out if x < dur] or [0.0]


def _glide_tone(rng, sr, d, f_start, f_peak, f_end, rolloff=1.0, noise=0.0, formants=None, tau=None):
    """A harmonic tone rising from f_start to f_peak then falling to f_end over d seconds."""
    m = max(int(d * sr), 8)
    u = np.arange(m) / m
    peak_at = rng.uniform(0.2, 0.5)
    f = np.where(u < peak_at, f_start + (f_peak - f_start) * u / peak_at,
                 f_peak + (f_end - f_peak) * (u - peak_at) / (1 - peak_at))
    x = _harmonic(f, sr, rolloff, rng)
    if noise:
        x = x + noise * rng.standard_normal(m)
    if formants is not None:
        x = _spectral_filter(x, sr, lambda fr: _formant_gain(fr, formants))
    env = np.sin(np.pi * np.minimum(u / 0.15, 1.0) / 2) if tau is None else np.exp(-u * d / tau)
    env = env * np.minimum(1.0, (1.0 - u) / 0.1)
    return _peaknorm(x * env)


def _ev_dog_bark(rng, sr, n):
    out = np.zeros(n)
    size = rng.uniform(0.7, 1.4)
    forms = np.array([650.0, 1500.0, 2600.0]) / size * rng.uniform(0.9, 1.1)
    gap = lambda: rng.uniform(0.25, 0.7) + (rng.uniform(0.5, 1.2) if rng.random() < 0.15 else 0)  # noqa: E731
    for t in _times(rng, n / sr, gap):
        d = rng.uniform(0.1, 0.25)
        f0 = rng.uniform(300, 550) / size
        x = _glide_tone(rng, sr, d, f0, f0 * rng.uniform(1.2, 1.6), f0 * 0.8, 0.8, 0.3, forms, tau=d / 2)
        _add(out, x * rng.uniform(0.6, 1.0), int(t * sr))
    return out


def _ev_cat_meow(rng, sr, n):
    out = np.zeros(n)
    voice = dict(_speaker(rng), f0=rng.uniform(450, 750), tract=rng.uniform(1.3, 1.6),
                 range=rng.uniform(1.0, 2.0), rate=rng.uniform(0.5, 0.9), rise=0.0, bright=2500.0)
    for t in _times(rng, n / sr, lambda: rng.uniform(0.9, 2.0)):
        phones = ["m", _pick(rng, ("i", "e", "I")), "a", _pick(rng, ("U", "u", "o"))]
        x = _speak(rng, sr, phones, voice)
        _add(out, x * rng.uniform(0.6, 1.0), int(t * sr))
    return out


def _ev_bird_chirp(rng, sr, n):
    out = np.zeros(n)
    hi_lim = 0.42 * sr
    base = min(rng.uniform(2000, 5000), hi_lim * 0.7)
    gap = lambda: rng.uniform(0.06, 0.25) + (rng.uniform(0.3, 1.0) if rng.random() < 0.2 else 0)  # noqa: E731
    for t in _times(rng, n / sr, gap):
        d = rng.uniform(0.03, 0.12)
        m = int(d * sr)
        u = np.arange(m) / m
        f1 = base * rng.uniform(0.7, 1.3)
        f2 = min(f1 * rng.uniform(0.5, 1.8), hi_lim)
        f = f1 + (f2 - f1) * u + 300 * np.sin(_TAU * rng.uniform(20, 60) * u * d)
        x = np.sin(_TAU * np.cumsum(np.minimum(f, hi_lim)) / sr) * np.sin(np.pi * u) ** 2
        _add(out, x * rng.uniform(0.4, 1.0), int(t * sr))
    return out


def _ev_crickets(rng, sr, n):
    t = np.arange(n) / sr
    fc = min(rng.uniform(3500, 5500), 0.4 * sr)
    pulse_rate = rng.uniform(25, 60)
    chirp_rate = rng.uniform(1.0, 4.0)
    chirp_len = rng.uniform(0.12, 0.35)
    pulses = (np.sin(_TAU * pulse_rate * t) > 0.2).astype(float)
    chirps = ((t * chirp_rate + rng.random()) % 1.0) < chirp_len * chirp_rate
    am = _spectral_filter(pulses * chirps, sr, lambda f: _lp(f, 300.0, 1))
    x = np.sin(_TAU * fc * t) + 0.2 * np.sin(_TAU * 2 * fc * t) * (2 * fc < 0.45 * sr)
    return x * am


def _ev_frog(rng, sr, n):
    out = np.zeros(n)
    f0 = rng.uniform(150, 400)
    prate = rng.uniform(15, 40)
    forms = np.array([500.0, 1300.0, 2400.0]) * rng.uniform(0.8, 1.2)
    for t in _times(rng, n / sr, lambda: rng.uniform(0.4, 1.2)):
        d = rng.uniform(0.2, 0.5)
        m = int(d * sr)
        tt = np.arange(m) / sr
        x = _harmonic(np.full(m, f0 * rng.uniform(0.95, 1.05)), sr, 1.0, rng)
        x = x * np.maximum(0, np.sin(_TAU * prate * tt)) ** 2 * np.sin(np.pi * tt / d)
        x = _spectral_filter(x, sr, lambda f: _formant_gain(f, forms))
        _add(out, _peaknorm(x) * rng.uniform(0.6, 1.0), int(t * sr))
    return out


def _ev_crying_baby(rng, sr, n):
    out = np.zeros(n)
    voice = dict(_speaker(rng), f0=rng.uniform(350, 550), tract=rng.uniform(1.35, 1.6),
                 range=rng.uniform(0.8, 1.6), rate=rng.uniform(0.25, 0.45), creak=rng.uniform(0.0, 0.4),
                 jitter=0.8, bright=3000.0, rise=0.0)
    for t in _times(rng, n / sr, lambda: rng.uniform(1.0, 1.8)):
        x = _speak(rng, sr, ["w", _pick(rng, ("a", "ae", "E")), _pick(rng, ("a", "ae", "E"))], voice)
        _add(out, x * rng.uniform(0.7, 1.0), int(t * sr))
    return out


def _ev_coughing(rng, sr, n):
    out = np.zeros(n)
    forms = np.array(_VOWELS[_pick(rng, ("a", "@", "V"))]) * rng.uniform(0.9, 1.2)
    gap = lambda: rng.uniform(0.3, 0.6) + (rng.uniform(0.6, 1.5) if rng.random() < 0.3 else 0)  # noqa: E731
    for t in _times(rng, n / sr, gap):
        d = rng.uniform(0.18, 0.4)
        m = int(d * sr)
        tt = np.arange(m) / sr
        x = rng.standard_normal(m) + 0.5 * _harmonic(np.full(m, rng.uniform(100, 250)), sr, 1.0, rng)
        x = _spectral_filter(x, sr, lambda f: _formant_gain(f, forms, bws=(300, 400, 500)))
        env = np.exp(-tt / (d / 3)) * np.minimum(1, tt / 0.01)
        _add(out, _peaknorm(x * env) * rng.uniform(0.6, 1.0), int(t * sr))
    return out


def _ev_laughing(rng, sr, n):
    out = np.zeros(n)
    spk = _speaker(rng)
    voice = dict(spk, f0=spk["f0"] * 1.4, rate=rng.uniform(1.3, 1.8), range=rng.uniform(1.2, 2.0), breath=0.4)
    for t in _times(rng, n / sr, lambda: rng.uniform(1.0, 2.0)):
        k = int(rng.integers(3, 8))
        x = _speak(rng, sr, ["h", _pick(rng, ("a", "ae", "i", "V"))] * k, voice)
        _add(out, x * rng.uniform(0.7, 1.0), int(t * sr))
    return out


def _ev_snoring(rng, sr, n):
    out = np.zeros(n)
    for t in _times(rng, n / sr, lambda: rng.uniform(2.2, 3.5)):
        d = rng.uniform(0.8, 1.4)
        m = int(d * sr)
        tt = np.arange(m) / sr
        f0 = rng.uniform(30, 70)
        pulses = np.maximum(0, np.sin(_TAU * f0 * tt)) ** 8
        x = pulses * (1 + rng.standard_normal(m)) + 0.3 * rng.standard_normal(m)
        cutoff = rng.uniform(500, 1200)
        shape = lambda f: _lp(f, cutoff, 2) * _formant_gain(f, (500, 1000, 2000), (400, 600, 800))  # noqa: E731
        x = _spectral_filter(x, sr, shape)
        _add(out, _peaknorm(x * np.sin(np.pi * tt / d)) * rng.uniform(0.6, 1), int(t * sr))
    return out


def _impact(rng, sr, d, freqs, taus, noise=0.3, hp=None):
    m = max(int(d * sr), 8)
    tt = np.arange(m) / sr
    x = np.zeros(m)
    for f, tau in zip(freqs, taus):
        if f < 0.45 * sr:
            x += np.sin(_TAU * f * tt + rng.random() * _TAU) * np.exp(-tt / tau)
    x += noise * rng.standard_normal(m) * np.exp(-tt / 0.005)
    if hp:
        x = _spectral_filter(x, sr, lambda fr: _hp(fr, hp, 2))
    return _peaknorm(x * np.minimum(1.0, tt / 0.0005))


def _ev_footsteps(rng, sr, n):
    out = np.zeros(n)
    period = rng.uniform(0.4, 0.7)
    crunch = rng.random() < 0.5
    lo = rng.uniform(60, 140)
    for t in _times(rng, n / sr, lambda: period * rng.uniform(0.9, 1.1)):
        x = _impact(rng, sr, 0.15, (lo, lo * 2.3), (0.03, 0.015), noise=0.5)
        x = _spectral_filter(x, sr, lambda f: _lp(f, 800.0, 2))
        if crunch:
            m = len(x)
            c = rng.standard_normal(m) * (rng.random(m) < 0.05) * np.exp(-np.arange(m) / (0.05 * sr))
            c = _spectral_filter(c, sr, lambda f: _hp(f, 1500.0, 1))
            x = x + 0.5 * _peaknorm(c)
        _add(out, _peaknorm(x) * rng.uniform(0.5, 1.0), int(t * sr))
    return out


def _ev_door_knock(rng, sr, n):
    out = np.zeros(n)
    f1 = rng.uniform(150, 300)
    f2 = f1 * rng.uniform(2.2, 3.5)
    gap = rng.uniform(0.14, 0.25)
    for t0 in _times(rng, n / sr, lambda: rng.uniform(1.2, 2.5)):
        for j in range(int(rng.integers(2, 6))):
            x = _impact(rng, sr, 0.12, (f1, f2), (0.03, 0.012), noise=0.6)
            _add(out, x * rng.uniform(0.6, 1.0), int((t0 + j * gap * rng.uniform(0.9, 1.1)) * sr))
    return out


def _ev_keyboard_typing(rng, sr, n):
    out = np.zeros(n)
    res = min(rng.uniform(2000, 4500), 0.4 * sr)
    for t in _times(rng, n / sr, lambda: rng.exponential(0.12) + 0.04):
        for j, a in ((0, 1.0), (rng.uniform(0.05, 0.09), 0.5)):
            freqs = (res * rng.uniform(0.8, 1.2), res * 1.7)
            x = _impact(rng, sr, 0.02, freqs, (0.003, 0.002), noise=1.0, hp=800.0)
            _add(out, x * a * rng.uniform(0.4, 1.0), int((t + j) * sr))
    return out


def _ev_clock_tick(rng, sr, n):
    out = np.zeros(n)
    period = rng.uniform(0.25, 1.0)
    res = min(rng.uniform(2500, 5000), 0.4 * sr)
    for i, t in enumerate(_times(rng, n / sr, lambda: period)):
        f = res * (1.0 if i % 2 == 0 else rng.uniform(0.75, 0.9))
        x = _impact(rng, sr, 0.03, (f, f * 1.5), (0.004, 0.002), noise=0.4, hp=1000.0)
        _add(out, x, int(t * sr))
    return out


def _ev_clapping(rng, sr, n):
    out = np.zeros(n)
    applause = rng.random() < 0.35
    lo, hi = rng.uniform(600, 1200), min(rng.uniform(2500, 5000), 0.45 * sr)
    gap = (lambda: rng.exponential(1 / rng.uniform(20, 50))) if applause else (lambda: rng.uniform(0.2, 0.45))
    for t in _times(rng, n / sr, gap):
        m = int(0.05 * sr)
        x = rng.standard_normal(m) * np.exp(-np.arange(m) / (rng.uniform(0.006, 0.015) * sr))
        body = rng.uniform(1000, 2000)
        x = _spectral_filter(x, sr, lambda f: _bp(f, lo, hi, 1) * (1 + _peak(f, body, 400)))
        _add(out, _peaknorm(x) * rng.uniform(0.4, 1.0), int(t * sr))
    return out


def _ev_glass_breaking(rng, sr, n):
    out = np.zeros(n)
    t0 = rng.uniform(0, 0.1) * n / sr
    freqs = [rng.uniform(2000, 7000) for _ in range(6)]
    crash = _impact(rng, sr, 0.3, freqs, [0.05] * 6, noise=2.0, hp=1500.0)
    _add(out, crash, int(t0 * sr))
    t = t0 + 0.02
    dens = rng.uniform(15, 40)
    while t < n / sr:
        fr = [rng.uniform(2500, 7500) for _ in range(3)]
        x = _impact(rng, sr, 0.08, fr, [rng.uniform(0.01, 0.04)] * 3, noise=0.2, hp=1500.0)
        _add(out, x * rng.uniform(0.1, 0.5) * np.exp(-(t - t0) / 0.6), int(t * sr))
        t += rng.exponential(1.0 / dens)
    return out


def _ev_church_bells(rng, sr, n):
    out = np.zeros(n)
    base = rng.uniform(200, 600)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 3.0, 4.0]) * rng.uniform(0.98, 1.02, 8)
    period = rng.uniform(0.6, 1.6)
    for i, t in enumerate(_times(rng, n / sr, lambda: period)):
        f = base * (1.0 if rng.random() < 0.6 else _pick(rng, (0.84, 0.75, 1.12)))
        dur = min(3.0, n / sr - t + 0.01)
        x = _impact(rng, sr, dur, f * ratios, 1.5 / (1 + np.arange(8) * 0.6), noise=0.1)
        _add(out, x * rng.uniform(0.6, 1.0), int(t * sr))
    return out


def _ev_siren(rng, sr, n):
    t = np.arange(n) / sr
    lo, hi = rng.uniform(500, 800), rng.uniform(1100, 1600)
    period = rng.uniform(2.0, 4.0) if rng.random() < 0.5 else rng.uniform(0.2, 0.4)
    ph = rng.random()
    f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(_TAU * (t / period + ph)))
    x = _harmonic(f, sr, rng.uniform(1.0, 2.0), rng, odd=rng.random() < 0.5)
    doppler = 1.0 + 0.3 * np.sin(_TAU * t / rng.uniform(6, 12) + rng.random() * _TAU)
    return x * doppler


def _ev_car_horn(rng, sr, n):
    out = np.zeros(n)
    f1 = rng.uniform(330, 500)
    ratio = _pick(rng, (1.0, 1.26, 1.19))
    for t in _times(rng, n / sr, lambda: rng.uniform(0.5, 1.8)):
        d = rng.uniform(0.2, 1.2)
        m = int(d * sr)
        x = _harmonic(np.full(m, f1), sr, 0.8, rng, odd=True)
        x = x + _harmonic(np.full(m, f1 * ratio), sr, 0.8, rng, odd=True)
        x = x * _envelope(np.arange(m) / sr, 0.01, 0.1, 0.9, d - 0.03, 0.01)
        _add(out, _peaknorm(x) * rng.uniform(0.7, 1.0), int(t * sr))
    return out


def _ev_engine(rng, sr, n):
    t = np.arange(n) / sr
    rpm = rng.uniform(25, 60) * (1 + 0.15 * np.sin(_TAU * t / rng.uniform(2, 6) + rng.random() * _TAU))
    x = _harmonic(rpm * (1 + 0.01 * _noise(rng, n, sr, 2.0)), sr, 0.7, rng)
    x = _spectral_filter(x, sr, lambda f: _lp(f, rng.uniform(400, 1200), 2))
    rumble = _spectral_filter(_noise(rng, n, sr, 1.0), sr, lambda f: _lp(f, 500.0, 2))
    return _unit(x) + rng.uniform(0.2, 0.6) * _unit(rumble)


def _ev_helicopter(rng, sr, n):
    t = np.arange(n) / sr
    blade = rng.uniform(8, 22)
    slaps = np.maximum(0, np.sin(_TAU * blade * t)) ** 6
    x = _spectral_filter(_noise(rng, n, sr, 1.0) * (0.3 + slaps), sr, lambda f: _lp(f, 1500.0, 1))
    whine = np.sin(_TAU * rng.uniform(1500, 3000) * t) * 0.05
    return _unit(x) + whine


def _ev_chainsaw(rng, sr, n):
    t = np.arange(n) / sr
    rev = np.clip(np.sin(_TAU * t / rng.uniform(1.5, 3.0) + rng.random() * _TAU), -0.3, 1.0)
    f0 = rng.uniform(80, 130) * (1.0 + 0.5 * (rev + 0.3))
    x = _harmonic(f0, sr, 0.6, rng) + 0.3 * rng.standard_normal(n)
    x = np.tanh(3.0 * x)
    return _spectral_filter(x, sr, lambda f: _bp(f, 150.0, 4000.0, 1))


def _ev_vacuum_cleaner(rng, sr, n):
    t = np.arange(n) / sr
    nz = _spectral_filter(_noise(rng, n, sr, 0.5), sr, lambda f: _bp(f, rng.uniform(300, 800), 0.4 * sr, 1))
    fw = min(rng.uniform(800, 2500), 0.3 * sr)
    whine = _harmonic(np.full(n, fw) * (1 + 0.003 * np.sin(_TAU * 0.5 * t)), sr, 1.5, rng)
    return _unit(nz) + rng.uniform(0.1, 0.4) * whine


def _ev_clock_alarm(rng, sr, n):
    out = np.zeros(n)
    fb = min(rng.uniform(2000, 4000), 0.4 * sr)
    beeps = int(rng.integers(2, 5))
    b, gap = rng.uniform(0.05, 0.1), rng.uniform(0.05, 0.1)
    for t in _times(rng, n / sr, lambda: beeps * (b + gap) + rng.uniform(0.3, 0.6)):
        for j in range(beeps):
            m = int(b * sr)
            x = np.sign(np.sin(_TAU * fb * np.arange(m) / sr))
            x = x * np.minimum(1, np.arange(m)[::-1] / (0.003 * sr))
            _add(out, _spectral_filter(x, sr, lambda f: _lp(f, 0.45 * sr, 4)), int((t + j * (b + gap)) * sr))
    return out


def _ev_rain(rng, sr, n):
    rate = rng.uniform(60, 400)
    out = np.zeros(n)
    for j in range(3):
        imp = (rng.random(n) < rate / sr / 3) * rng.uniform(0.2, 1.0, n)
        k = _impact(rng, sr, 0.01, (min(rng.uniform(1500, 6000), 0.4 * sr),), (0.002,), noise=1.0, hp=500.0)
        out += _fftconv(imp, k)
    bed = _spectral_filter(_noise(rng, n, sr, 1.0), sr, lambda f: _bp(f, 200.0, rng.uniform(3000, 7000), 1))
    return _unit(out) + rng.uniform(0.2, 0.8) * bed


def _ev_sea_waves(rng, sr, n):
    t = np.arange(n) / sr
    period = rng.uniform(3.0, 7.0)
    env = (0.5 - 0.5 * np.cos(_TAU * (t / period + rng.random()))) ** 2
    x = _noise(rng, n, sr, 1.3) * (0.15 + env)
    return _spectral_filter(x, sr, lambda f: _lp(f, rng.uniform(1500, 4000), 1))


def _ev_wind(rng, sr, n):
    gust = _spectral_filter(rng.standard_normal(n), sr, lambda f: _lp(f, rng.uniform(0.3, 1.0), 2))
    gust = 0.5 + np.abs(_unit(gust))
    x = _spectral_filter(_noise(rng, n, sr, 1.8) * gust, sr, lambda f: _lp(f, rng.uniform(400, 1500), 1))
    if rng.random() < 0.5:
        fw = rng.uniform(400, 1200)
        x = x + 0.5 * _unit(_spectral_filter(rng.standard_normal(n) * gust, sr, lambda f: _peak(f, fw, 60.0)))
    return x


def _ev_crackling_fire(rng, sr, n):
    out = np.zeros(n)
    t = 0.0
    while t < n / sr:
        burst = int(rng.integers(1, 6))
        for _ in range(burst):
            freq = min(rng.uniform(1000, 6000), 0.4 * sr)
            x = _impact(rng, sr, 0.01, (freq,), (0.001,), noise=2.0, hp=300.0)
            _add(out, x * rng.uniform(0.1, 1.0), int(t * sr))
            t += rng.exponential(0.01)
        t += rng.exponential(1.0 / rng.uniform(4, 15))
    roar = _spectral_filter(_noise(rng, n, sr, 2.0), sr, lambda f: _lp(f, 300.0, 2))
    return out + rng.uniform(0.05, 0.3) * _unit(roar)


def _ev_water_drops(rng, sr, n):
    out = np.zeros(n)
    for t in _times(rng, n / sr, lambda: rng.uniform(0.12, 0.6)):
        d = rng.uniform(0.03, 0.08)
        m = int(d * sr)
        u = np.arange(m) / m
        f = rng.uniform(600, 1500) * (1 + rng.uniform(0.3, 0.8) * u)
        x = np.sin(_TAU * np.cumsum(f) / sr) * np.exp(-u * 4) * np.minimum(1, u / 0.05)
        _add(out, x * rng.uniform(0.4, 1.0), int(t * sr))
    return out


def _ev_thunderstorm(rng, sr, n):
    out = _ev_rain(rng, sr, n) * rng.uniform(0.2, 0.5)
    t0 = rng.uniform(0.0, 0.3) * n / sr
    m = n - int(t0 * sr)
    tt = np.arange(m) / sr
    rumble = _spectral_filter(_noise(rng, m, sr, 2.0), sr, lambda f: _lp(f, rng.uniform(100, 300), 2))
    rumble = _unit(rumble) * np.exp(-tt / rng.uniform(1.0, 3.0)) * np.minimum(1, tt / 0.05)
    _add(out, 2.0 * rumble, int(t0 * sr))
    return out


def _ev_speech(rng, sr, n):
    voice = _speaker(rng)
    out = np.zeros(n)
    t = rng.uniform(0, 0.1) * n / sr
    while t < n / sr:
        x = _utterance(rng, sr, voice, int(rng.integers(2, 8)))
        _add(out, x, int(t * sr))
        t += len(x) / sr + rng.uniform(0.2, 0.6)
    return out


def _ev_music(rng, sr, n):
    if rng.random() < 0.5:
        return _render_solo(rng, sr, n)
    return _render_genre(rng, sr, n, _pick(rng, GENRES))


ENV_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "car_horn": _ev_car_horn, "cat_meow": _ev_cat_meow, "chainsaw": _ev_chainsaw,
    "church_bells": _ev_church_bells, "clapping": _ev_clapping, "clock_alarm": _ev_clock_alarm,
    "clock_tick": _ev_clock_tick, "coughing": _ev_coughing, "crackling_fire": _ev_crackling_fire,
    "crickets": _ev_crickets, "crying_baby": _ev_crying_baby, "dog_bark": _ev_dog_bark,
    "door_knock": _ev_door_knock, "engine": _ev_engine, "footsteps": _ev_footsteps, "frog": _ev_frog,
    "glass_breaking": _ev_glass_breaking, "helicopter": _ev_helicopter,
    "keyboard_typing": _ev_keyboard_typing,
    "laughing": _ev_laughing, "rain": _ev_rain, "sea_waves": _ev_sea_waves, "snoring": _ev_snoring,
    "siren": _ev_siren, "thunderstorm": _ev_thunderstorm, "vacuum_cleaner": _ev_vacuum_cleaner,
    "water_drops": _ev_water_drops, "wind": _ev_wind, "bird_chirp": _ev_bird_chirp,
    "speech": _ev_speech, "music": _ev_music,
}
_TEXTURES = (
    "crackling_fire", "crickets", "engine", "helicopter", "rain", "sea_waves", "vacuum_cleaner", "wind",
)


def _env_sound(rng, sr, n, name):
    x = ENV_GENERATORS[name](rng, sr, n)
    return _peaknorm(_fit(np.asarray(x, dtype=float), n))


def _background(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Stationary-ish background: coloured noise, optionally with mains hum or a fan/tap texture."""
    kind = int(rng.integers(5))
    x = _noise(rng, n, sr, rng.uniform(0.0, 2.0))
    if kind == 1:  # mains hum
        t = np.arange(n) / sr
        hz = _pick(rng, (50.0, 60.0))
        hum = sum(np.sin(_TAU * hz * h * t) / h for h in (1, 2, 3, 5))
        x = x * rng.uniform(0.2, 1.0) + hum * rng.uniform(0.5, 2.0)
    elif kind == 2:  # fan
        x = _spectral_filter(x, sr, lambda f: _lp(f, rng.uniform(300, 2000), 1))
    elif kind == 3:  # running tap
        x = _spectral_filter(x, sr, lambda f: _bp(f, rng.uniform(500, 1500), rng.uniform(3000, 7000), 1))
    elif kind == 4:  # babble-ish murmur: low-passed, amplitude-modulated noise
        am = 0.5 + np.abs(_unit(_spectral_filter(rng.standard_normal(n), sr, lambda f: _lp(f, 4.0, 2))))
        x = _spectral_filter(x * am, sr, lambda f: _bp(f, 150.0, 3000.0, 1))
    return _unit(x)


# ----------------------------------------------------------------------------------------------
# Writing audio deterministically
# ----------------------------------------------------------------------------------------------


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


def _zero_peak_timestamp(path: Path) -> None:
    """libsndfile's PEAK chunk (float WAV) holds a wall-clock timestamp: zero it."""
    data = bytearray(path.read_bytes())
    i = 12
    while i + 8 <= len(data):
        cid = bytes(data[i : i + 4])
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        if cid == b"PEAK" and size >= 8:
            data[i + 12 : i + 16] = b"\0\0\0\0"
            path.write_bytes(bytes(data))
            return
        i += 8 + size + (size & 1)


def _write_audio(path: Path, x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype == "FLOAT":
        sf.write(str(path), np.asarray(x, dtype=np.float32), sr, format=fmt, subtype="FLOAT")
        _zero_peak_timestamp(path)
    else:
        sf.write(str(path), _to_int16(x), sr, format=fmt, subtype=subtype)


class _AtomicDir:
    """Build a directory under a hidden temporary sibling; rename it to ``final`` on success."""

    def __init__(self, final: str | Path, overwrite: bool = False):
        self.final = Path(final)
        self.overwrite = overwrite

    def __enter__(self) -> Path:
        if self.final.exists() and not self.overwrite:
            raise FileExistsError(f"{self.final}: already exists (remove it or pass overwrite)")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.tmp.chmod(0o755)  # mkdtemp makes it 0700
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)


# ----------------------------------------------------------------------------------------------
# Pretraining corpus
# ----------------------------------------------------------------------------------------------


def _corpus_lengths(rng: np.random.Generator, target: float) -> list[float]:
    """File lengths (s) summing to about ``target``: mostly 1-20 s (log-uniform), a few 30-60 s."""
    out: list[float] = []
    total = 0.0
    while target - total >= 1.0:
        if not out and target >= 120:
            length = rng.uniform(40.0, 60.0)
        elif rng.random() < 0.08:
            length = rng.uniform(30.0, 60.0)
        else:
            length = float(np.exp(rng.uniform(0.0, np.log(20.0))))
        remaining = target - total
        length = min(length, remaining)
        if remaining - length < 1.0 and remaining <= 60.0:
            length = remaining
        length = max(1.0, round(length, 3))
        out.append(length)
        total += length
    return out


def _corpus_speech(rng, sr, n):
    voice = _speaker(rng)
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.3) * sr)
    while pos < n:
        v = dict(voice, rate=voice["rate"] * rng.uniform(0.9, 1.1), shift=rng.normal(0.0, 1.0))
        x = _utterance(rng, sr, v, int(rng.integers(3, 16)))
        _add(out, x * rng.uniform(0.6, 1.0), pos)
        pos += len(x) + int(rng.uniform(0.15, 0.9) * sr)
    if rng.random() < 0.5:
        out = _mix_snr(out, _background(rng, sr, n), rng.uniform(25.0, 45.0))
    return out


def _corpus_music(rng, sr, n):
    x = _render_solo(rng, sr, n) if rng.random() < 0.3 else _render_genre(rng, sr, n, _pick(rng, GENRES))
    return _mix_snr(x, _noise(rng, n, sr, 1.0), rng.uniform(35.0, 60.0))


def _corpus_environment(rng, sr, n):
    out = _env_sound(rng, sr, n, _pick(rng, _TEXTURES)) * rng.uniform(0.1, 0.6)
    t = rng.uniform(0.0, 1.0)
    foreground = tuple(k for k in sorted(ENV_GENERATORS) if k not in _TEXTURES)
    while t < n / sr:
        span = min(rng.uniform(0.5, 4.0), n / sr - t)
        m = int(span * sr)
        if m > sr // 10:
            _add(out, _env_sound(rng, sr, m, _pick(rng, foreground)) * rng.uniform(0.3, 1.0), int(t * sr))
        t += span + rng.exponential(1.5)
    return out + 0.01 * _background(rng, sr, n)


_CORPUS_MAKERS = {"speech": _corpus_speech, "music": _corpus_music, "environment": _corpus_environment}


def make_pretrain_corpus(
    out_dir: str | Path, seed: int = 0, minutes: float = 24.0, overwrite: bool = False
) -> Path:
    """Write a synthetic pretraining corpus of about ``minutes`` minutes to ``out_dir``.

    Three sources (``speech/``, ``music/``, ``environment/``), about a third of the duration each,
    files of 1-60 s at varied sample rates, channel counts and formats, plus ``files.tsv``
    (``source, path, sample_rate, channels, seconds``; paths relative to ``out_dir``; sorted).
    Returns ``out_dir``.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    out_dir = Path(out_dir)
    offsets = _rng(seed, "corpus", "offsets").integers(0, 30, size=3)
    rows = []
    with _AtomicDir(out_dir, overwrite) as tmp:
        g = 0  # global file counter: cycles of 5 rates x 2 channel counts x 3 formats (coprime)
        for source in SOURCES:
            lengths = _corpus_lengths(_rng(seed, "corpus", source, "lengths"), minutes * 60.0 / len(SOURCES))
            for j, length in enumerate(lengths):
                sr = CORPUS_SAMPLE_RATES[(g + offsets[0]) % len(CORPUS_SAMPLE_RATES)]
                channels = 1 + (g + offsets[1]) % 2
                ext, fmt, subtype = CORPUS_FORMATS[(g + offsets[2]) % len(CORPUS_FORMATS)]
                g += 1
                rng = _rng(seed, "corpus", source, j)
                n = int(round(length * sr))
                x = _fit(np.asarray(_CORPUS_MAKERS[source](rng, sr, n), dtype=float), n)
                x = _peaknorm(x, _db(rng.uniform(-12.0, -1.0)))
                if channels == 2:
                    delay = int(rng.integers(0, int(0.0008 * sr) + 1))
                    pan = rng.uniform(-0.5, 0.5)
                    right = np.concatenate([np.zeros(delay), x[: n - delay]]) * (1.0 + pan)
                    right = right + 0.003 * _noise(rng, n, sr, 1.0) * np.max(np.abs(x))
                    x = np.stack([x * (1.0 - pan), right], axis=1)
                    x = x / max(1.0, float(np.max(np.abs(x))) / 0.99)
                rel = f"{source}/{source}_{j:04d}.{ext}"
                _write_audio(tmp / rel, x, sr, fmt, subtype)
                rows.append((source, rel, sr, channels, n / sr))
        rows.sort(key=lambda r: r[1])
        lines = ["\t".join(FILES_TSV_COLUMNS)]
        lines += [f"{s}\t{p}\t{sr}\t{c}\t{sec:.6f}" for s, p, sr, c, sec in rows]
        (tmp / "files.tsv").write_text("\n".join(lines) + "\n")
    return out_dir


def read_files_tsv(path: str | Path) -> list[dict]:
    """Rows of a corpus ``files.tsv`` as dicts (sample_rate/channels int, seconds float)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        if line.strip():
            r = dict(zip(header, line.split("\t")))
            r["sample_rate"], r["channels"] = int(r["sample_rate"]), int(r["channels"])
            r["seconds"] = float(r["seconds"])
            rows.append(r)
    return rows


# ----------------------------------------------------------------------------------------------
# Downstream tasks
# ----------------------------------------------------------------------------------------------

_KEYWORDS = {
    "down": ["d", "a", "U", "n"], "go": ["g", "o", "U"], "left": ["l", "E", "f", "t"], "no": ["n", "o", "U"],
    "off": ["O", "f"], "on": ["A", "n"], "right": ["r", "a", "I", "t"], "stop": ["s", "t", "A", "p"],
    "up": ["V", "p"], "yes": ["j", "E", "s"],
}
_UNKNOWN_WORDS = {
    "bed": ["b", "E", "d"], "bird": ["b", "3", "d"], "cat": ["k", "ae", "t"], "dog": ["d", "O", "g"],
    "eight": ["e", "I", "t"], "five": ["f", "a", "I", "v"], "four": ["f", "O", "r"],
    "happy": ["h", "ae", "p", "i"],
    "house": ["h", "a", "U", "s"], "marvin": ["m", "A", "r", "v", "I", "n"], "nine": ["n", "a", "I", "n"],
    "one": ["w", "V", "n"], "seven": ["s", "E", "v", "@", "n"], "sheila": ["S", "i", "l", "@"],
    "six": ["s", "I", "k", "s"], "three": ["T", "r", "i"], "tree": ["t", "r", "i"], "two": ["t", "u"],
    "wow": ["w", "a", "U"], "zero": ["z", "i", "r", "o", "U"],
}
# emotion -> (pitch shift st, pitch range x, rate x, level dB, brightness x, breath, jitter,
#             vibrato st, creak)
_EMOTIONS = {
    "anger": (2.0, 1.3, 1.1, 5.0, 1.6, 0.03, 0.4, 0.0, 0.1),
    "disgust": (-1.0, 0.8, 0.8, 0.0, 0.9, 0.08, 0.3, 0.0, 0.35),
    "fear": (3.5, 0.9, 1.2, -2.0, 1.0, 0.25, 0.8, 0.35, 0.0),
    "happy": (3.0, 1.7, 1.1, 3.0, 1.3, 0.05, 0.3, 0.0, 0.0),
    "neutral": (0.0, 1.0, 1.0, 0.0, 1.0, 0.08, 0.25, 0.0, 0.0),
    "sad": (-2.0, 0.5, 0.75, -5.0, 0.7, 0.25, 0.3, 0.0, 0.05),
}
_EVENT_CLASSES = (
    "bird_chirp", "car_horn", "cat_meow", "church_bells", "clapping", "clock_alarm", "dog_bark", "door_knock",
    "engine", "footsteps", "glass_breaking", "keyboard_typing", "music", "siren", "speech", "water_drops",
)
_SCENE_CLASSES = (
    "bird_chirp", "car_horn", "cat_meow", "chainsaw", "church_bells", "clapping", "clock_alarm", "coughing",
    "crackling_fire", "crickets", "crying_baby", "dog_bark", "door_knock", "engine", "footsteps",
    "glass_breaking", "keyboard_typing", "rain", "siren", "wind",
)
_PITCHES = tuple(range(48, 72))  # C3..B4, 24 semitone classes


@dataclass(frozen=True)
class TaskSpec:
    """One demo task: its HEAR metadata and how many clips it has."""

    name: str
    paper_task: str
    mode: str  # "train_valid_test" | "folds"
    prediction_type: str  # "multiclass" | "multilabel"
    evaluation: str
    clip_seconds: float
    labels: tuple[str, ...]
    n_per_class: int  # clips per label (multiclass) or clips per primary label (multilabel)
    nfolds: int = 0
    note: str = ""
    variable_length: bool = False


TASKS: dict[str, TaskSpec] = {
    "pitch": TaskSpec(
        "pitch", "NS", "train_valid_test", "multiclass", "pitch_acc", 2.0,
        tuple(str(p) for p in _PITCHES), 10,
        note="NSynth-pitch-like: single synthetic instrument notes, 24 MIDI pitches 48-71 "
        "(paper: 88 pitches, 4.0 s clips; shortened to 2.0 s)",
    ),
    "genre": TaskSpec(
        "genre", "GC", "folds", "multiclass", "top1_acc", 5.0, GENRES, 10, nfolds=10,
        note="GTZAN-like: 10 genre-like arrangement styles, 10 folds assigned per clip "
        "(paper: 30 s clips; 5 s here, still longer than one 4-s chunk)",
    ),
    "keywords": TaskSpec(
        "keywords", "SC", "train_valid_test", "multiclass", "top1_acc", 1.0,
        tuple(sorted(list(_KEYWORDS) + ["_silence_", "_unknown_"])), 20,
        note="Speech-Commands-like: 10 formant-synthesised words, _unknown_ (20 other words), "
        "_silence_ (background noise only)",
    ),
    "emotion": TaskSpec(
        "emotion", "ER", "folds", "multiclass", "top1_acc", 2.5, tuple(sorted(_EMOTIONS)), 30, nfolds=5,
        note="CREMA-D-like: 6 prosody classes (pitch level/range, rate, energy, voice quality) by "
        "10 synthetic speakers reading 12 sentences; 5 folds per clip (paper: 5.0 s clips)",
    ),
    "events": TaskSpec(
        "events", "FSD", "train_valid_test", "multilabel", "mAP", 8.0, _EVENT_CLASSES, 12,
        note="FSD50K-like: 1-3 overlapping events per clip, clips of variable length 0.5-8 s, "
        "not padded (clip_seconds is the maximum)",
        variable_length=True,
    ),
    "scenes": TaskSpec(
        "scenes", "ESC", "folds", "multiclass", "top1_acc", 2.5, _SCENE_CLASSES, 10, nfolds=5,
        note="ESC-50-like: 20 synthetic environmental sound classes, 5 folds per clip "
        "(paper: 50 classes, 5.0 s clips)",
    ),
}


def _n_per_class(spec: TaskSpec, scale: float) -> int:
    minimum = 2 if spec.mode == "folds" else 3  # at least one clip per class in train/valid/test
    return max(minimum, int(round(spec.n_per_class * scale)))


def _splits(spec: TaskSpec) -> list[str]:
    if spec.mode == "folds":
        return [f"fold{i:02d}" for i in range(spec.nfolds)]
    return ["train", "valid", "test"]


def _assign_splits(spec: TaskSpec, seed: int, groups: dict[str, list[str]]) -> dict[str, str]:
    """Stratified assignment: within each group (sorted keys), shuffle then deal to splits."""
    split_of: dict[str, str] = {}
    splits = _splits(spec)
    offset = 0
    for label in sorted(groups):
        keys = sorted(groups[label])
        order = _rng(seed, spec.name, "split", label).permutation(len(keys))
        if spec.mode == "folds":
            for r, i in enumerate(order):
                split_of[keys[i]] = splits[(offset + r) % spec.nfolds]
            offset += len(keys)
        else:
            n = len(keys)
            n_test = max(1, int(round(0.2 * n)))
            n_valid = max(1, int(round(0.2 * n)))
            for r, i in enumerate(order):
                split_of[keys[i]] = "test" if r < n_test else "valid" if r < n_test + n_valid else "train"
    return split_of


def _clip_key(seed: int, task: str, label: str, i: int) -> str:
    """An opaque file name (the label is not readable from it), e.g. ``3f9c0d...e1.wav``."""
    return hashlib.sha1(f"encodecmae-demo/{seed}/{task}/{label}/{i}".encode()).hexdigest()[:16] + ".wav"


def _finish(rng, x, sr, n, gain_db=(-20.0, -3.0)):
    """Trim/pad to n and scale to a random peak level."""
    return _peaknorm(_fit(x, n), _db(rng.uniform(*gain_db)))


def _clip_pitch(rng, sr, n, label):
    midi = int(label) + rng.normal(0.0, 0.08)  # +-8 cents detuning
    inst = _instrument(rng, _pick(rng, INSTRUMENTS))
    hold = rng.uniform(0.6, 1.6)
    onset = int(rng.uniform(0.0, 0.1) * sr)
    x = np.zeros(n)
    _add(x, _note(rng, sr, inst, midi, hold, rng.uniform(0.4, 1.0)), onset)
    x = _random_eq(rng, x, sr)
    x = _mix_snr(x, _background(rng, sr, n), rng.uniform(10.0, 40.0))
    return _finish(rng, x, sr, n)


def _clip_genre(rng, sr, n, label):
    x = _render_genre(rng, sr, n, label)
    x = _random_eq(rng, x, sr)
    x = _mix_snr(x, _background(rng, sr, n), rng.uniform(10.0, 40.0))
    return _finish(rng, x, sr, n)


def _clip_keywords(rng, sr, n, label):
    bg = _background(rng, sr, n)
    if label == "_silence_":
        return _finish(rng, bg, sr, n, (-45.0, -10.0))
    word = _KEYWORDS[label] if label in _KEYWORDS else _UNKNOWN_WORDS[_pick(rng, sorted(_UNKNOWN_WORDS))]
    voice = _speaker(rng)
    voice["rate"] *= rng.uniform(0.8, 1.2)
    voice["range"] *= rng.uniform(0.5, 1.5)
    x = _speak(rng, sr, word, voice)
    x = _random_eq(rng, x, sr)
    out = np.zeros(n)
    _add(out, x[:n], int(rng.uniform(0.0, max(0.0, n - len(x)))))
    out = _mix_snr(out, bg, rng.uniform(0.0, 30.0))
    return _finish(rng, out, sr, n)


def _emotion_cast(seed: int):
    """The task's speakers and sentences (shared by all clips of one seed)."""
    rng = _rng(seed, "emotion", "cast")
    speakers = [_speaker(rng) for _ in range(10)]
    sentences = [_syllables(rng, int(rng.integers(5, 9)), pause_p=0.1) for _ in range(12)]
    return speakers, sentences


def _clip_emotion(rng, sr, n, label, cast):
    speakers, sentences = cast
    shift, rng_x, rate, level, bright, breath, jitter, vib, creak = _EMOTIONS[label]
    spk = speakers[int(rng.integers(len(speakers)))]
    voice = dict(
        spk,
        shift=shift + rng.normal(0.0, 1.5),
        range=spk["range"] * rng_x * rng.lognormal(0.0, 0.25),
        rate=spk["rate"] * rate * rng.lognormal(0.0, 0.1),
        bright=spk["bright"] * bright * rng.lognormal(0.0, 0.2),
        breath=max(0.0, spk["breath"] + breath + rng.normal(0.0, 0.05)),
        jitter=max(0.05, spk["jitter"] * 0.5 + jitter + rng.normal(0.0, 0.1)),
        vib=max(0.0, vib + rng.normal(0.0, 0.1)),
        creak=max(0.0, creak + rng.normal(0.0, 0.1)),
    )
    x = _speak(rng, sr, sentences[int(rng.integers(len(sentences)))], voice)
    x = _random_eq(rng, x, sr, 0.5)
    out = np.zeros(n)
    _add(out, x[:n], int(rng.uniform(0.0, max(0.0, min(0.3 * sr, n - len(x))))))
    out = out * _db(level + rng.normal(0.0, 2.0))  # emotion-dependent level relative to the noise
    out = out + _background(rng, sr, n) * _db(rng.uniform(-45.0, -25.0))
    return _fit(out, n) * 0.25


def _clip_scenes(rng, sr, n, label):
    x = _env_sound(rng, sr, n, label)
    x = _random_eq(rng, x, sr)
    x = _mix_snr(x, _background(rng, sr, n), rng.uniform(0.0, 25.0))
    return _finish(rng, x, sr, n)


def _event_seconds(rng) -> float:
    return float(0.5 * 16.0 ** (rng.random() ** 1.5))  # 0.5-8 s, skewed to short clips


def _clip_events(rng, sr, labels):
    n = int(round(_event_seconds(rng) * sr))
    out = np.zeros(n)
    for name in labels:
        m = max(int(sr * 0.3), int(n * rng.uniform(0.3, 1.0)))
        m = min(m, n)
        x = _env_sound(rng, sr, m, name) * _db(rng.uniform(-6.0, 0.0))
        _add(out, x, int(rng.uniform(0.0, n - m + 1)))
    out = _random_eq(rng, out, sr, 0.5)
    out = _mix_snr(out, _background(rng, sr, n), rng.uniform(10.0, 35.0))
    return _finish(rng, out, sr, n)


def _task_items(spec: TaskSpec, seed: int, scale: float):
    """(key, labels, group) for every clip of the task, in a fixed order."""
    k = _n_per_class(spec, scale)
    items = []
    if spec.prediction_type == "multilabel":
        for c, primary in enumerate(spec.labels):
            for i in range(k):
                rng = _rng(seed, spec.name, "labels", primary, i)
                n_extra = int(rng.choice(3, p=[0.45, 0.35, 0.2]))
                others = [x for x in spec.labels if x != primary]
                extra = [others[j] for j in sorted(rng.choice(len(others), size=n_extra, replace=False))]
                items.append((_clip_key(seed, spec.name, primary, i), sorted([primary] + extra), primary))
    else:
        for label in spec.labels:
            for i in range(k):
                items.append((_clip_key(seed, spec.name, label, i), [label], label))
    return items


def make_task(
    name: str, out_dir: str | Path, seed: int = 0, scale: float = 1.0, overwrite: bool = False
) -> Path:
    """Write demo task ``name`` (a key of ``TASKS``) in the HEAR layout to ``out_dir/name``.

    ``scale`` multiplies the number of clips per class (tests use a small scale). Returns the
    task directory.
    """
    if name not in TASKS:
        raise ValueError(f"unknown demo task {name!r}; choose from {sorted(TASKS)}")
    spec = TASKS[name]
    sr = TASK_SAMPLE_RATE
    items = _task_items(spec, seed, scale)
    groups: dict[str, list[str]] = {}
    for key, _, group in items:
        groups.setdefault(group, []).append(key)
    split_of = _assign_splits(spec, seed, groups)
    cast = _emotion_cast(seed) if name == "emotion" else None
    n_clip = int(round(spec.clip_seconds * sr))
    final = Path(out_dir) / name
    per_split: dict[str, dict[str, list[str]]] = {s: {} for s in _splits(spec)}
    total_samples = 0
    with _AtomicDir(final, overwrite) as tmp:
        for key, labels, group in items:
            rng = _rng(seed, name, "clip", key)
            if name == "pitch":
                x = _clip_pitch(rng, sr, n_clip, labels[0])
            elif name == "genre":
                x = _clip_genre(rng, sr, n_clip, labels[0])
            elif name == "keywords":
                x = _clip_keywords(rng, sr, n_clip, labels[0])
            elif name == "emotion":
                x = _clip_emotion(rng, sr, n_clip, labels[0], cast)
            elif name == "scenes":
                x = _clip_scenes(rng, sr, n_clip, labels[0])
            else:
                x = _clip_events(rng, sr, labels)
            split = split_of[key]
            _write_audio(tmp / str(sr) / split / key, x, sr)
            per_split[split][key] = list(labels)
            total_samples += len(x)
        for split, mapping in per_split.items():
            (tmp / f"{split}.json").write_text(json.dumps(mapping, indent=1, sort_keys=True) + "\n")
        meta = {
            "task_name": name,
            "mode": spec.mode,
            "prediction_type": spec.prediction_type,
            "evaluation": [spec.evaluation],
            "sample_rate": sr,
            "clip_seconds": spec.clip_seconds,
            "variable_length": spec.variable_length,
            "label_vocabulary": list(spec.labels),
            "paper_task": spec.paper_task,
            "splits": _splits(spec),
            "n_clips": len(items),
            "total_seconds": round(total_samples / sr, 3),
            "seed": int(seed),
            "scale": float(scale),
            "demo": True,
            "note": spec.note,
        }
        if spec.mode == "folds":
            meta["nfolds"] = spec.nfolds
        # aliases of the keys hear-preprocess writes, for code written against real HEAR tasks
        meta["embedding_type"] = "scene"
        meta["split_mode"] = "new_split_kfold" if spec.mode == "folds" else "trainvaltest"
        meta["sample_duration"] = None if spec.variable_length else spec.clip_seconds
        (tmp / "task_metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        # the vocabulary also as hear-preprocess keeps it, where hear-eval-kit reads it
        write_label_vocabulary(tmp / "labelvocabulary.csv", meta["label_vocabulary"])
    return final


def write_label_vocabulary(path: str | Path, labels) -> None:
    """``labelvocabulary.csv`` as hear-preprocess writes it (pandas ``to_csv``, no index): the
    header ``idx,label``, then ``i,label`` for each label in index order."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["idx", "label"])
        w.writerows(enumerate(labels))


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _cmd_corpus(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = make_pretrain_corpus(args.out, seed=args.seed, minutes=args.minutes, overwrite=args.overwrite)
    rows = read_files_tsv(out / "files.tsv")
    total = sum(r["seconds"] for r in rows)
    print(f"{out}: {len(rows)} files, {total / 60:.1f} min, {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_task(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = make_task(args.name, args.out, seed=args.seed, scale=args.scale, overwrite=args.overwrite)
    meta = json.loads((out / "task_metadata.json").read_text())
    minutes = meta["total_seconds"] / 60
    print(f"{out}: {meta['n_clips']} clips, {minutes:.1f} min, {time.perf_counter() - t0:.1f} s")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-demo-corpus",
        help="synthesise the demo pretraining corpus (speech/music/environment, mixed formats)",
        description="Write a synthetic pretraining corpus under --out (atomically) with files.tsv.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--minutes", type=float, default=24.0, help="total duration in minutes (default 24)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_corpus)

    p = subparsers.add_parser(
        "make-demo-task",
        help="synthesise one demo downstream task in the HEAR layout",
        description="Write demo task --name under --out/NAME (atomically): task_metadata.json, "
        "labelvocabulary.csv, {split}.json ({file name: [labels]}) and 16000/{split}/*.wav.",
    )
    p.add_argument("--name", required=True, choices=sorted(TASKS), help="task to write")
    p.add_argument("--out", type=Path, required=True, help="parent directory; the task goes to OUT/NAME")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the clips per class (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/NAME if it exists")
    p.set_defaults(func=_cmd_task)
