"""Where the image optimisation starts: the mean of the inputs by default."""
from __future__ import annotations

import torch

from semfuse_rt.engine.errors import SemfuseError

INITIALISATIONS = ("mean", "max")


def initial_image(pixels: torch.Tensor, how: str) -> torch.Tensor:
    """(K, 3, H, W) inputs -> (1, 3, H, W) starting image."""
    if how == "mean":
        return pixels.mean(dim=0, keepdim=True)
    if how == "max":
        return pixels.max(dim=0, keepdim=True).values
    raise SemfuseError(f"unknown initialisation {how!r}; use one of {', '.join(INITIALISATIONS)}")
