"""CUDA kernels for the fusion rules and the Adam step, their launchers and NVRTC builds, the
rules themselves (rules/, one module each) and the torch twins (see README.md in this folder).
The host build and the numpy references are test oracles, under tests/support/kernels/.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.kernels.source import MAX_INPUTS

__all__ = ["MAX_INPUTS"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "MAX_INPUTS": "source",
})
