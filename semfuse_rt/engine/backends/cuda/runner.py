"""The cuda runner: the whole optimisation (fused gradient kernel, loss reduction, fused
Adam) is one CUDA graph with one sync at the end, the trt backend's captured loop with the
kernel in the engine's place. Features are the exported features graph's own computation,
run by torch on the GPU.

Needs torch with CUDA and cuda-python; deeper layers use the other backends.
"""
from __future__ import annotations

import torch

from semfuse_rt.engine.backends.base import FusionRunner, Optimised, ProgressCallback, report_steps
from semfuse_rt.engine.backends.captured_loop import FixedStepLoop, run_loop_on_device
from semfuse_rt.engine.backends.cuda.loader import CudaKernelLoader, CudaResources
from semfuse_rt.kernels.adam_scalars import AdamSchedule


class CudaRunner(FusionRunner):
    name = "cuda"

    def __init__(self, loader: CudaKernelLoader):
        self.loader = loader
        self.resources: CudaResources | None = None
        self._loops: dict[tuple, FixedStepLoop] = {}

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.loader.device)

    @property
    def active_resources(self) -> CudaResources:
        if self.resources is None:
            raise RuntimeError("the cuda runner is used outside its context")
        return self.resources

    def activate(self) -> None:
        self.resources = self.loader()

    def deactivate(self) -> None:
        for loop in self._loops.values():
            loop.close()
        self._loops.clear()
        if self.resources is not None:
            self.resources.close()
            self.resources = None
        torch.cuda.empty_cache()

    def _tensor(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(self.device, torch.float32).contiguous()

    def _handover(self) -> None:
        """Torch's queued work on our tensors must finish before the runtime's stream reads them."""
        torch.cuda.current_stream(self.device).synchronize()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.active_resources.features(self._tensor(pixels))

    def loss_and_grad(self, image: torch.Tensor, target: torch.Tensor):
        image, target = self._tensor(image), self._tensor(target)
        loss, grad = torch.empty(image.shape[0], device=self.device), torch.empty_like(image)
        gradient, cuda = self.active_resources.gradient, self.active_resources.cuda
        gradient.set_input_shapes({"image": tuple(image.shape), "target": tuple(target.shape)})
        self._handover()
        gradient.enqueue({"image": image.data_ptr(), "target": target.data_ptr(), "loss": loss.data_ptr(),
                          "grad": grad.data_ptr()}, cuda.stream)
        cuda.synchronize()
        return loss, grad

    def optimise(self, init: torch.Tensor, target: torch.Tensor, schedule: AdamSchedule,
                 progress: ProgressCallback | None = None, release_target: bool = False) -> Optimised:
        init, target = self._tensor(init), self._tensor(target)
        key = (tuple(init.shape), tuple(target.shape), schedule)
        r = self.active_resources
        if key not in self._loops:
            self._loops[key] = FixedStepLoop(r.cuda, r.gradient, r.kernels, init.shape, target.shape, schedule)
        image = torch.empty_like(init)
        self._handover()
        losses = run_loop_on_device(r.cuda, self._loops[key], init.data_ptr(), target.data_ptr(), image.data_ptr())
        report_steps(losses, progress)
        return Optimised(image, losses)
