"""The key layouts of the authors' two releases, and their mapping onto this package's model.

Module names of the released code (D the width, F the input features, H = 12 heads of D // H,
W = H * (D // H) the attention width, Q x K the head). Both releases share the transformer stacks:

=====================================================================  =================================
``{stack}.encoder_layers.{i}.att_layer.{wq,wk,wv}.weight``             [W, D], no biases
``{stack}.encoder_layers.{i}.att_layer.wo.weight``                     [D, W]
``{stack}.encoder_layers.{i}.ff_layer.{0,2}.{weight,bias}``            the feed-forward block; the same
                                                                       tensors under every layer when the
                                                                       stack shares one (as released)
``{stack}.encoder_layers.{i}.norm{1,2}.{weight,bias}``                 after attention / feed-forward
``{stack}.final_norm.{weight,bias}``                                   the ResiDual output norm
=====================================================================  =================================

with ``{stack}`` = ``visible_encoder`` (our ``encoder``) and ``decoder``. The rest differs:

====================  ======================================  =========================================
ours                  v2 (HEAD, ``lpepino/encodecmae-v2``)    v1 (tag v.1.0.0, ``lpepino/encodecmae-*``)
====================  ======================================  =========================================
``in_proj``           ``wav_encoder.post_net`` [D, F]         ``feat_projector`` [D, 128]
``enc_pos.scale``     ``masker.positional_encoder.scale``     ``positional_encoder.scale`` (one scale,
``dec_pos.scale``     ``decoder.positional_encoder.scale``    both inputs: ``positions="shared"``)
``enc_to_dec``        ``visible_encoder.post_net`` [D, D]     ``decoder_projector`` [D, D]
``head``              ``head.layer`` [Q K, D]                 ``head.layer`` [8 K, D] then, for ST,
                                                              ``extra_head.layer`` [K, D]
EnCodec encoder       ``wav_encoder.encoder.model.*`` (EC     ``wav_encoder.model.*`` (every v1 model
(``input: encodec``)  input only; mel: no parameters)         is EC->EC)
EnCodec codebooks     ``target_encoder.model.vq.layers.{q}._codebook.{inited,cluster_size,embed,
                      embed_avg}``, q < 32 (the whole 24-kHz quantiser; absent from a v2 ST model);
                      the first 8 are our EC front end's ``codebooks`` (mel input: not kept)
(not kept)            ``target_encoder.encodec_encoder.*``    --
                      (mel input, EnCodec targets)
====================  ======================================  =========================================

Attention heads: the released code views a projection's W outputs as [D // H, H] (feature
``d * H + h``), ours as [H, D // H] (``h * (D // H) + d``); the rows of ``wq``, ``wk``, ``wv`` and
the columns of ``wo`` are permuted accordingly. No mask-token parameter: the released code inserts
zeros.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

STACKS = {"visible_encoder": "encoder", "decoder": "decoder"}
LAYER_KEY = re.compile(r"^(visible_encoder|decoder)\.encoder_layers\.(\d+)\.(.+)$")
LAYER_PARTS = [f"att_layer.{w}.weight" for w in ("wq", "wk", "wv", "wo")] + \
              [f"ff_layer.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")] + \
              [f"norm{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
TARGET_CODEBOOKS = "target_encoder.model.vq.layers."  # the released EncodecQuantizer: all 32 codebooks
TARGET_ENCODER = "target_encoder.encodec_encoder."  # v2 mel input: the EnCodec encoder of the targets
CODEBOOK_BUFFERS = ("inited", "cluster_size", "embed", "embed_avg")
N_CODEBOOKS = 32  # the 24-kHz EnCodec quantiser; the targets are the first 8
WP = "weight", "bias"


@dataclass(frozen=True)
class Layout:
    """Where one release keeps the modules that are not transformer layers."""

    release: str
    in_proj: str
    enc_pos: str
    dec_pos: str
    enc_to_dec: str
    encodec: str  # prefix of the EnCodec encoder that makes the input features (EC input)
    heads: tuple[str, ...]  # Linear modules whose rows are the head's streams, in order


V1 = Layout("v1", "feat_projector", "positional_encoder.scale", "positional_encoder.scale", "decoder_projector",
            "wav_encoder.model.", ("head.layer", "extra_head.layer"))
V2 = Layout("v2", "wav_encoder.post_net", "masker.positional_encoder.scale", "decoder.positional_encoder.scale",
            "visible_encoder.post_net", "wav_encoder.encoder.model.", ("head.layer",))


def layout_of(sd: dict) -> Layout | None:
    """The release whose input projection the state dict has (None: neither)."""
    if f"{V1.in_proj}.weight" in sd:
        return V1
    if f"{V2.in_proj}.weight" in sd:
        return V2
    return None


@functools.lru_cache(maxsize=1)
def encodec_encoder_keys() -> tuple[str, ...]:
    """State-dict keys of the 24-kHz EnCodec encoder (encodec 0.1.1, as both releases used)."""
    from encodecmae.targets.codec import new_encodec

    with torch.random.fork_rng():  # building it draws random weights: leave the caller's RNG alone
        return tuple(new_encodec().encoder.state_dict())


def codebook_keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{q}._codebook.{b}" for q in range(n) for b in CODEBOOK_BUFFERS]


def present(sd: dict, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def expected_keys(layout: Layout, n_enc: int, n_dec: int, sd: dict) -> set[str]:
    """Every key of the layout; the optional groups (extra head, EC input, target EnCodec) are
    expected in full when the state dict has any key of them."""
    keys = {f"{m}.{p}" for m in (layout.in_proj, layout.enc_to_dec, "head.layer") for p in WP}
    keys |= {layout.enc_pos, layout.dec_pos}
    for stack, n in (("visible_encoder", n_enc), ("decoder", n_dec)):
        keys |= {f"{stack}.encoder_layers.{i}.{part}" for i in range(n) for part in LAYER_PARTS}
        keys |= {f"{stack}.final_norm.{p}" for p in WP}
    if layout is V1 and present(sd, "extra_head."):
        keys |= {f"extra_head.layer.{p}" for p in WP}
    if layout is V1 or present(sd, layout.encodec):  # v1 is always EC->EC
        keys |= {layout.encodec + k for k in encodec_encoder_keys()}
    if layout is V1 or present(sd, TARGET_CODEBOOKS):
        keys |= set(codebook_keys(TARGET_CODEBOOKS, N_CODEBOOKS))
    if layout is V2 and present(sd, TARGET_ENCODER):
        keys |= {TARGET_ENCODER + k for k in encodec_encoder_keys()}
    return keys


def head_permutation(d_model: int, n_heads: int) -> torch.Tensor:
    """Index ``idx`` with ``ours = theirs[idx]``: our feature h * Dh + d is their d * H + h
    (Dh = D // H; the attention is H * Dh wide)."""
    dh = d_model // n_heads
    return torch.tensor([d * n_heads + h for h in range(n_heads) for d in range(dh)])


def to_ours(sd: dict, layout: Layout, n_enc: int, n_dec: int, n_heads: int, n_codebooks: int) -> dict:
    """Our state dict (without the mask token) from a released one of ``layout``.

    ``n_codebooks``: EnCodec codebooks our EC front end keeps (0: not an EC-input model).
    """
    d_model = sd[f"{layout.in_proj}.weight"].shape[0]
    perm = head_permutation(d_model, n_heads)
    out = {f"in_proj.{p}": sd[f"{layout.in_proj}.{p}"] for p in WP}
    out |= {f"enc_to_dec.{p}": sd[f"{layout.enc_to_dec}.{p}"] for p in WP}
    out["enc_pos.scale"], out["dec_pos.scale"] = sd[layout.enc_pos], sd[layout.dec_pos]
    heads = [h for h in layout.heads if f"{h}.weight" in sd]
    out |= {f"head.{p}": torch.cat([sd[f"{h}.{p}"] for h in heads]) for p in WP}
    for theirs, ours in STACKS.items():
        for i in range(n_enc if ours == "encoder" else n_dec):
            src, dst = f"{theirs}.encoder_layers.{i}.", f"{ours}.blocks.{i}."
            out[dst + "attn.qkv.weight"] = torch.cat([sd[src + f"att_layer.{w}.weight"][perm] for w in ("wq", "wk", "wv")])
            out[dst + "attn.out.weight"] = sd[src + "att_layer.wo.weight"][:, perm]
            out |= {dst + f"ff.{j}.{p}": sd[src + f"ff_layer.{j}.{p}"] for j in (0, 2) for p in WP}
            for mine, norm in (("ln_attn", "norm1"), ("ln_ff", "norm2")):
                out |= {dst + f"{mine}.{p}": sd[src + f"{norm}.{p}"] for p in WP}
        out |= {f"{ours}.ln_out.{p}": sd[f"{theirs}.final_norm.{p}"] for p in WP}
    if n_codebooks:
        out |= {"frontend.tokenizer.encoder." + k: sd[layout.encodec + k] for k in encodec_encoder_keys()}
        if present(sd, TARGET_CODEBOOKS):
            for q in range(n_codebooks):
                out |= {f"frontend.tokenizer.codebooks.{q}._codebook.{b}": sd[f"{TARGET_CODEBOOKS}{q}._codebook.{b}"]
                        for b in CODEBOOK_BUFFERS}
    return out
