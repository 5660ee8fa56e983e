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


@pytest.mark.parametrize("size,paper_m", [("small", 43.6), ("base", 86.6), ("large", 261.6)])
def test_parameter_counts_against_table1(size, paper_m):
    """Table 1 counts are close to the encoder alone (implementation_notes.md)."""
    model = EncodecMAE(ModelConfig.from_size(size))
    counts = count_parameters(model)
    encoder_m = paper_param_count(model) / 1e6
    print(f"{size}: encoder {encoder_m:.1f} M, total {counts['total'] / 1e6:.1f} M, paper {paper_m} M")
    # base matches to 0.1 M, small within 1 %; large is 3.7 % under (see README, "Parameter counts")
    assert abs(encoder_m - paper_m) / paper_m < {"small": 0.01, "base": 0.002, "large": 0.04}[size]
