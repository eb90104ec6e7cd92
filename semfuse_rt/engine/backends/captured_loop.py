"""The whole fixed-step optimisation as one CUDA graph, without torch; used by the trt
backend (a TensorRT gradient engine) and the cuda backend (the fused first-layer kernel).

x <- init, m = v = 0, then for each step the gradient engine writes (loss, grad) and the
Adam kernel updates x, m, v in place. Captured the first time, replayed after; a run
synchronises once, at the end. Each step's loss goes to its own slot of a device array, so
nothing is read back until then.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from semfuse_rt.engine.backends.cuda_device import CudaDevice
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import AdamSchedule

FLOAT_BYTES = 4


def volume(shape) -> int:
    return int(math.prod(shape))


class GradientEngine(Protocol):
    """What the loop drives: loss and dL/dimage into given device addresses."""

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def enqueue(self, addresses: dict[str, int], stream: int) -> None: ...


class FixedStepLoop:
    """The whole fixed-step optimisation for one image shape and schedule, as a CUDA graph.

    `gradient` is a TensorRT EngineSession or the cuda backend's fused kernel: anything
    with the GradientEngine interface."""

    def __init__(self, cuda: CudaDevice, gradient: GradientEngine, kernels, image_shape: tuple[int, ...],
                 target_shape: tuple[int, ...], schedule: AdamSchedule):
        self.cuda, self.gradient, self.kernels = cuda, gradient, kernels
        self.image_shape, self.target_shape = tuple(image_shape), tuple(target_shape)
        self.schedule = schedule
        self.steps = schedule.steps
        self.count = volume(image_shape)
        self.batch = image_shape[0]
        gradient.set_input_shapes({"image": self.image_shape, "target": self.target_shape})
        if gradient.shape("grad") != self.image_shape or gradient.shape("loss") != (self.batch,):
            raise SemfuseError(f"the gradient engine gives grad {gradient.shape('grad')} and loss "
                               f"{gradient.shape('loss')} for image {self.image_shape}")
        image_bytes = self.count * FLOAT_BYTES
        self.init, self.x, self.m, self.v, self.grad = (cuda.alloc(image_bytes) for _ in range(5))
        self.target = cuda.alloc(volume(target_shape) * FLOAT_BYTES)
        self.history = cuda.alloc(self.steps * self.batch * FLOAT_BYTES)
        self._graph = None

    def _loss_slot(self, step: int) -> int:
        return self.history.ptr + step * self.batch * FLOAT_BYTES

    def _evaluate(self, step: int) -> None:
        # Each evaluation writes its loss to its own slot: the captured graph keeps the
        # addresses bound at each enqueue, so the history fills with no copies.
        self.gradient.enqueue({"image": self.x.ptr, "target": self.target.ptr,
                               "loss": self._loss_slot(step), "grad": self.grad.ptr}, self.cuda.stream)

    def _record(self) -> None:
        cuda, image_bytes = self.cuda, self.count * FLOAT_BYTES
        cuda.copy(self.x.ptr, self.init.ptr, image_bytes)
        cuda.zero(self.m.ptr, image_bytes)
        cuda.zero(self.v.ptr, image_bytes)
        for t in range(1, self.steps + 1):
            self._evaluate(t - 1)
            # t is known here, so each step's Adam scalars are baked into its launch.
            s = self.schedule
            self.kernels.adam_update(self.x.ptr, self.grad.ptr, self.m.ptr, self.v.ptr, self.count, t,
                                     s.lr_at(t), (s.beta1, s.beta2), s.eps, stream=cuda.stream)

    def capture(self) -> None:
        if self._graph is not None:
            return
        # TensorRT does shape-dependent setup on the first enqueue after set_input_shape;
        # it must run outside the capture.
        self.gradient.set_input_shapes({"image": self.image_shape, "target": self.target_shape})
        self._evaluate(0)
        self.cuda.synchronize()
        self.cuda.begin_capture()
        try:
            self._record()
        except BaseException:
            try:
                self.cuda.rt.cudaGraphDestroy(self.cuda.end_capture())
            except SemfuseError:
                pass
            raise
        self._graph = self.cuda.instantiate(self.cuda.end_capture())

    def launch(self) -> None:
        """Enqueue the whole loop (init and target must be in place); does not synchronise."""
        self.capture()
        # Replays do not depend on the context's current shapes, but later direct enqueues
        # should find the ones this loop was captured with.
        self.gradient.set_input_shapes({"image": self.image_shape, "target": self.target_shape})
        self.cuda.launch(self._graph)

    def close(self) -> None:
        if self._graph is not None:
            self.cuda.destroy_graph(self._graph)
            self._graph = None
        for buffer in (self.init, self.x, self.m, self.v, self.grad, self.target, self.history):
            self.cuda.free(buffer)


def run_loop_on_device(cuda: CudaDevice, loop: FixedStepLoop, init_ptr: int, target_ptr: int,
                       out_ptr: int) -> list[float]:
    """Run `loop` from the device image at init_ptr towards the device target, the result to
    out_ptr; one sync. Returns the summed loss before each step."""
    image_bytes = loop.count * FLOAT_BYTES
    cuda.copy(loop.init.ptr, init_ptr, image_bytes)
    cuda.copy(loop.target.ptr, target_ptr, volume(loop.target_shape) * FLOAT_BYTES)
    loop.launch()
    cuda.copy(out_ptr, loop.x.ptr, image_bytes)
    history = np.empty((loop.steps, loop.batch), np.float32)
    cuda.download(history, loop.history.ptr)
    cuda.synchronize()
    return [float(v) for v in history.sum(axis=1, dtype=np.float64)]


