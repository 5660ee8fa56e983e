"""Environment-like sounds: event classes, stationary textures and backgrounds.

``ENV_GENERATORS`` maps each ESC-50/FSD50K-like class (animals, people, domestic, urban and
natural sounds, plus speech and music) to its generator; ``_TEXTURES`` are the stationary ones;
``_env_sound`` renders a class to exactly n samples; ``_background`` is a stationary-ish noise
bed (coloured noise, mains hum, fan, running tap, murmur).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from encodecmae.demo.dsp import (
    _TAU,
    _add,
    _bp,
    _envelope,
    _fftconv,
    _fit,
    _formant_gain,
    _harmonic,
    _hp,
    _lp,
    _noise,
    _peak,
    _peaknorm,
    _pick,
    _spectral_filter,
    _unit,
)
from encodecmae.demo.music import GENRES, _render_genre, _render_solo
from encodecmae.demo.speech import _VOWELS, _speak, _speaker, _utterance


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
