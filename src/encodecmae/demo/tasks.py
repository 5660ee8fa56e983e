"""The six demo downstream tasks (HEAR layout) and the ``make-demo-task`` command.

Everything is synthesised with numpy from a seed (no download). The tasks only stand in for the
paper's (NSynth pitch, GTZAN, Speech Commands, CREMA-D, FSD50K and ESC-50): they mirror their
structure (task layout, label types, split schemes), not their content.

``make_task(name, out_dir, seed)`` writes one task of ``TASKS`` in the HEAR layout under
``out_dir/name/`` (``task_metadata.json``, ``labelvocabulary.csv``, ``{split}.json``,
``16000/{split}/{file}``). As in hear-preprocess, the keys of ``{split}.json`` are the audio
file names, ``.wav`` included: the clip is ``16000/{split}/{key}``. Each clip draws from its own
generator seeded from ``(seed, task, clip)``, so one seed gives byte-identical tasks.

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
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encodecmae.demo.dsp import _add, _db, _fit, _mix_snr, _peaknorm, _pick, _random_eq, _rng
from encodecmae.demo.environment import _background, _env_sound
from encodecmae.demo.files import _AtomicDir, _write_audio
from encodecmae.demo.music import GENRES, INSTRUMENTS, _instrument, _note, _render_genre
from encodecmae.demo.speech import _speak, _speaker, _syllables

TASK_SAMPLE_RATE = 16_000

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


def cmd_make_demo_task(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    out = make_task(
        name=args.name, out_dir=args.out, seed=args.demo_task_seed, scale=args.scale, overwrite=args.overwrite
    )
    meta = json.loads((out / "task_metadata.json").read_text())
    minutes = meta["total_seconds"] / 60
    print(f"{out}: {meta['n_clips']} clips, {minutes:.1f} min, {time.perf_counter() - t0:.1f} s")


def register(sub) -> None:
    p = sub.add_parser(
        "make-demo-task",
        help="synthesise one demo downstream task in the HEAR layout",
        description="Write demo task --name under --out/NAME (atomically): task_metadata.json, "
        "labelvocabulary.csv, {split}.json ({file name: [labels]}) and 16000/{split}/*.wav.",
    )
    p.add_argument("--name", required=True, choices=sorted(TASKS), help="task to write")
    p.add_argument("--out", type=Path, required=True, help="parent directory; the task goes to OUT/NAME")
    p.add_argument("--demo-task-seed", type=int, default=0, help="random seed (config: demo_task_seed; default 0)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the clips per class (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/NAME if it exists")
    p.set_defaults(func=cmd_make_demo_task)
