"""results/data_summary.md: what data a run obtained, counted from the files the workflow writes."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from encodecmae.report.data_summary import skip_kind, summarize


def write_shard(root, source, shard, n_samples, skipped=()):
    d = root / "shards" / source / shard
    d.mkdir(parents=True)
    pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(n_samples))], "source": source, "offset": 0,
                  "n_samples": n_samples}).to_csv(d / "manifest.csv", index=False)
    pd.DataFrame({"path": [p for p, _ in skipped], "reason": [r for _, r in skipped]},
                 columns=["path", "reason"]).to_csv(d / "skipped.csv", index=False)
    return d / "manifest.csv"


def write_status(root, source, part, states):
    d = root / "downloads" / source / "status"
    d.mkdir(parents=True, exist_ok=True)
    rows = [{"ytid": f"v{part}{i}", "start": 0, "end": 10, "state": s, "reason": r, "detail": "", "attempts": 1,
             "seconds": 10.0 if s == "downloaded" else 0.0} for i, (s, r) in enumerate(states)]
    pd.DataFrame(rows).to_csv(d / f"{part}.tsv", sep="\t", index=False)
    return d / f"{part}.tsv"


def test_counts_per_source_skips_by_kind_and_youtube_losses(tmp_path):
    hour = 24000 * 3600
    manifests = [
        write_shard(tmp_path, "audioset", "000", [hour // 2, hour // 4],
                    skipped=[("a.flac", "cannot read audio (Error decoding)"), ("b.flac", "too short (10 samples)")]),
        write_shard(tmp_path, "audioset", "001", [hour // 4]),
        write_shard(tmp_path, "fma", "000", [hour] * 3, skipped=[("x.mp3", "audio holds NaN or Inf samples")]),
    ]
    status = [
        write_status(tmp_path, "audioset", "0000", [("downloaded", "")] * 3 + [("unavailable", "private"),
                                                                            ("unavailable", "http-404")]),
        write_status(tmp_path, "audioset", "0001", [("downloaded", "")] * 2 + [("failed", "http-429")]),
    ]
    task = tmp_path / "tasks" / "demo_task"
    (task / "24000" / "train").mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps({"mode": "train_valid_test", "sample_rate": 24000,
                                                         "source_sample_rate": 48000, "label_vocabulary": ["a"]}))
    for split, n in [("train", 3), ("valid", 1), ("test", 2)]:
        (task / f"{split}.json").write_text(json.dumps({f"{split}{i}.wav": ["a"] for i in range(n)}))

    out = summarize(manifests, status, [task], tmp_path / "summary.md", tmp_path / "summary.csv")
    rows = out.set_index("source")
    assert rows.loc["audioset", "clips"] == 3 and rows.loc["audioset", "hours"] == pytest.approx(1.0)
    assert rows.loc["fma", "hours"] == pytest.approx(3.0) and rows.loc["fma", "shards"] == 1
    assert rows.loc["audioset", "skipped"] == 2 and rows.loc["audioset", "skipped_by_kind"] == "too short 1, unreadable 1"
    assert rows.loc["fma", "skipped_by_kind"] == "nan 1"
    assert (rows.loc["audioset", ["segments", "downloaded", "unavailable", "failed"]] == [8, 5, 2, 1]).all()
    assert rows.loc["audioset", "obtained"] == pytest.approx(5 / 8)
    assert rows.loc["audioset", "lost_by_reason"] == "failed/http-429 1, unavailable/http-404 1, unavailable/private 1"
    md = (tmp_path / "summary.md").read_text()
    assert "| audioset | 8 | 5 | 62.5 % | 2 | 1 |" in md
    assert "| demo_task | train_valid_test | 6 | train 3, valid 1, test 2 | 24000 Hz | 48000 Hz |" in md
    assert pd.read_csv(tmp_path / "summary.csv").shape[0] == 2


def test_skip_reasons_are_grouped_by_kind():
    assert skip_kind("cannot read audio (Error : unknown format)") == "unreadable"
    assert skip_kind("audio is empty") == "empty"
    assert skip_kind("9 channels (at most 8 are mixed to mono)") == "channels"
    assert skip_kind("something new") == "other"


def test_no_shards_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no shard manifests"):
        summarize([], [], [], tmp_path / "s.md", tmp_path / "s.csv")
