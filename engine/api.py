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
from semfuse_rt.engine.base_layer import with_mean_base
from semfuse_rt.engine.backends.ort_backend import usable as ort_usable
from semfuse_rt.engine.cam import (CAMResult, Retention, combine_layer_maps, fuse_with_weights, input_cams,
                                   semantic_retention)
from semfuse_rt.engine.cam import cam_weights as cam_weights_of
from semfuse_rt.engine.classifier import load_classifier
from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.engine.heatmaps import save_cam_overlays
from semfuse_rt.engine.fusion_rules import fuse_features
from semfuse_rt.engine.images import check_output, load_image, save_image
from semfuse_rt.engine.initialisation import check_initialisation, initial_image
from semfuse_rt.engine.methods import get_method
from semfuse_rt.engine.presets import DEFAULT_PRESET, resolve_preset
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
    cams: np.ndarray | None = None  # (K, H, W) each input's CAM in [0, 1], semantic methods only
    retention: list[Retention] | None = None  # fuse_files(report=True): each input's class in the result

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
    preset: str = DEFAULT_PRESET,
    steps: int | None = None,
    lr: float | None = None,
    decay: str | None = None,
    init: str | None = None,
    window: int = 5,
    backend: str = "auto",
    weights: str | os.PathLike | VGG19Weights | None = None,
    classes: int = 1,
    cam_weights: str | os.PathLike | None = None,
    mean_base: float | None = None,
    progress: ProgressCallback | None = None,
) -> FusionResult:
    """Fuse K >= 2 registered images; returns the image and how the optimisation went.

    Semantic methods (`cam`, `cam-max`, `cam-majority`) classify each input with the CAM
    network (EfficientNet-Lite0, or VGG19 when `cam_weights` is a full torchvision file)
    and weight by the Grad-CAM maps of its `classes` most probable classes.
    `preset` (engine/presets.py) supplies `steps`, `lr`, `decay`, `init` and `mean_base`
    where they are None: "refined" by default, "paper" for the method exactly as published.
    `mean_base` > 0 puts the optimised detail over the inputs' mean base layer (Gaussian of
    that sigma, engine/base_layer.py).
    """
    started = time.perf_counter()
    chosen = get_method(method)
    check_layer(layer)
    settings = resolve_preset(preset, steps=steps, lr=lr, decay=decay, init=init, mean_base=mean_base)
    steps, lr, init, mean_base = settings["steps"], settings["lr"], settings["init"], settings["mean_base"]
    check_initialisation(init)
    if mean_base < 0:
        raise SemfuseError(f"mean base sigma must be >= 0, got {mean_base}")
    schedule = AdamSchedule(steps=steps, lr=lr, decay=settings["decay"])
    sources = prepare(images)
    backend_name = resolve_backend(backend, layer)
    cams = None
    if chosen.semantic:
        # The CAM graph runs where the fusion does: ONNX Runtime for the engine backends.
        cam_backend = "torch" if backend_name == "torch" or not ort_usable() else "ort"
        cams = input_cams(load_classifier(cam_weights), images, classes, backend=cam_backend)
    if not chosen.optimised:
        weights_k = cam_weights_of(cams.maps)
        image = fuse_with_weights(images, weights_k)
        return FusionResult(image, method, backend_name, time.perf_counter() - started,
                            cams=cams.maps.numpy())
    vgg = _weights(weights)
    pixels = torch.from_numpy(sources.pixels)
    with create_runner(backend_name, vgg, layer) as runner:
        features = runner.features(pixels)
        decision_weights = None
        if cams is not None:
            decision_weights = cam_weights_of(_maps_at(cams, features.shape[-2:])).to(features.device)
        target = fuse_features(features, chosen.rule, window, decision_weights)
        optimised = runner.optimise(initial_image(pixels, init), target[None], schedule, progress)
    fused = optimised.image[0].detach().cpu().numpy()
    if mean_base:
        fused = with_mean_base(fused, sources.pixels, mean_base)
    image = finish(fused, sources)
    return FusionResult(image, method, backend_name, time.perf_counter() - started, optimised.losses,
                        cams.maps.numpy() if cams is not None else None)


def _maps_at(cams: CAMResult, size) -> torch.Tensor:
    """CAMs at a feature map's resolution: combined from the layer maps, not resized from
    the full-size maps, so deeper fusion layers see the same construction."""
    if tuple(size) == tuple(cams.maps.shape[-2:]):
        return cams.maps
    return combine_layer_maps(cams.layer_maps, cams.class_weights, tuple(size))


def retention(images: Sequence[np.ndarray], fused: np.ndarray,
              cam_weights: str | os.PathLike | None = None) -> list[Retention]:
    """Whether each input's top-1 class survives in the fused image (rank and probability)."""
    return semantic_retention(images, fused, load_classifier(cam_weights))


def fuse(images: Sequence[np.ndarray], method: str = "max", **options) -> np.ndarray:
    """Fuse K >= 2 registered images (HxW or HxWx3, uint8/uint16) into one of the same mode."""
    return fuse_result(images, method, **options).image


def fuse_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike,
               method: str = "max", *, save_cams: str | os.PathLike | None = None,
               report: bool = False, **options) -> FusionResult:
    """Read, fuse and write atomically; the output's format follows its extension.

    `save_cams` names a folder for each input's CAM overlay (semantic methods); `report`
    fills `result.retention` (see `retention`)."""
    images = [load_image(p) for p in paths]
    deepest = np.uint16 if any(i.dtype == np.uint16 for i in images) else np.uint8
    check_output(output, deepest)
    if save_cams is not None and not get_method(method).semantic:
        raise SemfuseError(f"--save-cams needs a semantic method (cam, cam-max, cam-majority), not {method}")
    result = fuse_result(images, method, **options)
    save_image(Path(output), result.image)
    if save_cams is not None:
        save_cam_overlays(save_cams, paths, images, result.cams)
    if report:
        result.retention = retention(images, result.image, options.get("cam_weights"))
    return result
