"""Where the image optimisation starts: the mean of the inputs by default.

`max` is the per-pixel maximum; `dtcwt` is DT-CWT choose-max fusion of the inputs (a
classic multiresolution result the optimisation then refines); `dtcwt-verified` the same
with 3 x 3 consistency verification of the choices.
"""
from __future__ import annotations

import numpy as np
import torch

from semfuse_rt.errors import SemfuseError

INITIALISATIONS = ("mean", "max", "dtcwt", "dtcwt-verified")
VERIFY_WINDOW = 3


def check_initialisation(how: str) -> str:
    if how not in INITIALISATIONS:
        raise SemfuseError(f"unknown initialisation {how!r}; use one of {', '.join(INITIALISATIONS)}")
    return how


def _dtcwt(pixels: torch.Tensor, verify: int) -> torch.Tensor:
    from semfuse_rt.engine.baselines import dtcwt_choose_max

    planes = pixels.double().numpy()
    channels = []
    for c in range(3):
        same_as = next((j for j in range(c) if np.array_equal(planes[:, c], planes[:, j])), None)
        # Grey inputs are three equal channels: transform one of them.
        if same_as is not None:
            channels.append(channels[same_as])
        else:
            channels.append(dtcwt_choose_max(list(planes[:, c]), verify=verify))
    return torch.from_numpy(np.stack(channels)[None]).to(pixels.dtype)


def initial_image(pixels: torch.Tensor, how: str) -> torch.Tensor:
    """(K, 3, H, W) inputs -> (1, 3, H, W) starting image."""
    check_initialisation(how)
    if how == "mean":
        return pixels.mean(dim=0, keepdim=True)
    if how == "max":
        return pixels.max(dim=0, keepdim=True).values
    return _dtcwt(pixels, VERIFY_WINDOW if how == "dtcwt-verified" else 0)
