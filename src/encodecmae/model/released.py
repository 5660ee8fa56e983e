"""The authors' released checkpoints converted into this package's model.

Two releases exist (``released_layout`` gives both key layouts and their mapping):

- v2 (the repository's HEAD; the paper's models): Hugging Face ``lpepino/encodecmae-v2``, one
  ``{name}.pt`` per model holding ``{"state_dict", "config", "imports"}``, ``config`` being the gin
  configuration as text. Mel input (``wav_encoder.post_net`` takes 256 or 128 bins) or EnCodec
  input (the file then holds the EnCodec encoder, ``wav_encoder.encoder.model.*``).
- v1 (tag v.1.0.0): ``lpepino/encodecmae-{small,base,base-st,large,large-st}``, ``model.pt``
  holding ``{"state_dict"}``. Every v1 model is EC->EC: its input is the frozen EnCodec encoder's
  128-d output, and the file holds that encoder (``wav_encoder.model.*``) and the quantiser.

Nothing is guessed. The release, input, width, layers, feed-forward width and sharing, and
streams come from the tensors; v2's heads, classes and mel settings from its gin text (which
must agree with the tensors), v1's heads are the 12 of every v1 configuration (its config.gin
is not in model.pt). An EnCodec-input model carries the file's EnCodec encoder and first 8
codebooks in its front end, so it embeds without the pretrained download. A key missing from
the layout, or not in it, stops the conversion with the list, as does a gin setting this
package does not implement (say a mel framing other than the released one).

The converted model has the release's settings: ``mask_token="zeros"``, ``positions`` "per_stack"
(v2) or "shared" (v1), ``mel_framing="released"`` and the feed-forward sharing found in the
weights.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
from pathlib import Path

import torch

from encodecmae.model import released_layout as rl
from encodecmae.model.config import MEL_MEAN, MEL_STD, SIZES, ModelConfig
from encodecmae.model.transformer import EncodecMAE, count_parameters
from encodecmae.targets.codec import N_Q

RELEASED_HEADS = 12  # NUM_ENCODER_HEADS = NUM_DECODER_HEADS = 12 in every configuration of both releases
DECODER_LAYERS = 2  # NUM_DECODER_LAYERS of both releases
N_CLASSES = 1024  # NUM_TARGET_TOKENS
# The released mel front end (configs/features/mel.gin), which ``features.LogMel`` implements as
# ``framing="released"``: setting -> the value it must have (None: any; norm_stats is read).
MEL_SETTINGS = {"sample_frequency": 24000, "frame_shift": 13.28, "frame_length": 26.56, "window_type": "hanning",
                "dither": 0.0, "use_energy": False, "low_freq": 20, "high_freq": 0}


class ConversionError(ValueError):
    """A released checkpoint that does not have a documented layout."""


# --- reading the file ---------------------------------------------------------------------


def load_released(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state_dict, gin config text or None) of a released ``{name}.pt`` (v2) or ``model.pt`` (v1)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: released checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise ConversionError(f"{path}: expected a dict with a 'state_dict' (a released model.pt or {{name}}.pt)")
    config = obj.get("config")
    if config is not None and not isinstance(config, str):
        raise ConversionError(f"{path}: 'config' is {type(config).__name__}, expected the gin configuration text")
    return obj["state_dict"], config


def parse_gin(text: str) -> dict[str, str]:
    """``[scope/]configurable.param`` or ``MACRO`` -> its value's text, from gin text as
    ``gin.config_str()`` writes it or as the configuration files are written (``name:`` blocks,
    ``\\`` continuations, values over several lines inside brackets, ``+=`` appending to a list)."""
    out: dict[str, str] = {}
    block, pending = None, None  # the current ``name:`` block; a statement still inside brackets

    def depth(s: str) -> int:
        s = re.sub(r"'[^']*'|\"[^\"]*\"", "", s)
        return sum(s.count(c) for c in "[({") - sum(s.count(c) for c in "])}")

    def store(statement: str) -> None:
        key, value = (part.strip() for part in statement.split("=", 1))
        if key.endswith("+"):
            key, old = key[:-1].strip(), out.get(key[:-1].strip())
            if old and old.endswith("]") and value.startswith("["):
                value = old[:-1].rstrip().rstrip(",") + ", " + value[1:]
        out[key] = value

    for raw in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$|^#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        if pending is not None:
            pending += " " + line.strip()
            if depth(pending) <= 0:
                store(pending)
                pending = None
            continue
        if line[0].isspace() and block:
            statement = f"{block}.{line.strip()}"
        elif line.endswith(":") and "=" not in line:
            block = line[:-1].strip()
            continue
        else:
            block, statement = None, line.strip()
        if "=" not in statement or statement.startswith(("import ", "include ")):
            continue
        if depth(statement) > 0:
            pending = statement
        else:
            store(statement)
    return out


def gin_value(bindings: dict[str, str], name: str, scope: str | None = None, default=None):
    """The value bound to ``name`` (``Configurable.param`` or ``MACRO``), macros resolved: a
    Python literal, or the text of a ``@reference``. Several bindings must agree."""
    values = set()
    for key, value in bindings.items():
        key_scope, _, bare = key.rpartition("/")
        if (bare == name or bare.endswith("." + name)) and (scope is None or key_scope == scope):
            values.add(value)
    if not values:
        return default
    if len(values) > 1:
        raise ConversionError(f"gin config: {name} is bound to several values {sorted(values)}")
    value = values.pop()
    if value.startswith("%"):
        return gin_value(bindings, value[1:], None, default)
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


# --- the model's settings -----------------------------------------------------------------


def _layers(sd: dict, stack: str) -> int:
    ids = {int(m.group(2)) for k in sd if (m := rl.LAYER_KEY.match(k)) and m.group(1) == stack}
    if not ids:
        raise ConversionError(f"no layers under {stack}.encoder_layers")
    if ids != set(range(max(ids) + 1)):
        raise ConversionError(f"{stack}.encoder_layers: missing layer(s) {sorted(set(range(max(ids) + 1)) - ids)}")
    return max(ids) + 1


def _shared_ff(sd: dict, stack: str, n: int) -> bool:
    """Whether every layer of the stack holds the same feed-forward tensors (one shared block)."""
    parts = [p for p in rl.LAYER_PARTS if p.startswith("ff_layer.")]
    return n > 1 and all(torch.equal(sd[f"{stack}.encoder_layers.{i}.{p}"], sd[f"{stack}.encoder_layers.0.{p}"])
                         for i in range(1, n) for p in parts)


def _input_kind(sd: dict, layout: rl.Layout, n_feat: int) -> str:
    """mel256, mel128 or encodec, from the input projection's width and the EnCodec encoder's keys."""
    proj = f"{layout.in_proj}.weight"
    if rl.present(sd, layout.encodec) or layout is rl.V1:  # v1: every model is EC->EC
        if not rl.present(sd, layout.encodec):
            raise ConversionError(f"a v1 file ({proj}) without its EnCodec encoder ({layout.encodec}*): every v1 "
                                  "model takes the frozen EnCodec encoder's output as input")
        if n_feat != 128:
            raise ConversionError(f"{proj} takes {n_feat} features, but the EnCodec encoder ({layout.encodec}*) "
                                  "gives 128")
        return "encodec"
    if n_feat not in (128, 256):
        raise ConversionError(f"{proj} takes {n_feat} features: not a 128- or 256-bin mel input")
    return f"mel{n_feat}"


def _check_v2_input(bindings: dict, input_kind: str, n_feat: int) -> tuple[float, float]:
    """The gin text's front end must be the tensors' and the one this package implements:
    returns the mel normalisation (mean, std)."""
    encoder = str(gin_value(bindings, "WavEncoder.encoder", default=""))
    says = "encodec" if encoder.endswith("EncodecEncoder") else "mel" if encoder.endswith("Identity") else None
    if says is None:
        raise ConversionError(f"gin config: WavEncoder.encoder is {encoder or 'not bound'}; expected "
                              "@torch.nn.Identity (mel input) or @...EncodecEncoder (EnCodec input)")
    if says != ("encodec" if input_kind == "encodec" else "mel"):
        raise ConversionError(f"gin config: WavEncoder.encoder = {encoder}, but the weights are a {input_kind} model")
    hop = gin_value(bindings, "WavEncoder.hop_length")
    if hop not in (None, 320):
        raise ConversionError(f"gin config: WavEncoder.hop_length = {hop}; this package counts 320-sample hops")
    if input_kind == "encodec":
        return MEL_MEAN, MEL_STD
    bins = gin_value(bindings, "MelspectrogramProcessor.num_mel_bins")
    if bins != n_feat:
        raise ConversionError(f"gin config: MelspectrogramProcessor.num_mel_bins = {bins}, but "
                              f"wav_encoder.post_net.weight takes {n_feat} features")
    for name, want in MEL_SETTINGS.items():
        got = gin_value(bindings, f"MelspectrogramProcessor.{name}", default=want)
        if got != want:
            raise ConversionError(f"gin config: MelspectrogramProcessor.{name} = {got!r}; the released mel framing "
                                  f"this package implements has {want!r}")
    stats = gin_value(bindings, "MelspectrogramProcessor.norm_stats")
    if not (isinstance(stats, (list, tuple)) and len(stats) == 2):
        raise ConversionError(f"gin config: MelspectrogramProcessor.norm_stats = {stats!r}; expected [mean, std]")
    return float(stats[0]), float(stats[1])


def _v2_settings(config_text: str | None, input_kind: str, n_feat: int, d_model: int, n_enc: int) -> dict:
    """Heads, classes, decoder layers and mel normalisation from a v2 file's gin text."""
    if config_text is None:
        raise ConversionError("a v2 state dict (wav_encoder.post_net.weight) without its 'config' gin text")
    b = parse_gin(config_text)
    heads = {s: gin_value(b, "MultiHeadAttention.num_heads", s, RELEASED_HEADS) for s in ("encoder", "decoder")}
    if heads["encoder"] != heads["decoder"]:
        raise ConversionError(f"gin config: {heads['encoder']} encoder heads but {heads['decoder']} decoder heads; "
                              "this package uses one head count")
    for what, scope, name, have in (("MODEL_DIM", "encoder", "TransformerEncoder.model_dim", d_model),
                                    ("NUM_ENCODER_LAYERS", "encoder", "TransformerEncoder.num_layers", n_enc)):
        said = gin_value(b, name, scope)
        if said is not None and said != have:
            raise ConversionError(f"gin config: {what} = {said}, but the weights have {have}")
    mean, std = _check_v2_input(b, input_kind, n_feat)
    return {"n_heads": heads["encoder"], "n_classes": gin_value(b, "FrameLevelClassificationHead.num_tokens",
                                                                 default=N_CLASSES),
            "dec_layers": gin_value(b, "TransformerEncoder.num_layers", "decoder", DECODER_LAYERS),
            "mel_mean": mean, "mel_std": std}


def released_config(sd: dict, config_text: str | None = None) -> tuple[ModelConfig, rl.Layout]:
    """The ModelConfig of a released state dict (and its release's layout)."""
    layout = rl.layout_of(sd)
    if layout is None:
        raise ConversionError("not a released EnCodecMAE state_dict: neither feat_projector.weight (v1) nor "
                              f"wav_encoder.post_net.weight (v2); its keys begin {sorted(sd)[:8]}")
    d_model, n_feat = sd[f"{layout.in_proj}.weight"].shape
    input_kind = _input_kind(sd, layout, n_feat)
    n_enc = _layers(sd, "visible_encoder")
    if layout is rl.V2:
        s = _v2_settings(config_text, input_kind, n_feat, d_model, n_enc)
    else:
        s = {"n_heads": RELEASED_HEADS, "n_classes": N_CLASSES, "dec_layers": DECODER_LAYERS,
             "mel_mean": MEL_MEAN, "mel_std": MEL_STD}
    heads = s["n_heads"]
    if not 1 <= heads <= d_model:
        raise ConversionError(f"{heads} attention heads do not fit d_model {d_model}")
    wq = sd.get("visible_encoder.encoder_layers.0.att_layer.wq.weight")
    width = heads * (d_model // heads)
    if wq is not None and tuple(wq.shape) != (width, d_model):
        raise ConversionError(f"visible_encoder.encoder_layers.0.att_layer.wq.weight is {tuple(wq.shape)}: "
                              f"{heads} heads of {d_model // heads} need ({width}, {d_model})")
    ff_key = "visible_encoder.encoder_layers.0.ff_layer.0.weight"
    ff_dim = sd[ff_key].shape[0] if ff_key in sd else 4096
    rows = sum(sd[f"{h}.weight"].shape[0] for h in layout.heads if f"{h}.weight" in sd)
    if rows % s["n_classes"]:
        raise ConversionError(f"the head has {rows} outputs, not a multiple of {s['n_classes']} classes")
    n_dec = s["dec_layers"]
    for i in range(n_dec):
        if f"decoder.encoder_layers.{i}.ff_layer.0.weight" not in sd:
            raise ConversionError(f"missing key(s) decoder.encoder_layers.{i}.*: the decoder has {n_dec} layers")
    enc_shared = _shared_ff(sd, "visible_encoder", n_enc) if n_enc > 1 else _shared_ff(sd, "decoder", n_dec)
    if n_dec > 1 and _shared_ff(sd, "decoder", n_dec) != enc_shared:
        raise ConversionError("the encoder and decoder disagree on sharing their feed-forward block")
    size = next((name for name, shape in SIZES.items() if shape == (n_enc, d_model, heads)), "custom")
    cfg = ModelConfig(input=input_kind, size=size, n_layers=n_enc, d_model=d_model, n_heads=heads, ff_dim=ff_dim,
                      dec_layers=n_dec, n_streams=rows // s["n_classes"], n_classes=s["n_classes"],
                      mask_token="zeros", feedforward="shared" if enc_shared else "per_layer",
                      mel_framing="released", positions="per_stack" if layout is rl.V2 else "shared",
                      mel_mean=s["mel_mean"], mel_std=s["mel_std"])
    return cfg, layout


# --- converting -----------------------------------------------------------------------------


def _listing(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def check_keys(sd: dict, layout: rl.Layout, cfg: ModelConfig) -> None:
    want = rl.expected_keys(layout, cfg.n_layers, cfg.dec_layers, sd)
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
    if missing or unexpected:
        problems = ([f"missing {len(missing)} key(s): {_listing(missing)}"] if missing else []) + \
                   ([f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}"] if unexpected else [])
        raise ConversionError(f"not the {layout.release} layout (see encodecmae.model.released_layout): "
                              + "; ".join(problems))


def convert_with_layout(sd: dict, config_text: str | None = None) -> tuple[EncodecMAE, rl.Layout]:
    """The released state dict as our model (eval mode), and the release's layout."""
    cfg, layout = released_config(sd, config_text)
    check_keys(sd, layout, cfg)
    model = EncodecMAE(cfg)
    n_codebooks = N_Q if cfg.input == "encodec" else 0
    ours = rl.to_ours(sd, layout, cfg.n_layers, cfg.dec_layers, cfg.n_heads, n_codebooks)
    target = model.state_dict()
    for key, value in ours.items():
        if key not in target:
            raise ConversionError(f"internal: {key} is not a key of the model")  # a bug here, not the file
        if tuple(value.shape) != tuple(target[key].shape):
            raise ConversionError(f"{key}: shape {tuple(value.shape)} does not fit the model's {tuple(target[key].shape)}"
                                  f" (n_heads={cfg.n_heads}, d_model={cfg.d_model})")
    kept = {k for k in target if k not in ours}  # the zero mask token; codebooks a v2 ST file lacks
    if any(k != "mask_token" and not k.startswith("frontend.tokenizer.codebooks.") for k in kept):
        raise ConversionError(f"internal: no released tensor for {sorted(kept)[:5]}")
    model.load_state_dict({**target, **ours}, strict=True)
    return model.eval(), layout


def convert(sd: dict, config_text: str | None = None) -> EncodecMAE:
    """The released state dict (and a v2 file's gin text) as our model, in eval mode."""
    return convert_with_layout(sd, config_text)[0]


def codebook_report(sd: dict, encodec_checkpoint: str | Path | None = None) -> str:
    """What the file's target quantiser holds: the sha256 of its first 8 codebooks (equal across
    files whose targets stayed frozen at the pretrained EnCodec's), and, given the pretrained
    ``encodec_24khz`` state dict, whether they are its codebooks (implementation_notes.md,
    "Targets and loss": in train mode they update by EMA)."""
    keys = [f"{rl.TARGET_CODEBOOKS}{q}._codebook.embed" for q in range(N_Q)]
    if not all(k in sd for k in keys):
        return "target codebooks: none in the file (a self-training model's targets are cluster ids)"
    digest = hashlib.sha256(b"".join(sd[k].float().numpy().tobytes() for k in keys)).hexdigest()
    text = f"target codebooks 0-{N_Q - 1} ({rl.TARGET_CODEBOOKS}*._codebook.embed): sha256 {digest}"
    if encodec_checkpoint is not None:
        ref = torch.load(encodec_checkpoint, map_location="cpu", weights_only=True)
        diffs = [(sd[k].float() - ref[f"quantizer.vq.layers.{q}._codebook.embed"].float()).abs()
                 for q, k in enumerate(keys)]
        rows = sum(int((d.amax(1) > 0).sum()) for d in diffs)
        text += (f"; equal to {encodec_checkpoint}'s" if rows == 0 else
                 f"; differ from {encodec_checkpoint}'s in {rows} of {sum(len(d) for d in diffs)} codewords "
                 f"(max |difference| {max(float(d.max()) for d in diffs):.3g}): the targets drifted in training")
    return text


def import_released(checkpoint: str | Path, out: str | Path, name: str | None = None, url: str | None = None,
                    encodec_checkpoint: str | Path | None = None) -> Path:
    """Convert a released checkpoint (v1 ``model.pt`` or v2 ``{name}.pt``) and write it as this
    package's model file."""
    from encodecmae import provenance
    from encodecmae.training import checkpoints as ckpt_io

    sd, config_text = load_released(checkpoint)
    try:
        model, layout = convert_with_layout(sd, config_text)
    except ConversionError as exc:
        raise ConversionError(f"{checkpoint}: {exc}") from exc
    digest = provenance.sha256_file(checkpoint)
    settings = {"released": name, "release": layout.release, "url": url, "sha256": digest,
                "model_config": model.cfg.to_dict()}
    prov = {**provenance.code_state(), "run_key": f"released-{name or Path(checkpoint).parent.name}",
            "settings": settings, "settings_sha256": provenance.sha256_json(settings), "train_data_sha256": None,
            "init_from": None, "encodec_sha256": None, "released_sha256": digest}
    ckpt_io.save(out, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": None,
                       "config": {"released": settings}, "code_version": ckpt_io.code_version(), "gamma": None,
                       "provenance": prov})
    distinct, per_use = count_parameters(model), count_parameters(model, per_use=True)
    c = model.cfg
    print(f"{checkpoint} (sha256 {digest}) -> {out}: {layout.release} release, input {c.input}, {c.size} "
          f"({c.n_layers} x {c.d_model}, {c.n_heads} heads of {c.head_dim}), feed-forward {c.feedforward}, "
          f"positions {c.positions}, {c.n_streams} stream(s) of {c.n_classes}; encoder {distinct['encoder'] / 1e6:.1f} M "
          f"distinct, {per_use['encoder'] / 1e6:.1f} M per use", flush=True)
    print(codebook_report(sd, encodec_checkpoint), flush=True)
    return Path(out)


def register(sub) -> None:
    p = sub.add_parser("import-released", help="convert the authors' released checkpoint (v1 model.pt or v2 "
                                               "{name}.pt) into this package's model")
    p.add_argument("--checkpoint", required=True, help="released file: a dict with 'state_dict' (v2: and 'config')")
    p.add_argument("--out", required=True, help="model file to write")
    p.add_argument("--name", default=None, help="the release's name, recorded in the provenance")
    p.add_argument("--url", default=None, help="where it came from, recorded in the provenance")
    p.add_argument("--encodec-checkpoint", default=None,
                   help="the pretrained encodec_24khz state dict: reports whether the file's target codebooks are its")
    p.set_defaults(func=cmd_import_released)


def cmd_import_released(args: argparse.Namespace) -> None:
    import_released(args.checkpoint, args.out, args.name, args.url, args.encodec_checkpoint)
