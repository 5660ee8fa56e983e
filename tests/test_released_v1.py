"""Importing the authors' v1 release (tag v.1.0.0, lpepino/encodecmae-*): EC->EC models whose
model.pt carries the frozen EnCodec encoder and quantiser. Converted, they take EnCodec input with
those weights, one positional scale for both stacks, and (ST) the extra head's stream after the 8
EnCodec streams; their embeddings, logits and targets equal the authors' forward pass."""

import pytest
import torch

from encodecmae.evaluation import hear
from encodecmae.model.released import ConversionError, convert, import_released
from released_reference import reference_codes, reference_hidden, released_state_dict
from test_released import assert_hidden_match, assert_logits_match, rel_err


@pytest.fixture(scope="module")
def v1_base():
    sd = released_state_dict("v1", d_model=96, n_heads=12, n_enc=3)  # 12 heads of 8, as every v1 config
    return sd, convert(sd)


def test_v1_settings_come_from_the_file(v1_base):
    sd, model = v1_base
    c = model.cfg
    assert (c.input, c.n_layers, c.d_model, c.n_heads, c.positions, c.feedforward, c.n_streams) == \
        ("encodec", 3, 96, 12, "shared", "shared", 8)
    assert model.dec_pos is model.enc_pos and model.enc_pos.scale.item() == pytest.approx(0.7)


def test_v1_embeddings_logits_and_targets_equal_the_authors(v1_base):
    sd, model = v1_base
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, 24_100)  # not whole hops: EnCodec pads the last one itself
    assert_hidden_match(model, sd, "v1", 12, 3, wav)
    assert_logits_match(model, sd, "v1", 12, 3)
    assert torch.equal(model.frontend.tokenizer.tokenize(wav[:, :24_000]), reference_codes(wav[:, :24_000], sd, "v1"))


def test_v1_self_training_model_has_the_extra_stream():
    sd = released_state_dict("v1", d_model=48, n_heads=12, extra_head=True, seed=5)
    model = convert(sd)
    assert model.cfg.n_streams == 9 and model.head.weight.shape == (9 * 1024, 48)
    assert_logits_match(model, sd, "v1", 12, 2)


def test_v1_without_its_encodec_is_refused():
    sd = released_state_dict("v1", d_model=48, n_heads=12)
    no_encoder = {k: v for k, v in sd.items() if not k.startswith("wav_encoder.model.")}
    with pytest.raises(ConversionError, match=r"without its EnCodec encoder \(wav_encoder\.model\.\*\)"):
        convert(no_encoder)
    with pytest.raises(ConversionError, match=r"missing 1 key\(s\): wav_encoder\.model\.model\.0\.conv\.conv\.bias"):
        convert({k: v for k, v in sd.items() if k != "wav_encoder.model.model.0.conv.conv.bias"})


def test_v1_hear_wrapper_keeps_the_trailing_piece_and_returns_the_blocks(v1_base, tmp_path):
    sd, _ = v1_base
    path = tmp_path / "model.pt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    out = import_released(path, tmp_path / "ours.pt", name="base")
    layers = hear.load_model(str(out), sample_rate=24_000, layer="all")
    torch.manual_seed(1)
    wav = 0.1 * torch.randn(1, 96_000 + 1000)
    emb = hear.get_timestamp_embeddings(wav, layers)[0]
    assert emb.shape == (1, 3, 304, 96)  # v1 keeps a piece of 1000 samples: ceil(1000 / 320) = 4 frames
    chunks = [reference_hidden(piece, sd, "v1", 12, 3) for piece in (wav[:, :96_000], wav[:, 96_000:])]
    for i in range(3):  # v1's per-layer output: the L blocks, the final output not among them
        assert rel_err(emb[:, i], torch.cat([blocks[i] for _, blocks in chunks], dim=1)) < 1e-5, i
    final = hear.get_timestamp_embeddings(wav, hear.load_model(str(out), sample_rate=24_000))[0]
    assert rel_err(final, torch.cat([f for f, _ in chunks], dim=1)) < 1e-5
