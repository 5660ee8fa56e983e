"""The model: shapes, MAE dropping of masked frames, parameter counts against Table 1."""

import pytest
import torch
from torch import nn

from encodecmae.model.masking import span_mask
from encodecmae.model.config import ModelConfig
from encodecmae.model.transformer import EncodecMAE, count_parameters, paper_param_count


class FeaturesIn(nn.Module):
    """A frontend that passes features through, so tests can perturb single frames."""

    dim = 16

    def forward(self, x):
        return x


def toy_model(**kw):
    torch.manual_seed(0)
    m = EncodecMAE(ModelConfig.from_size("debug", n_streams=2, n_classes=7, **kw))
    m.frontend = FeaturesIn()
    m.in_proj = nn.Linear(16, 64)
    return m.eval()


def test_forward_shapes_and_hidden_states():
    m = EncodecMAE(ModelConfig.from_size("debug"))
    wav = 0.1 * torch.randn(3, 96_000)
    lengths = torch.tensor([300, 120, 5])
    mask = span_mask(lengths, 300)
    assert m(wav, lengths, mask).shape == (3, 300, 8, 1024)
    hs = m.hidden_states(wav)
    assert len(hs) == m.cfg.n_layers + 1 and all(h.shape == (3, 300, 64) for h in hs)


def test_masked_and_padding_frames_do_not_reach_the_prediction():
    m = toy_model()
    x = torch.randn(2, 40, 16)
    lengths = torch.tensor([40, 30])
    mask = span_mask(lengths, 40, 0.5, 5, generator=torch.Generator().manual_seed(0))
    base = m(x, lengths, mask)
    y = x.clone()
    y[mask] = 100.0 * torch.randn(int(mask.sum()), 16)  # masked frames are dropped: no effect
    y[1, 30:] = 5.0  # padding: no effect
    assert torch.allclose(m(y, lengths, mask), base, atol=1e-5)
    z = x.clone()
    vis = (~mask[0]).nonzero()[0, 0]
    z[0, vis] += 1.0  # a visible frame does matter
    assert not torch.allclose(m(z, lengths, mask)[0], base[0], atol=1e-3)
    # clips do not see each other
    assert torch.allclose(m(z, lengths, mask)[1], base[1], atol=1e-5)


def test_mask_token_variants_and_reset_head():
    zeros = toy_model(mask_token="zeros")
    assert not zeros.mask_token.requires_grad and zeros.mask_token.abs().sum() == 0
    learned = toy_model()
    assert learned.mask_token.requires_grad and learned.mask_token.abs().sum() > 0
    learned.reset_head(1, 11)
    lengths = torch.tensor([20])
    out = learned(torch.randn(1, 20, 16), lengths, span_mask(lengths, 20))
    assert out.shape == (1, 20, 1, 11) and learned.cfg.n_streams == 1


def test_positions_added_before_masking_with_learnable_scale():
    m = toy_model()
    assert m.enc_pos.scale.requires_grad and m.enc_pos.scale.item() == 1.0
    x = torch.zeros(1, 10, 16)
    # with zero input features every frame's encoder input differs only by its position
    emb = m.embed_input(x)
    assert not torch.allclose(emb[0, 0], emb[0, 1])


@pytest.mark.parametrize("size,paper_m,distinct_m", [("small", 43.6, 18.1), ("base", 86.6, 29.9),
                                                     ("large", 261.6, 92.0)])
def test_parameter_counts_against_table1(size, paper_m, distinct_m):
    """Table 1 counts the encoder per use (implementation_notes.md): the released model's shared
    feed-forward block once per layer. Its distinct weights are far fewer (base: ~29.9 M)."""
    with torch.device("meta"):  # counts only: no memory for the weights
        shared = EncodecMAE(ModelConfig.from_size(size, feedforward="shared"))
        per_layer = EncodecMAE(ModelConfig.from_size(size))
    encoder_m = paper_param_count(shared) / 1e6
    print(f"{size}: encoder {encoder_m:.1f} M per use, {count_parameters(shared)['encoder'] / 1e6:.1f} M distinct "
          f"(shared feed-forward), paper {paper_m} M")
    # base matches to 0.1 M, small within 1 %; large (12 heads of 85, as released) is 3.9 % under
    # (docs/library.md, "Parameter counts")
    assert abs(encoder_m - paper_m) / paper_m < {"small": 0.01, "base": 0.002, "large": 0.04}[size]
    assert round(count_parameters(shared)["encoder"] / 1e6, 1) == distinct_m
    # per layer, every use is a distinct weight: the same per-use count, as many distinct weights
    assert paper_param_count(per_layer) == paper_param_count(shared)
    assert count_parameters(per_layer) == count_parameters(per_layer, per_use=True)
    assert count_parameters(per_layer)["encoder"] == count_parameters(shared, per_use=True)["encoder"]


def test_shared_feedforward_is_one_module_whose_gradient_sums_every_layer():
    torch.manual_seed(0)
    shared = EncodecMAE(ModelConfig.from_size("debug", feedforward="shared", n_streams=2, n_classes=7))
    blocks = shared.encoder.blocks
    assert all(b.ff is blocks[0].ff for b in blocks) and shared.decoder.blocks[0].ff is shared.decoder.blocks[1].ff
    assert shared.decoder.blocks[0].ff is not blocks[0].ff  # one per stack
    assert all(b.attn is not blocks[0].attn for b in blocks[1:])  # attention stays per layer
    ff_params = {id(p) for p in blocks[0].ff.parameters()}
    assert sum(id(p) in ff_params for p in shared.parameters()) == 4  # listed once: the optimiser updates it once
    # the same weights, copied into every layer of a per-layer model: the shared gradient is the sum
    per_layer = EncodecMAE(ModelConfig.from_size("debug", n_streams=2, n_classes=7))
    state = shared.state_dict()
    per_layer.load_state_dict(state)
    wav = 0.1 * torch.randn(2, 9600)
    lengths = torch.tensor([30, 22])
    mask = span_mask(lengths, 30, 0.5, 5, generator=torch.Generator().manual_seed(1))
    for m in (shared, per_layer):
        m(wav, lengths, mask).logsumexp(-1).sum().backward()
    for stack in ("encoder", "decoder"):
        mine = getattr(shared, stack).blocks[0].ff[0].weight.grad
        theirs = sum(b.ff[0].weight.grad for b in getattr(per_layer, stack).blocks)
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
        assert all((b.ff[0].weight.grad - mine).abs().max() > 0 for b in getattr(per_layer, stack).blocks)
    # the state dict lists the shared block under every layer, as one tensor
    assert state["encoder.blocks.0.ff.0.weight"].data_ptr() == state["encoder.blocks.1.ff.0.weight"].data_ptr()


def test_shared_positions_are_one_scale():
    m = EncodecMAE(ModelConfig.from_size("debug", positions="shared"))
    assert m.dec_pos is m.enc_pos and count_parameters(m)["decoder"] == count_parameters(
        EncodecMAE(ModelConfig.from_size("debug")))["decoder"] - 1
    with pytest.raises(ValueError, match="feedforward='sometimes'"):
        ModelConfig.from_size("debug", feedforward="sometimes")
