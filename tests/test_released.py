"""Importing the authors' released checkpoints: a state dict in the released layout (built here
from the layout documented in encodecmae.model.released) converts into our model and gives the
same embeddings; the head permutation matches the released attention; bad layouts are refused."""

import math

import numpy as np

import pytest
import torch

from encodecmae.model.config import ModelConfig
from encodecmae.model.released import (ConversionError, convert, head_permutation, import_released,
                                       load_released_state_dict)
from encodecmae.model.transformer import EncodecMAE
from encodecmae.training import checkpoints as ckpt_io

RELEASED = dict(mask_token="zeros", feedforward="shared", mel_framing="released", positions="shared")


def released_model(seed=0, **overrides) -> EncodecMAE:
    torch.manual_seed(seed)
    model = EncodecMAE(ModelConfig.from_size("debug", **{**RELEASED, **overrides}))
    with torch.no_grad():  # weights off their init values (LayerNorms 1/0, scales 1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def to_released_layout(model: EncodecMAE, extra_head_streams: int = 0) -> dict[str, torch.Tensor]:
    """The released code's state dict for our model's weights, written from the documented layout:
    module names of the released code and its head-interleaved attention projections."""
    cfg, sd = model.cfg, model.state_dict()
    H, D = cfg.n_heads, cfg.d_model
    dh = D // H
    # released feature d * H + h is our h * dh + d
    theirs_from_ours = torch.tensor([(f % H) * dh + f // H for f in range(D)])
    out = {"feat_projector.weight": sd["in_proj.weight"], "feat_projector.bias": sd["in_proj.bias"],
           "positional_encoder.scale": sd["enc_pos.scale"],
           "decoder_projector.weight": sd["enc_to_dec.weight"], "decoder_projector.bias": sd["enc_to_dec.bias"]}
    rows = cfg.n_classes * (cfg.n_streams - extra_head_streams)
    out["head.layer.weight"], out["head.layer.bias"] = sd["head.weight"][:rows], sd["head.bias"][:rows]
    if extra_head_streams:
        out["extra_head.layer.weight"], out["extra_head.layer.bias"] = sd["head.weight"][rows:], sd["head.bias"][rows:]
    for ours, theirs, n in (("encoder", "visible_encoder", cfg.n_layers), ("decoder", "decoder", cfg.dec_layers)):
        shared_ff = None
        for i in range(n):
            src, dst = f"{ours}.blocks.{i}.", f"{theirs}.encoder_layers.{i}."
            q, k, v = sd[src + "attn.qkv.weight"].chunk(3)
            for name, w in (("wq", q), ("wk", k), ("wv", v)):
                out[dst + f"att_layer.{name}.weight"] = w[theirs_from_ours]
            out[dst + "att_layer.wo.weight"] = sd[src + "attn.out.weight"][:, theirs_from_ours]
            ff = {f"ff_layer.{j}.{p}": sd[src + f"ff.{j}.{p}"] for j in (0, 2) for p in ("weight", "bias")}
            if cfg.feedforward == "shared":  # one tensor listed under every layer, as torch.save stores it
                shared_ff = shared_ff or ff
                ff = shared_ff
            out.update({dst + k_: v_ for k_, v_ in ff.items()})
            for mine, norm in (("ln_attn", "norm1"), ("ln_ff", "norm2")):
                for p in ("weight", "bias"):
                    out[dst + f"{norm}.{p}"] = sd[src + f"{mine}.{p}"]
        for p in ("weight", "bias"):
            out[f"{theirs}.final_norm.{p}"] = sd[f"{ours}.ln_out.{p}"]
    # frozen modules of the released code, which the conversion skips
    out["target_encoder.model.vq.layers.0._codebook.embed"] = torch.randn(1024, 128)
    out["target_encoder.model.vq.layers.0._codebook.inited"] = torch.ones(1)
    return {k: v.clone() for k, v in out.items()}


def released_attention(x, wq, wk, wv, wo, n_heads):
    """The released multi-head attention, written out: projections viewed as [N, T, Dh, H]."""
    N, T, D = x.shape
    dh = D // n_heads

    def split(w):
        return (x @ w.T).view(N, T, dh, n_heads).permute(0, 3, 1, 2).reshape(N * n_heads, T, dh)

    Q, K, V = split(wq), split(wk), split(wv)
    att = (Q @ K.transpose(-2, -1) * dh ** -0.5).softmax(-1)
    y = (att @ V).view(N, n_heads, T, dh).permute(0, 2, 3, 1).reshape(N, T, dh * n_heads)
    return y @ wo.T


def test_head_permutation_matches_the_released_attention():
    torch.manual_seed(0)
    D, H = 64, 4
    model = EncodecMAE(ModelConfig.from_size("debug", **RELEASED))
    x = torch.randn(2, 9, D)
    wq, wk, wv, wo = (torch.randn(D, D) / math.sqrt(D) for _ in range(4))
    perm = head_permutation(D, H)
    attn = model.encoder.blocks[0].attn
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.cat([wq[perm], wk[perm], wv[perm]]))
        attn.out.weight.copy_(wo[:, perm])
        ours = attn(x, torch.ones(2, 9, dtype=torch.bool))
    torch.testing.assert_close(ours, released_attention(x, wq, wk, wv, wo, H), atol=1e-5, rtol=1e-5)
    # without the permutation the outputs differ: the layouts really are different
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.cat([wq, wk, wv]))
        attn.out.weight.copy_(wo)
        assert not torch.allclose(attn(x, torch.ones(2, 9, dtype=torch.bool)),
                                  released_attention(x, wq, wk, wv, wo, H), atol=1e-3)


@pytest.mark.parametrize("feedforward", ["shared", "per_layer"])
def test_released_layout_converts_to_the_same_model(feedforward):
    model = released_model(feedforward=feedforward)
    sd = to_released_layout(model)
    converted = convert(sd, n_heads=model.cfg.n_heads)
    assert converted.cfg.feedforward == feedforward
    for key in ("mask_token", "mel_framing", "positions", "n_layers", "d_model", "n_heads", "ff_dim", "dec_layers",
                "n_streams", "n_classes", "input", "size"):
        assert getattr(converted.cfg, key) == getattr(model.cfg, key), key
    wav = torch.randn(3, 96_000) * 0.1
    lengths = torch.tensor([300, 200, 120])
    with torch.no_grad():
        want, got = model.hidden_states(wav, lengths), converted.hidden_states(wav, lengths)
        for a, b in zip(want, got):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        mask = torch.zeros(3, 300, dtype=torch.bool)
        mask[:, 40:100] = True
        torch.testing.assert_close(converted(wav, lengths, mask), model(wav, lengths, mask), atol=1e-4, rtol=1e-4)


def test_extra_head_streams_are_appended():
    model = released_model(n_streams=3, n_classes=16)
    sd = to_released_layout(model, extra_head_streams=1)
    converted = convert(sd, n_heads=4, n_classes=16)
    assert converted.cfg.n_streams == 3
    torch.testing.assert_close(converted.head.weight, model.head.weight)


def test_missing_or_unexpected_keys_are_refused_by_name():
    model = released_model()
    sd = to_released_layout(model)
    missing = {k: v for k, v in sd.items() if k != "visible_encoder.encoder_layers.1.norm2.bias"}
    with pytest.raises(ConversionError, match=r"missing 1 key\(s\): visible_encoder\.encoder_layers\.1\.norm2\.bias"):
        convert(missing, n_heads=4)
    extra = {**sd, "visible_encoder.encoder_layers.0.att_layer.wq.bias": torch.zeros(64)}
    with pytest.raises(ConversionError, match=r"unexpected 1 key\(s\): visible_encoder\.encoder_layers\.0\.att_layer"):
        convert(extra, n_heads=4)
    no_layer = {k: v for k, v in sd.items() if not k.startswith("decoder.encoder_layers.1.")}
    with pytest.raises(ConversionError, match=r"missing"):
        convert(no_layer, n_heads=4)
    with pytest.raises(ConversionError, match="feat_projector.weight"):
        convert({"something": torch.zeros(1)})
    with pytest.raises(ConversionError, match=r"d_model 64 does not split into 3 attention heads"):
        convert(sd, n_heads=3)
    bad_head = {**sd, "head.layer.weight": sd["head.layer.weight"][:-1]}
    with pytest.raises(ConversionError, match=r"not a multiple of 1024 classes"):
        convert(bad_head, n_heads=4)


def test_import_writes_a_model_file_the_pipeline_loads(tmp_path):
    model = released_model()
    path = tmp_path / "model.pt"
    torch.save({"state_dict": to_released_layout(model), "epoch": 3}, path)
    assert set(load_released_state_dict(path)) >= {"feat_projector.weight"}
    out = import_released(path, tmp_path / "out" / "model.pt", name="debug", url="http://127.0.0.1/model.pt",
                          n_heads=4)
    loaded = ckpt_io.load_model(out)
    assert loaded.cfg.feedforward == "shared" and loaded.encoder.blocks[0].ff is loaded.encoder.blocks[1].ff
    prov = ckpt_io.load(out)["provenance"]
    assert prov["run_key"] == "released-debug" and len(prov["released_sha256"]) == 64
    wav = torch.randn(1, 48_000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded.hidden_states(wav)[-1], model.hidden_states(wav)[-1], atol=1e-5, rtol=1e-5)
    torch.save({"weights": {}}, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="bad.pt: expected a dict with a 'state_dict'"):
        load_released_state_dict(tmp_path / "bad.pt")


def test_workflow_downloads_converts_and_embeds_a_released_model(tmp_path):
    """The DAG's released rows: the checkpoint comes from a server on 127.0.0.1 (checksum
    verified), is converted, and the HEAR rules embed a task with it like any trained model."""
    import hashlib

    from workflow_helpers import edited_config, serve_directory, snakemake

    www = tmp_path / "www"
    www.mkdir()
    torch.save({"state_dict": to_released_layout(released_model())}, www / "model.pt")
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
