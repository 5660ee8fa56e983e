"""Shards and training batches: layout, alignment, determinism, validation split."""

import numpy as np
import torch
import pandas as pd
import pytest
import soundfile as sf

from encodecmae import CROP_FRAMES, HOP
from encodecmae.data.audio import AudioError, load_audio
from encodecmae.training.batches import Corpus
from encodecmae.data.shards import Shard, save_targets, write_shard


def test_shard_resamples_mixes_and_trims(tmp_path):
    sr = 44_100
    t = np.arange(int(1.3 * sr)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    sf.write(tmp_path / "a.flac", stereo, sr)
    sf.write(tmp_path / "b.wav", 0.2 * np.ones(16_000, np.float32), 16_000, subtype="PCM_16")
    m = write_shard([tmp_path / "a.flac", tmp_path / "b.wav"], tmp_path / "s")
    assert m.n_samples.tolist() == [31_040, 24_000]  # 1.3 s = 31,200 samples = 97.5 frames -> 97 frames
    assert all(n % HOP == 0 for n in m.n_samples) and m.offset.tolist() == [0, 31_040]
    s = Shard.open(tmp_path / "s")
    clip = s.clip(0)
    spec = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spec) * 24_000 / len(clip) - 440) < 2  # resampled, pitch kept
    assert abs(np.abs(clip).max() - 0.5) < 0.01  # mono mixdown of two equal channels
    assert not (tmp_path / "s.partial").exists()


def bad_files(root):
    """One file of each kind of bad audio, and the reason resample gives for it."""
    (root / "garbage.wav").write_bytes(b"not audio at all")
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 24_000)
    nan = np.zeros(24_000, np.float32)
    nan[5] = np.nan
    sf.write(root / "nan.wav", nan, 24_000, subtype="FLOAT")
    sf.write(root / "short.wav", np.zeros(100, np.float32), 24_000)
    sf.write(root / "many.wav", np.zeros((24_000, 12), np.float32), 24_000)
    sf.write(root / "full.flac", 0.1 * np.random.default_rng(0).standard_normal(48_000), 24_000)
    data = (root / "full.flac").read_bytes()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    (root / "full.flac").unlink()
    return {"garbage.wav": "cannot read audio", "empty.wav": "empty", "nan.wav": "NaN", "short.wav": "too short",
            "many.wav": "12 channels", "truncated.flac": "cannot read audio"}


def test_bad_files_are_skipped_and_listed_until_too_many(tmp_path):
    reasons = bad_files(tmp_path)
    good = []
    for i in range(3):
        good.append(tmp_path / f"good{i}.wav")
        sf.write(good[-1], 0.1 * np.ones(24_000, np.float32), 24_000)
    files = [tmp_path / name for name in reasons] + good
    m = write_shard(files, tmp_path / "s", max_bad_fraction=0.7)
    assert m.clip_id.tolist() == ["good0", "good1", "good2"]
    skipped = pd.read_csv(tmp_path / "s" / "skipped.csv")
    assert [p.split("/")[-1] for p in skipped.path] == list(reasons)
    for reason, want in zip(skipped.reason, reasons.values()):
        assert want in reason, (reason, want)
    assert Shard.open(tmp_path / "s").n_frames == 3 * 75
    # more bad files than allowed: the shard fails naming them, and nothing is written
    with pytest.raises(AudioError, match=r"6 of 9 files are bad .*garbage.wav: cannot read audio"):
        write_shard(files, tmp_path / "t", max_bad_fraction=0.5)
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.partial").exists()
    nan = tmp_path / "nan.wav"
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(nan)


def test_shards_are_planned_by_duration(tmp_path):
    from encodecmae.data.shards import plan_shards, read_file_list, write_file_list

    # longest first to the lightest shard (ties to the lower index): 10 + 2 | 6 + 4 + 1 + 1, 12 each
    assert plan_shards([10, 6, 4, 2, 1, 1], 2) == [0, 1, 1, 0, 1, 1]
    assert plan_shards([5, float("nan"), 5, 1], 2) == [0, 1, 0, 1]  # unknown counts as the median (5)
    with pytest.raises(ValueError, match="3 files cannot fill 4 shards"):
        plan_shards([1, 2, 3], 4)
    src = tmp_path / "src"
    src.mkdir()
    for i, sec in enumerate([3.0, 1.0, 1.0]):
        sf.write(src / f"f{i}.wav", np.zeros(int(sec * 24_000), np.float32), 24_000)
    (src / "bad.flac").write_bytes(b"junk")
    table = write_file_list(src, tmp_path / "list.tsv", 2)
    assert table.seconds.isna().sum() == 1
    assert read_file_list(tmp_path / "list.tsv", 0) == [str(src / "f0.wav")]
    assert sorted(read_file_list(tmp_path / "list.tsv", 1)) == sorted(str(src / n) for n in
                                                                       ("bad.flac", "f1.wav", "f2.wav"))
    with pytest.raises(ValueError, match="shard 2 is outside 0..1"):
        read_file_list(tmp_path / "list.tsv", 2)
    (tmp_path / "plain.txt").write_text("a.wav\n")
    with pytest.raises(ValueError, match="plain.txt: expected the columns"):
        read_file_list(tmp_path / "plain.txt")


def test_targets_must_cover_the_shard(tone_corpus, tmp_path):
    shards, _ = tone_corpus
    save_targets(tmp_path / "short.npy", np.zeros((8, 10)))
    with pytest.raises(ValueError, match="short.npy"):
        Corpus([shards[0]], [tmp_path / "short.npy"])


def test_crops_are_aligned_with_their_targets(tone_corpus, tmp_path):
    shards, _ = tone_corpus
    # targets = 10,000 x shard + frame index, so every crop shows where it came from
    tgt = []
    for k, s in enumerate(shards):
        n = Shard.open(s).n_frames
        assert n < 10_000
        path = tmp_path / f"{s.name}_idx.npy"
        save_targets(path, (10_000 * k + np.arange(n))[None])
        tgt.append(path)
    corpus = Corpus(shards, tgt, n_val=0, seed=0)
    b = corpus.train_batch(step=5, batch_size=32, seed=0)
    assert b.wav.shape == (32, 96_000) and b.targets.shape == (32, 1, CROP_FRAMES)
    for i in range(32):
        L = int(b.lengths[i])
        first = int(b.targets[i, 0, 0])
        assert b.targets[i, 0, :L].tolist() == list(range(first, first + L))
        assert (b.targets[i, 0, L:] == 0).all()
        shard = Shard.open(shards[first // 10_000])
        assert np.array_equal(shard.segment((first % 10_000) * HOP, L * HOP), b.wav[i, : L * HOP].numpy())
        assert (b.wav[i, L * HOP:] == 0).all()
        assert int(b.mask[i].sum()) == L // 2


def test_batches_are_a_function_of_seed_and_step(tone_corpus):
    corpus = Corpus(*tone_corpus, n_val=2, seed=0)
    a, b = corpus.train_batch(3, 8, seed=0), corpus.train_batch(3, 8, seed=0)
    assert all((x == y).all() for x, y in zip((a.wav, a.targets, a.mask), (b.wav, b.targets, b.mask)))
    c = corpus.train_batch(4, 8, seed=0)
    assert not (a.wav == c.wav).all()


def test_a_ranks_share_equals_its_rows_of_the_global_batch_and_reads_only_them(tone_corpus, monkeypatch):
    """Data-parallel ranks each read only their rows; crops and masks are those of the global batch."""
    corpus = Corpus(*tone_corpus, n_val=2, seed=0)
    crops = []
    real = corpus._crop
    monkeypatch.setattr(corpus, "_crop", lambda *a: crops.append(a) or real(*a))
    for step, mask_starts in ((3, "anywhere"), (7, "released")):
        whole = corpus.train_batch(step, 8, seed=0, mask_starts=mask_starts)
        for lo, hi in ((0, 2), (2, 4), (4, 8)):
            crops.clear()
            part = corpus.train_batch(step, 8, seed=0, mask_starts=mask_starts, rows=(lo, hi))
            assert len(crops) == hi - lo  # audio and targets read for these rows only
            ref = whole.slice(lo, hi)
            for name in ("wav", "targets", "lengths", "mask"):
                assert torch.equal(getattr(part, name), getattr(ref, name)), (step, lo, name)


def test_validation_clips_are_held_out_and_long_clips_are_visited_more(tone_corpus):
    corpus = Corpus(*tone_corpus, n_val=3, seed=0)
    key = lambda df: set(zip(df["shard"], df["clip_id"]))
    assert len(corpus.val_clips) == 3 and not key(corpus.val_clips) & key(corpus.train_clips)
    assert len(corpus.train_clips) + 3 == sum(len(Shard.open(s)) for s in tone_corpus[0])
    # the 20-s clip holds 5 crops: it is drawn 5x as often as a clip under 8 s
    w = pd.Series(corpus.weights, index=corpus.train_clips.n_samples.to_numpy())
    if 480_000 in w.index:
        assert w.loc[480_000] == pytest.approx(5 * w[w.index < 192_000].min())
    vb = list(corpus.val_batches(2, seed=0))
    assert sum(len(b.lengths) for b in vb) == 3


@pytest.mark.parametrize("sr,channels,seconds,block", [(44_100, 2, 7.3, 0.5), (16_000, 1, 5.01, 1.0),
                                                        (48_000, 1, 3.0, 0.25), (24_000, 1, 2.5, 1.0),
                                                        (22_050, 3, 4.0, 0.3), (8_000, 1, 0.01, 1.0)])
def test_streamed_resampling_equals_the_whole_file(tmp_path, sr, channels, seconds, block):
    from encodecmae.data.audio import stream_audio

    x = (0.1 * np.random.default_rng(0).standard_normal((int(sr * seconds), channels))).astype(np.float32)
    sf.write(tmp_path / "x.wav", x, sr, subtype="FLOAT")
    blocks = list(stream_audio(tmp_path / "x.wav", block_seconds=block))
    assert len(blocks) >= min(3, int(seconds / block))  # really in blocks
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(tmp_path / "x.wav"), atol=1e-6)


def test_a_long_file_goes_through_a_scratch_file_with_the_same_shard(tmp_path, monkeypatch):
    from encodecmae.data import shards

    t = np.arange(int(44_100 * 6.5)) / 44_100
    sf.write(tmp_path / "long.wav", (1.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 44_100, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", 0.2 * np.ones(12_000, np.float32), 24_000)
    files = [tmp_path / "short.wav", tmp_path / "long.wav"]
    write_shard(files, tmp_path / "a")
    monkeypatch.setattr(shards._Resampled, "SPILL_SAMPLES", 24_000)  # spill after 1 s
    monkeypatch.setattr(shards, "WRITE_CHUNK_SAMPLES", 7_000)
    write_shard(files, tmp_path / "b")
    a, b = Shard.open(tmp_path / "a"), Shard.open(tmp_path / "b")
    assert a.manifest.equals(b.manifest) and np.array_equal(np.asarray(a.audio), np.asarray(b.audio))
    assert abs(np.abs(a.clip(1)).max() - 1.0) < 1e-3  # a peak of 1.5 scaled to full range, not clipped
    assert not list((tmp_path / "b").glob("*.f32")) and not list((tmp_path / "b").glob("*.raw"))


def test_listing_skips_hidden_files_and_folders(tmp_path):
    """A killed download's scratch folder (.tmp-*) or macOS's ._ files are not the source's audio."""
    from encodecmae.data.shards import list_audio

    x = np.zeros(2400, dtype=np.float32)
    for rel in ["a/clip.flac", "b.wav", "a/.tmp-host-1-x/half.flac", "._b.wav"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, x, 24000)
    assert list_audio(tmp_path) == [str(tmp_path / "a" / "clip.flac"), str(tmp_path / "b.wav")]
