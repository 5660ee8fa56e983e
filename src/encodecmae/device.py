"""Where a job computes: the one place a ``--device`` value becomes a torch device."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` means CUDA when there is a GPU, else the CPU.

    With ``local_rank`` (a data-parallel rank of a training job), a CUDA device is that rank's
    GPU and becomes the process's current device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)
