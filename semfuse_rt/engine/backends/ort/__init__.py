"""The ONNX Runtime backend: the exported features and explicit-gradient graphs.

loader.py builds or loads what the backend needs; runner.py runs it. Only the registration
is here (no import of torch, onnxruntime or the other backends): its checks import on use.
"""
from __future__ import annotations

from semfuse_rt.engine.backends.registry import Backend, register_backend


def _usable(layer: str | None) -> bool:
    from semfuse_rt.engine.backends.ort.loader import usable

    return usable()


def _on_gpu() -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    from semfuse_rt.engine.backends.ort.loader import providers

    return providers()[0] == "CUDAExecutionProvider"


register_backend(Backend(
    name="ort", package=__name__, loader="OrtSessionLoader", runner="OrtRunner",
    summary="ONNX Runtime, on its CUDA provider or the CPU",
    requires="onnxruntime (or onnxruntime-gpu)", gpu_only=False, usable=_usable, on_gpu=_on_gpu))
