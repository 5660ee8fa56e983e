"""The demo pretraining corpus and the ``make-demo-corpus`` command.

Everything is synthesised with numpy from a seed (no download), so the whole pipeline can run
end to end on a laptop. The corpus only stands in for the paper's (AudioSet/FMA/Libri-Light): it
mirrors their structure (sources, file variety), not their content.

``make_pretrain_corpus(out_dir, seed, minutes)`` writes ``out_dir/{speech,music,environment}/``
files of 1-60 s at 16/22.05/24/44.1/48 kHz, mono and stereo, WAV 16-bit / WAV float / FLAC, plus
``out_dir/files.tsv``. Each file draws from its own generator seeded from ``(seed, source,
index)``, so one seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from encodecmae.demo.dsp import _add, _db, _fit, _mix_snr, _noise, _peaknorm, _pick, _rng
from encodecmae.demo.environment import ENV_GENERATORS, _TEXTURES, _background, _env_sound
from encodecmae.demo.files import _AtomicDir, _write_audio
from encodecmae.demo.music import GENRES, _render_genre, _render_solo
from encodecmae.demo.speech import _speaker, _utterance

CORPUS_SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)
# (file extension, soundfile format, soundfile subtype)
CORPUS_FORMATS = (("wav", "WAV", "PCM_16"), ("wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"))
SOURCES = ("speech", "music", "environment")
FILES_TSV_COLUMNS = ("source", "path", "sample_rate", "channels", "seconds")


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


def cmd_make_demo_corpus(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    out = make_pretrain_corpus(
        out_dir=args.out, seed=args.demo_seed, minutes=args.demo_minutes, overwrite=args.overwrite
    )
    rows = read_files_tsv(out / "files.tsv")
    total = sum(r["seconds"] for r in rows)
    print(f"{out}: {len(rows)} files, {total / 60:.1f} min, {time.perf_counter() - t0:.1f} s")


def register(sub) -> None:
    p = sub.add_parser(
        "make-demo-corpus",
        help="synthesise the demo pretraining corpus (speech/music/environment, mixed formats)",
        description="Write a synthetic pretraining corpus under --out (atomically) with files.tsv.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    p.add_argument("--demo-seed", type=int, default=0, help="random seed (config: corpus.demo_seed; default 0)")
    p.add_argument("--demo-minutes", type=float, default=24.0, help="total duration in minutes (config: corpus.demo_minutes; default 24)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_make_demo_corpus)
