"""Music-like sounds: instruments, notes and chords, drums, genre-like arrangements and solos.

``INSTRUMENTS`` are timbre families played by ``_note`` (wavetables cached per instrument);
``GENRES`` are arrangement styles (drums, bass, chords, lead) rendered by ``_render_genre``;
``_render_solo`` is one instrument playing a melody or chords.
"""

from __future__ import annotations

import numpy as np

from encodecmae.demo.dsp import (
    _TAU,
    _add,
    _bp,
    _db,
    _envelope,
    _formant_gain,
    _hp,
    _n_harmonics,
    _peaknorm,
    _pick,
    _spectral_filter,
    _table,
    _unit,
    _wt,
)
from encodecmae.demo.speech import _VOWELS

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


class _Arrangement:
    """The timing and harmony that a genre-like piece's tracks share: step times (with swing and
    a little timing noise, drawn from ``rng`` at each call) and the chord of each step."""

    def __init__(self, rng: np.random.Generator, sr: int, n: int, genre: str):
        g = _GENRES[genre]
        self.rng, self.sr, self.n, self.g = rng, sr, n, g
        tempo = rng.uniform(*g["tempo"])
        self.step = 60.0 / tempo / 4.0
        swing = g["swing"] + (rng.uniform(-0.03, 0.03) if g["swing"] > 0.5 else 0.0)
        self.key = int(rng.integers(12))
        self.scale = _SCALES[_pick(rng, g["scales"])]
        self.prog = _pick(rng, g["progs"])
        self.bar_offset = int(rng.integers(len(self.prog)))
        self.n_steps = int(np.ceil(n / sr / self.step)) + 1
        self.sub = (0.0, swing / 2.0, swing, swing + (1.0 - swing) / 2.0)
        self.start_step = int(rng.integers(0, 16))  # start anywhere in the bar

    def when(self, s: int) -> int:
        beat, q = divmod(s, 4)
        return int(((beat + self.sub[q]) * 4 * self.step + self.rng.normal(0.0, 0.004)) * self.sr)

    def chord_at(self, s: int):
        root, shape = self.prog[((s + self.start_step) // 16 + self.bar_offset) % len(self.prog)]
        return root, _CHORDS[shape]


def _drum_track(a: _Arrangement) -> np.ndarray:
    rng, sr, g = a.rng, a.sr, a.g
    drums = np.zeros(a.n)
    if g["drums"] is None:
        return drums
    pats = _pick(rng, g["drums"])
    sounds = {"kick": _kick(rng, sr), "snare": _snare(rng, sr), "hat": _hat(rng, sr),
              "ohat": _hat(rng, sr, open_=True), "ride": _ride(rng, sr)}
    levels = {"kick": 1.0, "snare": 0.6, "hat": 0.3, "ohat": 0.35, "ride": 0.35}
    for voice in sorted(pats):
        pat = pats[voice]
        lev = levels[voice] * _db(rng.uniform(-3, 3))
        for s in range(a.n_steps):
            ch = pat[(s + a.start_step) % 16]
            if ch != "." and rng.random() > 0.03:
                vel = (1.0 if ch == "x" else 0.45) * rng.uniform(0.8, 1.0)
                _add(drums, sounds[voice] * vel * lev, a.when(s))
    return drums


def _comp_track(a: _Arrangement) -> np.ndarray:
    """The chords: arpeggios, a pad, or a rhythm pattern; distorted in some genres."""
    rng, sr, g, step = a.rng, a.sr, a.g, a.step
    comp = np.zeros(a.n)
    inst = _instrument(rng, _pick(rng, g["comp_inst"]))
    style = _pick(rng, g["comp"])
    reg = g["comp_reg"] + int(rng.integers(-2, 3))
    for s in range(a.n_steps):
        pos = (s + a.start_step) % 16
        root, shape = a.chord_at(s)
        base = reg + (a.key + root - reg) % 12
        if style in ("arp8", "arp16"):
            every = 2 if style == "arp8" else 1
            if pos % every == 0:
                notes = [base + iv for iv in shape] + [base + 12]
                m = notes[(pos // every) % len(notes)]
                _add(comp, _note(rng, sr, inst, m, every * step * 1.5, rng.uniform(0.6, 0.9)), a.when(s))
        elif style == "pad":
            if pos == 0 or s == 0:
                chord = [base + iv for iv in shape]
                _add(comp, _note(rng, sr, inst, chord, (16 - pos) * step, 0.5), a.when(s))
        else:
            ch = style[pos]
            if ch != ".":
                vel = (1.0 if ch == "x" else 0.6) * rng.uniform(0.7, 1.0)
                chord = [base + iv for iv in shape]
                _add(comp, _note(rng, sr, inst, chord, g["comp_len"] * step, vel / len(shape) * 2), a.when(s))
    drive = rng.uniform(*g["dist"])
    if drive > 0:
        comp = np.tanh(drive * _peaknorm(comp)) / np.tanh(drive)
    return comp


def _bass_note(bstyle: str, pos: int, s: int, low: int, shape, walk: int) -> tuple[int | None, int, int]:
    """(midi note or None, hold in steps, walk counter) of a bass style at bar position ``pos``."""
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
    return m, hold, walk


def _bass_track(a: _Arrangement) -> np.ndarray:
    rng, g = a.rng, a.g
    bass = np.zeros(a.n)
    binst = _instrument(rng, _pick(rng, g["bass_inst"]))
    bstyle = _pick(rng, g["bass"])
    walk = 0
    for s in range(a.n_steps):
        pos = (s + a.start_step) % 16
        root, shape = a.chord_at(s)
        m, hold, walk = _bass_note(bstyle, pos, s, 36 + (a.key + root) % 12, shape, walk)
        if m is not None:
            _add(bass, _note(rng, a.sr, binst, m, hold * a.step, rng.uniform(0.7, 1.0)), a.when(s))
    return bass


def _lead_track(a: _Arrangement) -> np.ndarray:
    """A random walk over the scale's degrees, notes of 1 to 4 steps, rests by ``lead_density``."""
    rng, g, scale = a.rng, a.g, a.scale
    lead = np.zeros(a.n)
    linst = _instrument(rng, _pick(rng, g["lead_inst"]))
    density = rng.uniform(*g["lead_density"])
    degree = int(rng.integers(len(scale)))
    s = 0
    while s < a.n_steps and density > 0:
        if rng.random() < density:
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 2 * len(scale)))
            octave, d = divmod(degree, len(scale))
            m = g["lead_reg"] + (a.key + scale[d] - g["lead_reg"]) % 12 + 12 * octave
            hold = int(_pick(rng, (1, 2, 2, 3, 4)))
            _add(lead, _note(rng, a.sr, linst, m, hold * a.step, rng.uniform(0.6, 1.0)), a.when(s))
            s += hold
        else:
            s += 2
    return lead


def _render_genre(rng: np.random.Generator, sr: int, n: int, genre: str) -> np.ndarray:
    """A genre-like arrangement (drums, bass, chords, lead) of exactly n samples (peak 1)."""
    a = _Arrangement(rng, sr, n, genre)
    drums = _drum_track(a)  # the tracks draw from rng in this order
    comp = _comp_track(a)
    bass = _bass_track(a)
    lead = _lead_track(a)
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
