"""TensorRT: engine builds, precision, optimisation profiles, the op list its ONNX parser takes.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.export.tensorrt.trt_build import (
        DEFAULT_PRECISION, DEFAULT_WORKSPACE_MIB, TrtUnavailable, build_fusion_engines, detect_environment,
    )
    from semfuse_rt.export.tensorrt.trt_profiles import DEFAULT_SHAPES

__all__ = [
    "DEFAULT_PRECISION", "DEFAULT_WORKSPACE_MIB", "TrtUnavailable", "build_fusion_engines", "detect_environment",
    "DEFAULT_SHAPES"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "DEFAULT_PRECISION": "trt_build",
    "DEFAULT_WORKSPACE_MIB": "trt_build",
    "TrtUnavailable": "trt_build",
    "build_fusion_engines": "trt_build",
    "detect_environment": "trt_build",
    "DEFAULT_SHAPES": "trt_profiles",
})
