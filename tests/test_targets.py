"""EnCodec targets: frame arithmetic, checkpoints, fitted codebooks, gamma, shard tokenisation.

Everything runs on synthetic audio made here, with codebooks fitted on a small budget, so the
file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from encodecmae import CROP_FRAMES, CROP_SAMPLES, HOP, SAMPLE_RATE
from encodecmae.data.shards import Shard, load_targets, write_shard
from encodecmae.targets.codebooks import fit_codebooks, kmeans, shard_clips
from encodecmae.targets.codec import EncodecTokenizer, build_encodec, rvq_encode
from encodecmae.targets.gamma import codebook_usage, estimate_gamma
from encodecmae.targets.tokenize import tokenize_shard


def synth_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A sequence of 0.2-1 s events: harmonic tones with glides, chirps, coloured noise bursts,
    click trains and near-silence, at random levels (float32, 24 kHz)."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n, np.float32)
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.2, 1.0) * SAMPLE_RATE), n - pos)
        t = np.arange(length) / SAMPLE_RATE
        span = max(t[-1], 1e-3)
        kind = rng.integers(5)
        if kind == 0:  # harmonic tone, pitch gliding up or down
            f0 = rng.uniform(80, 1000) * np.exp(rng.uniform(-0.5, 0.5) * t / span)
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            x = sum(rng.uniform(0.1, 1) / h * np.sin(h * phase) for h in range(1, rng.integers(2, 8)))
        elif kind == 1:  # linear chirp
            f1, f2 = rng.uniform(100, 8000, 2)
            x = np.sin(2 * np.pi * (f1 * t + (f2 - f1) * t**2 / (2 * span)))
        elif kind == 2:  # low-passed noise burst
            a = rng.uniform(0, 0.99)
            x = lfilter([1 - a], [1, -a], rng.standard_normal(length))
        elif kind == 3:  # click train
            x = np.zeros(length)
            x[:: max(1, int(SAMPLE_RATE / rng.uniform(2, 200)))] = 1.0
        else:  # near silence
            x = 1e-3 * rng.standard_normal(length)
        fade = np.minimum(1, np.minimum(t, t[-1] - t) / 0.01 + 1e-3)
        out[pos : pos + length] = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.05, 0.8) * fade
        pos += length
    return out


@pytest.fixture(scope="module")
def corpus() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [synth_clip(rng, 5.0) for _ in range(12)]  # 60 s


@pytest.fixture(scope="module")
def fitted(corpus, tmp_path_factory):
    """Codebooks fitted on 3000 frames (40 s of 2-s crops) of the synthetic corpus."""
    path = tmp_path_factory.mktemp("encodec") / "fitted.pt"
    summary = fit_codebooks(corpus, path, n_q=8, seed=0, max_frames=3000)
    return path, summary


@pytest.fixture(scope="module")
def tokenizer(fitted) -> EncodecTokenizer:
    return EncodecTokenizer(fitted[0], n_q=8)


@pytest.fixture(scope="module")
def heldout() -> torch.Tensor:
    rng = np.random.default_rng(1)
    return torch.from_numpy(np.stack([synth_clip(rng, 4.0) for _ in range(4)]))  # [4, 96000]


def test_frame_arithmetic(tokenizer):
    wav = torch.zeros(2, CROP_SAMPLES).uniform_(-0.5, 0.5)
    feats = tokenizer.features(wav)
    tokens = tokenizer.tokenize(wav)
    assert feats.shape == (2, CROP_FRAMES, 128) and feats.dtype == torch.float32
    assert tokens.shape == (2, 8, CROP_FRAMES) == (2, 8, 300) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 1024
    assert not feats.requires_grad
    for n in (HOP, HOP + 1, 1000, 2 * HOP):  # T = ceil(N / 320)
        assert tokenizer.tokenize(wav[:1, :n]).shape == (1, 8, -(-n // HOP))


def test_tokenizer_is_frozen(tokenizer):
    assert all(not p.requires_grad for p in tokenizer.parameters())
    tokenizer.train()
    assert not tokenizer.training and not tokenizer.encoder.training
    # only the encoder and the first n_q codebooks are kept (no decoder, no 24 unused codebooks)
    assert len(tokenizer.codebooks) == 8
    assert not any(k.startswith("decoder") for k in tokenizer.state_dict())


def test_random_init_emits_only_zeros(heldout):
    tokens = EncodecTokenizer(None).tokenize(heldout[:1, : SAMPLE_RATE])
    assert tokens.shape == (1, 8, 75)
    assert int(tokens.abs().max()) == 0
    usage = codebook_usage(tokens)
    assert usage == {"n_used": [1] * 8, "entropy_bits": [0.0] * 8}


def test_fitted_codebooks_are_used(tokenizer, fitted, heldout):
    path, summary = fitted
    assert summary["n_frames"] == 3000
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["kind"], ckpt["n_q"], ckpt["seed"], ckpt["n_frames"]) == ("fitted", 8, 0, 3000)
    assert ckpt["codebook_size"] == tokenizer.codebook_size == 1024
    for q in range(8):
        cb = ckpt["state_dict"][f"quantizer.vq.layers.{q}._codebook.embed"]
        assert cb.shape == (1024, 128) and float(cb.abs().sum()) > 0
        assert float(ckpt["state_dict"][f"quantizer.vq.layers.{q}._codebook.inited"]) == 1.0
    # On held-out audio (1200 frames) every codebook spreads over hundreds of codes.
    usage = codebook_usage(tokenizer.tokenize(heldout))  # measured: n_used 302..479, 6.6..8.6 bits
    assert min(usage["n_used"]) > 200, usage
    assert min(usage["entropy_bits"]) > 5.5, usage


def test_fit_is_reproducible(corpus, fitted, tmp_path):
    """Same seed, same checkpoint: the seed fixes encoder weights, crops and k-means."""
    again = tmp_path / "again.pt"
    fit_codebooks(corpus[:4], again, n_q=2, seed=0, max_frames=300)
    other = tmp_path / "other.pt"
    fit_codebooks(corpus[:4], other, n_q=2, seed=0, max_frames=300)
    a = torch.load(again, weights_only=True)["state_dict"]
    b = torch.load(other, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the seed-0 encoder is the same as in the 8-codebook fit
    full = torch.load(fitted[0], weights_only=True)["state_dict"]
    assert torch.equal(a["encoder.model.0.conv.conv.weight_v"], full["encoder.model.0.conv.conv.weight_v"])


def test_smaller_codebooks(corpus, tmp_path, heldout):
    """Fitted codebooks may have K < 1024 entries (small runs): tokens then lie in [0, K)."""
    path = tmp_path / "k64.pt"
    summary = fit_codebooks(corpus[:4], path, n_q=2, k=64, seed=0, max_frames=300)
    assert summary["n_used"] == [64, 64]
    assert torch.load(path, weights_only=True)["codebook_size"] == 64
    tok = EncodecTokenizer(path, n_q=2)
    assert tok.codebook_size == 64 and tok.codebooks[1]._codebook.embed.shape == (64, 128)
    tokens = tok.tokenize(heldout)
    assert tokens.shape == (4, 2, 300) and int(tokens.max()) < 64
    assert min(codebook_usage(tokens)["n_used"]) > 32  # measured 64, 64
    with pytest.raises(ValueError, match="codebook size"):
        fit_codebooks(corpus[:1], tmp_path / "big.pt", k=2048)


def test_kmeans_with_fewer_points_than_codes():
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    centroids, sizes = kmeans(x, 8, generator=torch.Generator().manual_seed(0))
    assert centroids.shape == (8, 2) and int(sizes.sum()) == 3
    assert int((sizes > 0).sum()) == 3  # the 3 points keep their own codes, the rest are dead
    assert torch.isfinite(centroids).all()
    # every point is reproduced exactly by its code
    d = torch.cdist(x, centroids).min(dim=1).values
    assert float(d.max()) == 0.0


def test_kmeans_basic_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    centroids, sizes = kmeans(x, 1, generator=g)
    torch.testing.assert_close(centroids[0], x.mean(0))  # one code: the mean
    centroids, sizes = kmeans(x[:64], 64, generator=g)
    assert (sizes == 1).all()  # as many codes as points: every point its own code

    def distortion(c):
        return float(torch.cdist(x, c).min(dim=1).values.pow(2).mean())

    start, _ = kmeans(x, 256, n_iter=0, generator=torch.Generator().manual_seed(1))
    fitted, sizes = kmeans(x, 256, generator=torch.Generator().manual_seed(1))
    assert (sizes > 0).all() and int(sizes.sum()) == 2000  # no dead codes
    assert distortion(fitted) < 0.85 * distortion(start)  # measured ratio 0.77


def test_checkpoint_formats(fitted, tmp_path, heldout):
    """A plain EnCodec state dict (the official format) and the fitted format load alike."""
    model = build_encodec(fitted[0])
    assert not model.training and model.bandwidth == 6.0
    assert all(not p.requires_grad for p in model.parameters())
    plain = tmp_path / "plain.th"
    torch.save(model.state_dict(), plain)
    wav = heldout[:1, : SAMPLE_RATE]
    assert torch.equal(EncodecTokenizer(plain).tokenize(wav), EncodecTokenizer(fitted[0]).tokenize(wav))


def test_bad_checkpoints_name_the_file(tmp_path):
    missing = tmp_path / "nope.th"
    with pytest.raises(FileNotFoundError, match="nope.th"):
        build_encodec(missing)
    corrupt = tmp_path / "corrupt.th"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(RuntimeError, match="corrupt.th"):
        build_encodec(corrupt)
    wrong = tmp_path / "wrong.th"
    torch.save({"encoder.weight": torch.zeros(3)}, wrong)
    with pytest.raises(RuntimeError, match="wrong.th"):
        build_encodec(wrong)


def test_rvq_encode_by_hand():
    """Two 2-d codebooks of two codes; codes and errors worked out on paper."""
    from encodec.quantization.core_vq import ResidualVectorQuantization

    rvq = ResidualVectorQuantization(num_quantizers=2, dim=2, codebook_size=2, kmeans_init=True)
    rvq.layers[0]._codebook.embed.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    rvq.layers[1]._codebook.embed.copy_(torch.tensor([[0.0, 0.0], [-1.0, 0.0]]))
    emb = torch.tensor([[3.0, 0.5], [1.0, 1.0]]).T[None]  # [B=1, D=2, T=2]
    # (3, .5) -> code 1 (4, 0), residual (-1, .5): 1.25 -> code 1 (-1, 0), residual (0, .5): 0.25
    # (1, 1)  -> code 0 (0, 0), residual (1, 1): 2     -> code 0 (0, 0), residual (1, 1): 2
    codes, errors = rvq_encode(rvq.layers, emb)
    assert codes.shape == errors.shape == (1, 2, 2)
    assert codes[0].tolist() == [[1, 0], [1, 0]]
    torch.testing.assert_close(errors[0], torch.tensor([[1.25, 2.0], [0.25, 2.0]], dtype=torch.float64))


def test_rvq_encode_matches_encodec_when_well_conditioned():
    """Same rule as EnCodec's own encode(); only the float precision differs."""
    from encodec.quantization.core_vq import ResidualVectorQuantization

    torch.manual_seed(0)
    rvq = ResidualVectorQuantization(num_quantizers=4, dim=16, codebook_size=64, kmeans_init=False)
    emb = torch.randn(3, 16, 50)
    codes, _ = rvq_encode(rvq.layers, emb)
    assert torch.equal(codes, rvq.encode(emb, n_q=4).transpose(0, 1))


def test_tokens_do_not_depend_on_the_batch(tokenizer, heldout):
    """Float64 distances: batching changes encoder outputs by ~1e-7, which must not flip codes.
    (EnCodec's float32 rule flipped ~5% of the fitted codebooks' codes here.)"""
    wav = heldout[:, : SAMPLE_RATE]
    batched = tokenizer.tokenize(wav)
    single = torch.cat([tokenizer.tokenize(w[None]) for w in wav])
    assert (batched == single).double().mean() > 0.995


def test_estimate_gamma(tokenizer, corpus):
    clips = [c[:SAMPLE_RATE] for c in corpus]  # 1-s clips keep the test fast
    gamma = estimate_gamma(tokenizer, clips, n_clips=6, seed=0)
    assert gamma.shape == (8,)
    assert abs(gamma.sum() - 1.0) < 1e-9
    assert (gamma > 0).all()
    assert (np.diff(gamma) < 0).all(), gamma  # each stage leaves less to quantise
    again = estimate_gamma(tokenizer, clips, n_clips=6, seed=0)
    np.testing.assert_array_equal(gamma, again)


def _write_wavs(tmp_path, seconds: list[float], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i, s in enumerate(seconds):
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, synth_clip(rng, s), SAMPLE_RATE, subtype="PCM_16")
        paths.append(str(p))
    return paths


def test_tokenize_shard_layout(fitted, tokenizer, tmp_path):
    # 0.5 s (one short chunk), 2.5 s (1 s + 1 s + 0.5 s chunks), 1 s (one full chunk)
    shard_dir = tmp_path / "shard"
    write_shard(_write_wavs(tmp_path, [0.5, 2.5, 1.0], seed=2), shard_dir)
    shard = Shard.open(shard_dir)
    out = tmp_path / "tokens.npy"
    tokens = tokenize_shard(shard_dir, fitted[0], out, n_q=8, batch_size=1, chunk_seconds=1.0)
    assert tokens.dtype == np.int16 and tokens.shape == (8, shard.n_frames)
    np.testing.assert_array_equal(load_targets(out, shard), tokens)
    for i, row in shard.manifest.iterrows():
        f0, nf = row.offset // HOP, row.n_samples // HOP
        clip = torch.from_numpy(shard.clip(i))
        expected = torch.cat([tokenizer.tokenize(c[None])[0] for c in clip.split(SAMPLE_RATE)], dim=1)
        assert expected.shape == (8, nf)  # exactly n_samples // 320 frames per clip
        np.testing.assert_array_equal(tokens[:, f0 : f0 + nf], expected.numpy())
    with pytest.raises(ValueError, match="multiple of 320"):
        tokenize_shard(shard_dir, fitted[0], tmp_path / "x.npy", chunk_seconds=0.01)


def test_commands(fitted, tmp_path, capsys):
    shard_dir = tmp_path / "shard"
    write_shard(_write_wavs(tmp_path, [1.0, 2.5], seed=3), shard_dir)
    lengths = [SAMPLE_RATE, 60_000 // HOP * HOP]  # write_shard trims 2.5 s to whole frames
    assert [len(c) for c in shard_clips([shard_dir])] == lengths
    from encodecmae.targets import codebooks, gamma, tokenize

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (tokenize, gamma, codebooks):
        module.register(sub)

    args = parser.parse_args(["tokenize", "--shard", str(shard_dir), "--checkpoint", str(fitted[0]),
                              "--out", str(tmp_path / "tok.npy"), "--n-q", "4", "--chunk-seconds", "2"])
    args.func(args)
    tokens = load_targets(tmp_path / "tok.npy", Shard.open(shard_dir))
    assert tokens.shape == (4, sum(lengths) // HOP)

    out = tmp_path / "gamma.json"
    args = parser.parse_args(["estimate-gamma", "--shards", str(shard_dir), "--checkpoint", str(fitted[0]),
                              "--out", str(out), "--gamma-clips", "150", "--seed", "1"])
    args.func(args)
    result = json.loads(out.read_text())
    assert result["n_clips"] == 2 and result["n_q"] == 8 and len(result["gamma"]) == 8
    assert abs(sum(result["gamma"]) - 1) < 1e-6
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result

    args = parser.parse_args(["fit-codebooks", "--shards", str(shard_dir), "--out", str(tmp_path / "f.pt"),
                              "--n-q", "2", "--codebook-size", "32", "--fit-max-frames", "150"])
    args.func(args)
    ckpt = torch.load(tmp_path / "f.pt", weights_only=True)
    assert (ckpt["n_q"], ckpt["codebook_size"], ckpt["n_frames"]) == (2, 32, 150)  # one 2-s crop
