"""The Python API under the CLI: fuse arrays or files. Each call is a fuser used once; keep a
`Fuser` open to fuse many sets with one setup.

`make_fuser` picks the fuser: a fuse that is its start image alone (no steps, no semantic
phase, no base layer: the default preset `blend`) runs as engine/fuse/start_only.py's, which
imports no torch and loads no weights; every other one is a `Fuser`. This module imports
torch only with the Fuser, when one is made or named.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from semfuse_rt.engine.fuse.fuse_options import OWN_OPTIONS, FuseOptions, fuse_options
from semfuse_rt.engine.fuse.fusion_result import FusionResult
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS, load_image, save_image
from semfuse_rt.engine.fuse.methods import DEFAULT_LAYER, DEFAULT_METHOD
from semfuse_rt.engine.limits.option_checks import check_option_names
from semfuse_rt.engine.fuse.start_only import StartOnlyFuser, start_only_fuser

if TYPE_CHECKING:
    from semfuse_rt.engine.backends.base import ProgressCallback
    from semfuse_rt.engine.semantic.cam import Retention
    from semfuse_rt.engine.fuse.fuser import Fuser

__all__ = ["DEFAULT_LAYER", "Fuser", "FuseOptions", "FusionResult", "fuse", "fuse_files", "fuse_result",
           "load_image", "make_fuser", "retention", "save_image"]

# fuse_files' own keywords, which a misspelt option may have meant.
_FILE_OPTIONS = frozenset({"save_cams", "report", "max_pixels"})


def __getattr__(name: str) -> Any:
    if name == "Fuser":  # with torch: only when asked for
        from semfuse_rt.engine.fuse.fuser import Fuser

        return Fuser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_fuser(method: FuseOptions | str = DEFAULT_METHOD, *, progress: ProgressCallback | None = None,
               **options: Any) -> Fuser | StartOnlyFuser:
    """The fuser for a FuseOptions, or for `method` and `options` (its fields as keywords),
    checked before any work: the start-only fuse where they resolve to the start image alone
    and that start runs on the CPU without torch (engine/fuse/start_only.py), else a `Fuser`.
    Both are context managers with the same calls and `fuse_files`; the image is the same
    either way."""
    checked = fuse_options(method, **options)
    start_only = start_only_fuser(checked, progress)
    if start_only is not None:
        return start_only
    from semfuse_rt.engine.fuse.fuser import Fuser

    return Fuser(checked, progress=progress)


def fuse_result(images: Sequence[np.ndarray], method: FuseOptions | str = DEFAULT_METHOD, *,
                progress: ProgressCallback | None = None, **options: Any) -> FusionResult:
    """Fuse K >= 2 registered images; returns the image and how the optimisation went.

    Options (engine/fuse/fuse_options.py): a FuseOptions in place of `method`, or its fields as
    keywords: layer, preset, steps, lr, decay, init, window, backend, weights, classes,
    cam_weights, mean_base, semantic_steps, memory_budget, tile, show_progress (False: a
    first-time weights fetch says nothing), and the backend loader's. Each is checked before
    any work: a misspelt name, or an option that the method does not use (`window`
    with `max`, `classes` with a method that is not semantic), is a SemfuseError. Semantic
    methods (`cam`, `cam-max`, `cam-majority`) classify each input with the CAM network
    (EfficientNet-Lite0, or VGG19 when `cam_weights` is a full torchvision file) and weight
    by the Grad-CAM maps of its `classes` most probable classes. `preset`
    (engine/fuse/presets.py) supplies steps, lr, decay, init and mean_base where they are None.
    `mean_base` > 0 puts the optimised detail over the inputs' mean base layer
    (export/graphs/base_layer_graph.py).

    `progress(step, total, loss)` is called after each step of the image optimisation, as
    the CLI's progress bar is; a tiled fuse counts the steps of all its tiles. Without it,
    the "semfuse_rt" logger reports the start (with the step count) and the end at INFO,
    so `logging.basicConfig(level=logging.INFO)` shows a long fuse's progress; nothing is
    printed otherwise.
    """
    with make_fuser(method, progress=progress, **options) as fuser:
        return fuser(images)


def fuse(images: Sequence[np.ndarray], method: FuseOptions | str = DEFAULT_METHOD, *,
         progress: ProgressCallback | None = None, **options: Any) -> np.ndarray:
    """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of the same mode
    (options and `progress` as for `fuse_result`)."""
    return fuse_result(images, method, progress=progress, **options).image


def fuse_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike,
               method: FuseOptions | str = DEFAULT_METHOD, *, save_cams: str | os.PathLike | None = None,
               report: bool = False, progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               **options: Any) -> FusionResult:
    """Read, fuse and write atomically (see Fuser.fuse_files); options as for `fuse_result`."""
    if not OWN_OPTIONS.issuperset(options):  # a misspelt name may be one of fuse_files' own
        from semfuse_rt.engine.fuse.fuse_options import option_names

        check_option_names(options, option_names() | _FILE_OPTIONS)
    fuser = make_fuser(method, **options)  # checks the options; a Fuser sets up only once the inputs are read
    try:
        return fuser.fuse_files(paths, output, save_cams=save_cams, report=report, progress=progress,
                                max_pixels=max_pixels)
    finally:
        fuser.close()


def retention(images: Sequence[np.ndarray], fused: np.ndarray,
              cam_weights: str | os.PathLike | None = None) -> list[Retention]:
    """Whether each input's top-1 class survives in the fused image (rank and probability)."""
    from semfuse_rt.engine.fuse.fuser import Fuser

    return Fuser(FuseOptions.from_keywords(method="cam", cam_weights=cam_weights)).retention(images, fused)
