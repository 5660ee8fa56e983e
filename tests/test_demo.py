"""The embedded demo data: corpus and six HEAR-layout tasks (layout, determinism, learnability)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from workflow_helpers import tree_hash
import soundfile as sf

from encodecmae.demo import corpus as demo_corpus
from encodecmae.demo import tasks as demo_tasks
from encodecmae.demo.dsp import _rng

TEST_SCALE = 0.5  # clips per class relative to the default task size (keeps the tests fast)
META_KEYS = {
    "task_name", "mode", "prediction_type", "evaluation", "sample_rate", "clip_seconds",
    "label_vocabulary", "paper_task",
}
PAPER_TASKS = {
    "pitch": "NS", "genre": "GC", "keywords": "SC", "emotion": "ER", "events": "FSD", "scenes": "ESC",
}
# Baseline (logistic regression on mean+std of a 64-band log-mel; folds: mean over folds) at
# TEST_SCALE. Measured for seeds 0/1/2: pitch .62/.67/.62 (chance .04), genre .54/.42/.56 (.10),
# keywords .54/.46/.42 (.08), emotion .43/.51/.31 (.17), events mAP .62/.54/.59 (~.10),
# scenes .54/.44/.55 (.05). Bounds leave a wide margin on both sides.
BASELINE_BOUNDS = {
    "pitch": (0.30, 0.95),
    "genre": (0.25, 0.90),
    "keywords": (0.20, 0.85),
    "emotion": (0.25, 0.80),
    "events": (0.25, 0.90),
    "scenes": (0.25, 0.85),
}


def _read_task(task_dir: Path):
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    splits = meta["splits"]
    labels = {s: json.loads((task_dir / f"{s}.json").read_text()) for s in splits}
    return meta, labels


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo_tasks")
    for name in sorted(demo_tasks.TASKS):
        demo_tasks.make_task(name, root, seed=0, scale=TEST_SCALE)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_corpus") / "corpus"
    demo_corpus.make_pretrain_corpus(out, seed=0, minutes=1.5)
    return out


# ------------------------------------------------------------------------------------------------
# Baseline features: log-mel statistics in numpy
# ------------------------------------------------------------------------------------------------


def _mel_filterbank(sr=16000, nfft=512, n_mels=64, fmin=30.0):
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = imel(np.linspace(mel(fmin), mel(sr / 2), n_mels + 2))
    f = np.fft.rfftfreq(nfft, 1.0 / sr)
    fb = np.zeros((n_mels, len(f)))
    for i in range(n_mels):
        lo, c, hi = pts[i : i + 3]
        fb[i] = np.maximum(0.0, np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)))
    return fb


_FB = _mel_filterbank()


def _logmel_stats(x: np.ndarray, nfft=512, hop=256) -> np.ndarray:
    if len(x) < nfft:
        x = np.pad(x, (0, nfft - len(x)))
    nfr = 1 + (len(x) - nfft) // hop
    idx = hop * np.arange(nfr)[:, None] + np.arange(nfft)[None, :]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(nfft), axis=1)) ** 2
    logmel = np.log(power @ _FB.T + 1e-8)
    return np.concatenate([logmel.mean(0), logmel.std(0)])


def _baseline_score(task_dir: Path) -> tuple[float, float]:
    """(score, chance): logistic regression on log-mel mean+std, HEAR-style splits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    meta, labels = _read_task(task_dir)
    vocab = meta["label_vocabulary"]
    feats = {}
    for split, mapping in labels.items():
        X = [_logmel_stats(sf.read(task_dir / "16000" / split / k)[0]) for k in sorted(mapping)]
        feats[split] = (np.array(X), [mapping[k] for k in sorted(mapping)])

    def fit_eval(train, test):
        Xtr = np.concatenate([feats[s][0] for s in train])
        Ytr = [y for s in train for y in feats[s][1]]
        Xte, Yte = feats[test]
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
        if meta["prediction_type"] == "multilabel":
            onehot = lambda Y: np.array([[v in y for v in vocab] for y in Y], dtype=float)  # noqa: E731
            clf = OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=2000)).fit(Xtr, onehot(Ytr))
            truth = onehot(Yte)
            score = average_precision_score(truth, clf.predict_proba(Xte), average="macro")
            return score, float(truth.mean())
        clf = LogisticRegression(C=0.1, max_iter=3000).fit(Xtr, [y[0] for y in Ytr])
        return float(np.mean(clf.predict(Xte) == np.array([y[0] for y in Yte]))), 1.0 / len(vocab)

    with threadpool_limits(1):  # tiny problems: BLAS threads only add contention
        if meta["mode"] == "folds":  # HEAR: each fold is the test split once; the score is the mean
            runs = [fit_eval([s for s in meta["splits"] if s != test], test) for test in meta["splits"]]
            return float(np.mean([r[0] for r in runs])), runs[0][1]
        return fit_eval(["train", "valid"], "test")


# ------------------------------------------------------------------------------------------------
# Tasks
# ------------------------------------------------------------------------------------------------


def test_task_registry():
    assert sorted(demo_tasks.TASKS) == sorted(PAPER_TASKS)
    for name, spec in demo_tasks.TASKS.items():
        assert spec.paper_task == PAPER_TASKS[name]
        assert list(spec.labels) == sorted(spec.labels, key=lambda v: (int(v) if v.isdigit() else v))
        assert len(set(spec.labels)) == len(spec.labels)
    assert [demo_tasks.TASKS[n].nfolds for n in ("genre", "emotion", "scenes")] == [10, 5, 5]
    assert demo_tasks.TASKS["events"].prediction_type == "multilabel"
    keywords = demo_tasks.TASKS["keywords"].labels
    assert len(keywords) == 12 and {"_silence_", "_unknown_"} <= set(keywords)
    assert len(demo_tasks.TASKS["emotion"].labels) == 6 and len(demo_tasks.TASKS["genre"].labels) == 10
    assert 20 <= len(demo_tasks.TASKS["scenes"].labels) <= 25
    assert 10 <= len(demo_tasks.TASKS["events"].labels) <= 20
    assert 12 <= len(demo_tasks.TASKS["pitch"].labels) <= 24


def test_task_sizes_at_default_scale():
    """The full-size tasks stay small: 100-600 clips each, about 40 minutes in all."""
    total = 0.0
    for name, spec in demo_tasks.TASKS.items():
        n = spec.n_per_class * len(spec.labels)
        assert 100 <= n <= 600, name
        seconds = n * (2.2 if spec.variable_length else spec.clip_seconds)  # events: ~2 s mean
        total += seconds
    assert total / 60 <= 46


@pytest.mark.parametrize("name", sorted(demo_tasks.TASKS))
def test_task_layout(tasks_root, name):
    task_dir = tasks_root / name
    spec = demo_tasks.TASKS[name]
    meta, labels = _read_task(task_dir)
    assert META_KEYS <= set(meta)
    assert meta["task_name"] == name and meta["paper_task"] == spec.paper_task
    assert meta["mode"] in ("train_valid_test", "folds")
    assert meta["prediction_type"] in ("multiclass", "multilabel")
    assert meta["evaluation"] == [spec.evaluation] and spec.evaluation in ("top1_acc", "pitch_acc", "mAP")
    assert meta["sample_rate"] == 16000
    assert meta["label_vocabulary"] == list(spec.labels)
    if meta["mode"] == "folds":
        assert meta["nfolds"] == spec.nfolds
        assert meta["splits"] == [f"fold{i:02d}" for i in range(spec.nfolds)]
    else:
        assert "nfolds" not in meta and meta["splits"] == ["train", "valid", "test"]
    # no leftovers of the atomic write
    assert sorted(p.name for p in tasks_root.iterdir() if p.name.startswith(".")) == []
    assert sorted(p.name for p in (task_dir / "16000").iterdir()) == sorted(meta["splits"])

    vocab = set(meta["label_vocabulary"])
    n_clip = int(round(meta["clip_seconds"] * 16000))
    seen = set()
    for split, mapping in labels.items():
        wavs = sorted(p.name for p in (task_dir / "16000" / split).iterdir())
        assert wavs == sorted(mapping), f"{split}: files and {split}.json disagree"
        assert all(key.endswith(".wav") for key in mapping)  # keys are file names, as in HEAR
        for key, labs in mapping.items():
            assert key not in seen
            seen.add(key)
            assert labs and set(labs) <= vocab and labs == sorted(set(labs))
            if meta["prediction_type"] == "multiclass":
                assert len(labs) == 1
            else:
                assert 1 <= len(labs) <= 3
        for key in sorted(mapping)[:5]:
            info = sf.info(str(task_dir / "16000" / split / key))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            if spec.variable_length:
                assert 0.5 * 16000 - 1 <= info.frames <= n_clip
            else:
                assert info.frames == n_clip
    assert meta["n_clips"] == len(seen)


@pytest.mark.parametrize("name", sorted(demo_tasks.TASKS))
def test_task_label_vocabulary_csv(tasks_root, name):
    """labelvocabulary.csv as hear-preprocess writes it (hear-eval-kit reads the vocabulary from
    it): header idx,label, one row per label, in the metadata's order."""
    import pandas as pd

    from encodecmae.evaluation.tasks import label_vocabulary

    task_dir = tasks_root / name
    meta, _ = _read_task(task_dir)
    path = task_dir / "labelvocabulary.csv"
    lines = path.read_text().split("\n")
    assert lines[0] == "idx,label" and lines[-1] == ""
    assert lines[1:-1] == [f"{i},{label}" for i, label in enumerate(meta["label_vocabulary"])]
    # read as hear-eval-kit does (pandas; numeric labels such as pitches come back as numbers)
    vocab = pd.read_csv(path)
    assert list(vocab.columns) == ["idx", "label"] and len(vocab) == vocab["idx"].max() + 1
    assert vocab["label"].astype(str).tolist() == meta["label_vocabulary"]
    # our reader takes either source of the vocabulary, with the same result
    no_vocab = {k: v for k, v in meta.items() if k != "label_vocabulary"}
    assert [str(v) for v in label_vocabulary(no_vocab, task_dir)] == meta["label_vocabulary"]
    assert label_vocabulary(meta, task_dir) == meta["label_vocabulary"]


@pytest.mark.parametrize("name", sorted(demo_tasks.TASKS))
def test_task_audio_is_sane(tasks_root, name):
    """Every clip is audible, not clipped, and (except _silence_) not just noise floor."""
    meta, labels = _read_task(tasks_root / name)
    peaks, lengths = [], []
    for split, mapping in labels.items():
        for key in sorted(mapping):
            x, sr = sf.read(tasks_root / name / "16000" / split / key)
            assert np.isfinite(x).all()
            peaks.append(np.abs(x).max())
            lengths.append(len(x) / sr)
            assert np.mean(np.abs(x) > 0.999) < 0.01, f"{key} is clipped"
    assert min(peaks) > 10 ** (-50 / 20)
    if demo_tasks.TASKS[name].variable_length:
        assert min(lengths) < 1.5 and max(lengths) > 3.0  # varied lengths, not padded


@pytest.mark.parametrize("name", sorted(demo_tasks.TASKS))
def test_task_balance(tasks_root, name):
    meta, labels = _read_task(tasks_root / name)
    splits = meta["splits"]
    vocab = meta["label_vocabulary"]
    counts = {s: {v: 0 for v in vocab} for s in splits}
    for s, mapping in labels.items():
        for labs in mapping.values():
            for v in labs:
                counts[s][v] += 1
    sizes = [len(labels[s]) for s in splits]
    if meta["mode"] == "folds":
        assert max(sizes) - min(sizes) <= 1, sizes  # folds of (almost) equal size
        for v in vocab:  # each class spread evenly over the folds
            per_fold = [counts[s][v] for s in splits]
            assert max(per_fold) - min(per_fold) <= 1, (v, per_fold)
    else:
        for v in vocab:
            assert counts["train"][v] >= counts["test"][v] >= 1, v
            assert counts["valid"][v] >= 1, v
        if meta["prediction_type"] == "multiclass":
            for s in splits:
                assert len(set(counts[s].values())) == 1, (s, counts[s])  # exactly balanced
        assert sizes[0] > sizes[1] and sizes[0] > sizes[2]


@pytest.mark.parametrize("name", sorted(demo_tasks.TASKS))
def test_task_learnable_but_not_trivial(tasks_root, name):
    score, chance = _baseline_score(tasks_root / name)
    lo, hi = BASELINE_BOUNDS[name]
    assert lo >= 1.5 * chance
    assert score > lo, f"{name}: baseline {score:.3f} too close to chance {chance:.3f}"
    assert score < hi, f"{name}: baseline {score:.3f} is (nearly) perfect: the task is trivial"


@pytest.mark.parametrize("name", ["events", "keywords"])
def test_task_determinism(tmp_path, name):
    a = demo_tasks.make_task(name, tmp_path / "a", seed=3, scale=0.2)
    b = demo_tasks.make_task(name, tmp_path / "b", seed=3, scale=0.2)
    c = demo_tasks.make_task(name, tmp_path / "c", seed=4, scale=0.2)
    assert tree_hash(a) == tree_hash(b)
    assert tree_hash(a) != tree_hash(c)
    # not only the file names (which depend on the seed) but the audio differs
    wav_a = sorted((a / "16000").rglob("*.wav"))[0].read_bytes()
    assert all(p.read_bytes() != wav_a for p in (c / "16000").rglob("*.wav"))


def test_task_keys_do_not_leak_labels(tasks_root):
    _, labels = _read_task(tasks_root / "keywords")
    for mapping in labels.values():
        for key, labs in mapping.items():
            assert labs[0].strip("_") not in key


def test_make_task_refuses_to_overwrite_and_unknown_name(tmp_path):
    demo_tasks.make_task("keywords", tmp_path, seed=0, scale=0.1)
    with pytest.raises(FileExistsError):
        demo_tasks.make_task("keywords", tmp_path, seed=0, scale=0.1)
    demo_tasks.make_task("keywords", tmp_path, seed=1, scale=0.1, overwrite=True)
    assert json.loads((tmp_path / "keywords" / "task_metadata.json").read_text())["seed"] == 1
    with pytest.raises(ValueError, match="unknown demo task"):
        demo_tasks.make_task("nope", tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = demo_tasks._write_audio

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_tasks, "_write_audio", flaky)
    monkeypatch.setattr(demo_corpus, "_write_audio", flaky)
    with pytest.raises(KeyboardInterrupt):
        demo_tasks.make_task("keywords", tmp_path, seed=0, scale=0.1)
    with pytest.raises(KeyboardInterrupt):
        demo_corpus.make_pretrain_corpus(tmp_path / "corpus", seed=0, minutes=0.5)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Pretraining corpus
# ------------------------------------------------------------------------------------------------


def test_corpus_files_tsv_matches_files(corpus):
    lines = (corpus / "files.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["source", "path", "sample_rate", "channels", "seconds"]
    rows = demo_corpus.read_files_tsv(corpus / "files.tsv")
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    files = [p for p in corpus.rglob("*") if p.is_file() and p.name != "files.tsv"]
    on_disk = sorted(str(p.relative_to(corpus)) for p in files)
    assert on_disk == [r["path"] for r in rows]
    for r in rows:
        assert r["path"].startswith(r["source"] + "/")
        info = sf.info(str(corpus / r["path"]))
        assert info.samplerate == r["sample_rate"] and info.channels == r["channels"]
        assert abs(info.frames / info.samplerate - r["seconds"]) < 1e-5
        assert 1.0 - 1e-6 <= r["seconds"] <= 60.0


def test_corpus_duration_and_variety(corpus):
    rows = demo_corpus.read_files_tsv(corpus / "files.tsv")
    total = sum(r["seconds"] for r in rows)
    assert abs(total - 90.0) < 3.0
    for source in demo_corpus.SOURCES:
        sec = sum(r["seconds"] for r in rows if r["source"] == source)
        assert abs(sec - 30.0) < 1.5, source
    assert len({r["sample_rate"] for r in rows}) == 5
    assert {r["channels"] for r in rows} == {1, 2}
    infos = [sf.info(str(corpus / r["path"])) for r in rows]
    kinds = {(info.format, info.subtype) for info in infos}
    assert kinds == {("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16")}


def test_corpus_audio_is_sane_and_loads(corpus):
    from encodecmae.data.audio import load_audio

    rows = demo_corpus.read_files_tsv(corpus / "files.tsv")
    for r in rows:
        x, sr = sf.read(str(corpus / r["path"]), always_2d=True)
        assert np.isfinite(x).all() and 0.05 < np.abs(x).max() <= 1.0
        if r["channels"] == 2:
            assert not np.array_equal(x[:, 0], x[:, 1])  # a real stereo pair, not a duplicate
    for r in rows[:: max(1, len(rows) // 6)]:
        y = load_audio(corpus / r["path"])
        assert abs(len(y) - r["seconds"] * 24000) <= 2


def test_corpus_default_lengths():
    """At the default size: ~8 min per source, files of 1-60 s, a few long ones."""
    for source in demo_corpus.SOURCES:
        lengths = demo_corpus._corpus_lengths(_rng(0, "corpus", source, "lengths"), 24.0 * 60 / 3)
        assert abs(sum(lengths) - 480.0) < 1.0
        assert min(lengths) >= 1.0 and max(lengths) <= 60.0
        assert 1 <= sum(length >= 30.0 for length in lengths) <= len(lengths) // 3
        assert np.median(lengths) < 15.0


def test_corpus_determinism(tmp_path):
    a = demo_corpus.make_pretrain_corpus(tmp_path / "a", seed=5, minutes=0.4)
    b = demo_corpus.make_pretrain_corpus(tmp_path / "b", seed=5, minutes=0.4)
    c = demo_corpus.make_pretrain_corpus(tmp_path / "c", seed=6, minutes=0.4)
    assert tree_hash(a) == tree_hash(b)
    assert tree_hash(a) != tree_hash(c)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    demo_corpus.register(sub)
    demo_tasks.register(sub)
    return parser


def test_cli_make_demo_task_and_corpus(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(["make-demo-task", "--name", "scenes", "--out", str(tmp_path / "tasks"),
                              "--demo-task-seed", "2", "--scale", "0.2"])
    assert args.func(args) is None
    meta = json.loads((tmp_path / "tasks" / "scenes" / "task_metadata.json").read_text())
    assert meta["seed"] == 2 and meta["mode"] == "folds"
    with pytest.raises(FileExistsError):
        args.func(args)

    args = parser.parse_args(["make-demo-corpus", "--out", str(tmp_path / "corpus"), "--demo-seed", "1",
                              "--demo-minutes", "0.2"])
    assert args.func(args) is None
    assert (tmp_path / "corpus" / "files.tsv").exists()
    assert "files" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["make-demo-task", "--name", "bogus", "--out", str(tmp_path)])
