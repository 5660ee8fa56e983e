"""Self-training: k-means assignment math, and teacher -> clusters -> student on the tone corpus."""

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from encodecmae.training import checkpoints as ckpt_io
from encodecmae.evaluation.embed import Embedder
from encodecmae.selftrain.clusters import assign_clusters, dump_features, fit_kmeans, load_centroids
from encodecmae.targets.codec import nearest_code
from encodecmae.data.shards import Shard, load_targets
from encodecmae.training.config import TrainConfig
from encodecmae.training.loop import train


def test_cluster_assignment_equals_sklearn_predict():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 12)).astype(np.float32)
    km = KMeans(n_clusters=37, n_init=1, random_state=0).fit(x)
    ours = nearest_code(torch.from_numpy(x), torch.from_numpy(km.cluster_centers_.astype(np.float32)), chunk=999)
    assert np.array_equal(ours.numpy(), km.predict(x))


def test_fit_kmeans_is_seeded_and_needs_k_frames(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 8)) * 10
    np.save(tmp_path / "a.npy", (centres[rng.integers(0, 6, 600)] + rng.standard_normal((600, 8))).astype(np.float32))
    info = fit_kmeans([tmp_path / "a.npy"], tmp_path / "k1.npz", k=6, n_frames=500, seed=3)
    fit_kmeans([tmp_path / "a.npy"], tmp_path / "k2.npz", k=6, n_frames=500, seed=3)
    assert np.array_equal(load_centroids(tmp_path / "k1.npz"), load_centroids(tmp_path / "k2.npz"))
    assert info["n_frames"] == 500 and info["used_clusters"] == 6
    # the six true centres are recovered
    c = load_centroids(tmp_path / "k1.npz")
    d = np.linalg.norm(centres[:, None] - c[None], axis=-1).min(1)
    assert d.max() < 0.5
    with pytest.raises(ValueError, match="a.npy"):
        fit_kmeans([tmp_path / "a.npy"], tmp_path / "k3.npz", k=1000)


def test_teacher_clusters_student(tone_corpus, tmp_path):
    shards, targets = tone_corpus
    teacher = TrainConfig(shards=[str(s) for s in shards], targets=[str(t) for t in targets],
                          out=str(tmp_path / "teacher.pt"), ckpt_dir=str(tmp_path / "t_ckpt"),
                          metrics=str(tmp_path / "t.csv"), size="debug", steps=10, batch_size=4, lr=1e-3,
                          val_clips=0, num_workers=0, device="cpu", checkpoint_every=100)
    train(teacher)
    feats = tmp_path / "feats.npy"
    arr = dump_features(teacher.out, shards, feats, n_crops=20, frames_per_crop=5, seed=0, device="cpu")
    assert arr.shape == (100 * len(shards), 64) and arr.dtype == np.float32
    # one job for all shards: each shard's crops as if alone, in path order whatever the order given
    one = dump_features(teacher.out, [shards[0]], tmp_path / "one.npy", n_crops=20, frames_per_crop=5, seed=0,
                        device="cpu")
    assert np.array_equal(one, arr[:100]) and np.array_equal(
        dump_features(teacher.out, shards[::-1], tmp_path / "rev.npy", n_crops=20, frames_per_crop=5, seed=0,
                      device="cpu"), arr)
    info = fit_kmeans([feats], tmp_path / "km.npz", k=8, n_frames=150, seed=0)
    assert info["n_frames"] == 150
    ids_paths = []
    for s in shards:
        out = tmp_path / f"{s.name}_clusters.npy"
        assign_clusters(teacher.out, tmp_path / "km.npz", s, out, device="cpu")
        ids = load_targets(out, Shard.open(s))  # frame layout of the shard checked here
        assert ids.shape == (1, Shard.open(s).n_frames) and ids.min() >= 0 and ids.max() < 8
        assert len(np.unique(ids)) > 1
        ids_paths.append(out)
    student = TrainConfig(shards=[str(s) for s in shards], targets=[str(p) for p in ids_paths],
                          out=str(tmp_path / "student.pt"), ckpt_dir=str(tmp_path / "s_ckpt"),
                          metrics=str(tmp_path / "s.csv"), init_from=teacher.out, reset_head=True, n_classes=8,
                          gamma=[1.0], steps=3, batch_size=4, val_clips=0, num_workers=0, device="cpu",
                          checkpoint_every=100)
    train(student)
    s_ck, t_ck = ckpt_io.load(student.out), ckpt_io.load(teacher.out)
    assert s_ck["model_config"]["n_streams"] == 1 and s_ck["model_config"]["n_classes"] == 8
    assert s_ck["model"]["head.weight"].shape == (8, 64)
    assert s_ck["config"]["init_from"]["path"] == teacher.out
    # the student continued from the teacher's encoder (3 small steps away, not a fresh init)
    w_s, w_t = s_ck["model"]["encoder.blocks.0.ff.0.weight"], t_ck["model"]["encoder.blocks.0.ff.0.weight"]
    assert (w_s - w_t).abs().max() < 0.05 and not torch.equal(w_s, w_t)
    # and the student is usable for extraction: frames of a 6-s clip and its scene embedding
    emb = Embedder(student.out)
    clip = Shard.open(shards[0]).clip(0)
    frames = emb.frames([clip])[0]
    assert frames.shape == (len(clip) // 320, 64) and np.isfinite(frames).all()
    assert np.allclose(emb.scenes([clip])[0], frames.mean(0), atol=1e-6)


def test_assignment_reads_the_shard_in_blocks_without_changing_a_label(tone_corpus, tmp_path, debug_checkpoint):
    """Blocks of 4 s or of the whole shard: the same labels, and the labels of frame-level
    extraction (each clip's 4-s chunks embedded on their own)."""
    shards, _ = tone_corpus
    feats = tmp_path / "feats.npy"
    dump_features(debug_checkpoint, shards[:1], feats, n_crops=10, frames_per_crop=20, seed=0, device="cpu")
    fit_kmeans([feats], tmp_path / "km.npz", k=8, n_frames=200, seed=0)
    small = assign_clusters(debug_checkpoint, tmp_path / "km.npz", shards[0], tmp_path / "a.npy", block_seconds=4)
    whole = assign_clusters(debug_checkpoint, tmp_path / "km.npz", shards[0], tmp_path / "b.npy", block_seconds=1e6)
    assert np.array_equal(small, whole) and len(np.unique(small)) > 1
    shard = Shard.open(shards[0])
    emb = Embedder(debug_checkpoint, layer=-2)
    centroids = torch.from_numpy(load_centroids(tmp_path / "km.npz"))
    for i in range(len(shard)):
        frames = emb.frames([shard.clip(i)])[0]
        f0 = int(shard.manifest.offset.iloc[i]) // 320
        want = nearest_code(torch.from_numpy(frames), centroids).numpy()
        assert np.array_equal(small[0, f0 : f0 + len(want)], want), i
