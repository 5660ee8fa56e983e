"""Checkpoints: everything needed to resume training and to rebuild the model.

A training checkpoint holds the model weights, the optimiser state, the step, the RNG states,
the resolved model and training configuration, the code version and the run's provenance (code
commit, settings and data hashes: see ``provenance``). The final model file a training run writes
is the same dictionary without the optimiser state.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from encodecmae import __version__
from encodecmae.model.config import ModelConfig
from encodecmae.model.transformer import EncodecMAE
from encodecmae.provenance import UNKNOWN, code_state


def code_version() -> str:
    """Package version plus the code commit of the checkout when there is one (the last commit
    that changed the code, not HEAD: see ``provenance.code_state``), ``.dirty`` if it differs."""
    state = code_state()
    if state["code_commit"] == UNKNOWN:
        return __version__
    return f"{__version__}+g{state['code_commit'][:12]}{'.dirty' if state['code_dirty'] else ''}"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    # RNG states must be CPU byte tensors, whatever map_location loaded the checkpoint onto
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # a job may resume on a node with fewer visible GPUs than the one that saved it
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


def save(path: str | Path, payload: dict) -> None:
    """Atomic torch.save: a killed job never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise ValueError(f"{path}: not an EnCodecMAE checkpoint (no 'model'/'model_config')")
    return ckpt


def build_model(ckpt: dict) -> EncodecMAE:
    """Rebuild the model of a checkpoint (codec weights come from the checkpoint itself)."""
    cfg = replace(ModelConfig.from_dict(ckpt["model_config"]), encodec_checkpoint=None)
    model = EncodecMAE(cfg)
    model.load_state_dict(ckpt["model"])
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> EncodecMAE:
    """The model of a checkpoint file, in eval mode on ``device``."""
    return build_model(load(path)).to(device).eval()


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Step checkpoints in ``ckpt_dir`` (step_0001000.pt ...), oldest first."""
    return sorted(Path(ckpt_dir).glob("step_*.pt"))
