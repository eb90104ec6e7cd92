"""The export stage: networks and weights, the graphs that ONNX files are made of, TensorRT
engines. It never imports the engine.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.export.build_options import check_build_options

__all__ = ["check_build_options"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "check_build_options": "build_options",
})
