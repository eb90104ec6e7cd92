"""TensorRT runtime for the fusion engines, without torch: cuda-python for memory, one
stream and CUDA graphs; TensorRT's Python API for the engines; the fused Adam kernel from
semfuse_rt.kernels.

    with TrtFusionRuntime(features_plan, gradient_plan) as runtime:
        features = runtime.features(pixels)                  # (K,3,H,W) float32 numpy
        image, losses = runtime.optimise(init, target, steps=100, lr=1.0)

The optimisation is one CUDA graph per image shape and schedule: x <- init, m = v = 0, then
for each step the gradient engine writes (loss, grad) and the Adam kernel updates x, m, v in
place; a last gradient evaluation gives the final loss. It is captured the first time and
replayed after; a call launches it and synchronises once, at the end. Each step's loss goes
to its own slot of a device array, so nothing is read back until then.

Engines are loaded only after their manifests are checked against the running TensorRT and
GPU (export.trt_build.environment_mismatch): a mismatched engine is refused, never used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import step_lr

FLOAT_BYTES = 4
BETAS = (0.9, 0.999)
EPS = 1e-8


def _cudart():
    from semfuse_rt.export.trt_build import _cudart as load

    return load()


def _check(result, call: str):
    """Values of a cuda-python runtime call, or SemfuseError naming the call and status."""
    if not isinstance(result, tuple):
        result = (result,)
    status, *values = result
    if int(status) != 0:
        raise SemfuseError(f"{call} failed with {getattr(status, 'name', status)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _volume(shape) -> int:
    return int(math.prod(shape))


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int


class CudaDevice:
    """One device, one non-blocking stream, and the allocations made through it."""

    def __init__(self, device: int = 0):
        self.rt = _cudart()
        self.device = device
        _check(self.rt.cudaSetDevice(device), "cudaSetDevice")
        # The primary context now, so TensorRT, the kernels and these buffers share it.
        _check(self.rt.cudaFree(0), "cudaFree(0)")
        self._stream = _check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking),
                              "cudaStreamCreateWithFlags")
        self.stream = int(self._stream)
        self._buffers: dict[int, DeviceBuffer] = {}

    def alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = int(_check(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))
        buffer = DeviceBuffer(ptr, int(nbytes))
        self._buffers[ptr] = buffer
        return buffer

    def free(self, buffer: DeviceBuffer | None) -> None:
        if buffer is not None and self._buffers.pop(buffer.ptr, None) is not None:
            _check(self.rt.cudaFree(buffer.ptr), "cudaFree")

    def upload(self, ptr: int, array: np.ndarray) -> None:
        """Host to device on the stream (a pageable source may be reused once this returns)."""
        array = np.ascontiguousarray(array)
        _check(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
               "cudaMemcpyAsync(host to device)")

    def download(self, array: np.ndarray, ptr: int) -> None:
        """Device to host on the stream; `array` is complete after synchronize()."""
        if not array.flags.c_contiguous:
            raise ValueError("download needs a C-contiguous array")
        _check(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
               "cudaMemcpyAsync(device to host)")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        _check(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                       self.stream), "cudaMemcpyAsync(device to device)")

    def zero(self, ptr: int, nbytes: int) -> None:
        _check(self.rt.cudaMemsetAsync(ptr, 0, nbytes, self.stream), "cudaMemsetAsync")

    def synchronize(self) -> None:
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    # CUDA graphs: everything enqueued on the stream between begin and end becomes one graph.
    def begin_capture(self) -> None:
        _check(self.rt.cudaStreamBeginCapture(self.stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
               "cudaStreamBeginCapture")

    def end_capture(self):
        return _check(self.rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")

    def instantiate(self, graph):
        try:
            return _check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            # The executable graph holds what it needs; the template can go.
            self.rt.cudaGraphDestroy(graph)

    def launch(self, graph_exec) -> None:
        _check(self.rt.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def destroy_graph(self, graph_exec) -> None:
        self.rt.cudaGraphExecDestroy(graph_exec)

    def close(self) -> None:
        for buffer in list(self._buffers.values()):
            self.free(buffer)
        if self._stream is not None:
            self.rt.cudaStreamSynchronize(self.stream)
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None


class EngineSession:
    """A deserialized engine and one execution context, with float32 IO by name."""

    def __init__(self, trt, runtime, plan: bytes, name: str):
        self.trt = trt
        self.name = name
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise SemfuseError(f"TensorRT could not load the {name} engine; rebuild it with "
                               "`semfuse-rt build --trt --force`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise SemfuseError(f"TensorRT could not create a context for the {name} engine (out of GPU memory?)")
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_dtype(tensor) != trt.DataType.FLOAT:
                raise SemfuseError(f"the {name} engine's {tensor} is not float32; rebuild it")
            is_input = self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(tensor)

    def profile(self, tensor: str) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(d) for d in dims) for dims in self.engine.get_tensor_profile_shape(tensor, 0))

    def covers(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        for tensor, shape in shapes.items():
            low, _, high = self.profile(tensor)
            if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
        return True

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for tensor, shape in shapes.items():
            low, _, high = self.profile(tensor)
            if not self.covers({tensor: shape}):
                raise SemfuseError(
                    f"{tensor} {'x'.join(map(str, shape))} is outside the {self.name} engine's profile "
                    f"{'x'.join(map(str, low))} .. {'x'.join(map(str, high))}; rebuild with "
                    "`semfuse-rt build --trt --shapes MIN,OPT,MAX`")
            if not self.context.set_input_shape(tensor, tuple(shape)):
                raise SemfuseError(f"TensorRT refused shape {shape} for {tensor} of the {self.name} engine")
        missing = self.context.infer_shapes()
        if missing:
            raise SemfuseError(f"the {self.name} engine's shapes are incomplete: {', '.join(missing)}")

    def shape(self, tensor: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(tensor))

    def enqueue(self, addresses: dict[str, int], stream: int) -> None:
        for tensor, ptr in addresses.items():
            if not self.context.set_tensor_address(tensor, int(ptr)):
                raise SemfuseError(f"TensorRT refused the address of {tensor} in the {self.name} engine")
        if not self.context.execute_async_v3(stream):
            raise SemfuseError(f"TensorRT could not enqueue the {self.name} engine")


class FixedStepLoop:
    """The whole fixed-step optimisation for one image shape and schedule, as a CUDA graph.

    `gradient` is a TensorRT EngineSession or anything with its set_input_shapes, shape and
    enqueue (the cuda backend's fused kernel)."""

    def __init__(self, cuda: CudaDevice, gradient: EngineSession, kernels, image_shape: tuple[int, ...],
                 target_shape: tuple[int, ...], steps: int, lr: float, betas=BETAS, eps: float = EPS,
                 decay: str = "constant"):
        if steps < 0:
            raise SemfuseError(f"steps must be >= 0, got {steps}")
        self.cuda, self.gradient, self.kernels = cuda, gradient, kernels
        self.image_shape, self.target_shape = tuple(image_shape), tuple(target_shape)
        self.steps, self.lr, self.betas, self.eps = steps, float(lr), tuple(betas), float(eps)
        self.decay = decay
        self.count = _volume(image_shape)
        self.batch = image_shape[0]
        gradient.set_input_shapes({"image": self.image_shape, "target": self.target_shape})
        if gradient.shape("grad") != self.image_shape or gradient.shape("loss") != (self.batch,):
            raise SemfuseError(f"the gradient engine gives grad {gradient.shape('grad')} and loss "
                               f"{gradient.shape('loss')} for image {self.image_shape}")
        image_bytes = self.count * FLOAT_BYTES
        self.init, self.x, self.m, self.v, self.grad = (cuda.alloc(image_bytes) for _ in range(5))
        self.target = cuda.alloc(_volume(target_shape) * FLOAT_BYTES)
        self.history = cuda.alloc((steps + 1) * self.batch * FLOAT_BYTES)
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
            self.kernels.adam_update(self.x.ptr, self.grad.ptr, self.m.ptr, self.v.ptr, self.count, t,
                                     step_lr(self.lr, t, self.steps, self.decay), self.betas, self.eps,
                                     stream=cuda.stream)
        self._evaluate(self.steps)

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


def run_loop_on_device(cuda: CudaDevice, loop: FixedStepLoop, init_ptr: int, target_ptr: int, out_ptr: int) -> list[float]:
    """Run `loop` from the device image at init_ptr towards the device target, the result to
    out_ptr; one sync. Returns the summed loss before each step and after the last."""
    image_bytes = loop.count * FLOAT_BYTES
    cuda.copy(loop.init.ptr, init_ptr, image_bytes)
    cuda.copy(loop.target.ptr, target_ptr, _volume(loop.target_shape) * FLOAT_BYTES)
    loop.launch()
    cuda.copy(out_ptr, loop.x.ptr, image_bytes)
    history = np.empty((loop.steps + 1, loop.batch), np.float32)
    cuda.download(history, loop.history.ptr)
    cuda.synchronize()
    return [float(v) for v in history.sum(axis=1, dtype=np.float64)]


def verify_engine(path: Path, device: int = 0) -> None:
    """Refuse an engine whose manifest does not match the running TensorRT and GPU."""
    from semfuse_rt.export.trt_build import detect_environment, environment_mismatch, read_json

    path = Path(path)
    manifest = read_json(path.with_name(path.stem + ".manifest.json"))
    reason = environment_mismatch(manifest, detect_environment(device), path)
    if reason is not None:
        raise SemfuseError(f"refusing TensorRT engine {path}: {reason}; rebuild with `semfuse-rt build --trt`")


class TrtFusionRuntime:
    """The features and gradient engines on one GPU, with the captured optimisation loop."""

    def __init__(self, features_plan: Path, gradient_plan: Path, device: int = 0, verify: bool = True):
        self.paths = (Path(features_plan), Path(gradient_plan))
        self.device = device
        self.verify = verify
        self.cuda = None
        self.kernels = None
        self._loops: dict[tuple, FixedStepLoop] = {}
        self._scratch: dict[str, DeviceBuffer] = {}

    def __enter__(self) -> TrtFusionRuntime:
        from semfuse_rt.export.trt_build import _import_tensorrt

        trt = _import_tensorrt()
        if self.verify:
            for path in self.paths:
                verify_engine(path, self.device)
        try:
            self.cuda = CudaDevice(self.device)
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.features_engine = EngineSession(trt, self._runtime, self.paths[0].read_bytes(), "features")
            self.gradient_engine = EngineSession(trt, self._runtime, self.paths[1].read_bytes(), "gradient")
            from semfuse_rt.kernels.runner import KernelRunner

            self.kernels = KernelRunner(self.device).__enter__()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for loop in self._loops.values():
            loop.close()
        self._loops.clear()
        if self.cuda is not None:
            self.cuda.synchronize()
            for buffer in self._scratch.values():
                self.cuda.free(buffer)
            self._scratch.clear()
        if self.kernels is not None:
            self.kernels.__exit__(None, None, None)
            self.kernels = None
        # Contexts before engines before the runtime, as TensorRT requires.
        for attribute in ("features_engine", "gradient_engine"):
            session = getattr(self, attribute, None)
            if session is not None:
                session.context = None
                session.engine = None
                setattr(self, attribute, None)
        self._runtime = None
        if self.cuda is not None:
            self.cuda.close()
            self.cuda = None

    # -- shapes ----------------------------------------------------------------------------
    def covers(self, image_shape: tuple[int, ...]) -> bool:
        """Whether both engines take (N,3,H,W) images of this shape (gradient: one image)."""
        single = (1, *image_shape[1:])
        return self.features_engine.covers({"image": tuple(image_shape)}) and \
            self.gradient_engine.covers({"image": single})

    def feature_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.features_engine.set_input_shapes({"image": tuple(image_shape)})
        return self.features_engine.shape("features")

    def _buffer(self, role: str, nbytes: int) -> DeviceBuffer:
        buffer = self._scratch.get(role)
        if buffer is None or buffer.nbytes < nbytes:
            self.cuda.free(buffer)
            buffer = self._scratch[role] = self.cuda.alloc(nbytes)
        return buffer

    # -- features --------------------------------------------------------------------------
    def features_device(self, image_ptr: int, image_shape: tuple[int, ...], out_ptr: int) -> None:
        """Enqueue features of the device images at image_ptr into out_ptr (feature_shape)."""
        self.features_engine.set_input_shapes({"image": tuple(image_shape)})
        self.features_engine.enqueue({"image": image_ptr, "features": out_ptr}, self.cuda.stream)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        shape = self.feature_shape(pixels.shape)
        image = self._buffer("image", pixels.nbytes)
        out = self._buffer("features", _volume(shape) * FLOAT_BYTES)
        self.cuda.upload(image.ptr, pixels)
        self.features_device(image.ptr, pixels.shape, out.ptr)
        result = np.empty(shape, np.float32)
        self.cuda.download(result, out.ptr)
        self.cuda.synchronize()
        return result

    # -- one gradient evaluation (no graph) ---------------------------------------------------
    def loss_and_grad_device(self, image_ptr: int, image_shape: tuple[int, ...], target_ptr: int,
                             target_shape: tuple[int, ...], loss_ptr: int, grad_ptr: int) -> None:
        self.gradient_engine.set_input_shapes({"image": tuple(image_shape), "target": tuple(target_shape)})
        self.gradient_engine.enqueue({"image": image_ptr, "target": target_ptr, "loss": loss_ptr,
                                      "grad": grad_ptr}, self.cuda.stream)

    def loss_and_grad(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.ascontiguousarray(image, dtype=np.float32)
        target = np.ascontiguousarray(target, dtype=np.float32)
        x, t = self._buffer("image", image.nbytes), self._buffer("target", target.nbytes)
        loss_buffer = self._buffer("loss", image.shape[0] * FLOAT_BYTES)
        grad_buffer = self._buffer("grad", image.nbytes)
        self.cuda.upload(x.ptr, image)
        self.cuda.upload(t.ptr, target)
        self.loss_and_grad_device(x.ptr, image.shape, t.ptr, target.shape, loss_buffer.ptr, grad_buffer.ptr)
        loss, grad = np.empty(image.shape[0], np.float32), np.empty_like(image)
        self.cuda.download(loss, loss_buffer.ptr)
        self.cuda.download(grad, grad_buffer.ptr)
        self.cuda.synchronize()
        return loss, grad

    # -- the optimisation ---------------------------------------------------------------------
    def loop(self, image_shape, target_shape, steps: int, lr: float, betas=BETAS, eps: float = EPS,
             decay: str = "constant") -> FixedStepLoop:
        key = (tuple(image_shape), tuple(target_shape), steps, float(lr), tuple(betas), float(eps), decay)
        if key not in self._loops:
            self._loops[key] = FixedStepLoop(self.cuda, self.gradient_engine, self.kernels, image_shape,
                                             target_shape, steps, lr, betas, eps, decay)
        return self._loops[key]

    def optimise_device(self, init_ptr: int, target_ptr: int, out_ptr: int, image_shape, target_shape,
                        steps: int, lr: float, betas=BETAS, eps: float = EPS, decay: str = "constant") -> list[float]:
        """Optimise from the device image at init_ptr towards the device target; the result
        goes to out_ptr. Returns the summed loss before each step and after the last."""
        loop = self.loop(image_shape, target_shape, steps, lr, betas, eps, decay)
        return run_loop_on_device(self.cuda, loop, init_ptr, target_ptr, out_ptr)

    def optimise(self, init: np.ndarray, target: np.ndarray, steps: int, lr: float, betas=BETAS,
                 eps: float = EPS, decay: str = "constant") -> tuple[np.ndarray, list[float]]:
        init = np.ascontiguousarray(init, dtype=np.float32)
        target = np.ascontiguousarray(target, dtype=np.float32)
        loop = self.loop(init.shape, target.shape, steps, lr, betas, eps, decay)
        self.cuda.upload(loop.init.ptr, init)
        self.cuda.upload(loop.target.ptr, target)
        loop.launch()
        image = np.empty_like(init)
        history = np.empty((steps + 1, loop.batch), np.float32)
        self.cuda.download(image, loop.x.ptr)
        self.cuda.download(history, loop.history.ptr)
        self.cuda.synchronize()
        return image, [float(v) for v in history.sum(axis=1, dtype=np.float64)]
