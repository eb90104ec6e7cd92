"""The Python API under the CLI: fuse arrays or files."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semfuse_rt.engine.adam import AdamSchedule
from semfuse_rt.engine.backends import create_runner, resolve_backend
from semfuse_rt.engine.backends.base import ProgressCallback
from semfuse_rt.engine.fusion_rules import fuse_features
from semfuse_rt.engine.images import check_output, load_image, save_image
from semfuse_rt.engine.initialisation import initial_image
from semfuse_rt.engine.methods import get_method
from semfuse_rt.engine.sources import finish, prepare
from semfuse_rt.export.vgg19 import check_layer
from semfuse_rt.export.weights import VGG19Weights, load_vgg19

DEFAULT_LAYER = "relu1_1"


@dataclass
class FusionResult:
    image: np.ndarray
    method: str
    backend: str
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def relative_loss(self) -> float | None:
        """Final loss over the loss at the first step (None without optimisation)."""
        if len(self.losses) < 2 or self.losses[0] == 0:
            return None
        return self.losses[-1] / self.losses[0]


def _weights(weights: str | os.PathLike | VGG19Weights | None) -> VGG19Weights:
    return weights if isinstance(weights, VGG19Weights) else load_vgg19(weights)


def fuse_result(
    images: Sequence[np.ndarray],
    method: str = "max",
    *,
    layer: str = DEFAULT_LAYER,
    steps: int = 100,
    lr: float = 1.0,
    init: str = "mean",
    window: int = 5,
    backend: str = "torch",
    weights: str | os.PathLike | VGG19Weights | None = None,
    progress: ProgressCallback | None = None,
) -> FusionResult:
    """Fuse K >= 2 registered images; returns the image and how the optimisation went."""
    started = time.perf_counter()
    chosen = get_method(method)
    check_layer(layer)
    schedule = AdamSchedule(steps=steps, lr=lr)
    sources = prepare(images)
    backend_name = resolve_backend(backend)
    vgg = _weights(weights)
    pixels = torch.from_numpy(sources.pixels)
    with create_runner(backend_name, vgg, layer) as runner:
        target = fuse_features(runner.features(pixels), chosen.rule, window)
        optimised = runner.optimise(initial_image(pixels, init), target[None], schedule, progress)
    image = finish(optimised.image[0].detach().cpu().numpy(), sources)
    return FusionResult(image, method, backend_name, time.perf_counter() - started, optimised.losses)


def fuse(images: Sequence[np.ndarray], method: str = "max", **options) -> np.ndarray:
    """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of the same mode."""
    return fuse_result(images, method, **options).image


def fuse_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike,
               method: str = "max", **options) -> FusionResult:
    """Read, fuse and write atomically; the output's format follows its extension."""
    images = [load_image(p) for p in paths]
    deepest = np.uint16 if any(i.dtype == np.uint16 for i in images) else np.uint8
    check_output(output, deepest)
    result = fuse_result(images, method, **options)
    save_image(Path(output), result.image)
    return result
