"""The Python API under the CLI: fuse arrays or files. Each call is a `Fuser` used once;
keep a Fuser open to fuse many sets with one setup."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from semfuse_rt.engine.backends.base import ProgressCallback
from semfuse_rt.engine.cam import Retention
from semfuse_rt.engine.fuser import DEFAULT_LAYER, Fuser, FusionResult
from semfuse_rt.engine.images import DEFAULT_MAX_PIXELS, load_image, save_image

__all__ = ["DEFAULT_LAYER", "Fuser", "FusionResult", "fuse", "fuse_files", "fuse_result", "load_image",
           "retention", "save_image"]


def fuse_result(images: Sequence[np.ndarray], method: str = "max", *,
                progress: ProgressCallback | None = None, **options) -> FusionResult:
    """Fuse K >= 2 registered images; returns the image and how the optimisation went.

    Options (see `Fuser`): layer, preset, steps, lr, decay, init, window, backend, weights,
    classes, cam_weights, mean_base. Semantic methods (`cam`, `cam-max`, `cam-majority`)
    classify each input with the CAM network (EfficientNet-Lite0, or VGG19 when
    `cam_weights` is a full torchvision file) and weight by the Grad-CAM maps of its
    `classes` most probable classes. `preset` (engine/presets.py) supplies steps, lr,
    decay, init and mean_base where they are None. `mean_base` > 0 puts the optimised
    detail over the inputs' mean base layer (engine/base_layer.py).
    """
    with Fuser(method, **options) as fuser:
        return fuser(images, progress)


def fuse(images: Sequence[np.ndarray], method: str = "max", **options) -> np.ndarray:
    """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of the same mode."""
    return fuse_result(images, method, **options).image


def fuse_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike, method: str = "max", *,
               save_cams: str | os.PathLike | None = None, report: bool = False,
               progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               **options) -> FusionResult:
    """Read, fuse and write atomically (see Fuser.fuse_files)."""
    fuser = Fuser(method, **options)  # checks the options; sets up only once the inputs are read
    try:
        return fuser.fuse_files(paths, output, save_cams=save_cams, report=report, progress=progress,
                                max_pixels=max_pixels)
    finally:
        fuser.close()


def retention(images: Sequence[np.ndarray], fused: np.ndarray,
              cam_weights: str | os.PathLike | None = None) -> list[Retention]:
    """Whether each input's top-1 class survives in the fused image (rank and probability)."""
    return Fuser("cam", cam_weights=cam_weights).retention(images, fused)
