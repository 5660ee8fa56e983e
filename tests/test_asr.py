"""The SUPERB ASR evaluation (encodecmae.evaluation.asr): data layout, characters, features,
downstream model, CTC, decoding with and without the LM, training and its resumption."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from encodecmae import CROP_SAMPLES, SAMPLE_RATE
from encodecmae.cli import main as cli_main
from encodecmae.data.audio import load_audio
from encodecmae.evaluation import asr
from encodecmae.training import checkpoints as ckpt_io

V = len(asr.VOCAB)


def cid(c: str) -> int:
    return asr.BLANK if c == "_" else asr.VOCAB.index(c)


# --- fixtures ------------------------------------------------------------------------------------

UTTS = {  # utt_id -> (seconds, transcript); 5.3 s spans two 4-s chunks
    "84-121123-0000": (0.7, "HELLO"),
    "84-121123-0001": (5.3, "IT'S A LONG ONE"),
    "84-121123-0002": (1.3, "GO"),
    "174-50561-0000": (2.1, "A CAT SAT"),
}


def write_librispeech(root, utts=UTTS, sr=16_000):
    """A LibriSpeech-layout split: SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt and UTTID.flac."""
    rng = np.random.default_rng(0)
    chapters: dict = {}
    for utt, (secs, text) in utts.items():
        spk, chap, _ = utt.split("-")
        d = root / spk / chap
        d.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(secs * sr)) / sr
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(d / f"{utt}.flac", wav.astype(np.float32), sr, format="FLAC")
        chapters.setdefault(d / f"{spk}-{chap}.trans.txt", []).append(f"{utt} {text}")
    for path, lines in chapters.items():
        path.write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_librispeech(tmp_path_factory.mktemp("ls") / "dev-clean")


ARPA = """\\data\\
ngram 1=6
ngram 2=6

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.5
-1.0\t</s>\t0
-0.6\tCAT\t-0.3
-0.8\tDOG\t-0.3
-0.9\tSAT\t-0.3

\\2-grams:
-0.2\t<s> CAT
-0.4\t<s> DOG
-0.3\tCAT SAT
-0.3\tDOG SAT
-0.2\tSAT </s>
-0.3\tCAT </s>

\\end\\
"""


def write_lm(tmp_path, lm_case="upper", lex_case="upper"):
    text = ARPA
    if lm_case == "lower":
        for w in ("CAT", "DOG", "SAT"):
            text = text.replace(w, w.lower())
    lm = tmp_path / "lm.arpa"
    lm.write_text(text)
    words = ["CAT", "DOG", "SAT"]
    conv = str.upper if lex_case == "upper" else str.lower
    lex = tmp_path / "lexicon.lst"
    lex.write_text("".join(f"{conv(w)}\t{' '.join(conv(w))} |\n" for w in words))
    return lm, lex


def emissions(frames: list[dict]) -> np.ndarray:
    """log-softmax rows from {char: probability} dicts (the rest share 1e-3)."""
    rows = []
    for p in frames:
        v = np.full(V, 1e-3)
        for c, q in p.items():
            v[cid(c)] = q
        rows.append(np.log(v / v.sum()))
    return np.stack(rows).astype(np.float32)


# --- data layout and characters ------------------------------------------------------------------


def test_read_split_sorted_and_missing_audio_named(split, tmp_path):
    utts = asr.read_split(split)
    assert [u for u, _, _ in utts] == sorted(UTTS)
    assert all(p.exists() and p.name == f"{u}.flac" for u, p, _ in utts)
    assert {u: t for u, _, t in utts} == {u: t for u, (_, t) in UTTS.items()}
    bad = write_librispeech(tmp_path / "bad", {"1-2-0000": (0.5, "A")})
    (bad / "1" / "2" / "1-2.trans.txt").write_text("1-2-0000 A\n1-2-0001 B\n")
    with pytest.raises(FileNotFoundError, match=r"1-2\.trans\.txt:2: utterance 1-2-0001 has no audio .*1-2-0001\.flac"):
        asr.read_split(bad)
    with pytest.raises(FileNotFoundError, match="split folder not found"):
        asr.read_split(tmp_path / "nowhere")


def test_read_split_without_transcripts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.trans.txt"):
        asr.read_split(tmp_path / "empty")


def test_characters():
    assert asr.VOCAB[0] == "<blank>" and asr.VOCAB[1] == "|" and asr.VOCAB[2] == "'" and len(asr.VOCAB) == 29
    ids = asr.encode("IT'S  A CAT")
    assert ids == [cid(c) for c in "IT'S|A|CAT|"]  # s3prl's targets: every word ends with "|"
    assert asr.decode(ids) == "IT'S A CAT"
    assert asr.decode([0, cid("A"), 0, cid("|"), cid("|"), cid("B"), cid("|")]) == "A B"
    with pytest.raises(ValueError, match=r"'3', 'a'"):
        asr.encode("Ba3")


# --- downstream model ---------------------------------------------------------------------------


def test_layer_mix_is_a_softmax_over_all_layers():
    torch.manual_seed(0)
    m = asr.AsrDownstream(n_layers=3, dim=8, proj=6, hidden=5, specaug=None)
    w = torch.softmax(m.layer_weights, 0)
    assert torch.allclose(w, torch.full((3,), 1 / 3)) and torch.isclose(w.sum(), torch.tensor(1.0))
    feats = torch.stack([torch.full((2, 7, 8), float(v)) for v in (1, 2, 6)], 1)  # [B=2, L=3, T=7, D=8]
    assert torch.allclose(m.mix(feats), torch.full((2, 7, 8), 3.0))  # (1 + 2 + 6) / 3
    with torch.no_grad():
        m.layer_weights.copy_(torch.tensor([0.0, math.log(2.0), 0.0]))  # weights 1/4, 1/2, 1/4
    assert torch.allclose(m.mix(feats), torch.full((2, 7, 8), 1 / 4 + 1 + 6 / 4))
    m.train()
    logits = m(torch.randn(2, 3, 7, 8), torch.tensor([7, 4]))
    assert logits.shape == (2, 7, V)
    logits[0, :7].sum().backward()
    assert (m.layer_weights.grad.abs() > 0).all()  # every layer reaches the output
    assert sum(isinstance(x, asr.BiLSTM) for x in m.lstms) == 2


def test_bilstm_equals_a_packed_bidirectional_lstm():
    # the two directions of asr.BiLSTM on the padded batch give what torch's bidirectional LSTM
    # gives on the packed sequence (the backward direction starts at each utterance's end)
    torch.manual_seed(0)
    ours = asr.BiLSTM(6, 5)
    ref = torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ours.forward_lstm, name).copy_(getattr(ref, name))
            getattr(ours.backward_lstm, name).copy_(getattr(ref, name + "_reverse"))
    x, lengths = torch.randn(3, 9, 6), torch.tensor([9, 4, 6])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=9)
    got = ours(x, lengths)
    assert got.shape == (3, 9, 10)
    assert torch.allclose(got, expected, atol=1e-6)
    assert (got[1, 4:] == 0).all() and (got[2, 6:] == 0).all()  # padding stays zero
    x2 = x.clone()
    x2[1, 4:] = 100.0  # what the padding holds changes nothing
    assert torch.allclose(ours(x2, lengths), got)
    assert torch.equal(asr.reverse_within(x, lengths)[1, :4], x[1, :4].flip(0))
    assert torch.equal(asr.reverse_within(asr.reverse_within(x, lengths), lengths), x)


def test_padding_does_not_change_an_utterance():
    torch.manual_seed(0)
    m = asr.AsrDownstream(2, 8, proj=6, hidden=5).eval()
    x = torch.randn(1, 2, 5, 8)
    alone = m(x, torch.tensor([5]))
    padded = m(torch.cat([x, torch.randn(1, 2, 4, 8)], 2), torch.tensor([5]))
    assert torch.allclose(alone, padded[:, :5], atol=1e-6)


def test_specaugment_masks_and_warp():
    torch.manual_seed(0)
    aug = asr.SpecAugment(asr.SpecAugmentConfig(time_masks=2, time_mask_width=(3, 4), freq_masks=1,
                                                freq_mask_width=(2, 3), warp_window=0)).train()
    x = torch.ones(1, 50, 10)
    y = aug(x, torch.tensor([40]))
    assert (y[0, 40:] == 1).all()  # padding untouched
    assert (y[0, :40] == 0).all(1).sum() in (3, 4, 5, 6)  # two 3-frame time masks (they may overlap)
    assert int((y[0, :40] == 0).all(0).sum()) == 2  # one 2-wide frequency band
    assert torch.equal(aug.eval()(x, torch.tensor([40])), x)  # evaluation: identity
    ramp = torch.arange(30.0)[:, None].repeat(1, 3)
    warped = asr.SpecAugment.time_warp(ramp, 5)
    assert warped.shape == ramp.shape and torch.all(torch.diff(warped[:, 0]) >= 0)  # still monotone
    assert abs(float(warped[0, 0])) < 1.0 and abs(float(warped[-1, 0]) - 29) < 1.0  # ends stay near the ends
    assert torch.equal(warped[:, 0], warped[:, 1])  # the same warp for every feature


def test_bicubic_time_warp_is_espnets():
    # ESPnet's time_warp (s3prl's SpecAugment): the same centre and destination draws, then a
    # bicubic resize of the [t, D] plane with D kept, which leaves each feature's values in place
    x = torch.randn(40, 6)
    torch.manual_seed(0)
    got = asr.SpecAugment.time_warp(x, 5, "bicubic")
    torch.manual_seed(0)
    c = int(torch.randint(5, 35, ()))
    w = int(torch.randint(c - 5, c + 5, ())) + 1
    assert w != c  # this seed warps
    img = x[None, None]  # [1, 1, T, D] as ESPnet's
    left = F.interpolate(img[:, :, :c], (w, 6), mode="bicubic", align_corners=False)
    right = F.interpolate(img[:, :, c:], (40 - w, 6), mode="bicubic", align_corners=False)
    assert torch.equal(got, torch.cat([left, right], 2)[0, 0])
    col = F.interpolate(x[:c].t()[:, None, :, None], (w, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].t()
    assert torch.allclose(got[:w], col, atol=1e-6)  # feature by feature: a resize along time only
    torch.manual_seed(0)
    assert not torch.allclose(asr.SpecAugment.time_warp(x, 5, "linear"), got)  # the two modes differ
    with pytest.raises(ValueError, match="time warp 'cubic'"):
        asr.SpecAugmentConfig(time_warp="cubic")


def test_average_pairs_hand_example():
    x = np.array([[[1.0, 10], [3, 30], [5, 50], [7, 70], [9, 90]]])  # [L=1, T=5, D=2]
    y = asr.average_pairs(x)
    assert y.shape == (1, 3, 2)
    assert np.array_equal(y[0], [[2, 20], [6, 60], [9, 90]])  # the odd last frame alone
    assert asr.average_pairs(x[:, :4]).shape == (1, 2, 2)
    assert torch.equal(asr.average_pairs(torch.from_numpy(x)), torch.from_numpy(y))


# --- CTC, decoding and scoring ------------------------------------------------------------------


def test_ctc_loss_against_brute_force():
    """3 frames, symbols {a, b} plus blank, target "ab": the sum over every path that collapses to it."""
    torch.manual_seed(0)
    lp = torch.randn(3, 3).log_softmax(-1)  # [T, {blank, a, b}]
    target = [1, 2]
    total = 0.0
    for path in itertools.product(range(3), repeat=3):
        if asr.greedy_ids(path) == target:  # collapse repeats, drop blanks
            total += math.exp(sum(float(lp[t, s]) for t, s in enumerate(path)))
    # the 5 alignments: aab, abb, _ab, a_b, ab_
    assert sum(asr.greedy_ids(p) == target for p in itertools.product(range(3), repeat=3)) == 5
    torch_loss = F.ctc_loss(lp[:, None], torch.tensor([target]), torch.tensor([3]), torch.tensor([2]), blank=0,
                            reduction="sum")
    assert abs(float(torch_loss) - (-math.log(total))) < 1e-5
    # asr.ctc_loss: mean over the batch of loss / target length (torch's and s3prl's "mean")
    logits = torch.full((1, 3, V), -1e4)  # the other symbols: probability ~0
    logits[0, :, [0, cid("A"), cid("B")]] = lp
    mine = asr.ctc_loss(logits, torch.tensor([3]), torch.tensor([[cid("A"), cid("B")]]), torch.tensor([2]))
    assert abs(float(mine) - (-math.log(total)) / 2) < 1e-4


def test_greedy_decoding_and_error_rates():
    ids = [cid(c) for c in "AA_B||_CC_C"]
    lp = torch.full((len(ids), V), -10.0)
    lp[torch.arange(len(ids)), torch.tensor(ids)] = 0.0
    assert asr.greedy_decode(lp) == "AB CC"  # repeats merged, blank separates the two Cs
    batch = torch.stack([lp, lp])
    assert asr.greedy_decode(batch, torch.tensor([len(ids), 3])) == ["AB CC", "A"]
    assert asr.wer(["THE CAT SAT"], ["THE CAT SAT ON"]) == pytest.approx(1 / 3)
    assert asr.wer(["THE CAT SAT", "A DOG"], ["THE BAT SAT", "DOG"]) == pytest.approx(2 / 5)
    assert asr.cer(["ABCD"], ["ABXD"]) == pytest.approx(1 / 4)
    assert asr.cer(["AB CD"], [""]) == 1.0  # the all-blank hypothesis


@pytest.mark.parametrize("lm_case,lex_case", [("upper", "upper"), ("upper", "lower"), ("lower", "upper")])
def test_beam_search_prefers_the_lexicon_word(tmp_path, lm_case, lex_case):
    lm, lex = write_lm(tmp_path, lm_case, lex_case)
    # "C {O .55 | A .45} T": greedy spells the non-word COT; the lexicon and LM know only CAT
    em = emissions([{"C": 1}, {"_": 1}, {"O": .55, "A": .45}, {"_": 1}, {"T": 1}, {"|": 1},
                    {"S": 1}, {"A": 1}, {"T": 1}, {"_": 1}])
    assert asr.greedy_decode(torch.from_numpy(em)) == "COT SAT"
    search = asr.LexiconBeamSearch(lm, lex)
    assert search(em) == "CAT SAT"
    assert search.settings == asr.BeamSettings(5, 25.0, 2.0, -1.0, -math.inf, 0.0)
    import gzip  # a gzipped ARPA works too (KenLM reads it, or it is decompressed to a temporary file)

    gz = tmp_path / "lm.arpa.gz"
    gz.write_bytes(gzip.compress(lm.read_bytes()))
    assert asr.arpa_case(gz) == lm_case
    assert asr.LexiconBeamSearch(gz, lex)(em) == "CAT SAT"


# --- features ------------------------------------------------------------------------------------


def test_layer_features_layers_chunks_and_averaging(debug_checkpoint):
    model = ckpt_io.load_model(debug_checkpoint)
    L, D = model.cfg.n_layers, model.cfg.d_model
    wav = 0.1 * np.random.default_rng(0).standard_normal(int(5.3 * SAMPLE_RATE)).astype(np.float32)
    f = asr.layer_features(model, wav)
    n75 = 300 + int(np.ceil((len(wav) - CROP_SAMPLES) / 320))  # 4-s chunk + the rest
    assert f.shape == (L + 1, (n75 + 1) // 2, D) and f.dtype == np.float32
    with torch.no_grad():  # chunk by chunk: the model's own hidden states, averaged in pairs
        parts = [wav[:CROP_SAMPLES], wav[CROP_SAMPLES:]]
        hs = [model.hidden_states(torch.from_numpy(p)[None]) for p in parts]
        last = np.concatenate([h[-1][0].numpy() for h in hs])  # encoder output [T, D]
        block1 = np.concatenate([h[0][0].numpy() for h in hs])  # block 1's post-LN stream
        inp = np.concatenate([model.embed_input(torch.from_numpy(p)[None])[0].numpy() for p in parts])
    assert np.allclose(f[-1], asr.average_pairs(last), atol=1e-5)
    assert np.allclose(f[1], asr.average_pairs(block1), atol=1e-5)
    assert np.allclose(f[0], asr.average_pairs(inp), atol=1e-5)
    assert len(asr.layer_names(L)) == L + 1


def test_layer_mix_released_is_the_authors_per_layer_output(debug_checkpoint):
    # "released": the L block outputs with the last replaced by the encoder output, i.e.
    # EncodecMAE.hidden_states[:L-1] + [hidden_states[-1]] (no input state); "all": L + 1 states
    model = ckpt_io.load_model(debug_checkpoint)
    L = model.cfg.n_layers
    wav = torch.from_numpy(0.1 * np.random.default_rng(1).standard_normal((2, 30_000)).astype(np.float32))
    with torch.no_grad():
        hs = model.hidden_states(wav)  # L + 1: L post-LN block streams, then the encoder output
        released = asr.hidden_states(model, wav, "released")  # [B, S, T, D]
        everything = asr.hidden_states(model, wav, "all")
    assert len(hs) == L + 1 and released.shape[1] == L and everything.shape[1] == L + 1
    for i, h in enumerate([*hs[: L - 1], hs[-1]]):
        assert torch.allclose(released[:, i], h, atol=1e-6), i
    assert torch.equal(everything[:, 1:], released)  # "all" adds the encoder's input in front
    assert torch.allclose(everything[:, 0], model.embed_input(wav), atol=1e-6)
    assert not torch.allclose(released[:, -1], hs[L - 1], atol=1e-3)  # block L's own stream is left out
    names = asr.layer_names(L, "released")
    assert len(names) == L and names[0] == "block 1 output" and names[-1].startswith("encoder output")
    f = asr.layer_features(model, wav[0].numpy(), layer_mix="released")
    assert np.allclose(f, asr.layer_features(model, wav[0].numpy())[1:], atol=1e-6)
    with pytest.raises(ValueError, match="layer mix 'last'"):
        asr.hidden_states(model, wav, "last")


def test_extract_features_writes_the_released_mix(tmp_path, split, debug_checkpoint):
    out = tmp_path / "feats"
    cli_main(["extract-asr-features", "--checkpoint", str(debug_checkpoint), "--split-dir", str(split),
              "--out", str(out), "--device", "cpu", "--layer-mix", "released"])
    data = asr.AsrFeatures(out)
    model = ckpt_io.load_model(debug_checkpoint)
    L = model.cfg.n_layers
    assert data.n_layers == L and data.meta["layer_mix"] == "released"
    assert data.meta["layers"] == asr.layer_names(L, "released")
    feats, _ = data[0]
    ref = asr.layer_features(model, load_audio(asr.read_split(split)[0][1]), layer_mix="released")
    assert feats.shape == ref.shape and np.allclose(feats.astype(np.float32), ref, atol=2e-3, rtol=2e-3)
    net = asr.AsrDownstream(data.n_layers, data.dim, proj=4, hidden=3, lstm_layers=1, specaug=None)
    assert net.layer_weights.shape == (L,)  # the downstream mixes exactly those states


def test_extract_features_blocks_resume_and_reading(tmp_path, split, debug_checkpoint, monkeypatch):
    out = tmp_path / "feats"
    real = asr.features._block_features
    calls = []

    def interrupted(*a, **k):  # the job is killed while computing its second block
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(asr.features, "_block_features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        asr.extract_features(debug_checkpoint, split, out, block_seconds=1.0)
    assert not out.exists() and len(list((tmp_path / "feats.parts").glob("feats-*.npy"))) == 1
    calls.clear()
    monkeypatch.setattr(asr.features, "_block_features", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    asr.extract_features(debug_checkpoint, split, out, block_seconds=1.0)  # resumes
    n_blocks = len(list(out.glob("feats-*.npy")))
    assert n_blocks == 3 and len(calls) == n_blocks - 1  # blocks: [0.7, 5.3], [1.3], [2.1] s, sorted by utt_id
    assert not (tmp_path / "feats.parts").exists() and not list(out.glob("frames-*"))
    ref = tmp_path / "ref"
    asr.extract_features(debug_checkpoint, split, ref, block_seconds=1.0)  # uninterrupted
    for b in range(n_blocks):
        assert np.array_equal(np.load(out / asr.feature_file(b)), np.load(ref / asr.feature_file(b)))
    assert (out / "index.tsv").read_text() == (ref / "index.tsv").read_text()

    data = asr.AsrFeatures(out)
    model = ckpt_io.load_model(debug_checkpoint)
    L1, D = model.cfg.n_layers + 1, model.cfg.d_model
    assert (data.n_layers, data.dim, len(data)) == (L1, D, len(UTTS))
    assert data.meta["frame_rate"] == 37.5 and data.meta["dtype"] == "float16"
    assert np.load(out / asr.feature_file(0), mmap_mode="r").dtype == np.float16
    utts = asr.read_split(split)
    for i, (utt, path, text) in enumerate(utts):
        feats, ids = data[i]
        wav = load_audio(path)
        n75 = int(np.ceil(len(wav) / 320))
        assert data.utt_ids[i] == utt and asr.decode(ids) == text
        assert feats.shape == (L1, (n75 + 1) // 2, D) and feats.dtype == np.float16
        mem = asr.layer_features(model, wav)  # computed in memory, one utterance alone
        assert np.allclose(feats.astype(np.float32), mem, atol=2e-3, rtol=2e-3)


def test_extract_features_names_bad_input(tmp_path, split, debug_checkpoint):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        asr.extract_features(tmp_path / "nope.pt", split, tmp_path / "f")
    with pytest.raises(SystemExit, match="split folder not found"):
        cli_main(["extract-asr-features", "--checkpoint", str(debug_checkpoint), "--split-dir",
                  str(tmp_path / "missing"), "--out", str(tmp_path / "f"), "--device", "cpu"])
    lower = write_librispeech(tmp_path / "lower", {"1-2-0000": (0.3, "hello")})
    with pytest.raises(ValueError, match=r"1-2-0000.*'e'"):
        asr.extract_features(debug_checkpoint, lower, tmp_path / "f")


# --- training ------------------------------------------------------------------------------------

WORDS = ["CAT", "DOG", "SAT", "A", "GO", "TO"]


def synthetic_features(root, n: int, seed: int, dim: int = 32):
    """Features that spell the transcript: layer 0 holds a one-hot of each character for 2 frames
    with a blank-like frame after it (+ noise), layer 1 noise only."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        text = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
        ids = asr.encode(text)
        T = 3 * len(ids)
        f = 0.3 * rng.standard_normal((2, T, dim)).astype(np.float32)
        for j, c in enumerate(ids):
            f[0, 3 * j : 3 * j + 2, c] += 3.0
            f[0, 3 * j + 2, 0] += 3.0
        items.append((f"{k:04d}", text, f))
    return asr.write_feature_dir(root, items)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return synthetic_features(root / "train", 48, 0), synthetic_features(root / "dev", 12, 1)


@pytest.fixture(autouse=True)
def one_thread():
    """Training runs on one thread (train_asr's ``threads``; two threads of a tiny LSTM on a shared
    2-core machine are 20x slower); the process's setting is restored afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_learns_a_synthetic_problem(tmp_path, synthetic):
    train, dev = synthetic
    out = tmp_path / "asr.pt"
    asr.train_asr(train, dev, out, tmp_path / "ckpt", steps=150, batch_size=8, lr=1e-2, eval_every=75, seed=0,
                  proj=32, hidden=32, specaug=None, log_every=25, metrics=tmp_path / "m.csv", threads=1)
    rows = read_metrics(tmp_path / "m.csv")
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100, 125, 150]
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    wers = [float(r["dev_wer"]) for r in rows if r["dev_wer"]]
    assert len(wers) == 2
    model, payload = asr.load_downstream(out)
    assert payload["dev_wer"] == min(wers) and payload["step"] in (75, 150) and payload["vocab"] == list(asr.VOCAB)
    assert asr.evaluate_greedy(model, asr.AsrFeatures(dev), "cpu") == pytest.approx(payload["dev_wer"])
    assert payload["dev_wer"] < 0.2
    assert len(ckpt_io.list_checkpoints(tmp_path / "ckpt")) == 2  # the newest two are kept


def test_two_runs_write_the_same_checkpoint_bytes(tmp_path, synthetic):
    # the checkpoints hold the global Python and numpy generator states: train_asr seeds them, so
    # they do not depend on what ran before in the process (or on the process's random start)
    import random

    train, dev = synthetic
    kw = {"steps": 2, "batch_size": 4, "eval_every": 2, "seed": 1, "proj": 8, "hidden": 4, "threads": 1}
    for run in ("a", "b"):
        random.random(), np.random.random()  # a different global state before each run
        asr.train_asr(train, dev, tmp_path / run / "asr.pt", tmp_path / run / "ckpt", **kw)
    a, b = (tmp_path / run / "ckpt" / "step_0000002.pt" for run in "ab")
    assert a.read_bytes() == b.read_bytes()


def test_resumed_training_is_bitwise_identical(tmp_path, synthetic, monkeypatch):
    from encodecmae.training import loop

    train, dev = synthetic
    kw = {"steps": 6, "batch_size": 4, "lr": 1e-3, "eval_every": 3, "seed": 3, "proj": 16, "hidden": 8,
          "log_every": 1, "threads": 1}
    asr.train_asr(train, dev, tmp_path / "a.pt", tmp_path / "ca", metrics=tmp_path / "a.csv", **kw)

    class StopAt4(loop.Stopper):  # a job killed (SIGTERM) after step 4: checkpoint at 4, exit 75
        def now(self, run):
            self.reason = "test"
            return StopAt4.step == 4

    real_seed = asr.step_seed

    def counting(seed, step):
        StopAt4.step = step
        return real_seed(seed, step)

    real_stopper = loop.Stopper
    monkeypatch.setattr(asr.training, "step_seed", counting)
    monkeypatch.setattr(loop, "Stopper", StopAt4)
    with pytest.raises(SystemExit) as exc:
        asr.train_asr(train, dev, tmp_path / "b.pt", tmp_path / "cb", metrics=tmp_path / "b.csv", **kw)
    assert exc.value.code == loop.EXIT_CONTINUE and not (tmp_path / "b.pt").exists()
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path / "cb")] == ["step_0000003.pt", "step_0000004.pt"]
    import shutil

    shutil.copytree(tmp_path / "cb", tmp_path / "cc")  # resumed from the stop's own checkpoint (step 4)
    (tmp_path / "b.csv").unlink()  # a workflow deletes a stopped job's outputs: the rows are in the checkpoint
    (tmp_path / "cb" / "step_0000004.pt").unlink()  # killed before that checkpoint: resume from step 3
    with pytest.raises(FileExistsError, match="--resume"):
        asr.train_asr(train, dev, tmp_path / "b.pt", tmp_path / "cb", metrics=tmp_path / "b.csv", **kw)
    with pytest.raises(ValueError, match="different settings.*lr"):
        asr.train_asr(train, dev, tmp_path / "b.pt", tmp_path / "cb", metrics=tmp_path / "b.csv", resume=True,
                      **{**kw, "lr": 1e-2})
    StopAt4.step = None
    monkeypatch.setattr(loop, "Stopper", real_stopper)
    for r in "bc":
        asr.train_asr(train, dev, tmp_path / f"{r}.pt", tmp_path / f"c{r}", metrics=tmp_path / f"{r}.csv",
                      resume=True, **kw)

    def load(path):
        return torch.load(path, weights_only=False)

    a = load(tmp_path / "a.pt")
    last_a = load(tmp_path / "ca" / "step_0000006.pt")
    for r in "bc":
        b = load(tmp_path / f"{r}.pt")
        assert a["step"] == b["step"] and a["dev_wer"] == b["dev_wer"]
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), k
        last_b = load(tmp_path / f"c{r}" / "step_0000006.pt")
        for k in last_a["model"]:
            assert torch.equal(last_a["model"][k], last_b["model"][k]), k
        for k, v in last_a["optimizer"]["state"].items():
            assert all(torch.equal(v[x], last_b["optimizer"]["state"][k][x]) for x in v)
        assert (tmp_path / "a.csv").read_text() == (tmp_path / f"{r}.csv").read_text()
    (tmp_path / "b.pt").unlink()  # a finished run whose model file went missing: written again, no step taken
    asr.train_asr(train, dev, tmp_path / "b.pt", tmp_path / "cb", metrics=tmp_path / "b.csv", resume=True, **kw)
    assert all(torch.equal(a["model"][k], load(tmp_path / "b.pt")["model"][k]) for k in a["model"])
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert len(read_metrics(tmp_path / "a.csv")) == 6


# --- decoding a test set -------------------------------------------------------------------------


def test_decode_asr_end_to_end(tmp_path, synthetic):
    train, dev = synthetic
    model = tmp_path / "asr.pt"
    assert cli_main(["train-asr", "--train", str(train), "--dev", str(dev), "--out", str(model), "--ckpt-dir",
                     str(tmp_path / "ckpt"), "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--proj", "16",
                     "--hidden", "8", "--device", "cpu", "--threads", "1", "--workers", "0", "--metrics",
                     str(tmp_path / "m.csv")]) == 0
    lm, lex = write_lm(tmp_path)
    out = tmp_path / "res" / "test.json"
    rc = cli_main(["decode-asr", "--model", str(model), "--features", str(dev), "--lm", str(lm), "--lexicon",
                   str(lex), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("wer_greedy", "wer_lm", "cer_greedy", "cer_lm", "n_utterances", "cer_all_blank"):
        assert key in res, key
    assert res["n_utterances"] == 12 and res["cer_all_blank"] == 1.0
    assert res["settings"]["beam"] == 5 and res["settings"]["lm_weight"] == 2.0
    lines = asr.hypotheses_path(out).read_text().splitlines()
    assert lines[0] == "utt_id\treference\tgreedy\tlm" and len(lines) == 13
    # every LM hypothesis is made of lexicon words
    assert all(set(line.split("\t")[3].split()) <= {"CAT", "DOG", "SAT"} for line in lines[1:])
    with pytest.raises(SystemExit, match="nothere.pt: ASR model not found"):
        cli_main(["decode-asr", "--model", str(tmp_path / "nothere.pt"), "--features", str(dev), "--lm", str(lm),
                  "--lexicon", str(lex), "--out", str(out)])
    with pytest.raises(SystemExit, match="nolm.arpa: language model not found"):
        cli_main(["decode-asr", "--model", str(model), "--features", str(dev), "--lm", str(tmp_path / "nolm.arpa"),
                  "--lexicon", str(lex), "--out", str(out), "--device", "cpu"])


def test_paper_configuration_runs_superb_asr_as_s3prl():
    # superb_asr_protocol.md: 16 utterances per step in effect, the authors' L layer outputs mixed,
    # ESPnet's bicubic time warp; the schema's choices are the library's, its defaults the CLI's
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((repo / "config" / "paper.yaml").read_text())["asr"]
    assert (paper["batch_size"], paper["layer_mix"], paper["time_warp"]) == (16, "released", "bicubic")
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["asr"]["properties"]
    assert props["batch_size"]["default"] == asr.DEFAULT_BATCH_SIZE == 16
    assert tuple(props["layer_mix"]["enum"]) == asr.LAYER_MIXES and props["layer_mix"]["default"] == asr.DEFAULT_LAYER_MIX
    assert tuple(props["time_warp"]["enum"]) == asr.TIME_WARPS
    assert props["time_warp"]["default"] == asr.SpecAugmentConfig().time_warp
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    asr.register(sub)
    train = sub.choices["train-asr"].parse_args(["--train", "t", "--dev", "d", "--out", "o", "--ckpt-dir", "c",
                                                  "--metrics", "m"])
    assert train.batch_size == 16 and train.time_warp == props["time_warp"]["default"]
    extract = sub.choices["extract-asr-features"].parse_args(["--checkpoint", "c", "--split-dir", "s", "--out", "o"])
    assert extract.layer_mix == props["layer_mix"]["default"]
