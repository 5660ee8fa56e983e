"""Importing the authors' v2 release (the paper's models): a state dict of the documented layout
(tests/released_reference.py, random weights) converts into our model, whose embeddings, training
logits and targets equal an independent re-implementation of the authors' forward pass; the HEAR
wrapper behaves as theirs; bad layouts are refused with the keys named. v1: test_released_v1.py."""

import numpy as np
import pytest
import torch

from encodecmae import cli
from encodecmae.evaluation import hear
from encodecmae.model.config import ModelConfig
from encodecmae.model.released import ConversionError, convert, import_released, load_released, parse_gin
from encodecmae.model.transformer import EncodecMAE
from encodecmae.training import checkpoints as ckpt_io
from released_reference import (gin_text, reference_codes, reference_hidden, reference_logits,
                                released_state_dict)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape
    return float((got - want).abs().max() / want.abs().max())


def assert_hidden_match(model, sd, release, n_heads, n_enc, wav, n_feat=256):
    """Every returned layer (the L blocks and the final output) within 1e-5 relative, the frames
    past N // 320 computed but not attended to (the released padding mask)."""
    want_final, want_blocks = reference_hidden(wav, sd, release, n_heads, n_enc, n_feat)
    with torch.no_grad():
        got = model.hidden_states(wav, torch.full((len(wav),), wav.shape[1] // 320), exact_length=True)
    assert len(got) == n_enc + 1
    for i, (g, w) in enumerate(zip(got, want_blocks + [want_final])):
        assert rel_err(g, w) < 1e-5, i


def assert_logits_match(model, sd, release, n_heads, n_enc, n_feat=256):
    """The training pass, with the same number of frames masked in both clips, so the decoder,
    head and positions are checked: on a 4-s crop for mel input (300 frames: the released mel
    framing gives 300 too), on 1 s for EnCodec input (75 frames, quicker)."""
    torch.manual_seed(5)
    n = 300 if model.cfg.input.startswith("mel") else 75
    wav = 0.1 * torch.randn(2, 320 * n)
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[0, 10:40], mask[1, 20:35], mask[1, 50:65] = True, True, True
    want = reference_logits(wav, mask, sd, release, n_heads, n_enc, n_feat)
    with torch.no_grad():
        got = model(wav, torch.tensor([n, n]), mask)
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("d_model,n_heads", [(64, 4), (100, 12)])
def test_v2_mel_model_equals_the_authors_forward(d_model, n_heads):
    """mel256 input, per-stack positional scales; (100, 12): 12 heads of 8, a 96-wide attention,
    as the large model's 12 heads of 85 (1020 wide) for D=1024."""
    sd = released_state_dict("v2", d_model=d_model, n_heads=n_heads, n_enc=3)
    model = convert(sd, gin_text(d_model, 3, n_heads))
    c = model.cfg
    assert (c.input, c.n_layers, c.d_model, c.n_heads, c.n_streams, c.positions, c.feedforward, c.mask_token) == \
        ("mel256", 3, d_model, n_heads, 8, "per_stack", "shared", "zeros")
    assert model.encoder.blocks[0].attn.out.weight.shape == (d_model, n_heads * (d_model // n_heads))
    assert model.enc_pos.scale.item() == pytest.approx(0.7) and model.dec_pos.scale.item() == pytest.approx(1.3)
    torch.manual_seed(0)
    # 1.3 s + 77 samples: Kaldi gives 98 frames, of which N // 320 = 97 are attended to
    assert_hidden_match(model, sd, "v2", n_heads, 3, 0.1 * torch.randn(2, 31_277))
    assert_logits_match(model, sd, "v2", n_heads, 3)


def test_v2_mel128_and_encodec_input():
    sd = released_state_dict("v2", n_feat=128, seed=1)
    model = convert(sd, gin_text(64, 2, 4, mel_bins=128))
    assert model.cfg.input == "mel128"
    torch.manual_seed(1)
    assert_hidden_match(model, sd, "v2", 4, 2, 0.1 * torch.randn(1, 24_000), n_feat=128)

    sd = released_state_dict("v2", encodec_input=True, seed=2)
    model = convert(sd, gin_text(64, 2, 4, mel_bins=None))
    assert model.cfg.input == "encodec"
    wav = 0.1 * torch.randn(2, 24_100)  # not whole hops: EnCodec pads the last one itself
    assert_hidden_match(model, sd, "v2", 4, 2, wav)
    # the file's EnCodec encoder and first 8 codebooks are the front end's: the targets are the file's
    assert torch.equal(model.frontend.tokenizer.tokenize(wav[:, :24_000]), reference_codes(wav[:, :24_000], sd, "v2"))


def test_v2_self_training_model_has_one_stream():
    sd = released_state_dict("v2", n_streams=1, targets=False, seed=3)  # IdentityTarget: no target EnCodec
    model = convert(sd, gin_text(64, 2, 4, n_streams=1))
    assert model.cfg.n_streams == 1 and model.head.weight.shape == (1024, 64)
    assert_logits_match(model, sd, "v2", 4, 2)


def test_the_large_model_has_12_heads_of_85():
    with torch.device("meta"):
        model = EncodecMAE(ModelConfig.from_size("large", feedforward="shared"))
    attn = model.encoder.blocks[0].attn
    assert (model.cfg.n_heads, attn.head_dim) == (12, 85)
    assert attn.qkv.weight.shape == (3 * 1020, 1024) and attn.out.weight.shape == (1024, 1020)
    with pytest.raises(ValueError, match="n_heads=13"):
        ModelConfig(d_model=12, n_heads=13)


def test_gin_text_is_read_as_written():
    b = parse_gin(gin_text(768, 10) + "\nencodecmae.models.EncodecMAE:\n    head = @Head\nx.y += [3]\nx.y += [4]\n")
    assert b["NUM_ENCODER_HEADS"] == "12" and b["encoder/MultiHeadAttention.num_heads"] == "%NUM_ENCODER_HEADS"
    assert b["QUANTIZER_WEIGHTS"].startswith("[0.22407463,") and b["QUANTIZER_WEIGHTS"].endswith("0.06589669]")
    assert b["encodecmae.models.EncodecMAE.head"] == "@Head" and b["x.y"] == "[3, 4]"


def test_unknown_or_inconsistent_layouts_are_refused_by_name():
    sd = released_state_dict("v2")
    text = gin_text(64, 2, 4)
    missing = {k: v for k, v in sd.items() if k != "visible_encoder.encoder_layers.1.norm2.bias"}
    with pytest.raises(ConversionError, match=r"missing 1 key\(s\): visible_encoder\.encoder_layers\.1\.norm2\.bias"):
        convert(missing, text)
    extra = {**sd, "visible_encoder.encoder_layers.0.att_layer.wq.bias": torch.zeros(64)}
    with pytest.raises(ConversionError, match=r"unexpected 1 key\(s\): visible_encoder\.encoder_layers\.0\.att_layer"):
        convert(extra, text)
    partial_targets = {k: v for k, v in sd.items() if "vq.layers.31." not in k}
    with pytest.raises(ConversionError, match=r"missing 4 key\(s\): target_encoder\.model\.vq\.layers\.31\."):
        convert(partial_targets, text)
    with pytest.raises(ConversionError, match=r"neither feat_projector.weight \(v1\) nor wav_encoder.post_net"):
        convert({"something": torch.zeros(1)})
    with pytest.raises(ConversionError, match="without its 'config' gin text"):
        convert(sd)
    with pytest.raises(ConversionError, match="WavEncoder.encoder = @encodecmae.models.encoders.EncodecEncoder, but "
                                              "the weights are a mel256 model"):
        convert(sd, gin_text(64, 2, 4, mel_bins=None))
    with pytest.raises(ConversionError, match=r"frame_shift = 10.0; the released mel framing"):
        convert(sd, gin_text(64, 2, 4, frame_shift=10.0))
    with pytest.raises(ConversionError, match=r"num_mel_bins = 128, but wav_encoder.post_net.weight takes 256"):
        convert(sd, gin_text(64, 2, 4, mel_bins=128))
    with pytest.raises(ConversionError, match=r"wq.weight is \(64, 64\): 12 heads of 5 need \(60, 64\)"):
        convert(sd, gin_text(64, 2, 12))
    with pytest.raises(ConversionError, match=r"NUM_ENCODER_LAYERS = 3, but the weights have 2"):
        convert(sd, gin_text(64, 3, 4))
    with pytest.raises(ConversionError, match=r"not a multiple of 1024 classes"):
        convert({**sd, "head.layer.weight": sd["head.layer.weight"][:-1]}, text)


def test_import_writes_a_model_file_that_embeds_as_the_authors_wrapper(tmp_path, capsys):
    """The command line the rule runs; the HEAR wrapper then chunks as the authors' v2 wrapper:
    a trailing piece of 2048 samples or fewer is dropped, and layer="all" is the L block
    outputs with the last replaced by the final output."""
    sd = released_state_dict("v2", n_enc=3)
    path = tmp_path / "mel256-ec-debug.pt"
    torch.save({"state_dict": sd, "config": gin_text(64, 3, 4), "imports": "torch.nn: torch.nn\n"}, path)
    assert load_released(path)[1].startswith("# Macros")
    out = tmp_path / "out" / "model.pt"
    cli.main(["import-released", "--checkpoint", str(path), "--out", str(out), "--name", "mel256-ec-debug",
              "--url", "http://127.0.0.1/mel256-ec-debug.pt"])
    log = capsys.readouterr().out
    assert "v2 release, input mel256, custom (3 x 64, 4 heads of 16), feed-forward shared, positions per_stack" in log
    assert "target codebooks 0-7 (target_encoder.model.vq.layers.*._codebook.embed): sha256 " in log
    ckpt = ckpt_io.load(out)
    assert ckpt["config"]["released"]["release"] == "v2" and len(ckpt["provenance"]["released_sha256"]) == 64

    torch.manual_seed(4)
    wav = 0.1 * torch.randn(2, 96_000 + 2049)
    final = hear.load_model(str(out), sample_rate=24_000)
    emb, ts = hear.get_timestamp_embeddings(wav[:, :96_000 + 2048], final)
    want_final, want_blocks = reference_hidden(wav[:, :96_000], sd, "v2", 4, 3)
    assert emb.shape == (2, 300, 64) and ts.shape == (2, 300) and rel_err(emb, want_final) < 1e-5
    layers = hear.load_model(str(out), sample_rate=24_000, layer="all")
    # 2049 samples: one more chunk, of 1 + (2049 - 637) // 318 = 5 frames
    emb = hear.get_timestamp_embeddings(wav, layers)[0]
    assert emb.shape == (2, 3, 305, 64)
    for i, want in enumerate(want_blocks[:2] + [want_final]):
        assert rel_err(emb[:, i, :300], want) < 1e-5, i
    assert hear.get_scene_embeddings(wav, layers).shape == (2, 3, 64)
    with pytest.raises(ValueError, match="embeds nothing shorter than 2049"):
        hear.get_scene_embeddings(wav[:, :2048], final)


def test_workflow_downloads_converts_and_embeds_a_released_model(tmp_path):
    """The DAG's released rows: the checkpoint comes from a server on 127.0.0.1 (checksum
    verified), is converted, and the HEAR rules embed a task with it like any trained model."""
    import hashlib

    from workflow_helpers import edited_config, serve_directory, snakemake

    www = tmp_path / "www"
    www.mkdir()
    torch.save({"state_dict": released_state_dict("v2"), "config": gin_text(64, 2, 4), "imports": ""},
               www / "model.pt")
    digest = hashlib.sha256((www / "model.pt").read_bytes()).hexdigest()
    work = tmp_path / "work"
    with serve_directory(www) as url:
        def edit(cfg, sha=digest):
            cfg["released"] = {"debug": {"url": f"{url}/model.pt", "sha256": sha}}
            cfg["experiments"].append({"name": "released_debug", "label": "Released debug", "released": "debug",
                                       "size": "debug", "paper_line": 4})
        config = edited_config(tmp_path, edit)
        target = "results/embeddings/released_debug/pitch.npz"
        snakemake(work, "--cores", "2", target, config=config)
        bad = edited_config(tmp_path, lambda cfg: edit(cfg, sha="0" * 64))
        (work / "data" / "released" / "debug" / "model.pt").unlink()
        res = snakemake(work, "--cores", "1", "data/released/debug/model.pt", config=bad, check=False)
    assert res.returncode != 0
    assert "checksum mismatch" in (work / "data" / "logs" / "download_released" / "debug.log").read_text()
    emb = np.load(work / target)
    model = ckpt_io.load_model(work / "results" / "models" / "released_debug" / "model.pt")
    assert model.cfg.feedforward == "shared" and model.cfg.mel_framing == "released"
    splits = [k for k in emb.files if k.startswith("emb_")]
    assert splits and all(emb[k].shape[1] == 64 and np.isfinite(emb[k]).all() for k in splits)
    log = (work / "results" / "logs" / "import_released" / "released_debug.log").read_text()
    assert f"sha256 {digest}" in log and "feed-forward shared" in log


def test_codebook_report_compares_the_targets_with_the_pretrained_encodec(tmp_path):
    """Whether the file's target codebooks are the pretrained EnCodec's (frozen targets) or
    drifted by EMA in training (implementation_notes.md, "Targets and loss")."""
    from encodecmae.model.released import codebook_report

    sd = released_state_dict("v2")
    pretrained = {f"quantizer.vq.layers.{q}._codebook.embed": sd[f"target_encoder.model.vq.layers.{q}._codebook.embed"]
                  for q in range(32)}
    torch.save(pretrained, tmp_path / "encodec.th")
    same = codebook_report(sd, tmp_path / "encodec.th")
    assert "encodec.th's" in same and "equal to" in same
    pretrained["quantizer.vq.layers.3._codebook.embed"] = pretrained["quantizer.vq.layers.3._codebook.embed"].clone()
    pretrained["quantizer.vq.layers.3._codebook.embed"][[5, 9]] += 0.5
    torch.save(pretrained, tmp_path / "encodec.th")
    assert "differ from" in codebook_report(sd, tmp_path / "encodec.th")
    assert "in 2 of 8192 codewords (max |difference| 0.5)" in codebook_report(sd, tmp_path / "encodec.th")
    st = {k: v for k, v in sd.items() if not k.startswith("target_encoder.")}
    assert codebook_report(st).startswith("target codebooks: none in the file")
    key = "target_encoder.model.vq.layers.7._codebook.embed"  # the digest covers the 8 target codebooks
    assert codebook_report(sd) != codebook_report({**sd, key: sd[key] + 1e-3})
    key = "target_encoder.model.vq.layers.8._codebook.embed"  # ... and only them
    assert codebook_report(sd) == codebook_report({**sd, key: sd[key] + 1e-3})
