"""numpy-facing launchers for the host build of the fusion kernels.

Each call runs the kernels' own per-element code on the CPU. `threads` replays the GPU's
grid-stride loops for that many emulated threads (one after another), so the tests can
check that the loop bounds cover every element exactly once for awkward thread counts.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import numpy as np

from semfuse_rt.kernels.abi import AdamScalars, InputPointers, input_pointers
from semfuse_rt.kernels.adam_scalars import BETAS, EPS, adam_scalars
from semfuse_rt.kernels.arguments import check_input_count, check_window, dtype_suffix
from semfuse_rt.kernels.runner import FIRST_LAYER_CHANNELS, check_first_layer_shape
from support.kernels.host_build import build_host_library

_P = ctypes.c_void_p
_I32 = ctypes.c_int
_I64 = ctypes.c_longlong
_F64 = ctypes.c_double
_INPUTS = ctypes.POINTER(InputPointers)

_SIGNATURES = {
    "semfuse_host_choose_max_f32": (_INPUTS, _I32, _I64, _P, _P, _I64),
    "semfuse_host_choose_max_f16": (_INPUTS, _I32, _I64, _P, _P, _I64),
    "semfuse_host_cam_choose_max_f32": (_INPUTS, _INPUTS, _I32, _I32, _I64, _I64, _P, _P, _I64),
    "semfuse_host_cam_choose_max_f16": (_INPUTS, _INPUTS, _I32, _I32, _I64, _I64, _P, _P, _I64),
    "semfuse_host_majority_filter": (_P, _I32, _I64, _I32, _I32, _I32, _P, _I32),
    "semfuse_host_majority_fuse_f32": (_INPUTS, _I32, _P, _I64, _I32, _I32, _I32, _P, _P, _I32),
    "semfuse_host_majority_fuse_f16": (_INPUTS, _I32, _P, _I64, _I32, _I32, _I32, _P, _P, _I32),
    "semfuse_host_adam_update": (_P, _P, _P, _P, _I64, ctypes.POINTER(AdamScalars), _I64),
    "semfuse_host_adam_update_device_step": (_P, _P, _P, _P, _I64, _F64, _F64, _F64, _F64, _P, _I64),
    "semfuse_host_first_layer_gradient": (_P, _P, _P, _P, _P, _I32, _I32, _I32, _I32, _P, _P),
}


@functools.lru_cache(maxsize=1)
def host_library() -> ctypes.CDLL:
    library = ctypes.CDLL(str(build_host_library()))
    for name, argtypes in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    library.semfuse_host_adam_scalars.argtypes = (_I64, _F64, _F64, _F64, _F64, ctypes.POINTER(AdamScalars))
    library.semfuse_host_adam_scalars.restype = None
    library.semfuse_host_half_to_float.argtypes = (_P, _P, _I64)
    library.semfuse_host_half_to_float.restype = None
    return library


def _call(name: str, *args) -> None:
    status = getattr(host_library(), name)(*args)
    if status != 0:
        raise ValueError(f"{name} rejected its arguments (status {status})")


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def _same_shape_features(features: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    features = tuple(features)
    check_input_count(len(features))
    first = features[0]
    dtype_suffix(first.dtype)
    for f in features:
        if f.shape != first.shape or f.dtype != first.dtype:
            raise ValueError("all feature maps must share one shape and dtype")
        if not f.flags.c_contiguous:
            raise ValueError("feature maps must be C-contiguous")
    return features


def _pointers(arrays: Sequence[np.ndarray]) -> InputPointers:
    return input_pointers([_address(a) for a in arrays])


def _as_nchw(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) == 4:
        return shape
    raise ValueError(f"feature maps must be (C, H, W) or (N, C, H, W), got shape {shape}")


def choose_max(
    features: Sequence[np.ndarray], *, threads: int = 1, out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fused map, int32 labels); `out` lets tests place outputs at chosen alignments."""
    features = _same_shape_features(features)
    fused, labels = (
        out if out is not None else (np.empty_like(features[0]), np.empty(features[0].shape, np.int32))
    )
    suffix = dtype_suffix(features[0].dtype)
    _call(
        f"semfuse_host_choose_max_{suffix}",
        ctypes.byref(_pointers(features)),
        len(features),
        features[0].size,
        _address(fused),
        _address(labels),
        threads,
    )
    return fused, labels


def cam_choose_max(
    features: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    *,
    threads: int = 1,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights: one float32 (H, W) or (N, H, W) map per input, shared by all channels."""
    features = _same_shape_features(features)
    n, c, h, w = _as_nchw(features[0].shape)
    weights = tuple(weights)
    if len(weights) != len(features):
        raise ValueError("one weight map per input")
    for weight in weights:
        if weight.dtype != np.float32 or weight.size != n * h * w or not weight.flags.c_contiguous:
            raise ValueError(f"weight maps must be C-contiguous float32 with N*H*W = {n * h * w} elements")
    fused, labels = (
        out if out is not None else (np.empty_like(features[0]), np.empty(features[0].shape, np.int32))
    )
    suffix = dtype_suffix(features[0].dtype)
    _call(
        f"semfuse_host_cam_choose_max_{suffix}",
        ctypes.byref(_pointers(features)),
        ctypes.byref(_pointers(weights)),
        len(features),
        c,
        h * w,
        features[0].size,
        _address(fused),
        _address(labels),
        threads,
    )
    return fused, labels


def _check_labels(labels: np.ndarray) -> tuple[int, int, int]:
    if labels.dtype != np.int32 or not labels.flags.c_contiguous or labels.ndim < 2:
        raise ValueError("labels must be C-contiguous int32 with at least (H, W) dimensions")
    h, w = labels.shape[-2:]
    return labels.size // (h * w), h, w


def majority_filter(labels: np.ndarray, num_inputs: int, window: int = 5, *, threads: int = 1) -> np.ndarray:
    check_input_count(num_inputs)
    check_window(window)
    planes, h, w = _check_labels(labels)
    filtered = np.empty_like(labels)
    _call(
        "semfuse_host_majority_filter",
        _address(labels),
        num_inputs,
        planes,
        h,
        w,
        window,
        _address(filtered),
        threads,
    )
    return filtered


def majority_fuse(
    features: Sequence[np.ndarray], labels: np.ndarray, window: int = 5, *, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Majority-filtered labels and the fused map gathered with them."""
    features = _same_shape_features(features)
    check_window(window)
    planes, h, w = _check_labels(labels)
    if labels.shape != features[0].shape:
        raise ValueError("labels must have the feature maps' shape")
    filtered = np.empty_like(labels)
    fused = np.empty_like(features[0])
    suffix = dtype_suffix(features[0].dtype)
    _call(
        f"semfuse_host_majority_fuse_{suffix}",
        ctypes.byref(_pointers(features)),
        len(features),
        _address(labels),
        planes,
        h,
        w,
        window,
        _address(filtered),
        _address(fused),
        threads,
    )
    return filtered, fused


def _check_adam_state(*arrays: np.ndarray) -> None:
    for array in arrays:
        if array.dtype != np.float32 or not array.flags.c_contiguous or array.shape != arrays[0].shape:
            raise ValueError("Adam state must be C-contiguous float32 arrays of one shape")


def adam_update(
    x: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    lr: float,
    *,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
    threads: int = 1,
) -> None:
    """One in-place step with host-computed scalars; t counts from 1."""
    _check_adam_state(x, g, m, v)
    scalars = adam_scalars(t, lr, betas, eps)
    _call(
        "semfuse_host_adam_update",
        _address(x),
        _address(g),
        _address(m),
        _address(v),
        x.size,
        ctypes.byref(scalars),
        threads,
    )


def adam_update_device_step(
    x: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: np.ndarray,
    lr: float,
    *,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
    threads: int = 1,
) -> None:
    """As adam_update, but t is read from `step` (one int32), as the graph-captured kernel does."""
    _check_adam_state(x, g, m, v)
    if step.dtype != np.int32 or step.size != 1:
        raise ValueError("step must be a single int32")
    _call(
        "semfuse_host_adam_update_device_step",
        _address(x),
        _address(g),
        _address(m),
        _address(v),
        x.size,
        lr,
        betas[0],
        betas[1],
        eps,
        _address(step),
        threads,
    )


def kernel_adam_scalars(
    t: int, lr: float, betas: tuple[float, float] = BETAS, eps: float = EPS
) -> AdamScalars:
    """The scalars as the kernels' own adam_scalars() forms them from a device-side t."""
    scalars = AdamScalars()
    host_library().semfuse_host_adam_scalars(t, lr, betas[0], betas[1], eps, ctypes.byref(scalars))
    return scalars


def half_to_float(bits: np.ndarray) -> np.ndarray:
    """The kernels' binary16 -> binary32 conversion applied to raw uint16 bit patterns."""
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    out = np.empty(bits.shape, np.float32)
    host_library().semfuse_host_half_to_float(_address(bits), _address(out), bits.size)
    return out


def first_layer_gradient(
    image: np.ndarray, target: np.ndarray, weight: np.ndarray, bias: np.ndarray, offset: np.ndarray, relu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(loss (N,), grad (N,3,H,W)) from the host build of semfuse_first_layer_gradient; the
    arguments as KernelRunner.first_layer_gradient takes them, as float32 arrays."""
    image, target, weight, bias, offset = (
        np.ascontiguousarray(a, dtype=np.float32) for a in (image, target, weight, bias, offset)
    )
    n, _, h, w = check_first_layer_shape(image.shape)
    if target.shape != (n, FIRST_LAYER_CHANNELS, h, w) or weight.shape != (FIRST_LAYER_CHANNELS, 3, 3, 3):
        raise ValueError(f"target {target.shape} and weight {weight.shape} do not fit image {image.shape}")
    if bias.size != FIRST_LAYER_CHANNELS or offset.size != 3:
        raise ValueError("bias needs 64 values and offset 3")
    grad = np.empty_like(image)
    loss = np.empty(n, np.float32)
    _call("semfuse_host_first_layer_gradient", *map(_address, (image, target, weight, bias, offset)),
          n, h, w, int(bool(relu)), _address(grad), _address(loss))
    return loss, grad
