"""TensorRT runtime for the fusion engines, without torch: cuda-python for memory, one
stream and CUDA graphs (cuda_device.py); TensorRT's Python API for the engines; the
captured fixed-step loop (captured_loop.py) with the fused Adam kernel.

    with TrtFusionRuntime(features_plan, gradient_plan) as runtime:
        features = runtime.features(pixels)                  # (K,3,H,W) float32 numpy
        image, losses = runtime.optimise(init, target, AdamSchedule(steps=100, lr=1.0))

Engines are loaded only after their manifests are checked against the running TensorRT and
GPU (export.trt_build.environment_mismatch): a mismatched engine is refused, never used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semfuse_rt.engine.backends.captured_loop import FLOAT_BYTES, FixedStepLoop, run_loop_on_device, volume
from semfuse_rt.engine.backends.cuda_device import CudaDevice, DeviceBuffer
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import AdamSchedule

if TYPE_CHECKING:  # it needs cuda-python at import
    from semfuse_rt.kernels.runner import KernelRunner


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
        self.inputs: list[str] = []
        self.outputs: list[str] = []
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


def verify_engine(path: Path, device: int = 0) -> None:
    """Refuse an engine whose manifest does not match the running TensorRT and GPU."""
    from semfuse_rt.export.tensorrt.trt_build import detect_environment, environment_mismatch, read_json

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
        self.cuda: CudaDevice | None = None
        self.kernels: KernelRunner | None = None
        self._loops: dict[tuple, FixedStepLoop] = {}
        self._scratch: dict[str, DeviceBuffer] = {}

    def __enter__(self) -> TrtFusionRuntime:
        from semfuse_rt.export.tensorrt.trt_build import _import_tensorrt

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

    @property
    def active_cuda(self) -> CudaDevice:
        if self.cuda is None:
            raise RuntimeError("the TensorRT runtime is used outside its context")
        return self.cuda

    @property
    def active_kernels(self) -> KernelRunner:
        if self.kernels is None:
            raise RuntimeError("the TensorRT runtime is used outside its context")
        return self.kernels

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
            cuda = self.active_cuda
            cuda.free(buffer)
            buffer = self._scratch[role] = cuda.alloc(nbytes)
        return buffer

    # -- features --------------------------------------------------------------------------
    def features_device(self, image_ptr: int, image_shape: tuple[int, ...], out_ptr: int) -> None:
        """Enqueue features of the device images at image_ptr into out_ptr (feature_shape)."""
        self.features_engine.set_input_shapes({"image": tuple(image_shape)})
        self.features_engine.enqueue({"image": image_ptr, "features": out_ptr}, self.active_cuda.stream)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        shape = self.feature_shape(pixels.shape)
        image = self._buffer("image", pixels.nbytes)
        out = self._buffer("features", volume(shape) * FLOAT_BYTES)
        cuda = self.active_cuda
        cuda.upload(image.ptr, pixels)
        self.features_device(image.ptr, pixels.shape, out.ptr)
        result = np.empty(shape, np.float32)
        cuda.download(result, out.ptr)
        cuda.synchronize()
        return result

    # -- one gradient evaluation (no graph) ---------------------------------------------------
    def loss_and_grad_device(self, image_ptr: int, image_shape: tuple[int, ...], target_ptr: int,
                             target_shape: tuple[int, ...], loss_ptr: int, grad_ptr: int) -> None:
        self.gradient_engine.set_input_shapes({"image": tuple(image_shape), "target": tuple(target_shape)})
        self.gradient_engine.enqueue({"image": image_ptr, "target": target_ptr, "loss": loss_ptr,
                                      "grad": grad_ptr}, self.active_cuda.stream)

    def loss_and_grad(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.ascontiguousarray(image, dtype=np.float32)
        target = np.ascontiguousarray(target, dtype=np.float32)
        x, t = self._buffer("image", image.nbytes), self._buffer("target", target.nbytes)
        loss_buffer = self._buffer("loss", image.shape[0] * FLOAT_BYTES)
        grad_buffer = self._buffer("grad", image.nbytes)
        cuda = self.active_cuda
        cuda.upload(x.ptr, image)
        cuda.upload(t.ptr, target)
        self.loss_and_grad_device(x.ptr, image.shape, t.ptr, target.shape, loss_buffer.ptr, grad_buffer.ptr)
        loss, grad = np.empty(image.shape[0], np.float32), np.empty_like(image)
        cuda.download(loss, loss_buffer.ptr)
        cuda.download(grad, grad_buffer.ptr)
        cuda.synchronize()
        return loss, grad

    # -- the optimisation ---------------------------------------------------------------------
    def loop(self, image_shape, target_shape, schedule: AdamSchedule) -> FixedStepLoop:
        key = (tuple(image_shape), tuple(target_shape), schedule)
        if key not in self._loops:
            self._loops[key] = FixedStepLoop(self.active_cuda, self.gradient_engine, self.active_kernels,
                                             image_shape, target_shape, schedule)
        return self._loops[key]

    def optimise_device(self, init_ptr: int, target_ptr: int, out_ptr: int, image_shape, target_shape,
                        schedule: AdamSchedule) -> list[float]:
        """Optimise from the device image at init_ptr towards the device target; the result
        goes to out_ptr. Returns the summed loss before each step."""
        loop = self.loop(image_shape, target_shape, schedule)
        return run_loop_on_device(self.active_cuda, loop, init_ptr, target_ptr, out_ptr)

    def optimise(self, init: np.ndarray, target: np.ndarray,
                 schedule: AdamSchedule) -> tuple[np.ndarray, list[float]]:
        init = np.ascontiguousarray(init, dtype=np.float32)
        target = np.ascontiguousarray(target, dtype=np.float32)
        loop = self.loop(init.shape, target.shape, schedule)
        steps = schedule.steps
        cuda = self.active_cuda
        cuda.upload(loop.init.ptr, init)
        cuda.upload(loop.target.ptr, target)
        loop.launch()
        image = np.empty_like(init)
        history = np.empty((steps, loop.batch), np.float32)
        cuda.download(image, loop.x.ptr)
        cuda.download(history, loop.history.ptr)
        cuda.synchronize()
        return image, [float(v) for v in history.sum(axis=1, dtype=np.float64)]
