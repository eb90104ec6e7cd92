"""TensorRT backend: the FusionRunner face of engine/trt_runtime.py.

Engines come from export/trt_build.py: built on first use (minutes, once per GPU model,
TensorRT version and precision) or by `semfuse-rt build --trt`, and rebuilt when their
manifest does not match what runs here. An image shape outside the stored profiles
rebuilds them with the profile widened to cover it.

The whole optimisation runs as one CUDA graph with one sync at the end, so a progress
callback hears about every step only once the loop has finished.

Tensors: with CUDA torch, features and results are exchanged as torch CUDA tensors by
pointer (torch's work is finished before the runtime's stream reads them, and the runtime
synchronises before returning); without it, as host arrays.
"""
from __future__ import annotations

import functools
import sys

import numpy as np
import torch

from semfuse_rt.engine.adam import AdamSchedule
from semfuse_rt.engine.backends.base import FusionRunner, Optimised, ProgressCallback
from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.export.weights import VGG19Weights


@functools.cache
def unusable_reason(device: int = 0) -> str | None:
    """Why TensorRT cannot run here (no tensorrt, no cuda-python, no GPU), or None."""
    from semfuse_rt.export.trt_build import unavailable_reason

    return unavailable_reason(device)


def usable() -> bool:
    return unusable_reason() is None


def _stderr(message: str) -> None:
    print(f"semfuse-rt: {message}", file=sys.stderr)


class TrtRunner(FusionRunner):
    name = "trt"

    def __init__(self, weights: VGG19Weights, layer: str, *, precision: str | None = None, shapes=None,
                 workspace_mib: int | None = None, device: int = 0, engine_dir=None, log=_stderr):
        from semfuse_rt.export.trt_build import DEFAULT_PRECISION, PRECISIONS
        from semfuse_rt.export.trt_profiles import parse_shapes

        self.weights = weights
        self.layer = layer
        self.precision = precision or DEFAULT_PRECISION
        if self.precision not in PRECISIONS:
            raise SemfuseError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        self.shapes = parse_shapes(shapes) if isinstance(shapes, str) else shapes
        self.workspace_mib = workspace_mib
        self.device_index = device
        self.engine_dir = engine_dir
        self.log = log
        self.runtime = None
        self.artefacts = None
        self._on_cuda = False

    # -- lifetime --------------------------------------------------------------------------
    def activate(self) -> None:
        from semfuse_rt.export.onnx_export import export_graphs
        from semfuse_rt.export.trt_build import detect_environment

        reason = unusable_reason(self.device_index)
        if reason is not None:
            raise SemfuseError(f"the TensorRT backend is not usable here: {reason}")
        self.graphs = export_graphs(self.weights, self.layer, self.engine_dir)
        self.env = detect_environment(self.device_index)
        self._on_cuda = torch.cuda.is_available() and self.device_index < torch.cuda.device_count()
        self._load(None)

    def deactivate(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None

    def _load(self, need) -> None:
        from semfuse_rt.engine.trt_runtime import TrtFusionRuntime
        from semfuse_rt.export.trt_build import FEATURES, GRADIENT, build_fusion_engines

        artefacts = build_fusion_engines(self.graphs.directory, self.layer, self.env, precision=self.precision,
                                         shapes=self.shapes, workspace_mib=self.workspace_mib, need=need,
                                         log=self.log)
        self.deactivate()
        # Engines were just checked against this GPU and TensorRT by build_fusion_engines.
        self.runtime = TrtFusionRuntime(artefacts[FEATURES].path, artefacts[GRADIENT].path,
                                        self.device_index, verify=False).__enter__()
        self.artefacts = artefacts

    def _fit(self, image_shape) -> None:
        """Rebuild with wider profiles when these images fall outside the engines'."""
        from semfuse_rt.export.trt_profiles import ShapePoint

        if self.runtime.covers(tuple(image_shape)):
            return
        if self.shapes is not None:
            raise SemfuseError(f"images {'x'.join(map(str, image_shape))} are outside --shapes {self.shapes}")
        self._load(ShapePoint(image_shape[0], image_shape[2], image_shape[3]))

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.device_index) if self._on_cuda else torch.device("cpu")

    def _tensor(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(self.device, torch.float32).contiguous()

    def _handover(self) -> None:
        """Make torch's queued work on our tensors finish before the runtime's stream reads them."""
        if self._on_cuda:
            torch.cuda.current_stream(self.device).synchronize()

    # -- FusionRunner ----------------------------------------------------------------------
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = self._tensor(pixels)
        self._fit(pixels.shape)
        if not self._on_cuda:
            return torch.from_numpy(self.runtime.features(pixels.numpy()))
        out = torch.empty(self.runtime.feature_shape(tuple(pixels.shape)), device=self.device)
        self._handover()
        self.runtime.features_device(pixels.data_ptr(), tuple(pixels.shape), out.data_ptr())
        self.runtime.cuda.synchronize()
        return out

    def loss_and_grad(self, image: torch.Tensor, target: torch.Tensor):
        image, target = self._tensor(image), self._tensor(target)
        self._fit((1, *image.shape[1:]))
        if not self._on_cuda:
            loss, grad = self.runtime.loss_and_grad(image.numpy(), target.numpy())
            return torch.from_numpy(loss), torch.from_numpy(grad)
        loss, grad = torch.empty(image.shape[0], device=self.device), torch.empty_like(image)
        self._handover()
        self.runtime.loss_and_grad_device(image.data_ptr(), tuple(image.shape), target.data_ptr(),
                                          tuple(target.shape), loss.data_ptr(), grad.data_ptr())
        self.runtime.cuda.synchronize()
        return loss, grad

    def optimise(self, init: torch.Tensor, target: torch.Tensor, schedule: AdamSchedule,
                 progress: ProgressCallback | None = None) -> Optimised:
        init, target = self._tensor(init), self._tensor(target)
        self._fit((1, *init.shape[1:]))
        options = {"steps": schedule.steps, "lr": schedule.lr, "betas": (schedule.beta1, schedule.beta2),
                   "eps": schedule.eps, "decay": schedule.decay}
        if self._on_cuda:
            image = torch.empty_like(init)
            self._handover()
            losses = self.runtime.optimise_device(init.data_ptr(), target.data_ptr(), image.data_ptr(),
                                                  tuple(init.shape), tuple(target.shape), **options)
        else:
            result, losses = self.runtime.optimise(init.numpy(), target.numpy(), **options)
            image = torch.from_numpy(np.ascontiguousarray(result))
        if progress:
            for t in range(1, schedule.steps + 1):
                progress(t, schedule.steps, losses[t - 1])
        return Optimised(image, losses)
