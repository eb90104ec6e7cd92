"""Backends, one package each (after Polygraphy's backend/<name>/{loader,runner}): a loader
builds or loads the backend's artefacts (calling the export stage), and a runner with one
interface (base.py) receives what the loader made. Each package registers its `Backend`
(registry.py) on import, torch-free; `create_runner` pairs a name's loader and runner, and
the options, their checks and their help text read the same registry.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from semfuse_rt.engine.backends.registry import AUTO, BACKEND_REGISTRY, Backend, BackendNames, register_backend
from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:  # torch stays unimported until a runner is made: trt/runtime.py runs without it
    from semfuse_rt.engine.backends.base import FusionRunner
    from semfuse_rt.export.networks.weights import VGG19Weights

# Each registers itself on import; this order is the order of preference (fastest first).
from semfuse_rt.engine.backends import trt, cuda, ort, torch  # noqa: E402,F401,I001  isort: skip

# "auto" and the registered backends' names, read from the registry where it is used.
BACKENDS = BackendNames()


def backend_help() -> str:
    """--backend's help: each registered backend with its one line."""
    choices = BACKEND_REGISTRY.help_choices(lambda backend: backend.summary, separator="; ")
    return f"{AUTO}: the fastest usable here (the default); {choices}."


def available_backends(layer: str | None = None) -> list[str]:
    """Usable backends here (for `layer`, when given), fastest first: in registration order,
    except that where torch sees a GPU, those that would fuse on it come before those that
    would not (ONNX Runtime on the CPU after torch on the GPU)."""
    import torch as torch_module

    found = [backend for backend in BACKEND_REGISTRY.values() if backend.usable(layer)]
    if torch_module.cuda.is_available():
        found.sort(key=lambda backend: not backend.on_gpu())  # stable: registration order within
    return [backend.name for backend in found]


def resolve_backend(name: str, layer: str | None = None) -> str:
    BACKEND_REGISTRY.check(name, extra=(AUTO,))
    available = available_backends(layer)
    if name == AUTO:
        return available[0]
    if name not in available:
        where = f" at {layer}" if layer else ""
        raise SemfuseError(f"backend {name!r} is not usable here{where}: it needs "
                           f"{BACKEND_REGISTRY[name].requires}; available: {', '.join(available)}")
    return name


def runs_on_gpu(name: str) -> bool:
    """Whether the resolved backend `name` fuses on a CUDA device (as its loader would pick)."""
    if name == AUTO:
        return False
    return BACKEND_REGISTRY.lookup(name).on_gpu()


def needs_gpu(name: str | None) -> bool:
    """Whether backend `name` runs on a CUDA device or not at all (None: no backend)."""
    return name is not None and name != AUTO and BACKEND_REGISTRY.lookup(name).gpu_only


def loader_options(name: str) -> frozenset[str]:
    """The keyword options the loader of backend `name` takes (a Fuser passes them on)."""
    keywords = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(BACKEND_REGISTRY.lookup(name).loader_class()).parameters.values()
    return frozenset(p.name for p in parameters if p.kind in keywords and p.name not in ("weights", "layer"))


def create_runner(name: str, weights: VGG19Weights, layer: str, **options) -> FusionRunner:
    """The runner of a resolved backend name (see resolve_backend), with its loader;
    `options` go to the loader."""
    backend = BACKEND_REGISTRY.lookup(name)
    return backend.runner_class()(backend.loader_class()(weights, layer, **options))


__all__ = ["AUTO", "BACKENDS", "BACKEND_REGISTRY", "Backend", "available_backends", "backend_help", "create_runner",
           "loader_options", "needs_gpu", "register_backend", "resolve_backend", "runs_on_gpu"]
