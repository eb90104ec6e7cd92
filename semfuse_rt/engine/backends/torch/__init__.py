"""The PyTorch backend: eager forward, gradients by torch.autograd. The reference.

loader.py builds or loads what the backend needs; runner.py runs it. Only the registration
is here (no import of torch or the other backends): its checks import on use.
"""
from __future__ import annotations

from semfuse_rt.engine.backends.registry import Backend, register_backend


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


register_backend(Backend(
    name="torch", package=__name__, loader="TorchModelLoader", runner="TorchRunner",
    summary="PyTorch, eager, on a GPU or the CPU (the reference)",
    requires="torch", gpu_only=False, usable=lambda layer: True, on_gpu=_on_gpu))
