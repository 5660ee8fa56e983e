"""The authors' released checkpoints (the paper's v1 models) converted into this package's model.

The five models behind the paper's numbers are on the Hugging Face hub as
``lpepino/encodecmae-{small,base,base-st,large,large-st}``, each a ``model.pt`` holding
``{"state_dict": ...}`` of the released code's Lightning module. Its layout (module names of the
released code, v1; D the width, F the input features, Q x K the head):

=====================================================================  =================================
``feat_projector.{weight,bias}``                                       [D, F], [D]: our ``in_proj``
``positional_encoder.scale``                                           []: one scale for encoder and
                                                                       decoder inputs (``positions="shared"``)
``visible_encoder.encoder_layers.{i}.att_layer.{wq,wk,wv,wo}.weight``  [D, D] each, no biases
``visible_encoder.encoder_layers.{i}.ff_layer.{0,2}.{weight,bias}``    the feed-forward block; the same
                                                                       tensors under every layer when the
                                                                       stack shares one (as released)
``visible_encoder.encoder_layers.{i}.norm{1,2}.{weight,bias}``         after attention / feed-forward
``visible_encoder.final_norm.{weight,bias}``                           the ResiDual output norm
``decoder_projector.{weight,bias}``                                    [D, D]: our ``enc_to_dec``
``decoder.encoder_layers.{i}.*``, ``decoder.final_norm.*``             the decoder, as the encoder
``head.layer.{weight,bias}``                                           [Q K, D]
``extra_head.layer.{weight,bias}``                                     optional: more streams, after Q
``wav_encoder.*``, ``target_encoder.*``                                the frozen feature extractor and
                                                                       EnCodec quantizer: skipped
=====================================================================  =================================

Attention heads: the released code views a projection's D outputs as [D/H, H] (feature
``d * H + h``), ours as [H, D/H] (``h * D/H + d``); the rows of ``wq``, ``wk``, ``wv`` and the
columns of ``wo`` are permuted accordingly (tests/test_released.py checks the permutation against
the released attention written out). No mask-token parameter: the released code inserts zeros.

The converted model has the released settings: ``mask_token="zeros"``, ``positions="shared"``,
``mel_framing="released"`` and the feed-forward sharing found in the weights. Any key missing
from the layout, or not in it, stops the conversion with the list.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from encodecmae.model.config import SIZES, ModelConfig
from encodecmae.model.transformer import EncodecMAE, count_parameters

SKIPPED = ("wav_encoder.", "target_encoder.")  # frozen, recreated by this package (features, targets)
STACKS = {"visible_encoder": "encoder", "decoder": "decoder"}
LAYER_KEY = re.compile(r"^(visible_encoder|decoder)\.encoder_layers\.(\d+)\.(.+)$")
LAYER_PARTS = [f"att_layer.{w}.weight" for w in ("wq", "wk", "wv", "wo")] + \
              [f"ff_layer.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")] + \
              [f"norm{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
HEAD_DIM = 64  # the released configs: 12 heads for D=768 (and 16 for D=1024)
DECODER_LAYERS = 2  # every released model


class ConversionError(ValueError):
    """A released checkpoint that does not have the documented layout."""


def head_permutation(d_model: int, n_heads: int) -> torch.Tensor:
    """Index ``idx`` with ``ours = theirs[idx]``: our feature h * Dh + d is their d * H + h."""
    dh = d_model // n_heads
    return torch.tensor([d * n_heads + h for h in range(n_heads) for d in range(dh)])


def load_released_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: released checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise ConversionError(f"{path}: expected a dict with a 'state_dict' (the released model.pt)")
    return obj["state_dict"]


def _layers(sd: dict, stack: str) -> int:
    ids = {int(m.group(2)) for k in sd if (m := LAYER_KEY.match(k)) and m.group(1) == stack}
    if not ids:
        raise ConversionError(f"no layers under {stack}.encoder_layers")
    if ids != set(range(max(ids) + 1)):
        raise ConversionError(f"{stack}.encoder_layers: missing layer(s) {sorted(set(range(max(ids) + 1)) - ids)}")
    return max(ids) + 1


def expected_keys(n_enc: int, n_dec: int, extra_head: bool) -> set[str]:
    keys = {"feat_projector.weight", "feat_projector.bias", "positional_encoder.scale",
            "decoder_projector.weight", "decoder_projector.bias", "head.layer.weight", "head.layer.bias"}
    for stack, n in (("visible_encoder", n_enc), ("decoder", n_dec)):
        keys |= {f"{stack}.encoder_layers.{i}.{part}" for i in range(n) for part in LAYER_PARTS}
        keys |= {f"{stack}.final_norm.weight", f"{stack}.final_norm.bias"}
    if extra_head:
        keys |= {"extra_head.layer.weight", "extra_head.layer.bias"}
    return keys


def _shared_ff(sd: dict, stack: str, n: int) -> bool:
    """Whether every layer of the stack holds the same feed-forward tensors (one shared block)."""
    parts = [p for p in LAYER_PARTS if p.startswith("ff_layer.")]
    return n > 1 and all(torch.equal(sd[f"{stack}.encoder_layers.{i}.{p}"], sd[f"{stack}.encoder_layers.0.{p}"])
                         for i in range(1, n) for p in parts)


def released_config(sd: dict, input_kind: str | None = None, n_heads: int | None = None,
                    n_classes: int = 1024) -> ModelConfig:
    """The ModelConfig of a released state dict, read from its shapes (and the names it skips)."""
    if "feat_projector.weight" not in sd:
        raise ConversionError("missing key feat_projector.weight: not a released EnCodecMAE state_dict")
    d_model, n_feat = sd["feat_projector.weight"].shape
    if input_kind is None:
        input_kind = {256: "mel256", 128: "mel128"}.get(n_feat)
    if input_kind not in ("mel256", "mel128"):  # no EnCodec-input model was released
        raise ConversionError(f"feat_projector.weight takes {n_feat} features: only mel128/mel256 models convert")
    want = int(input_kind[3:])
    if n_feat != want:
        raise ConversionError(f"feat_projector.weight takes {n_feat} features but {input_kind} has {want}")
    n_enc, n_dec = _layers(sd, "visible_encoder"), DECODER_LAYERS  # missing decoder layers are missing keys
    heads = n_heads or d_model // HEAD_DIM
    if heads < 1 or d_model % heads:
        raise ConversionError(f"d_model {d_model} does not split into {heads} attention heads")
    ff_dim = sd["visible_encoder.encoder_layers.0.ff_layer.0.weight"].shape[0] \
        if "visible_encoder.encoder_layers.0.ff_layer.0.weight" in sd else 4096
    rows = sum(sd[k].shape[0] for k in ("head.layer.weight", "extra_head.layer.weight") if k in sd)
    if rows % n_classes:
        raise ConversionError(f"the head has {rows} outputs, not a multiple of {n_classes} classes")
    for i in range(n_dec):
        if f"decoder.encoder_layers.{i}.ff_layer.0.weight" not in sd:
            raise ConversionError(f"missing key(s) decoder.encoder_layers.{i}.*: the released decoder has "
                                  f"{DECODER_LAYERS} layers")
    enc_shared = _shared_ff(sd, "visible_encoder", n_enc) if n_enc > 1 else _shared_ff(sd, "decoder", n_dec)
    if _shared_ff(sd, "decoder", n_dec) != enc_shared:
        raise ConversionError("the encoder and decoder disagree on sharing their feed-forward block")
    size = next((name for name, (layers, d, h) in SIZES.items() if (layers, d, h) == (n_enc, d_model, heads)),
                "custom")
    return ModelConfig(input=input_kind, size=size, n_layers=n_enc, d_model=d_model, n_heads=heads, ff_dim=ff_dim,
                       dec_layers=n_dec, n_streams=rows // n_classes, n_classes=n_classes, mask_token="zeros",
                       feedforward="shared" if enc_shared else "per_layer", mel_framing="released",
                       positions="shared")


def convert_state_dict(sd: dict, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from a released one, for the model ``cfg`` (``released_config``)."""
    skipped = {k for k in sd if k.startswith(SKIPPED)}
    want = expected_keys(cfg.n_layers, cfg.dec_layers, "extra_head.layer.weight" in sd)
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want - skipped)
    if missing or unexpected:
        def listing(keys):
            return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        problems = ([f"missing {len(missing)} key(s): {listing(missing)}"] if missing else []) + \
                   ([f"unexpected {len(unexpected)} key(s): {listing(unexpected)}"] if unexpected else [])
        raise ConversionError("not the released layout (see encodecmae.model.released): " + "; ".join(problems))
    perm = head_permutation(cfg.d_model, cfg.n_heads)
    out = {"in_proj.weight": sd["feat_projector.weight"], "in_proj.bias": sd["feat_projector.bias"],
           "enc_pos.scale": sd["positional_encoder.scale"], "dec_pos.scale": sd["positional_encoder.scale"],
           "enc_to_dec.weight": sd["decoder_projector.weight"], "enc_to_dec.bias": sd["decoder_projector.bias"],
           "mask_token": torch.zeros(cfg.d_model)}
    heads = [sd["head.layer.weight"]] + ([sd["extra_head.layer.weight"]] if "extra_head.layer.weight" in sd else [])
    biases = [sd["head.layer.bias"]] + ([sd["extra_head.layer.bias"]] if "extra_head.layer.bias" in sd else [])
    out["head.weight"], out["head.bias"] = torch.cat(heads), torch.cat(biases)
    for theirs, ours in STACKS.items():
        n = cfg.n_layers if ours == "encoder" else cfg.dec_layers
        for i in range(n):
            src, dst = f"{theirs}.encoder_layers.{i}.", f"{ours}.blocks.{i}."
            q, k, v = (sd[src + f"att_layer.{w}.weight"][perm] for w in ("wq", "wk", "wv"))
            out[dst + "attn.qkv.weight"] = torch.cat([q, k, v])
            out[dst + "attn.out.weight"] = sd[src + "att_layer.wo.weight"][:, perm]
            for j in (0, 2):
                for p in ("weight", "bias"):
                    out[dst + f"ff.{j}.{p}"] = sd[src + f"ff_layer.{j}.{p}"]
            for mine, theirs_norm in (("ln_attn", "norm1"), ("ln_ff", "norm2")):
                for p in ("weight", "bias"):
                    out[dst + f"{mine}.{p}"] = sd[src + f"{theirs_norm}.{p}"]
        for p in ("weight", "bias"):
            out[f"{ours}.ln_out.{p}"] = sd[f"{theirs}.final_norm.{p}"]
    return out


def convert(sd: dict, input_kind: str | None = None, n_heads: int | None = None,
            n_classes: int = 1024) -> EncodecMAE:
    """The released state dict as our model (eval mode), with the released settings."""
    cfg = released_config(sd, input_kind, n_heads, n_classes)
    model = EncodecMAE(cfg)
    ours = convert_state_dict(sd, cfg)
    target = model.state_dict()
    for key, value in ours.items():
        if key not in target:
            raise ConversionError(f"internal: {key} is not a key of the model")  # a bug here, not the file
        if tuple(value.shape) != tuple(target[key].shape):
            raise ConversionError(f"{key}: shape {tuple(value.shape)} does not fit the model's {tuple(target[key].shape)}"
                                  f" (n_heads={cfg.n_heads}, d_model={cfg.d_model})")
    model.load_state_dict(ours, strict=True)
    return model.eval()


def import_released(checkpoint: str | Path, out: str | Path, name: str | None = None, url: str | None = None,
                    input_kind: str | None = None, n_heads: int | None = None) -> Path:
    """Convert a released ``model.pt`` and write it as this package's model file."""
    from encodecmae import provenance
    from encodecmae.training import checkpoints as ckpt_io

    model = convert(load_released_state_dict(checkpoint), input_kind, n_heads)
    digest = provenance.sha256_file(checkpoint)
    settings = {"released": name, "url": url, "sha256": digest, "model_config": model.cfg.to_dict()}
    prov = {**provenance.code_state(), "run_key": f"released-{name or Path(checkpoint).parent.name}",
            "settings": settings, "settings_sha256": provenance.sha256_json(settings), "train_data_sha256": None,
            "init_from": None, "encodec_sha256": None, "released_sha256": digest}
    ckpt_io.save(out, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": None,
                       "config": {"released": settings}, "code_version": ckpt_io.code_version(), "gamma": None,
                       "provenance": prov})
    distinct, per_use = count_parameters(model), count_parameters(model, per_use=True)
    print(f"{checkpoint} (sha256 {digest}) -> {out}: {model.cfg.size} ({model.cfg.n_layers} x {model.cfg.d_model}, "
          f"{model.cfg.n_heads} heads), feed-forward {model.cfg.feedforward}, {model.cfg.n_streams} stream(s); "
          f"encoder {distinct['encoder'] / 1e6:.1f} M distinct, {per_use['encoder'] / 1e6:.1f} M per use", flush=True)
    return Path(out)


def register(sub) -> None:
    p = sub.add_parser("import-released", help="convert the authors' released model.pt into this package's model")
    p.add_argument("--checkpoint", required=True, help="released model.pt (a dict with 'state_dict')")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--name", default=None, help="the release's name, recorded in the provenance")
    p.add_argument("--url", default=None, help="where it came from, recorded in the provenance")
    p.add_argument("--input", default=None, choices=("mel256", "mel128"),
                   help="input features (default: read from the shapes; the released models are mel256)")
    p.add_argument("--n-heads", type=int, default=None, help=f"attention heads (default: D / {HEAD_DIM})")
    p.set_defaults(func=cmd_import_released)


def cmd_import_released(args: argparse.Namespace) -> None:
    import_released(args.checkpoint, args.out, args.name, args.url, args.input, args.n_heads)
