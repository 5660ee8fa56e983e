"""prepare-hear-task: HEAR task tarballs (or folders) at 48 kHz -> task folders at 24 kHz."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encodecmae.data.download import DownloadError, download
from encodecmae.data.hear_tasks import HearTaskError, prepare_task
from encodecmae.evaluation import tasks as hear_tasks
from workflow_helpers import ENV, file_server

TVT = "speech_commands-v0.0.2-full"  # a train/valid/test task
FOLDS = "esc50-v2.0.0-full"  # a 5-fold task
LABELS = ["dog", "rain", "siren"]
TONE_HZ = 10_000.0  # above 8 kHz: no 16-kHz copy of a task can hold it


# --------------------------------------------------------------------------------------------
# A HEAR task, as hear-preprocess writes it
# --------------------------------------------------------------------------------------------


def _clip(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * TONE_HZ * t) + 0.2 * np.sin(2 * np.pi * 440.0 * t) if sr > 2 * TONE_HZ \
        else 0.2 * np.sin(2 * np.pi * 440.0 * t)
    return x + 0.01 * rng.standard_normal(len(t))


def hear_task_files(task: str, rates=(48000,), kfold: bool = False, seed: int = 0) -> dict[str, bytes]:
    """The files of a small HEAR task (path under ``<task>/`` -> bytes): metadata like
    hear-preprocess's (no label_vocabulary), labelvocabulary.csv, split JSONs and wavs."""
    rng = np.random.default_rng(seed)
    splits = [f"fold{i:02d}" for i in range(5)] if kfold else ["train", "valid", "test"]
    per_split = {s: 2 for s in splits} if kfold else {"train": 3, "valid": 2, "test": 2}
    meta = {"task_name": task.split("-")[0], "version": task.split("-")[1], "embedding_type": "scene",
            "prediction_type": "multiclass", "split_mode": "new_split_kfold" if kfold else "trainvaltest",
            "sample_duration": 1.0 if not kfold else 5.0, "evaluation": ["top1_acc"]}
    if kfold:
        meta["nfolds"] = 5
    files = {"task_metadata.json": json.dumps(meta, indent=True).encode(),
             "labelvocabulary.csv": ("idx,label\n" + "".join(f"{i},{x}\n" for i, x in enumerate(LABELS))).encode()}
    for split in splits:
        mapping = {}
        for i in range(per_split[split]):
            name = f"{split}_{i}_{rng.integers(1 << 30):x}.wav"
            mapping[name] = [LABELS[int(rng.integers(len(LABELS)))]]
            seconds = float(rng.uniform(0.2, 0.6))
            for sr in rates:
                buf = io.BytesIO()
                sf.write(buf, _clip(np.random.default_rng([seed, i, sr]), sr, seconds), sr, format="WAV",
                         subtype="PCM_16")
                files[f"{sr}/{split}/{name}"] = buf.getvalue()
        files[f"{split}.json"] = json.dumps(mapping, indent=True).encode()
    return files


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_tar(path: Path, task: str, files: dict[str, bytes], audio_first: bool = False, prefix: str = "") -> Path:
    """A HEAR tarball: members ``tasks/<task>/...`` (metadata first, as hear-preprocess adds
    them, unless ``audio_first``); hear-preprocess's own tarballs put them under ``prefix``
    ``hear-<version>/`` and hold the folders too."""
    order = sorted(files, key=lambda k: ("/" in k) != audio_first)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        if prefix:
            for d in sorted({rel.rsplit("/", 1)[0] for rel in files if "/" in rel}):
                info = tarfile.TarInfo(f"{prefix}tasks/{task}/{d}")
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
        for rel in order:
            info = tarfile.TarInfo(f"{prefix}tasks/{task}/{rel}")
            info.size = len(files[rel])
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[rel]))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Both tasks as tarballs and as folders, with the source files."""
    root = tmp_path_factory.mktemp("hear")
    out = {}
    for task, kfold in ((TVT, False), (FOLDS, True)):
        files = hear_task_files(task, kfold=kfold)
        tar = write_tar(root / "zenodo" / f"hear2021-{task}-48000.tar.gz", task, files, audio_first=kfold,
                        prefix="hear-2021.0.6/" if kfold else "")
        out[task] = {"files": files, "tar": tar, "dir": write_dir(root / "tasks" / task, files)}
    return out


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    """Each task downloaded from a local server (checksummed) and prepared at 24 kHz."""
    root = tmp_path_factory.mktemp("prepared")
    res = {}
    with file_server(sources[TVT]["tar"].parent) as httpd:
        for task in (TVT, FOLDS):
            tar = sources[task]["tar"]
            local = download(f"{httpd.url}/{tar.name}", root / "archives" / tar.name, sha256=sha256(tar))
            res[task] = (root / task, prepare_task(local, root / task, task))
    return res


# --------------------------------------------------------------------------------------------
# The prepared task
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [TVT, FOLDS])
def test_clips_are_24khz_mono_16bit_with_the_same_duration(sources, prepared, task):
    out, summary = prepared[task]
    files = sources[task]["files"]
    assert not out.with_name(out.name + ".partial").exists()
    sources_48k = {k[len("48000/"):]: v for k, v in files.items() if k.startswith("48000/")}
    assert sorted(p.relative_to(out / "24000").as_posix() for p in (out / "24000").rglob("*.wav")) == \
        sorted(sources_48k)
    assert sorted(p.name for p in out.iterdir()) == sorted(["24000"] + [k for k in files if "/" not in k])
    for rel, data in sources_48k.items():
        src = sf.info(io.BytesIO(data))
        got = sf.info(str(out / "24000" / rel))
        assert (got.samplerate, got.channels, got.subtype, got.format) == (24000, 1, "PCM_16", "WAV")
        assert got.frames == -(-src.frames // 2)  # same duration, to the sample
    # metadata copied, the task's rate added; the split lists and vocabulary byte for byte
    meta = json.loads((out / "task_metadata.json").read_text())
    assert meta == {**json.loads(files["task_metadata.json"]), "sample_rate": 24000, "source_sample_rate": 48000}
    for name in files:
        if "/" not in name and name != "task_metadata.json":
            assert (out / name).read_bytes() == files[name]
    n = sum(1 for k in files if k.startswith("48000/"))
    assert summary["clips"] == n and summary["written"] == n and summary["reused"] == 0
    assert summary["source_sample_rate"] == 48000 and summary["sample_rate"] == 24000
    seconds = sum(sf.info(io.BytesIO(v)).duration for v in sources_48k.values())
    assert summary["hours"] == pytest.approx(seconds / 3600, rel=1e-3)
    assert set(summary["splits"]) == {k[:-5] for k in files if k.endswith(".json") and k != "task_metadata.json"}


def _band_energy(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    return float(spec[(freqs >= lo) & (freqs <= hi)].sum() / spec.sum())


def test_a_10khz_tone_survives_which_a_16khz_source_cannot_give(sources, prepared, tmp_path, capsys):
    out, _ = prepared[TVT]
    rel = next(k for k in sources[TVT]["files"] if k.startswith("48000/train/"))[len("48000/"):]
    x, sr = sf.read(str(out / "24000" / rel))
    assert sr == 24000 and _band_energy(x, sr, TONE_HZ - 100, TONE_HZ + 100) > 0.5  # 0.3^2 of 0.3^2 + 0.2^2

    # the same task with only its 16-kHz copy: refused, and upsampled only on request
    low = hear_task_files(TVT, rates=(16000,))
    tar = write_tar(tmp_path / "low.tar.gz", TVT, low)
    with pytest.raises(HearTaskError, match=rf"{TVT}: no audio at 24000 Hz or above .*rates found: 16000\)"):
        prepare_task(tar, tmp_path / "low", TVT)
    assert not (tmp_path / "low").exists() and not (tmp_path / "low.partial").exists()
    with pytest.raises(HearTaskError, match=r"rates found: 16000\)"):  # the folder too
        prepare_task(write_dir(tmp_path / "lowdir", low), tmp_path / "low", TVT)
    capsys.readouterr()
    summary = prepare_task(tar, tmp_path / "low", TVT, allow_upsampling=True)
    assert "UPSAMPLING from 16000 Hz" in capsys.readouterr().err
    assert summary["source_sample_rate"] == 16000
    assert json.loads((tmp_path / "low" / "task_metadata.json").read_text())["source_sample_rate"] == 16000
    y, sr = sf.read(str(tmp_path / "low" / "24000" / rel))
    assert sr == 24000 and _band_energy(y, sr, TONE_HZ - 100, TONE_HZ + 100) < 1e-6


@pytest.mark.parametrize("task", [TVT, FOLDS])
def test_the_prepared_folder_loads_through_evaluation_tasks(sources, prepared, task, tmp_path):
    out, _ = prepared[task]
    files = sources[task]["files"]
    meta = hear_tasks.read_metadata(out)
    assert hear_tasks.task_sample_rate(meta) == 24000
    mode, splits = hear_tasks.task_split_names(meta, hear_tasks.metadata_path(out))
    assert (mode, splits) == (("folds", [f"fold{i:02d}" for i in range(5)]) if task == FOLDS
                              else ("train_valid_test", ["train", "valid", "test"]))
    assert hear_tasks.label_vocabulary(meta, out) == LABELS
    arrays = {}
    for split in splits:
        names = hear_tasks.split_files(out, split)
        assert names == sorted(json.loads(files[f"{split}.json"]))
        for name in names:
            path = hear_tasks.clip_path(out, 24000, split, name)
            assert path == out / "24000" / split / name and sf.info(str(path)).samplerate == 24000
        arrays[f"emb_{split}"] = np.ones((len(names), 4), np.float32)
        arrays[f"files_{split}"] = np.array(names)
    np.savez(tmp_path / "emb.npz", **arrays)
    loaded = hear_tasks.load_task(out, tmp_path / "emb.npz")
    assert loaded.labels == LABELS and sorted(loaded.splits) == sorted(splits)


@pytest.mark.parametrize("task", [TVT, FOLDS])
def test_a_folder_source_gives_the_same_bytes_as_the_tarball(sources, prepared, task, tmp_path):
    out, _ = prepared[task]
    # hear-preprocess's tasks folder, the task folder itself: the same task
    got = prepare_task(sources[task]["dir"].parent, tmp_path / "a", task)
    assert tree(tmp_path / "a") == tree(out) and got["source_sample_rate"] == 48000
    prepare_task(sources[task]["dir"], tmp_path / "b", task)
    assert tree(tmp_path / "b") == tree(out)


def test_the_lowest_rate_at_or_above_24khz_is_read(tmp_path):
    files = hear_task_files(TVT, rates=(16000, 48000, 32000))
    d = prepare_task(write_dir(tmp_path / "src", files), tmp_path / "from_dir", TVT)
    # a tarball with several rates, the better one last: the clips from 48 kHz are replaced
    t = prepare_task(write_tar(tmp_path / "multi.tar.gz", TVT, files), tmp_path / "from_tar", TVT)
    assert d["source_sample_rate"] == t["source_sample_rate"] == 32000
    assert tree(tmp_path / "from_dir") == tree(tmp_path / "from_tar")
    one = {k: v for k, v in files.items() if not k.startswith(("16000/", "48000/"))}
    prepare_task(write_tar(tmp_path / "one.tar.gz", TVT, one), tmp_path / "only32", TVT)
    assert tree(tmp_path / "only32") == tree(tmp_path / "from_tar")


def test_a_same_rate_copy_is_bit_exact(sources, tmp_path):
    files = sources[TVT]["files"]
    prepare_task(sources[TVT]["tar"], tmp_path / "out", TVT, sample_rate=48000)
    for k, v in files.items():
        if k.startswith("48000/"):
            assert np.array_equal(sf.read(io.BytesIO(v), dtype="int16")[0],
                                  sf.read(str(tmp_path / "out" / k), dtype="int16")[0])


# --------------------------------------------------------------------------------------------
# Resume and failures
# --------------------------------------------------------------------------------------------


def test_a_truncated_tarball_keeps_its_clips_and_the_rerun_reuses_them(sources, prepared, tmp_path):
    good = sources[TVT]["tar"]
    data = good.read_bytes()
    cut = tmp_path / good.name
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / TVT
    partial = tmp_path / f"{TVT}.partial"
    with pytest.raises(HearTaskError, match=r"ends early or is corrupt.*clips of .* are kept in .*\.partial"):
        prepare_task(cut, out, TVT)
    assert not out.exists() and partial.is_dir()
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (partial / "24000").rglob("*") if p.is_file()}
    n_clips = sum(1 for k in sources[TVT]["files"] if k.startswith("48000/"))
    assert 0 < len(done) < n_clips
    assert not any(p.name.endswith(".tmp") for p in done)
    for p in done:  # every clip kept is whole
        assert sf.info(str(p)).frames > 0

    summary = prepare_task(good, out, TVT)
    assert summary["reused"] == len(done) and summary["written"] == n_clips - len(done)
    for p, stamp in done.items():  # not rewritten
        q = out / p.relative_to(partial)
        assert (q.stat().st_ino, q.stat().st_mtime_ns) == stamp
    assert not partial.exists()
    assert tree(out) == tree(prepared[TVT][0])  # the same as an uninterrupted run


def test_a_tarball_cut_at_a_member_boundary_is_no_complete_task(sources, tmp_path):
    """tarfile ends quietly where a member would start: the end-of-archive block is required."""
    files = sources[TVT]["files"]
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w") as t:
        for rel in sorted(files, key=lambda k: "/" in k):
            info = tarfile.TarInfo(f"tasks/{TVT}/{rel}")
            info.size = len(files[rel])
            t.addfile(info, io.BytesIO(files[rel]))
        boundary = t.offset - 512 - (len(files[rel]) + 511) // 512 * 512  # before the last member
    tar.write_bytes(tar.read_bytes()[:boundary])
    with pytest.raises(HearTaskError, match="no end-of-archive block"):
        prepare_task(tar, tmp_path / "out", TVT)


def test_a_corrupt_download_is_caught_by_its_checksum(sources, tmp_path):
    good = sources[TVT]["tar"]
    bad = bytearray(good.read_bytes())
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / good.name).write_bytes(bytes(bad))
    local = tmp_path / "archives" / good.name
    with file_server(tmp_path / "srv") as httpd, pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{httpd.url}/{good.name}", local, sha256=sha256(good))
        prepare_task(local, tmp_path / "out", TVT)  # never reached
    assert not local.exists() and not local.with_name(local.name + ".partial").exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_split_clip_without_audio_is_named(tmp_path):
    files = hear_task_files(TVT)
    valid = json.loads(files["valid.json"])
    valid["ghost.wav"] = ["dog"]
    files["valid.json"] = json.dumps(valid).encode()
    with pytest.raises(HearTaskError, match=r"1 clips listed .* no audio .*: valid/ghost\.wav"):
        prepare_task(write_tar(tmp_path / "t.tar.gz", TVT, files), tmp_path / "out", TVT)
    assert not (tmp_path / "out").exists() and (tmp_path / "out.partial").exists()
    # the source fixed: the rerun finishes from the clips made
    del valid["ghost.wav"]
    files["valid.json"] = json.dumps(valid).encode()
    summary = prepare_task(write_tar(tmp_path / "t.tar.gz", TVT, files), tmp_path / "out", TVT)
    assert summary["written"] == 0 and summary["reused"] == summary["clips"]


def test_a_task_not_in_the_tarball_is_named(sources, tmp_path):
    with pytest.raises(HearTaskError, match=rf"no task 'fsd50k-v1.0-full' in the archive \(tasks found: {TVT}\)"):
        prepare_task(sources[TVT]["tar"], tmp_path / "out", "fsd50k-v1.0-full")
    with pytest.raises(FileExistsError):
        prepare_task(sources[TVT]["tar"], sources[TVT]["dir"], TVT)


def test_hear_metadata_with_its_mode_key_is_prepared(tmp_path):
    """hear-preprocess's runner writes the task's size ``mode`` ("full", "50h") and ``splits``
    into task_metadata.json: kept as they are; the splits come from ``splits``."""
    files = hear_task_files(FOLDS, kfold=True)
    meta = json.loads(files["task_metadata.json"])
    meta.update(mode="full", splits=[f"fold{i:02d}" for i in range(5)])
    files["task_metadata.json"] = json.dumps(meta).encode()
    summary = prepare_task(write_tar(tmp_path / "t.tar.gz", FOLDS, files), tmp_path / "out", FOLDS)
    assert list(summary["splits"]) == meta["splits"]
    assert json.loads((tmp_path / "out" / "task_metadata.json").read_text())["mode"] == "full"


def test_evaluation_reads_the_splits_of_real_hear_metadata(tmp_path):
    """hear-preprocess's metadata has a "mode" of its own (the task's size), not a split mode."""
    meta = {"task_name": "esc50", "split_mode": "new_split_kfold", "nfolds": 5, "mode": "full"}
    assert hear_tasks.task_split_names(meta, tmp_path / "task_metadata.json") == (
        "folds", ["fold00", "fold01", "fold02", "fold03", "fold04"])
    meta = {"task_name": "nsynth_pitch", "split_mode": "trainvaltest", "mode": "50h"}
    assert hear_tasks.task_split_names(meta, tmp_path / "task_metadata.json")[0] == "train_valid_test"


def test_the_command(sources, tmp_path):
    res = subprocess.run([sys.executable, "-m", "encodecmae", "prepare-hear-task", "--source",
                          str(sources[FOLDS]["tar"]), "--task", FOLDS, "--out", str(tmp_path / "t"),
                          "--sample-rate", "24000"], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr
    assert f"{FOLDS} at 24000 Hz from 48000 Hz: fold00 2 clips" in res.stdout
    assert json.loads((tmp_path / "t" / "task_metadata.json").read_text())["sample_rate"] == 24000
    res = subprocess.run([sys.executable, "-m", "encodecmae", "prepare-hear-task", "--source",
                          str(sources[FOLDS]["tar"]), "--task", FOLDS, "--out", str(tmp_path / "u"),
                          "--allow-upsampling"], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0 and "UPSAMPLING" not in res.stderr
