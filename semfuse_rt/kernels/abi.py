"""ctypes mirrors of the kernels' parameter lists and of the structs they take.

The same structs serve the host library (passed by pointer through ctypes) and the GPU
launches (their bytes are copied as kernel parameters), so one layout covers both. The
compile test checks KERNEL_PARAMETERS against the parameter lists nvcc emits, which is
what cuLaunchKernel reads: a size or order mismatch there would otherwise only show on a
GPU, as garbage.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from semfuse_rt.kernels.source import MAX_INPUTS


class InputPointers(ctypes.Structure):
    """semfuse::Inputs and semfuse::Weights: MAX_INPUTS pointers, unused ones null."""

    _fields_ = [("p", ctypes.c_void_p * MAX_INPUTS)]


class AdamScalars(ctypes.Structure):
    """semfuse::AdamScalars, in the header's field order."""

    _fields_ = [
        ("one_minus_beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("one_minus_beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("neg_step_size", ctypes.c_float),
        ("bias_correction2_sqrt", ctypes.c_float),
    ]


def input_pointers(addresses: Sequence[int]) -> InputPointers:
    if len(addresses) > MAX_INPUTS:
        raise ValueError(f"at most {MAX_INPUTS} inputs, got {len(addresses)}")
    pointers = InputPointers()
    for k, address in enumerate(addresses):
        pointers.p[k] = address
    return pointers


_I32 = ctypes.c_int
_I64 = ctypes.c_longlong
_F64 = ctypes.c_double
_PTR = ctypes.c_void_p

# Every __global__ entry point of fusion_kernels.cu, with its parameters in order.
KERNEL_PARAMETERS: dict[str, tuple[type[ctypes._SimpleCData] | type[ctypes.Structure], ...]] = {
    # (inputs, K, count, fused, labels)
    "semfuse_choose_max_f32": (InputPointers, _I32, _I64, _PTR, _PTR),
    "semfuse_choose_max_f16": (InputPointers, _I32, _I64, _PTR, _PTR),
    # (inputs, weights, K, C, H*W, count, fused, labels)
    "semfuse_cam_choose_max_f32": (InputPointers, InputPointers, _I32, _I32, _I64, _I64, _PTR, _PTR),
    "semfuse_cam_choose_max_f16": (InputPointers, InputPointers, _I32, _I32, _I64, _I64, _PTR, _PTR),
    # (labels_in, K, planes, H, W, radius, labels_out)
    "semfuse_majority_filter": (_PTR, _I32, _I64, _I32, _I32, _I32, _PTR),
    # (inputs, K, labels_in, planes, H, W, radius, labels_out, fused)
    "semfuse_majority_fuse_f32": (InputPointers, _I32, _PTR, _I64, _I32, _I32, _I32, _PTR, _PTR),
    "semfuse_majority_fuse_f16": (InputPointers, _I32, _PTR, _I64, _I32, _I32, _I32, _PTR, _PTR),
    # (x, g, m, v, count, scalars)
    "semfuse_adam_update": (_PTR, _PTR, _PTR, _PTR, _I64, AdamScalars),
    # (x, g, m, v, count, lr, beta1, beta2, eps, step)
    "semfuse_adam_update_device_step": (_PTR, _PTR, _PTR, _PTR, _I64, _F64, _F64, _F64, _F64, _PTR),
    # (step)
    "semfuse_adam_advance_step": (_PTR,),
    # (image, target, offset, H, W, relu, grad, partials); weights in constant memory
    "semfuse_first_layer_gradient": (_PTR, _PTR, _PTR, _I32, _I32, _I32, _PTR, _PTR),
    # (partials, blocks per image, loss)
    "semfuse_sum_partials": (_PTR, _I32, _PTR),
}


def kernel_arguments(name: str, values: Sequence[object]) -> list[ctypes._CData]:
    """`values` as the ctypes objects whose bytes kernel `name` reads, in order."""
    types = KERNEL_PARAMETERS[name]
    if len(values) != len(types):
        raise TypeError(f"{name} takes {len(types)} parameters, got {len(values)}")
    return [
        value if isinstance(value, kind) else kind(value) for value, kind in zip(values, types, strict=True)
    ]
