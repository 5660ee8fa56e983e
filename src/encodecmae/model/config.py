"""The model's settings: size presets and the architecture of one model. Free of torch, so that
the workflow can plan with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Input features: log-mel with 256 or 128 bins, or the frozen EnCodec encoder's outputs.
INPUTS = ("mel256", "mel128", "encodec")
# Normalisation of the log-mel features (statistics of the original implementation).
MEL_MEAN = -6.12
MEL_STD = 4.82

# Where the released code (the authors' v2 code, which made the paper's numbers; v1 is the first
# release) differs from the paper's text, both are settings. Each tuple: the values, the first is
# our default.
FEEDFORWARD = ("per_layer", "shared")  # shared: one feed-forward block per stack, as released (v1, v2)
MASK_TOKENS = ("learned", "zeros")  # the paper's text: learned; the released code inserts zeros
MEL_FRAMINGS = ("aligned", "released")  # hop 320 centred on EnCodec frames; released: 318-sample shift
# per_stack: the encoder input and the decoder input each add their own positional scale (v2:
# the masker's and the decoder's); shared: one scale for both (v1)
POSITIONS = ("per_stack", "shared")
# ... and of the training objective (encodecmae.model.masking, encodecmae.model.loss)
MASK_STARTS = ("anywhere", "released")  # released: spans start in [0, L - gap], excess off the first
LOSS_NORMS = ("clip", "batch")  # means per clip, or over the batch's frames as released

# name -> (encoder layers, D, heads). The paper's small/base/large; "debug" is for CPU tests.
# Every released model has 12 heads of D // 12 (the large one: 12 heads of 85, attention 1020 wide).
SIZES = {
    "debug": (2, 64, 4),
    "small": (5, 768, 12),
    "base": (10, 768, 12),
    "large": (20, 1024, 12),
}


@dataclass
class ModelConfig:
    input: str = "mel256"  # mel256 | mel128 | encodec
    size: str = "base"
    n_layers: int = 10
    d_model: int = 768
    n_heads: int = 12  # each head D // n_heads wide: attention is n_heads * (D // n_heads) wide
    ff_dim: int = 4096
    dec_layers: int = 2
    n_streams: int = 8  # Q: EnCodec codebooks (8) or 1 for cluster targets
    n_classes: int = 1024  # K
    mask_token: str = "learned"  # MASK_TOKENS: the paper; "zeros" is what the released code does
    feedforward: str = "per_layer"  # FEEDFORWARD: one block per layer, or one per stack (released)
    mel_framing: str = "aligned"  # MEL_FRAMINGS (mel inputs only)
    positions: str = "per_stack"  # POSITIONS: per_stack as v2 (the paper's code), shared as v1
    mel_mean: float = MEL_MEAN
    mel_std: float = MEL_STD
    encodec_checkpoint: str | None = None  # only read when input == "encodec" and weights are new

    def __post_init__(self):
        for name, allowed in (("mask_token", MASK_TOKENS), ("feedforward", FEEDFORWARD),
                              ("mel_framing", MEL_FRAMINGS), ("positions", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model setting {name}={getattr(self, name)!r}: expected one of {allowed}")
        if not 1 <= self.n_heads <= self.d_model:
            raise ValueError(f"model setting n_heads={self.n_heads}: expected 1 to d_model ({self.d_model})")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, D // n_heads (rounded down, as the released code)."""
        return self.d_model // self.n_heads

    @classmethod
    def from_size(cls, size: str, **overrides) -> "ModelConfig":
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; expected one of {sorted(SIZES)}")
        n_layers, d, heads = SIZES[size]
        ff = 128 if size == "debug" else 4096
        return cls(size=size, n_layers=n_layers, d_model=d, n_heads=heads, ff_dim=ff, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**d)
