"""Backends: one runner per engine, chosen by name or by `auto`."""
from __future__ import annotations

from semfuse_rt.engine.backends.base import FusionRunner, Optimised
from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.export.weights import VGG19Weights

BACKENDS = ("auto", "trt", "cuda", "ort", "torch")


def available_backends(layer: str | None = None) -> list[str]:
    """Usable backends here (for `layer`, when given), fastest first."""
    import torch

    from semfuse_rt.engine.backends import cuda_backend, ort_backend, trt_backend

    found = []
    if trt_backend.usable():
        found.append("trt")
    if cuda_backend.usable(layer):
        found.append("cuda")
    # ONNX Runtime on the CPU comes after torch on a GPU.
    ort_on_device = not torch.cuda.is_available() or "CUDAExecutionProvider" in ort_backend.providers()
    if ort_backend.usable() and ort_on_device:
        found.append("ort")
    found.append("torch")
    if ort_backend.usable() and not ort_on_device:
        found.append("ort")
    return found


def resolve_backend(name: str, layer: str | None = None) -> str:
    if name not in BACKENDS:
        raise SemfuseError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    available = available_backends(layer)
    if name == "auto":
        return available[0]
    if name not in available:
        where = f" at {layer}" if layer else ""
        raise SemfuseError(f"backend {name!r} is not usable here{where}; available: {', '.join(available)}")
    return name


def create_runner(name: str, weights: VGG19Weights, layer: str, **options) -> FusionRunner:
    """A runner for a resolved backend name (see resolve_backend)."""
    if name == "torch":
        from semfuse_rt.engine.backends.torch_backend import TorchRunner

        return TorchRunner(weights, layer, device=options.get("device"))
    if name == "ort":
        from semfuse_rt.engine.backends.ort_backend import OrtRunner

        return OrtRunner(weights, layer, **options)
    if name == "trt":
        from semfuse_rt.engine.backends.trt_backend import TrtRunner

        return TrtRunner(weights, layer, **options)
    if name == "cuda":
        from semfuse_rt.engine.backends.cuda_backend import CudaRunner

        return CudaRunner(weights, layer, **options)
    raise SemfuseError(f"unknown backend {name!r}")


__all__ = ["BACKENDS", "FusionRunner", "Optimised", "available_backends", "create_runner", "resolve_backend"]
