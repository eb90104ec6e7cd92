"""Where the image optimisation starts: the mean of the inputs by default.

`max` is the per-pixel maximum; `dtcwt` is DT-CWT choose-max fusion of the inputs (a
classic multiresolution result the optimisation then refines); `dtcwt-verified` the same
with 3 x 3 consistency verification of the choices. The DT-CWT runs as torch ops on the
pixels' device (export/dtcwt_graph.py), or as its graph in ONNX Runtime. `pyramid-blend` is
a Laplacian-pyramid blend with per-pixel weights from the inputs' local contrast and
structural agreement (engine/pyramid_blend.py, `agreement_blend`): torch ops on the pixels'
device on every backend; its deepest band spans the whole image.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:
    import torch

INITIALISATIONS = ("mean", "max", "dtcwt", "dtcwt-verified", "pyramid-blend")
VERIFY_WINDOW = 3


def check_initialisation(how: str) -> str:
    if how not in INITIALISATIONS:
        raise SemfuseError(f"unknown initialisation {how!r}; use one of {', '.join(INITIALISATIONS)}")
    return how


def _dtcwt(pixels: torch.Tensor, verify: int) -> torch.Tensor:
    # float64 on the CPU, as the numpy reference (engine/baselines.py) computes; a GPU's
    # float32 differs from it by about 1e-4 grey levels.
    import torch  # here, so that `--help` (INITIALISATIONS) loads no torch

    from semfuse_rt.export.dtcwt_graph import dtcwt_start

    return dtcwt_start(pixels, verify, dtype=torch.float64 if pixels.device.type == "cpu" else None)


def _pyramid_blend(pixels: torch.Tensor) -> torch.Tensor:
    # In the pixels' float32: half float64's time on the CPU, and the same scores on every
    # development set to four decimals (benchmarks/RESULTS.md, "The `blend` default").
    from semfuse_rt.engine.pyramid_blend import agreement_blend

    return agreement_blend(pixels)


def initial_image(pixels: torch.Tensor, how: str) -> torch.Tensor:
    """(K, 3, H, W) inputs -> (1, 3, H, W) starting image."""
    check_initialisation(how)
    if how == "mean":
        return pixels.mean(dim=0, keepdim=True)
    if how == "max":
        return pixels.max(dim=0, keepdim=True).values
    if how == "pyramid-blend":
        return _pyramid_blend(pixels)
    return _dtcwt(pixels, VERIFY_WINDOW if how == "dtcwt-verified" else 0)
