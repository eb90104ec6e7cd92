"""The CUDA backend for the first layer: the fused gradient kernel in the captured loop.

loader.py builds or loads what the backend needs; runner.py runs it. Only the registration
is here (no import of torch, cuda-python or the other backends): its checks import on use.
"""
from __future__ import annotations

from semfuse_rt.engine.backends.registry import Backend, register_backend


def _usable(layer: str | None) -> bool:
    from semfuse_rt.engine.backends.cuda.loader import usable

    return usable(layer)


register_backend(Backend(
    name="cuda", package=__name__, loader="CudaKernelLoader", runner="CudaRunner",
    summary="the first layer's gradient in CUDA kernels, on an NVIDIA GPU",
    requires="cuda-python with an NVIDIA GPU, and a first-layer --layer", gpu_only=True,
    usable=_usable, on_gpu=lambda: True))
