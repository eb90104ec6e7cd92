"""Backends, one package each (after Polygraphy's backend/<name>/{loader,runner}): a loader
builds or loads the backend's artefacts (calling the export stage), and a runner with one
interface (base.py) receives what the loader made. `create_runner` pairs them by name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:  # torch stays unimported until a runner is made: trt/runtime.py runs without it
    from semfuse_rt.engine.backends.base import FusionRunner
    from semfuse_rt.export.networks.weights import VGG19Weights

BACKENDS = ("auto", "trt", "cuda", "ort", "torch")


def available_backends(layer: str | None = None) -> list[str]:
    """Usable backends here (for `layer`, when given), fastest first."""
    import torch

    from semfuse_rt.engine.backends.cuda import loader as cuda
    from semfuse_rt.engine.backends.ort import loader as ort
    from semfuse_rt.engine.backends.trt import loader as trt

    found = []
    if trt.usable():
        found.append("trt")
    if cuda.usable(layer):
        found.append("cuda")
    # ONNX Runtime on the CPU comes after torch on a GPU.
    ort_on_device = not torch.cuda.is_available() or "CUDAExecutionProvider" in ort.providers()
    if ort.usable() and ort_on_device:
        found.append("ort")
    found.append("torch")
    if ort.usable() and not ort_on_device:
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


def runs_on_gpu(name: str) -> bool:
    """Whether the resolved backend `name` fuses on a CUDA device (as its loader would pick)."""
    if name in ("trt", "cuda"):
        return True
    import torch

    if name == "auto" or not torch.cuda.is_available():
        return False
    from semfuse_rt.engine.backends.ort.loader import providers

    return name == "torch" or providers()[0] == "CUDAExecutionProvider"


def _loader_class(name: str) -> type:
    if name == "torch":
        from semfuse_rt.engine.backends.torch.loader import TorchModelLoader

        return TorchModelLoader
    if name == "ort":
        from semfuse_rt.engine.backends.ort.loader import OrtSessionLoader

        return OrtSessionLoader
    if name == "trt":
        from semfuse_rt.engine.backends.trt.loader import TrtEngineLoader

        return TrtEngineLoader
    if name == "cuda":
        from semfuse_rt.engine.backends.cuda.loader import CudaKernelLoader

        return CudaKernelLoader
    raise SemfuseError(f"unknown backend {name!r}")


def loader_options(name: str) -> frozenset[str]:
    """The keyword options the loader of backend `name` takes (a Fuser passes them on)."""
    import inspect

    keywords = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(_loader_class(name)).parameters.values()
    return frozenset(p.name for p in parameters if p.kind in keywords and p.name not in ("weights", "layer"))


def create_runner(name: str, weights: VGG19Weights, layer: str, **options) -> FusionRunner:
    """The runner of a resolved backend name (see resolve_backend), with its loader;
    `options` go to the loader."""
    loader = _loader_class(name)(weights, layer, **options)
    if name == "torch":
        from semfuse_rt.engine.backends.torch.runner import TorchRunner

        return TorchRunner(loader)
    if name == "ort":
        from semfuse_rt.engine.backends.ort.runner import OrtRunner

        return OrtRunner(loader)
    if name == "trt":
        from semfuse_rt.engine.backends.trt.runner import TrtRunner

        return TrtRunner(loader)
    from semfuse_rt.engine.backends.cuda.runner import CudaRunner

    return CudaRunner(loader)


__all__ = ["BACKENDS", "available_backends", "create_runner", "loader_options", "resolve_backend"]
