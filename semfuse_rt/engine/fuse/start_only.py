"""The start-only fuse: a fuse with no optimisation steps, no semantic phase and no base layer
is its start image (engine/start/initialisation.py) alone. Where that start has a CPU form without
torch (`Start.cpu_image`) it runs here, on numpy and OpenCV: no torch, no ONNX Runtime, no
VGG19 weights, which a one-shot `semfuse-rt fuse` of the default preset would otherwise spend
most of its time loading. `Fuser` runs its own steps-0 starts through `start_image` too.

A start-only fuse takes the options of a `Fuser` that such a fuse can use, checked by
FuseOptions as the Fuser's are; everything else (a backend, weights, a layer, tiles) is the
Fuser's. An image
too large for the memory budget is fused by the Fuser in tiles, as before.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from semfuse_rt.engine.fuse.file_fusion import read_fuse_write
from semfuse_rt.engine.fuse.fusion_result import TRIM_PIXELS, FusionResult, StageClock
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.start.initialisation import has_cpu_start, start_image
from semfuse_rt.engine.limits.memory import return_free_memory
from semfuse_rt.engine.limits.memory_budget import budget_problem, check_available, is_out_of_memory, out_of_memory
from semfuse_rt.engine.fuse.fuse_options import FuseOptions
from semfuse_rt.engine.fuse.presets import resolve_preset
from semfuse_rt.engine.io.sources import check_images, finish, prepare
from semfuse_rt.engine.io.spilled_images import SpilledImage

if TYPE_CHECKING:
    import os

    from semfuse_rt.engine.backends.base import ProgressCallback
    from semfuse_rt.engine.semantic.cam import Retention
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.large.tiling import Tile

# The options that a start-only fuse takes. With any other one given (a backend, its loader's
# options, weights, a layer, tiles, a window, classes) the fuse is the Fuser's, which loads what
# it names and runs on it, as it always did.
START_ONLY_OPTIONS = frozenset({"preset", "steps", "lr", "decay", "init", "mean_base", "semantic_steps",
                                "memory_budget", "show_progress"})
logger = logging.getLogger("semfuse_rt")


def start_only_fuser(options: FuseOptions, progress: ProgressCallback | None = None) -> StartOnlyFuser | None:
    """A StartOnlyFuser where `options` (checked on their construction) resolve to the start
    image alone with a CPU form; None where they need the Fuser: steps, a semantic phase, a
    base layer, a start without a CPU form, a method that acts only through steps, or an
    option that the Fuser alone takes."""
    settings = options.settings
    kind = settings.method
    # A method whose rule acts only through steps (its default preset runs some) is the Fuser's,
    # which refuses to run none.
    if not (kind.optimised and not kind.semantic and not resolve_preset(kind.default_preset)["steps"]
            and START_ONLY_OPTIONS.issuperset(options.given())):
        return None
    if settings.schedule.steps or settings.semantic_steps or settings.mean_base or not has_cpu_start(settings.init):
        return None
    return StartOnlyFuser(options, progress)


class StartOnlyFuser:
    """A fuse that is its start image alone, on the CPU without torch; made by
    `start_only_fuser`. Calls and `fuse_files` as the Fuser's; a context manager too, which
    owns the Fuser that tiles an image too large for the memory budget."""

    def __init__(self, options: FuseOptions, progress: ProgressCallback | None = None):
        self.options = options  # for the Fuser that tiles
        settings = options.settings
        self.method, self.preset, self.init = settings.method, settings.preset, settings.init
        self.memory_budget = settings.memory_budget  # None: a share of the memory available at each call
        self.progress = progress  # the Fuser's default callback; a start alone has no steps to report
        self._tiling: Fuser | None = None

    def __enter__(self) -> StartOnlyFuser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._tiling is not None:
            self._tiling.close()
            self._tiling = None

    def _tiling_fuser(self) -> Fuser:
        """The Fuser with the same options, for the sizes that it fuses in tiles."""
        if self._tiling is None:
            from semfuse_rt.engine.fuse.fuser import Fuser

            self._tiling = Fuser(self.options, progress=self.progress)
        return self._tiling

    def _whole_fits(self, count: int, height: int, width: int) -> bool:
        """Whether this size's start fits the memory budget whole (else the Fuser tiles it)."""
        return budget_problem(count, height, width, self.memory_budget, start_only=True) is None

    def spills(self, count: int, height: int, width: int) -> bool:
        return not self._whole_fits(count, height, width) and self._tiling_fuser().spills(count, height, width)

    def tiles(self, count: int, height: int, width: int, spilled: bool = False) -> list[Tile] | None:
        if not self._whole_fits(count, height, width):
            return self._tiling_fuser().tiles(count, height, width, spilled)
        if self.memory_budget is not None:  # a budget above the machine would only let the kernel kill the fuse
            check_available(count, height, width, self.memory_budget, start_only=True)
        return None

    def __call__(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None) -> FusionResult:
        """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of their mode,
        as `Fuser.__call__` does; the "semfuse_rt" logger says at INFO when it starts and ends."""
        started = time.perf_counter()
        check_images(images)
        height, width = images[0].shape[:2]
        # Inputs that file_fusion spilled to disk leave the tiles the room they would take.
        spilled = any(isinstance(image, SpilledImage) for image in images)
        if self.tiles(len(images), height, width, spilled) is not None:
            return self._tiling_fuser()(images, progress)
        logged = logger.isEnabledFor(logging.INFO) and (progress or self.progress) is None
        if logged:
            logger.info("fusing %d images of %dx%d with %s (preset %s: the %s start alone)", len(images), width,
                        height, self.method.name, self.preset, self.init)
        try:
            result = self._fuse(images, started)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            raise out_of_memory(len(images), height, width, budget=self.memory_budget) from None
        if logged:
            logger.info("%s", result.summary(len(images)))
        return result

    def _fuse(self, images: Sequence[np.ndarray], started: float) -> FusionResult:
        clock = StageClock(None)
        sources = prepare(images)
        clock.lap("prepare")
        fused = start_image(sources.pixels, self.init)
        clock.lap("start")
        if images[0].shape[0] * images[0].shape[1] >= TRIM_PIXELS:
            return_free_memory()
        image = finish(fused, sources)
        clock.lap("finish")
        return FusionResult(image, self.method.name, None, self.preset, time.perf_counter() - started,
                            stages=clock.stages)

    def retention(self, images: Sequence[np.ndarray], fused: np.ndarray) -> list[Retention]:
        """Whether each input's top-1 class survives in the fused image: the CAM classifier's
        answer, as the Fuser gives it."""
        return self._tiling_fuser().retention(images, fused)

    def fuse_files(self, paths: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                   save_cams: str | os.PathLike | None = None, report: bool = False,
                   progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> FusionResult:
        """Read, fuse and write atomically, as `Fuser.fuse_files`."""
        return read_fuse_write(self, paths, output, save_cams=save_cams, report=report, progress=progress,
                               max_pixels=max_pixels)
