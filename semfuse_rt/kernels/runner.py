"""KernelRunner: the fusion kernels on one GPU, launched on device pointers and streams that
belong to the caller (torch, ONNX Runtime, TensorRT or cuda-python allocations).

    with KernelRunner(device=0) as kernels:
        kernels.choose_max([a.data_ptr(), b.data_ptr()], fused.data_ptr(), labels.data_ptr(),
                           a.numel(), "float16", stream=torch.cuda.current_stream().cuda_stream)

Pointers and stream handles are plain ints; nothing is copied to or from the host and no
call synchronises, so launches can be captured into a CUDA graph. The runner owns its
module and releases it, and its hold on the device's primary context, on exit.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.abi import KERNEL_PARAMETERS, input_pointers, kernel_arguments
from semfuse_rt.kernels.adam_scalars import BETAS, EPS, adam_scalars
from semfuse_rt.kernels.arguments import check_input_count, check_window, dtype_suffix, elements_per_pack
from semfuse_rt.kernels.cuda_api import checked, cuda_modules
from semfuse_rt.kernels.nvrtc import kernel_image
from semfuse_rt.kernels.source import GRAD_CHANNELS, GRAD_TILE, TILE_H, TILE_W

ELEMENTWISE_BLOCK = 256  # matches SF_BLOCK in fusion_kernels.cu
BLOCKS_PER_SM = 8  # one full wave at 256 threads; grid-stride loops cover the rest
MAX_GRID_Z = 65535
FIRST_LAYER_CHANNELS = GRAD_CHANNELS
# One thread per position of the gradient tile plus its one-pixel halo, in whole warps
# (kGradThreads in first_layer_gradient.cuh).
GRAD_THREADS = -(-((GRAD_TILE + 2) ** 2) // 32) * 32


class KernelRunner:
    def __init__(self, device: int = 0):
        self.device_ordinal = device
        self._module = None

    # -- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> KernelRunner:
        driver, _ = cuda_modules()
        self._driver = driver
        try:
            status = driver.cuInit(0)
        except Exception as error:  # cuda-python raises when libcuda itself cannot be loaded
            raise SemfuseError(f"no usable NVIDIA driver: {error}") from error
        checked(status, "cuInit")
        self._device = checked(driver.cuDeviceGet(self.device_ordinal), "cuDeviceGet")
        self.compute_capability = (
            self._device_attribute("COMPUTE_CAPABILITY_MAJOR"),
            self._device_attribute("COMPUTE_CAPABILITY_MINOR"),
        )
        self._sm_count = self._device_attribute("MULTIPROCESSOR_COUNT")
        # The primary context is the one the CUDA runtime (torch, ORT, TensorRT) uses, so
        # their device pointers are valid in it.
        self._context = checked(driver.cuDevicePrimaryCtxRetain(self._device), "cuDevicePrimaryCtxRetain")
        checked(driver.cuCtxPushCurrent(self._context), "cuCtxPushCurrent")
        try:
            self._module = checked(
                driver.cuModuleLoadData(kernel_image(self.compute_capability)), "cuModuleLoadData"
            )
            self._functions = {
                name: checked(
                    driver.cuModuleGetFunction(self._module, name.encode()), f"cuModuleGetFunction({name})"
                )
                for name in KERNEL_PARAMETERS
            }
        except BaseException:
            self._release()
            raise
        return self

    def _device_attribute(self, name: str) -> int:
        attribute = getattr(self._driver.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
        return checked(
            self._driver.cuDeviceGetAttribute(attribute, self._device), f"cuDeviceGetAttribute({name})"
        )

    def __exit__(self, *exc_info) -> None:
        self._release()

    def _release(self) -> None:
        driver = self._driver
        if self._module is not None:
            checked(driver.cuModuleUnload(self._module), "cuModuleUnload")
            self._module = None
        checked(driver.cuCtxPopCurrent(), "cuCtxPopCurrent")
        checked(driver.cuDevicePrimaryCtxRelease(self._device), "cuDevicePrimaryCtxRelease")

    # -- launching -----------------------------------------------------------------------
    def _launch(self, name: str, grid, block, shared_bytes: int, stream: int, *values: object) -> None:
        if self._module is None:
            raise RuntimeError("KernelRunner launches only inside its `with` block")
        params = kernel_arguments(name, values)
        # cuLaunchKernel takes void** to the parameter values and copies them before it
        # returns, so these ctypes objects only need to outlive the call.
        addresses = (ctypes.c_void_p * len(params))(*[ctypes.addressof(p) for p in params])
        driver = self._driver
        checked(
            driver.cuLaunchKernel(
                self._functions[name],
                *grid,
                *block,
                shared_bytes,
                driver.CUstream(int(stream)),
                ctypes.addressof(addresses),
                0,
            ),
            f"cuLaunchKernel({name})",
        )

    def _elementwise_grid(self, count: int, per_thread: int) -> tuple[int, int, int]:
        threads = -(-count // per_thread)
        blocks = max(1, min(-(-threads // ELEMENTWISE_BLOCK), self._sm_count * BLOCKS_PER_SM))
        return (blocks, 1, 1)

    # -- fusion rules --------------------------------------------------------------------
    def choose_max(
        self, inputs: Sequence[int], fused: int, labels: int, count: int, dtype: str, stream: int = 0
    ) -> None:
        """labels[i] = D = argmax_k |inputs[k][i]|, fused[i] = inputs[D][i], for `count` elements."""
        check_input_count(len(inputs))
        grid = self._elementwise_grid(count, elements_per_pack(dtype))
        self._launch(
            f"semfuse_choose_max_{dtype_suffix(dtype)}",
            grid,
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            stream,
            input_pointers(inputs),
            len(inputs),
            count,
            fused,
            labels,
        )

    def cam_choose_max(
        self,
        inputs: Sequence[int],
        weights: Sequence[int],
        fused: int,
        labels: int,
        shape: tuple[int, int, int, int],
        dtype: str,
        stream: int = 0,
    ) -> None:
        """Features NCHW of `shape`; weights: one fp32 N x H x W map per input, shared by channels."""
        check_input_count(len(inputs))
        if len(weights) != len(inputs):
            raise ValueError("one weight map per input")
        n, c, h, w = shape
        count = n * c * h * w
        grid = self._elementwise_grid(count, elements_per_pack(dtype))
        self._launch(
            f"semfuse_cam_choose_max_{dtype_suffix(dtype)}",
            grid,
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            stream,
            input_pointers(inputs),
            input_pointers(weights),
            len(inputs),
            c,
            h * w,
            count,
            fused,
            labels,
        )

    def _majority_geometry(
        self, labels_in: int, labels_out: int, planes: int, height: int, width: int, window: int
    ) -> tuple[tuple[int, int, int], int]:
        check_window(window)
        if int(labels_in) == int(labels_out):
            raise ValueError(
                "the majority filter cannot run in place: neighbouring blocks still read the input"
            )
        radius = window // 2
        shared_bytes = (TILE_W + 2 * radius) * (TILE_H + 2 * radius) * 4
        grid = (-(-width // TILE_W), -(-height // TILE_H), max(1, min(planes, MAX_GRID_Z)))
        return grid, shared_bytes

    def majority_filter(
        self,
        labels_in: int,
        labels_out: int,
        num_inputs: int,
        planes: int,
        height: int,
        width: int,
        window: int = 5,
        stream: int = 0,
    ) -> None:
        """int32 labels: `planes` (N*C) planes of height x width, each filtered on its own."""
        check_input_count(num_inputs)
        grid, shared_bytes = self._majority_geometry(labels_in, labels_out, planes, height, width, window)
        self._launch(
            "semfuse_majority_filter",
            grid,
            (TILE_W, TILE_H, 1),
            shared_bytes,
            stream,
            labels_in,
            num_inputs,
            planes,
            height,
            width,
            window // 2,
            labels_out,
        )

    def majority_fuse(
        self,
        inputs: Sequence[int],
        labels_in: int,
        labels_out: int,
        fused: int,
        planes: int,
        height: int,
        width: int,
        dtype: str,
        window: int = 5,
        stream: int = 0,
    ) -> None:
        """Majority filter, then fused[i] = inputs[filtered label][i], in one pass."""
        check_input_count(len(inputs))
        grid, shared_bytes = self._majority_geometry(labels_in, labels_out, planes, height, width, window)
        self._launch(
            f"semfuse_majority_fuse_{dtype_suffix(dtype)}",
            grid,
            (TILE_W, TILE_H, 1),
            shared_bytes,
            stream,
            input_pointers(inputs),
            len(inputs),
            labels_in,
            planes,
            height,
            width,
            window // 2,
            labels_out,
            fused,
        )

    # -- Adam ----------------------------------------------------------------------------
    def adam_update(
        self,
        x: int,
        g: int,
        m: int,
        v: int,
        count: int,
        t: int,
        lr: float,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
        stream: int = 0,
    ) -> None:
        """One fused step on fp32 x, m, v with gradient g; t (from 1) is known on the host."""
        self._launch(
            "semfuse_adam_update",
            self._elementwise_grid(count, 4),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            stream,
            x,
            g,
            m,
            v,
            count,
            adam_scalars(t, lr, betas, eps),
        )

    def adam_update_device_step(
        self,
        x: int,
        g: int,
        m: int,
        v: int,
        count: int,
        step: int,
        lr: float,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
        stream: int = 0,
    ) -> None:
        """As adam_update, with t read from the int32 at device address `step` (graph-capturable)."""
        self._launch(
            "semfuse_adam_update_device_step",
            self._elementwise_grid(count, 4),
            (ELEMENTWISE_BLOCK, 1, 1),
            0,
            stream,
            x,
            g,
            m,
            v,
            count,
            lr,
            betas[0],
            betas[1],
            eps,
            step,
        )

    def advance_step(self, step: int, stream: int = 0) -> None:
        """t += 1 on the device; launch before adam_update_device_step (t starts at 0)."""
        self._launch("semfuse_adam_advance_step", (1, 1, 1), (1, 1, 1), 0, stream, step)

    # -- the first layer's loss gradient ---------------------------------------------------
    def set_first_layer_weights(self, weight: int, bias: int, stream: int = 0) -> None:
        """Copy conv1_1's weight (64,3,3,3), normalisation folded in
        (export.gradient_graph.pixel_space_convs), and bias (64,) from device memory into this
        runner's constant memory, where first_layer_gradient reads them. One set per runner."""
        driver = self._driver
        for symbol, source, count in (("semfuse_first_layer_weight", weight, FIRST_LAYER_CHANNELS * 27),
                                      ("semfuse_first_layer_bias", bias, FIRST_LAYER_CHANNELS)):
            address, size = checked(driver.cuModuleGetGlobal(self._module, symbol.encode()),
                                    f"cuModuleGetGlobal({symbol})")
            if int(size) != 4 * count:
                raise SemfuseError(f"{symbol} holds {int(size)} bytes, not {4 * count}")
            checked(driver.cuMemcpyDtoDAsync(address, int(source), 4 * count, driver.CUstream(int(stream))),
                    "cuMemcpyDtoDAsync")

    def first_layer_gradient(
        self,
        image: int,
        target: int,
        offset: int,
        shape: tuple[int, int, int, int],
        relu: bool,
        grad: int,
        loss: int,
        partials: int,
        stream: int = 0,
    ) -> None:
        """loss (N,) and grad (N,3,H,W) of sum (act(conv1_1(image - offset)) - target)^2 for fp32
        images of `shape` and targets (N,64,H,W), with the weights of set_first_layer_weights;
        act is ReLU when `relu`. `partials` holds first_layer_partials(shape) floats."""
        n, _, h, w = check_first_layer_shape(shape)
        grid = (-(-w // GRAD_TILE), -(-h // GRAD_TILE), n)
        self._launch("semfuse_first_layer_gradient", grid, (GRAD_THREADS, 1, 1), 0, stream,
                     image, target, offset, h, w, int(bool(relu)), grad, partials)
        self._launch("semfuse_sum_partials", (n, 1, 1), (ELEMENTWISE_BLOCK, 1, 1), 0, stream,
                     partials, grid[0] * grid[1], loss)


def check_first_layer_shape(shape) -> tuple[int, int, int, int]:
    n, c, h, w = (int(v) for v in shape)
    if c != 3 or n < 1 or h < 1 or w < 1 or n > MAX_GRID_Z:
        raise ValueError(f"the first-layer gradient takes (N,3,H,W) images, got {tuple(shape)}")
    return n, c, h, w


def first_layer_partials(shape) -> int:
    """Floats of scratch the first-layer gradient needs for images of `shape`."""
    n, _, h, w = check_first_layer_shape(shape)
    return n * -(-h // GRAD_TILE) * -(-w // GRAD_TILE)
