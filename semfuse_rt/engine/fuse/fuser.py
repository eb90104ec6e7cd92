"""`Fuser`: set up once, fuse many times.

    with Fuser("max", backend="ort") as fuser:
        for pair in pairs:
            result = fuser(pair)          # FusionResult

Everything that does not depend on the images is done on entering: options are checked,
the preset resolved, the VGG19 weights loaded and checked (once), the backend's loader
builds or loads its artefacts and the runner keeps its sessions, engines and buffers; for
the semantic methods the CAM classifier and its extractor are kept open too. A call does
only the per-image work: sources, CAMs, features, the rule, the start image, the loop, the
base layer, the semantic phase.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from semfuse_rt.engine.backends import create_runner, resolve_backend, runs_on_gpu
from semfuse_rt.engine.backends.base import FusionRunner, ProgressCallback
from semfuse_rt.engine.semantic.cam import (
    CAMResult, Retention, cam_extractor, cam_weights, combine_layer_maps, fuse_cam,
                                   input_cams, semantic_retention)
from semfuse_rt.engine.semantic.classifier import Classifier, load_classifier
from semfuse_rt.engine.fuse.file_fusion import read_fuse_write
from semfuse_rt.engine.fuse.fuse_options import FuseOptions, fuse_options
# What a fuse returns and its stage clock, shared with the start-only fuse, which has no torch.
from semfuse_rt.engine.fuse.fusion_result import TRIM_PIXELS, FusionResult, StageClock
from semfuse_rt.engine.fuse.fusion_result import run_description as run_description  # where video_fusion.py looks
from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.limits.memory import return_free_memory
from semfuse_rt.engine.limits.memory_budget import (budget_problem, check_available, is_out_of_memory, out_of_memory,
                                             spill_inputs, tile_room)
from semfuse_rt.engine.io.spilled_images import SpilledImage
from semfuse_rt.engine.large.tile_tone import PreviewTone, TileStart
from semfuse_rt.engine.large.tiling import (DTCWT_GRID, MIN_TILE, Tile, core_for_budget, halo, halo_share, plan_tiles,
    receptive_radius)
from semfuse_rt.engine.start.initialisation import STARTS, has_cpu_start, start_image
from semfuse_rt.engine.fuse.methods import DEFAULT_METHOD
from semfuse_rt.engine.limits.option_checks import check_image_fits
from semfuse_rt.engine.semantic.semantic_phase import SemanticPhase, SemanticSettings, small_inputs
from semfuse_rt.engine.io.sources import check_images, finish, prepare
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.vgg19 import feature_shape, is_nonnegative
from semfuse_rt.export.networks.weights import VGG19Weights, load_vgg19
from semfuse_rt.kernels.adam_scalars import AdamSchedule

# Where a fuse says what it does when no progress callback is given: silent unless the
# application turns logging on (logging.basicConfig(level=logging.INFO)).
logger = logging.getLogger("semfuse_rt")


def _logged_steps(step: int, total: int, loss: float) -> None:
    """The progress callback of a fuse without one, at DEBUG: every tenth of the steps."""
    if step == total or step % max(1, total // 10) == 0:
        logger.debug("step %d of %d, loss %.4g", step, total, loss)


class WarmStart(Protocol):
    """Where one fuse's optimisation starts, in place of the initialisation (a video's warm
    start, engine/streams/video_fusion.py). Tensors are on the runner's device: `start` maps the
    (K, 3, H, W) pixels to the (1, 3, H, W) start, `schedule` is the loop's (None: the
    Fuser's), and `optimised` receives the optimised image before the base layer."""

    @property
    def schedule(self) -> AdamSchedule | None: ...

    def start(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def optimised(self, image: torch.Tensor) -> None: ...


@dataclass
class _OpenNetwork:
    """What an open Fuser of an optimising method holds: the VGG19 weights, the runner with
    its sessions and buffers, and the semantic phase where the preset runs one. Made whole
    by `Fuser.open`, so that a runner in use is never None."""

    weights: VGG19Weights
    runner: FusionRunner
    semantic_phase: SemanticPhase | None


@dataclass
class _OpenCams:
    """What an open Fuser of a semantic method holds: the CAM classifier, and its extractor as
    entering `context` gave it (closing exits the context, not the value it gave)."""

    classifier: Classifier
    context: contextlib.AbstractContextManager
    extractor: Any


class Fuser:
    """Fusion with one set of options, for many image sets; a context manager that owns the
    runner and the CAM classifier. Options: a FuseOptions (engine/fuse/fuse_options.py), or a
    method's name and those options as keywords (see `fuse_result`)."""

    def __init__(self, options: FuseOptions | str = DEFAULT_METHOD, *, progress: ProgressCallback | None = None,
                 **keywords: Any):
        """Every option is checked here, before any work: FuseOptions checks the names and
        values, and the Fuser what depends on this machine (the backend, and whether the
        loader's options are its). None (the default) leaves an option to the method or
        preset; one given for a method that it does not change (window for max, say) is an
        error, as is a name no option has. `keywords` change `options` where it is a
        FuseOptions. `progress`: the default callback of the calls (see `__call__`)."""
        self.options = fuse_options(options, **keywords)
        settings = self.options.settings
        self.method = settings.method
        self.rule = self.method.feature_rule(settings.window)
        self.layer = settings.layer
        self.classes, self.cam_weights_path = settings.classes, self.options.cam_weights
        self.preset = settings.preset if self.method.optimised else None
        self.semantic = SemanticSettings(settings.semantic_steps)
        self.init = settings.init
        self.mean_base = settings.mean_base
        self.schedule = settings.schedule
        self.backend = resolve_backend(self.options.backend or "auto", self.layer) if self.method.optimised else None
        if self.backend is not None:
            self.options.check_backend_options(self.backend)
        # On a GPU the default budget is a share of its free memory (memory_budget.py).
        self.on_gpu = self.backend is not None and runs_on_gpu(self.backend)
        self.memory_budget = settings.memory_budget  # None: a share of the memory available at each call
        self.tile = settings.tile  # None: tiles only when the whole image would not fit the budget (tiling.py)
        self.progress = progress
        self.show_progress = self.options.show_progress
        self._network: _OpenNetwork | None = None  # set for the optimising methods while open
        self._cams: _OpenCams | None = None  # set for the semantic methods while open
        self._classifier: Classifier | None = None  # loaded once, for the CAMs and `retention`

    # -- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> Fuser:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._network is not None or self._cams is not None

    @property
    def runner(self) -> FusionRunner | None:
        """The runner while open, for a method that optimises; else None."""
        return self._network.runner if self._network is not None else None

    @property
    def weights(self) -> VGG19Weights | None:
        """The VGG19 weights while open, for a method that optimises; else None."""
        return self._network.weights if self._network is not None else None

    @property
    def active_runner(self) -> FusionRunner:
        """The runner of an open Fuser whose method optimises: what a fuse's steps run on."""
        return self._opened_network().runner

    def _opened_network(self) -> _OpenNetwork:
        if self._network is None:
            raise RuntimeError("the Fuser has no runner: it is not open, or its method optimises nothing")
        return self._network

    def _opened_cams(self) -> _OpenCams:
        if self._cams is None:
            raise RuntimeError("the Fuser has no classifier: it is not open, or its method is not semantic")
        return self._cams

    def open(self) -> None:
        if self.is_open:
            return
        try:
            if self.method.semantic:
                classifier = self._loaded_classifier()
                context = cam_extractor(classifier, self._cam_backend())
                self._cams = _OpenCams(classifier, context, context.__enter__())
            if self.backend is not None:  # set for exactly the optimised methods
                self._network = self._open_network(self.backend)
        except BaseException:
            self.close()
            raise

    def _open_network(self, backend: str) -> _OpenNetwork:
        given = self.options.weights
        weights = given if isinstance(given, VGG19Weights) else load_vgg19(given, show_progress=self.show_progress)
        runner = create_runner(backend, weights, self.layer, **self.options.loader_options)
        runner.__enter__()
        try:
            phase = SemanticPhase(weights, self.semantic, runner.device).__enter__() if self.semantic.steps else None
        except BaseException:
            runner.__exit__(None, None, None)
            raise
        return _OpenNetwork(weights, runner, phase)

    def _loaded_classifier(self) -> Classifier:
        if self._classifier is None:
            self._classifier = load_classifier(self.cam_weights_path)
        return self._classifier

    def close(self) -> None:
        network, cams = self._network, self._cams
        self._network = self._cams = None
        if network is not None:
            if network.semantic_phase is not None:
                network.semantic_phase.__exit__(None, None, None)
            network.runner.__exit__(None, None, None)
        if cams is not None:
            cams.context.__exit__(None, None, None)

    def _cam_backend(self) -> str:
        """The CAM graph runs where the fusion does where that backend runs CAMs; else on the
        first usable backend that does, in the backends' order of preference (ONNX Runtime)."""
        from semfuse_rt.engine.backends import BACKEND_REGISTRY
        from semfuse_rt.engine.semantic.cam import CAM_BACKENDS

        if self.backend in CAM_BACKENDS:
            return self.backend
        return next(name for name, backend in BACKEND_REGISTRY.items()
                    if name in CAM_BACKENDS and backend.usable(None))

    # -- fusion --------------------------------------------------------------------------------
    def tiles(self, count: int, height: int, width: int, spilled: bool = False) -> list[Tile] | None:
        """How a fuse of `count` images of width x height runs: None for the whole image at
        once, else its tiles (asked for with `tile`, or because the whole image would not
        fit the memory budget). SemfuseError where even tiles cannot fit. `spilled`: the
        inputs wait on disk (engine/io/spilled_images.py), not in memory."""
        margin = halo(self.layer, self.schedule.steps, self.mean_base)
        # Crops start on the pooling grid, and for a DT-CWT start on its level-4 grid too:
        # the same decimation phase as the whole image keeps the tiles' starts closer to it.
        multiscale = STARTS[self.init].multiscale
        grid = max(receptive_radius(self.layer)[1], DTCWT_GRID if multiscale else 1)
        if self.tile is not None and self.method.optimised:
            return plan_tiles(height, width, self.tile, margin, grid)
        problem = budget_problem(count, height, width, self.memory_budget, streamed=not self.method.semantic,
                                 on_gpu=self.on_gpu)
        if problem is None:
            if self.memory_budget is not None:  # a budget above the machine would only let the kernel kill the fuse
                check_available(count, height, width, self.memory_budget, streamed=not self.method.semantic,
                                on_gpu=self.on_gpu, tileable=self.method.optimised)
            return None
        if not self.method.optimised:
            raise SemfuseError(f"{problem}; fuse smaller or fewer images")
        room = tile_room(count, height, width, self.memory_budget, spilled, self.on_gpu,
                         streamed=not self.method.semantic)
        core = core_for_budget(room, margin, grid)
        if core < MIN_TILE:
            raise SemfuseError(f"{problem}, and leaves no room for a tile either; fuse smaller or fewer images")
        return plan_tiles(height, width, core, margin, grid)

    def spills(self, count: int, height: int, width: int) -> bool:
        """Whether fuse_files keeps the decoded inputs on disk: only for a tiled fuse (a
        whole-image one needs them whole anyway) whose stack would crowd the budget."""
        tiled = self.tile is not None or budget_problem(count, height, width, self.memory_budget,
                                                        on_gpu=self.on_gpu) is not None
        return (tiled and self.method.optimised and not self.method.semantic
                and spill_inputs(count, height, width, self.memory_budget))

    def __call__(self, images: Sequence[np.ndarray], progress: ProgressCallback | None = None, *,
                 warm_start: WarmStart | None = None) -> FusionResult:
        """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of their mode.

        `progress(step, total, loss)` is called after each step of the image optimisation
        (default: the Fuser's `progress`); a tiled fuse counts the steps of all its tiles in
        one total. Without a callback, the "semfuse_rt" logger says at INFO when the fuse
        starts (with its step count) and ends, and at DEBUG every tenth of the steps.
        `warm_start` replaces the initialisation and schedule of a whole-image fuse; tiled
        fuses start each tile as usual. A fuse that runs out of memory is a SemfuseError
        that says what it needed and which options lower that."""
        started = time.perf_counter()
        check_images(images)
        height, width = images[0].shape[:2]
        tiles = self.tiles(len(images), height, width,
                           spilled=any(isinstance(image, SpilledImage) for image in images))
        if self.method.optimised:
            check_image_fits(self.layer, self.mean_base, height, width)
        progress = progress or self.progress
        logged = progress is None and logger.isEnabledFor(logging.INFO)
        if logged:
            logger.info("%s", self._describe(len(images), height, width, tiles, warm_start))
            progress = _logged_steps if logger.isEnabledFor(logging.DEBUG) else None
        try:
            result = self._fuse(images, tiles, progress, warm_start, started)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            raise out_of_memory(len(images), height, width, budget=self.memory_budget,
                                streamed=not self.method.semantic, on_gpu=self.on_gpu,
                                tiles=len(tiles) if tiles else 1, tileable=self.method.optimised) from None
        if logged:
            logger.info("%s", result.summary(len(images)))
        return result

    def _describe(self, count: int, height: int, width: int, tiles: list[Tile] | None,
                  warm_start: WarmStart | None) -> str:
        """What a fuse is about to do, for the log: its size, method, steps and backend."""
        what = f"fusing {count} images of {width}x{height} with {self.method.name}"
        if not self.method.optimised:
            return what
        schedule = warm_start.schedule if warm_start is not None and warm_start.schedule else self.schedule
        steps = f"{schedule.steps} steps" + (f" in each of {len(tiles)} tiles" if tiles else "")
        if self.semantic.steps:
            steps += f" and {self.semantic.steps} of the semantic phase"
        return f"{what} (preset {self.preset}: {steps} on {self.backend})"

    def _fuse(self, images: Sequence[np.ndarray], tiles: list[Tile] | None, progress: ProgressCallback | None,
              warm_start: WarmStart | None, started: float) -> FusionResult:
        self.open()
        if not self.method.optimised:
            opened = self._opened_cams()
            clock = StageClock(None)
            fused = fuse_cam(images, opened.classifier, self.classes, extractor=opened.extractor)
            clock.lap("cam fusion")
            return FusionResult(fused.image, self.method.name, None, None, time.perf_counter() - started,
                                cams=fused.cams.maps.numpy(), stages=clock.stages)
        network = self._opened_network()
        clock = StageClock(network.runner.device)
        cams = None
        if self.method.semantic:  # whole-image maps: the classifier sees the whole image
            opened = self._opened_cams()
            cams = input_cams(opened.classifier, images, self.classes, extractor=opened.extractor)
            clock.lap("cams")
        if tiles is None:
            sources = prepare(images)
            clock.lap("prepare")
            result, losses = self._fuse_planes(sources.pixels, cams, progress, clock, warm_start)
        else:
            sources = prepare(images, with_pixels=False)
            result, losses = self._fuse_tiles(images, tiles, progress, clock, cams)
        if network.semantic_phase is not None:
            self._semantic_refinement(network.semantic_phase, result, images, sources.mode == "mixed", cams)
            clock.lap("semantic phase")
        if tiles or images[0].shape[0] * images[0].shape[1] >= TRIM_PIXELS:
            return_free_memory()
        image = finish(result, sources)
        clock.lap("finish")
        return FusionResult(image, self.method.name, self.backend, self.preset, time.perf_counter() - started,
                            losses, cams.maps.numpy() if cams is not None else None,
                            stages=clock.stages, tiles=len(tiles) if tiles else 1,
                            halo_share=halo_share(tiles, *images[0].shape[:2]) if tiles else 0.0)

    def _semantic_refinement(self, phase: SemanticPhase, result: np.ndarray, images: Sequence[np.ndarray],
                             mixed: bool, cams: CAMResult | None) -> None:
        """The semantic phase on the whole result, tiled or not (the phase's copy is small)."""
        inputs = small_inputs(images, mixed, phase.size(*result.shape[1:]))
        weights: Callable[[Sequence[int]], torch.Tensor] | None = None
        if cams is not None:
            def weights_at(size: Sequence[int]) -> torch.Tensor:
                return cam_weights(_maps_at(cams, size)).to(phase.runner.device)
            weights = weights_at
        phase(result, inputs, self.rule, weights)

    def _fuse_planes(self, planes: np.ndarray, cams: CAMResult | None, progress, clock,
                     warm_start: WarmStart | None = None, tiled: bool = False) -> tuple[np.ndarray, list]:
        """(K, 3, H, W) pixels -> the optimised image over its base layer (3, H, W), and the losses.
        `tiled`: the pixels are one tile's crop."""
        # To the runner's device once: from here to the finished image nothing returns to the
        # host on a GPU (features, rule, start, loop and base layer all run there).
        runner = self.active_runner
        pixels = torch.from_numpy(planes).to(runner.device)
        schedule = self.schedule if warm_start is None or warm_start.schedule is None else warm_start.schedule
        if not schedule.steps:  # the start alone: no features, no target, no loop
            if warm_start is None and pixels.device.type == "cpu" and has_cpu_start(self.init):
                # The start-only fuse's own code (engine/fuse/start_only.py), not a second copy in torch.
                fused = torch.from_numpy(start_image(planes, self.init))[None]
            else:
                fused = runner.start(pixels, self.init) if warm_start is None else warm_start.start(pixels)
            clock.lap("start")
            if warm_start is not None:
                warm_start.optimised(fused)
            if self.mean_base:
                fused = runner.mean_base(fused, pixels, self.mean_base)
                clock.lap("base layer")
            return fused[0].detach().cpu().numpy(), []
        if cams is None and (len(pixels) > 2 or (self.rule is not None and self.rule.running_reduction)):
            target = self._streamed_target(pixels, clock)
        else:
            features = runner.features(pixels)
            clock.lap("features")
            weights = None
            if cams is not None:
                weights = cam_weights(_maps_at(cams, features.shape[-2:])).to(features.device)
            target = runner.fuse_features(features, self.rule, weights)
            del features
            clock.lap("rule")
        if tiled or pixels.shape[-2] * pixels.shape[-1] >= TRIM_PIXELS:
            # The memory model counts no features during the loop, and large maps cost the
            # loop more room than their reuse saves time; a small whole image (a video
            # frame) keeps the buffers for the next call.
            runner.release_scratch()
        start = runner.start(pixels, self.init) if warm_start is None else warm_start.start(pixels)
        clock.lap("start")
        optimised = runner.optimise(start, target, schedule, progress, release_target=True)
        if warm_start is not None:
            warm_start.optimised(optimised.image)
        clock.lap("loop")
        if not (torch.isfinite(optimised.image).all() and np.isfinite(optimised.losses).all()):
            raise SemfuseError("the optimisation diverged (the image holds NaN or Inf); lower --lr or --steps")
        fused = optimised.image
        if self.mean_base:
            fused = runner.mean_base(fused, pixels, self.mean_base)
            clock.lap("base layer")
        return fused[0].detach().cpu().numpy(), optimised.losses

    def _streamed_target(self, pixels: torch.Tensor, clock) -> torch.Tensor:
        """The target from one input's features at a time, so that memory does not grow with
        K. Choose-max is a running reduction: the rule between the target so far (first, so
        ties stay with the lower k) and the next input's features, in place on the CPU. The
        majority filter needs every input's decision: uint8 labels in the first pass, the
        values in a second."""
        runner = self.active_runner

        def features(k):
            # The first input's maps become the target, which lives until the loop ends; the
            # others' are done with before the next input's are computed. Each kind reuses
            # one buffer from call to call.
            maps = runner.reused_features(pixels[k:k + 1], "first" if k == 0 else "next")
            clock.lap("features")
            return maps

        with runner.loop_context():  # ONNX Runtime's on the CPU: torch on one thread
            return self._reduced_target(pixels, features, clock)

    def _reduced_target(self, pixels: torch.Tensor, features, clock) -> torch.Tensor:
        """The rule's own streamed form (kernels/rules/): a running reduction, or passes."""
        rule, runner = self.rule, self.active_runner
        if rule is None:
            raise RuntimeError("the Fuser's method has no feature rule: it optimises nothing")
        return rule.streamed_target(len(pixels), features, lambda stacked: runner.fuse_features(stacked, rule),
                                    lambda: clock.lap("rule"), nonnegative=is_nonnegative(self.layer))

    def _fuse_tiles(self, images: Sequence[np.ndarray], tiles: list[Tile], progress, clock,
                    cams: CAMResult | None = None) -> tuple[np.ndarray, list]:
        """Each tile's crop through the whole pipeline; cores cross-faded into one image (the
        ramps of overlapping cores sum to one). The losses are summed over the tiles (halos
        counted in each). `cams`, the semantic methods' whole-image maps: each tile's rule
        is weighted by their crop."""
        height, width = images[0].shape[:2]
        if cams is not None:
            size = feature_shape(self.layer, 1, height, width)[-2:]
            maps, stride = _maps_at(cams, size), receptive_radius(self.layer)[1]
        total = np.zeros((3, height, width), np.float32)
        losses = np.zeros(self.schedule.steps)
        steps = self.schedule.steps
        runner = self.active_runner

        def own_start(pixels: torch.Tensor) -> torch.Tensor:
            return runner.start(pixels, self.init)

        tone = None
        if STARTS[self.init].spans_image:  # tiles take the preview's tone
            tone = PreviewTone(images, own_start)
            clock.lap("start")
        for index, tile in enumerate(tiles):
            y0, y1, x0, x1 = tile.crop
            crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for image in images]
            planes = prepare(crops).pixels
            clock.lap("prepare")

            def tile_progress(step, _total, loss, done=index * steps):
                if progress:
                    progress(done + step, len(tiles) * steps, loss)

            start = TileStart(tone, tile.crop, own_start) if tone else None
            crop_cams = None
            if cams is not None:  # crops start on the pooling grid, so they divide by the stride
                rows, columns = feature_shape(self.layer, 1, y1 - y0, x1 - x0)[-2:]
                top, left = y0 // stride, x0 // stride
                crop_cams = replace(cams, maps=maps[:, top:top + rows, left:left + columns])
            result, tile_losses = self._fuse_planes(planes, crop_cams, tile_progress, clock, start, tiled=True)
            cy0, cy1, cx0, cx1 = tile.core
            ramp = tile.weights(height, width)
            total[:, cy0:cy1, cx0:cx1] += result[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] * ramp
            losses += np.asarray(tile_losses)
            return_free_memory()
            clock.lap("blend")
        return total, losses.tolist()

    def retention(self, images: Sequence[np.ndarray], fused: np.ndarray) -> list[Retention]:
        """Whether each input's top-1 class survives in the fused image (rank and probability)."""
        return semantic_retention(images, fused, self._loaded_classifier())

    def fuse_files(self, paths: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                   save_cams: str | os.PathLike | None = None, report: bool = False,
                   progress: ProgressCallback | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> FusionResult:
        """Read, fuse and write atomically (engine/fuse/file_fusion.py, `read_fuse_write`)."""
        return read_fuse_write(self, paths, output, save_cams=save_cams, report=report, progress=progress,
                               max_pixels=max_pixels)


def _maps_at(cams: CAMResult, size) -> torch.Tensor:
    """CAMs at a feature map's resolution: combined from the layer maps, not resized from
    the full-size maps, so deeper fusion layers see the same construction."""
    if tuple(size) == tuple(cams.maps.shape[-2:]):
        return cams.maps
    return combine_layer_maps(cams.layer_maps, cams.class_weights, tuple(size))
