"""The TensorRT backend: engines built from the exported graphs, run with the captured loop.

loader.py builds or loads what the backend needs; runner.py runs it. Only the registration
is here (no import of torch, TensorRT or the other backends): its checks import on use.
"""
from __future__ import annotations

from semfuse_rt.engine.backends.registry import Backend, register_backend


def _usable(layer: str | None) -> bool:
    from semfuse_rt.engine.backends.trt.loader import usable

    return usable()


register_backend(Backend(
    name="trt", package=__name__, loader="TrtEngineLoader", runner="TrtRunner",
    summary="TensorRT engines, on an NVIDIA GPU",
    requires="TensorRT and cuda-python with an NVIDIA GPU", gpu_only=True,
    usable=_usable, on_gpu=lambda: True))
