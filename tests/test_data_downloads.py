"""The download rules end to end: a CI-size configuration whose every dataset comes from an HTTP
server on 127.0.0.1 in the real datasets' layouts (AudioSet's segment list and videos through
yt-dlp, an FMA-like zip, a HEAR task tarball at 48 kHz, LibriSpeech with its LM and lexicon),
planned and run by Snakemake into shards, a 24-kHz task and the ASR data, with
results/data_summary.md saying what was obtained."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from workflow_helpers import edited_config, file_server, job_stats, snakemake

TASK = "mini_task-v1.0-full"


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(x: np.ndarray, sr: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def build_server_root(www):
    """The datasets as their publishers serve them, at toy size."""
    # AudioSet: the official list format, and the "videos" (WAV media for yt-dlp's generic extractor);
    # vid_gone has no media: the server answers 404, as YouTube does for a removed video
    (www / "media").mkdir(parents=True)
    ids = ["vid_a", "vid_b", "vid_c", "vid_gone"]
    for i, ytid in enumerate(ids[:3]):
        (www / "media" / f"{ytid}.wav").write_bytes(wav_bytes(tone(300 + 100 * i, 14.0, 44100), 44100))
    rows = "".join(f'{ytid}, 2.000, 12.000, "/m/09x0r,/m/04rlf"\n' for ytid in ids)
    (www / "segments.csv").write_text("# Segments csv created Sun Mar  5 10:54:31 2017\n"
                                      "# num_ytids=4, num_segs=4, num_unique_labels=2, num_positive_labels=8\n"
                                      "# YTID, start_seconds, end_seconds, positive_labels\n" + rows)
    # FMA-like: a zip of MP3-era tracks (WAV here), one of them undecodable (skipped by the shard)
    with zipfile.ZipFile(www / "fma_toy.zip", "w") as z:
        for i in range(3):
            z.writestr(f"fma_toy/00{i}/00{i}00{i}.wav", wav_bytes(tone(500 + 50 * i, 6.0, 44100), 44100))
        z.writestr("fma_toy/003/003003.wav", b"RIFF not really a wav file")
    # a HEAR task tarball as the Zenodo mirror has them: tasks/TASK/... with the audio at 48 kHz
    splits = {"train": 4, "valid": 2, "test": 2}
    with tarfile.open(www / f"hear2021-{TASK}-48000.tar.gz", "w:gz") as tar:
        meta = {"task_name": "mini_task", "version": "v1.0", "embedding_type": "scene",
                "prediction_type": "multiclass", "split_mode": "trainvaltest", "sample_duration": 2.0,
                "evaluation": ["top1_acc"]}
        add(tar, f"tasks/{TASK}/task_metadata.json", json.dumps(meta).encode())
        add(tar, f"tasks/{TASK}/labelvocabulary.csv", b"idx,label\n0,low\n1,high\n")
        for split, n in splits.items():
            labels = {f"{split}_{k}.wav": ["low" if k % 2 else "high"] for k in range(n)}
            add(tar, f"tasks/{TASK}/{split}.json", json.dumps(labels).encode())
            for k, name in enumerate(labels):
                add(tar, f"tasks/{TASK}/48000/{split}/{name}", wav_bytes(tone(10_000 if k % 2 == 0 else 440, 2.0, 48000), 48000))
    # LibriSpeech's layout: SPEAKER/CHAPTER/ with FLAC utterances and a transcript per chapter
    with tarfile.open(www / "dev-clean.tar.gz", "w:gz") as tar:
        add(tar, "LibriSpeech/README.TXT", b"LibriSpeech ASR corpus (toy)\n")
        chapter = "LibriSpeech/dev-clean/84/121123"
        lines = []
        for u, text in enumerate(["HELLO WORLD", "GOOD MORNING"]):
            utt = f"84-121123-{u:04d}"
            add(tar, f"{chapter}/{utt}.flac", wav_bytes(tone(200 + 20 * u, 1.5, 16000), 16000, fmt="FLAC"))
            lines.append(f"{utt} {text}")
        add(tar, f"{chapter}/84-121123.trans.txt", ("\n".join(lines) + "\n").encode())
    arpa = ("\\data\\\nngram 1=4\n\n\\1-grams:\n-1.0\t<s>\n-1.0\t</s>\n-0.5\thello\n-0.5\tworld\n\n\\end\\\n")
    (www / "4-gram.arpa.gz").write_bytes(gzip.compress(arpa.encode()))
    (www / "librispeech_lexicon.lst").write_text("hello\th e l l o |\nworld\tw o r l d |\n")


@pytest.mark.e2e
def test_ci_config_downloads_every_dataset_into_shards_task_and_asr_data(tmp_path):
    www = tmp_path / "www"
    build_server_root(www)
    with file_server(www) as server:
        url = server.url

        def edit(c):
            c["corpus"]["max_bad_fraction"] = 0.5
            c["corpus"]["sources"] = {
                "audioset": {"n_shards": 1, "youtube": {
                    "segment_lists": [{"url": f"{url}/segments.csv",
                                       "sha256": hashlib.sha256((www / "segments.csv").read_bytes()).hexdigest()}],
                    "segments": 4, "segments_per_job": 2, "url_template": f"{url}/media/{{ytid}}.wav",
                    "parallel": 2, "retries": 1, "timeout": 60, "max_failed_fraction": 0.0}},
                "fma": {"n_shards": 1, "archives": [{"url": f"{url}/fma_toy.zip",
                                                     "sha1": hashlib.sha1((www / "fma_toy.zip").read_bytes()).hexdigest()}]},
            }
            c["tasks"] = {TASK: {"archive": f"{url}/hear2021-{TASK}-48000.tar.gz",
                                 "md5": md5(www / f"hear2021-{TASK}-48000.tar.gz")}}
            c["asr"] = {"librispeech": {"dev-clean": {"url": f"{url}/dev-clean.tar.gz", "md5": md5(www / "dev-clean.tar.gz")}},
                        "lm": {"url": f"{url}/4-gram.arpa.gz", "md5": md5(www / "4-gram.arpa.gz")},
                        "lexicon": {"url": f"{url}/librispeech_lexicon.lst"}}

        cfg = edited_config(tmp_path, edit)
        work = tmp_path / "run"
        targets = ["data/shards/audioset.index", "data/shards/fma.index", f"data/tasks/hear/{TASK}", "asr_data",
                   "results/data_summary.md"]
        planned = job_stats((lambda r: r.stdout + r.stderr)(snakemake(work, "-n", *targets, config=cfg)))
        assert planned == {"download_segment_list": 1, "download_youtube_part": 2, "download_source": 1,
                           "list_source": 2, "resample_shard": 2, "index_shards": 2, "download_hear_task": 1,
                           "prepare_hear_task": 1, "download_librispeech": 1, "download_asr_file": 2,
                           "asr_data": 1, "summarize_data": 1}
        snakemake(work, "--cores", "2", *targets, config=cfg)
        media_requests = [p for p, _ in server.log if p.startswith("/media/")]

        # AudioSet: the three videos there as 24-kHz FLAC of their 10-s segment; the removed one unavailable
        status = pd.concat([pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
                            for p in sorted((work / "data/downloads/audioset/status").glob("*.tsv"))])
        assert dict(zip(status.ytid, status.state)) == {"vid_a": "downloaded", "vid_b": "downloaded",
                                                        "vid_c": "downloaded", "vid_gone": "unavailable"}
        flacs = sorted((work / "data/downloads/audioset/audio").rglob("*.flac"))
        assert len(flacs) == 3
        for f in flacs:
            info = sf.info(str(f))
            assert info.samplerate == 24000 and info.channels == 1 and info.duration == pytest.approx(10.0, abs=0.05)
        manifest = pd.read_csv(work / "data/shards/audioset/000/manifest.csv")
        assert len(manifest) == 3
        # FMA-like archive: verified by its SHA-1, unpacked, the undecodable file skipped and listed
        fma = pd.read_csv(work / "data/shards/fma/000/manifest.csv")
        skipped = pd.read_csv(work / "data/shards/fma/000/skipped.csv")
        assert len(fma) == 3 and len(skipped) == 1 and skipped.path.str.endswith("003003.wav").all()
        # the HEAR task at 24 kHz, its 10-kHz tones still there (a 16-kHz copy could not hold them)
        task = work / "data/tasks/hear" / TASK
        meta = json.loads((task / "task_metadata.json").read_text())
        assert meta["sample_rate"] == 24000 and meta["source_sample_rate"] == 48000
        clip, sr = sf.read(str(task / "24000" / "train" / "train_0.wav"))
        assert sr == 24000 and len(clip) == 48000
        spectrum = np.abs(np.fft.rfft(clip))
        assert np.argmax(spectrum) == pytest.approx(10_000 * len(clip) / sr, abs=2)
        # LibriSpeech, LM and lexicon, verified and in place
        assert (work / "data/asr/librispeech/dev-clean/LibriSpeech/dev-clean/84/121123/84-121123.trans.txt").exists()
        assert (work / "data/asr/lm/4-gram.arpa.gz").read_bytes() == (www / "4-gram.arpa.gz").read_bytes()
        assert (work / "data/asr/lexicon/librispeech_lexicon.lst").exists()
        # what was obtained, per source
        summary = pd.read_csv(work / "results/data_summary.csv").set_index("source")
        assert summary.loc["audioset", "segments"] == 4 and summary.loc["audioset", "downloaded"] == 3
        assert summary.loc["audioset", "unavailable"] == 1 and summary.loc["fma", "skipped"] == 1
        md = (work / "results/data_summary.md").read_text()
        assert "| audioset | 4 | 3 | 75.0 % | 1 | 0 |" in md and f"| {TASK} |" in md

        # a second run has nothing to do and asks the server for nothing
        server.log.clear()
        res = snakemake(work, "--cores", "2", *targets, config=cfg)
        assert "Nothing to be done" in res.stdout + res.stderr and not server.log
        assert media_requests  # (the first run did fetch through yt-dlp)
