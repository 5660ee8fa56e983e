"""The upstream's states that the ASR downstream mixes, at the ASR frame rate.

Which states (``layer_mix``, a setting of the SUPERB ASR evaluation):

* ``all``: L + 1 states, as s3prl's ``hidden_states`` for HuBERT / wav2vec 2.0: index 0 is the
  input of the first encoder block (projected features + positions), 1 .. L-1 the output
  (post-LN stream) of blocks 1 .. L-1, and L the encoder output (``x_post + LN(x_res)`` of the
  last block, what embeddings use), which takes the place of block L's post-LN stream.
* ``released``: the L states the authors' code returns per layer (their HEAR wrapper's
  ``layer='all'``, what s3prl mixes for their upstream): blocks 1 .. L-1 and the encoder output,
  i.e. ``EncodecMAE.hidden_states[:L-1] + [hidden_states[-1]]`` (``all`` without its input state).

Frame averaging: pairs (0, 1), (2, 3), ... of the 75-Hz frames; an odd last frame is kept alone,
so the whole utterance is covered (T -> ceil(T / 2)). Pairs never straddle two 4-s chunks, which
have 300 frames each.
"""

from __future__ import annotations

import numpy as np
import torch

from encodecmae import FRAME_RATE

ASR_FRAME_RATE = FRAME_RATE / 2  # 37.5 Hz: pairs of frames averaged (the paper, section 3)
CHUNK_BATCH = 16  # 4-s chunks per upstream forward pass
LAYER_MIXES = ("all", "released")  # see the module docstring
DEFAULT_LAYER_MIX = "all"


def _check_mix(layer_mix: str) -> None:
    if layer_mix not in LAYER_MIXES:
        raise ValueError(f"layer mix {layer_mix!r}: expected one of {', '.join(LAYER_MIXES)}")


def layer_names(n_layers: int, layer_mix: str = DEFAULT_LAYER_MIX) -> list[str]:
    """What each mixed state is: L + 1 names (``all``) or L (``released``)."""
    _check_mix(layer_mix)
    names = (["input (projected features + positions)"] + [f"block {i} output" for i in range(1, n_layers)]
             + [f"encoder output (block {n_layers} + output norm)"])
    return names if layer_mix == "all" else names[1:]


def hidden_states(model, wav: torch.Tensor, layer_mix: str = DEFAULT_LAYER_MIX) -> torch.Tensor:
    """The states of ``layer_mix`` of an unmasked pass: wav [B, N] at 24 kHz -> [B, S, T, D] with
    S = L + 1 (``all``) or L (``released``).

    ``EncodecMAE.hidden_states`` has no input state (index 0 of ``all``, as s3prl's), so the
    encoder is run here: its input, then blocks 1 .. L-1, then the encoder output (which replaces
    block L's post-LN stream: see the module docstring).
    """
    from encodecmae.model.masking import valid_mask

    _check_mix(layer_mix)
    x = model.embed_input(wav)  # [B, T, D]
    B, T, _ = x.shape
    keep = valid_mask(torch.full((B,), T, dtype=torch.long, device=x.device), T)  # [B, T]: no padding
    out, layers = model.encoder(x, keep, return_all=True)  # [B, T, D], L x [B, T, D]
    states = [*layers[:-1], out] if layer_mix == "released" else [x, *layers[:-1], out]
    return torch.stack(states, dim=1)  # [B, S, T, D]


def average_pairs(x: np.ndarray | torch.Tensor, axis: int = -2):
    """Mean of frames (0, 1), (2, 3), ... along ``axis`` (default: the T of [..., T, D]); an odd
    last frame is kept alone. [..., T, D] -> [..., ceil(T / 2), D]."""
    is_np = isinstance(x, np.ndarray)
    t = torch.from_numpy(x) if is_np else x
    t = t.movedim(axis, 0)  # [T, ...]
    n = t.shape[0]
    even = t[: n // 2 * 2].reshape(n // 2, 2, *t.shape[1:]).mean(1)  # [T // 2, ...]
    if n % 2:
        even = torch.cat([even, t[n - 1 :]], 0)  # the odd last frame, alone
    out = even.movedim(0, axis)
    return out.numpy() if is_np else out


def layer_features_batch(model, wavs: list[np.ndarray], batch_size: int = CHUNK_BATCH,
                         device: str | torch.device | None = None,
                         layer_mix: str = DEFAULT_LAYER_MIX) -> list[np.ndarray]:
    """:func:`layer_features` of several 24-kHz utterances: [S, ceil(T / 2), D] float32 each.

    Each utterance is cut into 4-s chunks (the model was trained on 4-s crops) and the chunks
    run as embeddings' are (:func:`encodecmae.evaluation.embed.run_chunks`: batches of equal
    length, no padding); each utterance's frames are concatenated before averaging pairs.
    """
    from encodecmae.evaluation.embed import run_chunks

    device = device if device is not None else next(model.parameters()).device

    def forward(wav: torch.Tensor) -> np.ndarray:  # [b, n] -> [b, S, t, D]
        return hidden_states(model, wav, layer_mix).float().cpu().numpy()

    chunks = run_chunks(forward, [np.asarray(w, np.float32) for w in wavs], batch_size, device)
    return [average_pairs(np.concatenate(c, axis=1)) for c in chunks]  # [S, ceil(T / 2), D]


def layer_features(model, wav: np.ndarray, layer_mix: str = DEFAULT_LAYER_MIX) -> np.ndarray:
    """Every mixed state's activations for one 24-kHz utterance, pairs of frames averaged:
    [S, ceil(T / 2), D] float32 with T = ceil(N / 320) frames at 75 Hz (run on 4-s chunks)."""
    return layer_features_batch(model, [wav], layer_mix=layer_mix)[0]
