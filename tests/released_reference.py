"""The authors' released models for the tests, written from the documented layouts, not from our model.

``released_state_dict`` builds a v1 or v2 state dict with random weights from the shapes of
encodecmae.model.released_layout; ``reference_hidden`` and ``reference_logits`` re-implement the
authors' forward pass (models/transformers, models/masks, models/mae.py at HEAD; tasks/models at
v.1.0.0): ResiDual layers, attention viewed as [T, head width, heads] with a -1e9 key mask,
sinusoidal positions times learned scales (v2: the masker's and the decoder's; v1: one), zeros
at the masked positions, Kaldi fbank mel input (torchaudio.compliance.kaldi, as their
MelspectrogramProcessor) or the EnCodec encoder run as encodec runs it.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi

from encodecmae.model import released_layout as rl
from encodecmae.targets.codec import new_encodec

HOP = 320


@functools.lru_cache(maxsize=1)
def _encodec():
    """One 24-kHz EnCodec for the whole session (building one is the slow part of these tests) and
    its initial encoder weights. Whoever runs it loads every weight it uses first."""
    with torch.random.fork_rng():
        model = new_encodec()
    return model, {k: v.clone() for k, v in model.encoder.state_dict().items()}


def shared_encodec():
    return _encodec()[0]


def gin_text(d_model: int, n_layers: int, n_heads: int = 12, mel_bins: int | None = 256, n_streams: int = 8,
             n_classes: int = 1024, frame_shift: float = 13.28) -> str:
    """A v2 file's ``config``, as gin.config_str() writes the authors' encodecmae.gin + mel.gin
    (trimmed to the bindings the converter reads and a few around them)."""
    encoder = "@torch.nn.Identity" if mel_bins else "@encodecmae.models.encoders.EncodecEncoder"
    mel = "" if not mel_bins else f"""
# Parameters for MelspectrogramProcessor:
# ==============================================================================
MelspectrogramProcessor.dither = 0.0
MelspectrogramProcessor.frame_length = 26.56
MelspectrogramProcessor.frame_shift = {frame_shift}
MelspectrogramProcessor.htk_compat = True
MelspectrogramProcessor.key_in = 'wav'
MelspectrogramProcessor.key_out = 'wav_features'
MelspectrogramProcessor.norm_stats = [-6.12, 4.82]
MelspectrogramProcessor.num_mel_bins = %NUM_MEL_BINS
MelspectrogramProcessor.sample_frequency = 24000
MelspectrogramProcessor.use_energy = False
MelspectrogramProcessor.window_type = 'hanning'
"""
    return f"""# Macros:
# ==============================================================================
MASK_GAP_SIZE = 15
MODEL_DIM = {d_model}
NUM_DECODER_HEADS = {n_heads}
NUM_DECODER_LAYERS = 2
NUM_ENCODER_HEADS = {n_heads}
NUM_ENCODER_LAYERS = {n_layers}
NUM_MEL_BINS = {mel_bins or 256}
NUM_TARGET_TOKENS = {n_classes}
NUM_TOTAL_TARGETS = {n_streams}
QUANTIZER_WEIGHTS = \\
    [0.22407463,
     0.1759858,
     0.14499009,
     0.12150037,
     0.10315603,
     0.08831368,
     0.07608274,
     0.06589669]

# Parameters for decoder/transformers.TransformerEncoder:
# ==============================================================================
decoder/transformers.TransformerEncoder.attention_layer = \\
    @decoder/encodecmae.models.transformers.MultiHeadAttention
decoder/transformers.TransformerEncoder.model_dim = %MODEL_DIM
decoder/transformers.TransformerEncoder.num_layers = %NUM_DECODER_LAYERS
decoder/transformers.TransformerEncoder.positional_encoder = \\
    @encodecmae.models.transformers.SinusoidalPositionalEmbeddings

# Parameters for decoder/MultiHeadAttention:
# ==============================================================================
decoder/MultiHeadAttention.model_dim = %MODEL_DIM
decoder/MultiHeadAttention.num_heads = %NUM_DECODER_HEADS

# Parameters for encoder/transformers.TransformerEncoder:
# ==============================================================================
encoder/transformers.TransformerEncoder.model_dim = %MODEL_DIM
encoder/transformers.TransformerEncoder.num_layers = %NUM_ENCODER_LAYERS
encoder/transformers.TransformerEncoder.post_net = @decoder_proj/torch.nn.Linear

# Parameters for encoder/MultiHeadAttention:
# ==============================================================================
encoder/MultiHeadAttention.model_dim = %MODEL_DIM
encoder/MultiHeadAttention.num_heads = %NUM_ENCODER_HEADS

# Parameters for FrameLevelClassificationHead:
# ==============================================================================
FrameLevelClassificationHead.model_dim = %MODEL_DIM
FrameLevelClassificationHead.num_streams = %NUM_TOTAL_TARGETS
FrameLevelClassificationHead.num_tokens = %NUM_TARGET_TOKENS
{mel}
# Parameters for SequentialProcessor:
# ==============================================================================
SequentialProcessor.processors = \\
    [@encodecmae.tasks.features.ReadAudioProcessor,
     @encodecmae.tasks.features.MelspectrogramProcessor]

# Parameters for WavEncoder:
# ==============================================================================
WavEncoder.encoder = {encoder}
WavEncoder.fs = 24000
WavEncoder.hop_length = 320
WavEncoder.post_net = @wav_encoder_proj/torch.nn.Linear
"""


def _linear(g, out_f, in_f, bias=True):
    w = torch.randn(out_f, in_f, generator=g) / math.sqrt(in_f)
    return (w, 0.1 * torch.randn(out_f, generator=g)) if bias else (w,)


def released_state_dict(release: str, d_model: int = 64, n_heads: int = 4, n_enc: int = 2, n_feat: int = 256,
                        ff_dim: int = 96, n_streams: int = 8, n_classes: int = 1024, encodec_input: bool = False,
                        extra_head: bool = False, targets: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of the documented layout, every tensor random (LayerNorms and scales off 1/0)."""
    g = torch.Generator().manual_seed(seed)
    layout = rl.V1 if release == "v1" else rl.V2
    width = n_heads * (d_model // n_heads)
    sd: dict[str, torch.Tensor] = {}

    def put(name, *tensors):
        for p, t in zip(("weight", "bias"), tensors):
            sd[f"{name}.{p}"] = t

    put(layout.in_proj, *_linear(g, d_model, 128 if encodec_input or release == "v1" else n_feat))
    put(layout.enc_to_dec, *_linear(g, d_model, d_model))
    sd[layout.enc_pos] = torch.tensor(0.7)
    sd[layout.dec_pos] = torch.tensor(1.3) if layout is rl.V2 else sd[layout.enc_pos]
    put("head.layer", *_linear(g, n_streams * n_classes, d_model))
    if extra_head:
        put("extra_head.layer", *_linear(g, n_classes, d_model))
    for stack, n in (("visible_encoder", n_enc), ("decoder", 2)):
        ff = _linear(g, ff_dim, d_model) + _linear(g, d_model, ff_dim)  # one block per stack, as released
        for i in range(n):
            pre = f"{stack}.encoder_layers.{i}."
            for w in ("wq", "wk", "wv"):
                sd[pre + f"att_layer.{w}.weight"] = _linear(g, width, d_model, bias=False)[0]
            sd[pre + "att_layer.wo.weight"] = _linear(g, d_model, width, bias=False)[0]
            put(pre + "ff_layer.0", ff[0], ff[1])
            put(pre + "ff_layer.2", ff[2], ff[3])
            for norm in ("norm1", "norm2"):
                put(pre + norm, 1 + 0.2 * torch.randn(d_model, generator=g), 0.1 * torch.randn(d_model, generator=g))
        put(f"{stack}.final_norm", 1 + 0.2 * torch.randn(d_model, generator=g), 0.1 * torch.randn(d_model, generator=g))
    if encodec_input or release == "v1":
        sd |= {layout.encodec + k: v for k, v in _encodec_encoder_state(g).items()}
    if targets:
        sd |= _codebooks(g)
        if not encodec_input and release == "v2":
            sd |= {rl.TARGET_ENCODER + k: v for k, v in _encodec_encoder_state(g).items()}
    return sd


def _encodec_encoder_state(g) -> dict[str, torch.Tensor]:
    state = _encodec()[1]
    return {k: v * (1 + 0.1 * torch.randn(v.shape, generator=g)) for k, v in state.items()}


def _codebooks(g) -> dict[str, torch.Tensor]:
    out = {}
    for q in range(rl.N_CODEBOOKS):
        pre = f"{rl.TARGET_CODEBOOKS}{q}._codebook."
        out |= {pre + "inited": torch.ones(1), pre + "cluster_size": 10 * torch.rand(1024, generator=g),
                pre + "embed": torch.randn(1024, 128, generator=g), pre + "embed_avg": torch.randn(1024, 128, generator=g)}
    return out


# --- the authors' forward pass ------------------------------------------------------------


def sinusoid(n: int, d: int) -> torch.Tensor:
    pe = torch.zeros(n, d)
    position = torch.arange(0, n).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float) * -(math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def attention(x, sd, pre, n_heads, key_mask):
    """MultiHeadAttention.forward: projections viewed as [N, T, head width, heads]."""
    N, T, _ = x.shape
    wq = sd[pre + "wq.weight"]
    dh = wq.shape[0] // n_heads

    def split(w):
        return (x @ w.T).view(N, T, dh, n_heads).permute(0, 3, 1, 2).reshape(N * n_heads, T, dh)

    Q, K, V = (split(sd[pre + f"{w}.weight"]) for w in ("wq", "wk", "wv"))
    mask = key_mask[:, None, None, :].expand(N, n_heads, T, T).reshape(N * n_heads, T, T).float()
    att = (Q @ K.transpose(-2, -1) * dh ** -0.5 + mask * -1e9).softmax(-1)
    y = (att @ V).view(N, n_heads, T, dh).permute(0, 2, 3, 1).reshape(N, T, dh * n_heads)
    return y @ sd[pre + "wo.weight"].T


def stack(x, sd, name, n_layers, n_heads, key_mask):
    """TransformerEncoder with ResiDual layers: (final output, the L blocks' post-LN outputs)."""
    D = x.shape[-1]

    def ln(v, pre):
        return F.layer_norm(v, (D,), sd[pre + ".weight"], sd[pre + ".bias"])

    x0, x1, acts = x, x, []
    for i in range(n_layers):
        pre = f"{name}.encoder_layers.{i}."
        a = attention(x0, sd, pre + "att_layer.", n_heads, key_mask)
        x0, x1 = ln(x0 + a, pre + "norm1"), x1 + a
        h = F.relu(x0 @ sd[pre + "ff_layer.0.weight"].T + sd[pre + "ff_layer.0.bias"])
        f = h @ sd[pre + "ff_layer.2.weight"].T + sd[pre + "ff_layer.2.bias"]
        x0, x1 = ln(x0 + f, pre + "norm2"), x1 + f
        acts.append(x0)
    return x0 + ln(x1, f"{name}.final_norm"), acts


def input_features(wav: torch.Tensor, sd: dict, release: str, n_feat: int) -> torch.Tensor:
    """[B, N] -> [B, T, F]: their MelspectrogramProcessor per sound, or the EnCodec encoder."""
    layout = rl.V1 if release == "v1" else rl.V2
    if rl.present(sd, layout.encodec):
        encoder = shared_encodec().encoder
        encoder.load_state_dict({k[len(layout.encodec):]: v for k, v in sd.items() if k.startswith(layout.encodec)})
        with torch.no_grad():
            return encoder(wav[:, None]).permute(0, 2, 1)
    mels = [kaldi.fbank(w[None], frame_shift=13.28, frame_length=26.56, htk_compat=True, use_energy=False,
                        window_type="hanning", num_mel_bins=n_feat, dither=0.0, sample_frequency=24000) for w in wav]
    return (torch.stack(mels) + 6.12) / 4.82


def projected(wav, sd, release, n_feat, wav_len=None):
    """(input with the encoder's positions [B, T, D], key mask [B, T]) for unmasked extraction;
    ``wav_len``: the length their padding mask counts (features_len = wav_lens // 320)."""
    layout = rl.V1 if release == "v1" else rl.V2
    feats = input_features(wav, sd, release, n_feat)
    x = feats @ sd[f"{layout.in_proj}.weight"].T + sd[f"{layout.in_proj}.bias"]
    B, T, D = x.shape
    key_mask = torch.arange(T)[None, :] >= ((wav.shape[1] if wav_len is None else wav_len) // HOP)
    return x + sd[layout.enc_pos] * sinusoid(T, D), key_mask.expand(B, T)


def reference_hidden(wav, sd, release, n_heads, n_enc, n_feat=256, wav_len=None):
    """(final output, the L blocks' outputs) of the visible encoder on unmasked input."""
    x, key_mask = projected(wav, sd, release, n_feat, wav_len)
    return stack(x, sd, "visible_encoder", n_enc, n_heads, key_mask)


def reference_logits(wav, mask, sd, release, n_heads, n_enc, n_feat=256):
    """The training pass: visible frames encoded, zeros at the masked ones, decoder, head (and
    v1's extra head): [B, T, streams, 1024]. mask [B, T] True = masked (no padding)."""
    layout = rl.V1 if release == "v1" else rl.V2
    x, _ = projected(wav, sd, release, n_feat)
    B, T, D = x.shape
    visible = torch.stack([x[b, ~mask[b]] for b in range(B)])  # equal visible counts in these tests
    enc, _ = stack(visible, sd, "visible_encoder", n_enc, n_heads, torch.zeros(visible.shape[:2], dtype=torch.bool))
    enc = enc @ sd[f"{layout.enc_to_dec}.weight"].T + sd[f"{layout.enc_to_dec}.bias"]
    dec_in = torch.zeros(B, T, D)
    dec_in[~mask] = enc.reshape(-1, D)
    dec_in = dec_in + sd[layout.dec_pos] * sinusoid(T, D)
    dec, _ = stack(dec_in, sd, "decoder", 2, n_heads, torch.zeros(B, T, dtype=torch.bool))
    heads = [h for h in layout.heads if f"{h}.weight" in sd]
    logits = torch.cat([dec @ sd[f"{h}.weight"].T + sd[f"{h}.bias"] for h in heads], dim=-1)
    return logits.view(B, T, -1, 1024)


def reference_codes(wav, sd, release) -> torch.Tensor:
    """[B, 8, T] codes of the file's target quantiser, computed by encodec's own RVQ on the file's
    EnCodec encoder output (the authors' EncodecQuantizer)."""
    layout = rl.V1 if release == "v1" else rl.V2
    model = shared_encodec()
    model.encoder.load_state_dict({k[len(layout.encodec):]: v for k, v in sd.items() if k.startswith(layout.encodec)})
    model.quantizer.vq.load_state_dict({k[len("target_encoder.model.vq."):]: v for k, v in sd.items()
                                        if k.startswith(rl.TARGET_CODEBOOKS)})
    model.eval()
    with torch.no_grad():
        return model.quantizer.encode(model.encoder(wav[:, None]), 75, 6.0).transpose(0, 1)
