"""The TensorRT runner: the FusionRunner face of runtime.py.

The whole optimisation runs as one CUDA graph with one sync at the end, so a progress
callback hears about every step only once the loop has finished.

Tensors: with CUDA torch, features and results are exchanged as torch CUDA tensors by
pointer (torch's work is finished before the runtime's stream reads them, and the runtime
synchronises before returning); without it, as host arrays.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from semfuse_rt.engine.backends.base import FusionRunner, Optimised, ProgressCallback, report_steps
from semfuse_rt.engine.backends.trt.loader import TrtEngineLoader
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import AdamSchedule

if TYPE_CHECKING:  # TensorRT and cuda-python at import
    from semfuse_rt.engine.backends.trt.runtime import TrtFusionRuntime


class TrtRunner(FusionRunner):
    name = "trt"

    def __init__(self, loader: TrtEngineLoader):
        self.loader = loader
        self.runtime: TrtFusionRuntime | None = None
        self.artefacts: dict | None = None
        self._on_cuda = False

    @property
    def active_runtime(self) -> TrtFusionRuntime:
        if self.runtime is None:
            raise RuntimeError("the trt runner is used outside its context")
        return self.runtime

    def activate(self) -> None:
        device = self.loader.device
        self._on_cuda = torch.cuda.is_available() and device < torch.cuda.device_count()
        self._load(None)

    def deactivate(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None

    def _load(self, need) -> None:
        from semfuse_rt.engine.backends.trt.runtime import TrtFusionRuntime
        from semfuse_rt.export.tensorrt.trt_build import FEATURES, GRADIENT

        artefacts = self.loader(need)
        self.deactivate()
        # Engines were just checked against this GPU and TensorRT by the loader.
        self.runtime = TrtFusionRuntime(artefacts[FEATURES].path, artefacts[GRADIENT].path,
                                        self.loader.device, verify=False).__enter__()
        self.artefacts = artefacts

    def _fit(self, image_shape) -> None:
        """Rebuild with wider profiles when these images fall outside the engines'."""
        from semfuse_rt.export.tensorrt.trt_profiles import ShapePoint

        if self.active_runtime.covers(tuple(image_shape)):
            return
        if self.loader.shapes is not None:
            raise SemfuseError(f"images {'x'.join(map(str, image_shape))} are outside --shapes {self.loader.shapes}")
        self._load(ShapePoint(image_shape[0], image_shape[2], image_shape[3]))

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.loader.device) if self._on_cuda else torch.device("cpu")

    def _tensor(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(self.device, torch.float32).contiguous()

    def _handover(self) -> None:
        """Make torch's queued work on our tensors finish before the runtime's stream reads them."""
        if self._on_cuda:
            torch.cuda.current_stream(self.device).synchronize()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = self._tensor(pixels)
        self._fit(pixels.shape)
        runtime = self.active_runtime  # after _fit, which may have replaced it
        if not self._on_cuda:
            return torch.from_numpy(runtime.features(pixels.numpy()))
        out = torch.empty(runtime.feature_shape(tuple(pixels.shape)), device=self.device)
        self._handover()
        runtime.features_device(pixels.data_ptr(), tuple(pixels.shape), out.data_ptr())
        runtime.active_cuda.synchronize()
        return out

    def loss_and_grad(self, image: torch.Tensor, target: torch.Tensor):
        image, target = self._tensor(image), self._tensor(target)
        self._fit((1, *image.shape[1:]))
        runtime = self.active_runtime
        if not self._on_cuda:
            host_loss, host_grad = runtime.loss_and_grad(image.numpy(), target.numpy())
            return torch.from_numpy(host_loss), torch.from_numpy(host_grad)
        loss, grad = torch.empty(image.shape[0], device=self.device), torch.empty_like(image)
        self._handover()
        runtime.loss_and_grad_device(image.data_ptr(), tuple(image.shape), target.data_ptr(),
                                     tuple(target.shape), loss.data_ptr(), grad.data_ptr())
        runtime.active_cuda.synchronize()
        return loss, grad

    def optimise(self, init: torch.Tensor, target: torch.Tensor, schedule: AdamSchedule,
                 progress: ProgressCallback | None = None, release_target: bool = False) -> Optimised:
        init, target = self._tensor(init), self._tensor(target)
        self._fit((1, *init.shape[1:]))
        runtime = self.active_runtime
        if self._on_cuda:
            image = torch.empty_like(init)
            self._handover()
            losses = runtime.optimise_device(init.data_ptr(), target.data_ptr(), image.data_ptr(),
                                             tuple(init.shape), tuple(target.shape), schedule)
        else:
            result, losses = runtime.optimise(init.numpy(), target.numpy(), schedule)
            image = torch.from_numpy(np.ascontiguousarray(result))
        report_steps(losses, progress)
        return Optimised(image, losses)
