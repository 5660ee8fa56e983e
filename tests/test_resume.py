"""Long data jobs killed mid-way continue where they stopped (encodecmae.resume): tokenize,
assign-clusters and embed-task, each against an uninterrupted run of the same inputs."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from encodecmae.resume import BlockStore


def test_block_store_keeps_blocks_only_for_the_same_key(tmp_path):
    out = tmp_path / "x.npy"
    store = BlockStore(out, {"a": 1})
    assert store.resumed == 0 and store.get("000") is None
    store.put("000", np.arange(3))
    again = BlockStore(out, {"a": 1})
    assert again.resumed == 1 and again.get("000").tolist() == [0, 1, 2]
    other = BlockStore(out, {"a": 2})  # changed inputs or settings: the old blocks are not used
    assert other.resumed == 0 and other.get("000") is None
    other.close()
    assert not (tmp_path / "x.npy.parts").exists()


@pytest.fixture(scope="module")
def codec(tone_corpus, tmp_path_factory):
    """EnCodec with 2 codebooks of 64 entries fitted on the tone shards (a random codec would
    give token 0 everywhere, which no comparison could tell apart)."""
    from encodecmae.data.shards import Shard
    from encodecmae.targets.codebooks import fit_codebooks

    path = tmp_path_factory.mktemp("codec") / "fitted.pt"
    shard = Shard.open(tone_corpus[0][0])
    fit_codebooks([shard.clip(i) for i in range(len(shard))], path, n_q=2, k=64, seed=0, max_frames=300)
    return path


def test_tokenize_killed_mid_way_continues_to_the_same_tokens(tone_corpus, codec, tmp_path):
    """`encodecmae tokenize` SIGKILLed after its first finished block; the rerun keeps the blocks
    done and writes the tokens an uninterrupted run writes."""
    from encodecmae.targets.tokenize import tokenize_shard

    shard = tone_corpus[0][1]  # 6 clips, ~45 s
    out = tmp_path / "tokens.npy"
    cmd = [sys.executable, "-m", "encodecmae", "tokenize", "--shard", str(shard), "--checkpoint", str(codec),
           "--out", str(out), "--n-q", "2", "--chunk-seconds", "2", "--block-seconds", "4"]
    ref = tokenize_shard(shard, codec, tmp_path / "ref.npy", n_q=2, chunk_seconds=2.0, block_seconds=4.0)
    parts = tmp_path / "tokens.npy.parts"
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.npy"))) < 1 and job.poll() is None:
        time.sleep(0.01)
    job.kill()
    job.wait()
    kept = len(list(parts.glob("*.npy")))
    assert kept >= 1 and not out.exists(), "the job finished before it could be killed"
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming, {kept} blocks were finished by an earlier run" in res.stdout
    assert np.array_equal(np.load(out), ref) and not parts.exists()
    assert len(np.unique(ref[0])) > 8  # real tokens, not a constant


class Killed(Exception):
    """Stands in for SIGKILL inside the process: nothing after it runs."""


def count_and_kill(monkeypatch, module, name: str, kill_at: int | None) -> list:
    """Wrap ``module.name``, counting its calls and raising Killed at call ``kill_at``."""
    calls, real = [], getattr(module, name)

    def wrapped(*args, **kwargs):
        calls.append(1)
        if kill_at is not None and len(calls) == kill_at:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_assign_clusters_killed_mid_way_continues_to_the_same_ids(tone_corpus, debug_checkpoint, tmp_path,
                                                                   monkeypatch):
    from encodecmae.selftrain import clusters

    shard = tone_corpus[0][1]
    km = tmp_path / "km.npz"
    np.savez(km, centroids=np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32), info="{}")
    with monkeypatch.context() as m:  # blocks of 2 chunks (8 s): 8 of them
        calls = count_and_kill(m, clusters, "embed_clips", None)
        ref = clusters.assign_clusters(debug_checkpoint, km, shard, tmp_path / "ref.npy", device="cpu", block_seconds=8)
    n_blocks = len(calls)
    out = tmp_path / "ids.npy"
    with monkeypatch.context() as m:
        count_and_kill(m, clusters, "embed_clips", kill_at=3)
        with pytest.raises(Killed):
            clusters.assign_clusters(debug_checkpoint, km, shard, out, device="cpu", block_seconds=8)
    assert not out.exists() and len(list((tmp_path / "ids.npy.parts").glob("*.npy"))) == 2
    with monkeypatch.context() as m:
        calls = count_and_kill(m, clusters, "embed_clips", None)
        ids = clusters.assign_clusters(debug_checkpoint, km, shard, out, device="cpu", block_seconds=8)
    assert n_blocks == 8 and len(calls) == n_blocks - 2  # only the blocks not finished before
    assert np.array_equal(ids, ref) and np.array_equal(np.load(out), ref)
    assert not (tmp_path / "ids.npy.parts").exists()


def test_embed_task_killed_mid_way_continues_to_the_same_embeddings(tmp_path, debug_checkpoint, monkeypatch):
    from test_provenance import write_audio_task

    from encodecmae.evaluation import embed

    task = write_audio_task(tmp_path / "task")  # 3 splits x 6 half-second clips
    monkeypatch.setattr(embed, "BLOCK_FILES", 2)  # 3 blocks per split, 9 in all
    embed.embed_task(debug_checkpoint, task, tmp_path / "ref.npz")
    out = tmp_path / "emb.npz"
    with monkeypatch.context() as m:
        count_and_kill(m, embed.Embedder, "scenes", kill_at=5)  # in the valid split's second block
        with pytest.raises(Killed):
            embed.embed_task(debug_checkpoint, task, out)
    assert not out.exists() and len(list((tmp_path / "emb.npz.parts").glob("*.npy"))) == 4
    with monkeypatch.context() as m:
        calls = count_and_kill(m, embed.Embedder, "scenes", None)
        embed.embed_task(debug_checkpoint, task, out)
    assert len(calls) == 9 - 4
    a, b = np.load(tmp_path / "ref.npz"), np.load(out)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
    assert not (tmp_path / "emb.npz.parts").exists()
