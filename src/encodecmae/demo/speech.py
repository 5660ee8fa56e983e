"""Speech-like sounds: formant synthesis of phone sequences by random speakers.

``_speaker`` draws a voice (pitch, vocal-tract scale, rate, pitch range, brightness,
breathiness), ``_syllables`` a phone sequence, ``_speak`` synthesises one and ``_utterance``
both.
"""

from __future__ import annotations

import numpy as np

from encodecmae.demo.dsp import (
    _TAU,
    _bp,
    _formant_gain,
    _hp,
    _istft,
    _lp,
    _n_harmonics,
    _nfft,
    _peaknorm,
    _pick,
    _stft,
    _table,
    _wt,
)

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


def _phone_segments(rng: np.random.Generator, phones: list[str], rate: float) -> dict[str, list]:
    """Per segment of a phone sequence (a consonant may have several): duration, voicing, noise,
    aspiration, noise band and formants (a consonant takes the next vowel's), is-vowel."""
    seg: dict[str, list] = {k: [] for k in ("durs", "va", "na", "lo", "hi", "asp", "forms", "is_vowel")}
    for p in phones:
        if p == "_":
            parts = [(rng.uniform(0.06, 0.2), 0.0, 0.0, None, None)]
        elif p in _VOWELS:
            parts = [(0.12 * rng.lognormal(0.0, 0.25), 1.0, 0.0, None, _VOWELS[p])]
        else:
            parts = [(d * rng.lognormal(0.0, 0.15), v, nz, band, F) for d, v, nz, band, F in _CONSONANTS[p]]
        for d, v, nz, band, F in parts:
            seg["durs"].append(d / rate)
            seg["va"].append(v)
            seg["na"].append(nz)
            seg["asp"].append(1.0 if band == "asp" else 0.0)
            seg["lo"].append(band[0] if isinstance(band, tuple) else 0.0)
            seg["hi"].append(band[1] if isinstance(band, tuple) else 0.0)
            seg["forms"].append(F)
            seg["is_vowel"].append(p in _VOWELS)
    forms = seg["forms"]
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
    return seg


def _pitch(rng: np.random.Generator, voice: dict, tf: np.ndarray, end: float, centers, is_vowel) -> np.ndarray:
    """F0 per frame at times ``tf``: a contour in semitones (declination, accents on vowels, an
    optional final rise, jitter, vibrato) around the voice's F0."""
    rate = voice["rate"]
    T = max(end, 1e-3)
    semis = voice["shift"] - 2.0 * voice["range"] * tf / T
    for c, v in zip(centers, is_vowel):
        if v and rng.random() < 0.6:
            width = 0.07 / rate
            semis = semis + rng.uniform(1.0, 4.0) * voice["range"] * np.exp(-0.5 * ((tf - c) / width) ** 2)
    if rng.random() < voice.get("rise", 0.15):
        semis = semis + 4.0 * voice["range"] * np.clip((tf - (T - 0.25)) / 0.25, 0.0, 1.0)
    jit = np.convolve(rng.standard_normal(len(tf)), np.ones(3) / 3, mode="same")
    semis = semis + voice["jitter"] * jit
    if voice.get("vib", 0.0) > 0:
        semis = semis + voice["vib"] * np.sin(_TAU * rng.uniform(5.0, 8.0) * tf)
    return voice["f0"] * 2.0 ** (semis / 12.0)


def _speak(rng: np.random.Generator, sr: int, phones: list[str], voice: dict) -> np.ndarray:
    """Formant-synthesise a phone sequence (peak 1): harmonic source plus noise, shaped per frame."""
    seg = _phone_segments(rng, phones, voice["rate"])
    durs = seg["durs"]
    lead = 0.03
    bounds = lead + np.concatenate([[0.0], np.cumsum(durs)])
    total = bounds[-1] + lead + 0.05
    n = int(total * sr)
    nfft = _nfft(sr)
    hop = nfft // 4
    nfr = n // hop + 1
    tf = np.arange(nfr) * hop / sr
    idx = np.clip(np.searchsorted(bounds, tf, side="right") - 1, 0, len(durs) - 1)
    inside = (tf >= bounds[0]) & (tf < bounds[-1])
    k = max(1, int(round(0.015 * sr / hop)))

    def track(values):
        a = np.where(inside, np.asarray(values, dtype=float)[idx], 0.0)
        return np.convolve(a, np.ones(k) / k, mode="same")

    vaf, naf, aspf = track(seg["va"]), track(seg["na"]), track(seg["asp"])
    lof = np.where(inside, np.asarray(seg["lo"])[idx], 0.0)
    hif = np.where(inside, np.asarray(seg["hi"])[idx], 0.0)
    centers = 0.5 * (bounds[:-1] + bounds[1:])
    forms_a = np.asarray(seg["forms"], dtype=float)
    F = np.stack([np.interp(tf, centers, forms_a[:, j]) for j in range(3)], axis=1) * voice["tract"]

    f0f = _pitch(rng, voice, tf, bounds[-1], centers, seg["is_vowel"])
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
