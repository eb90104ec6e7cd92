"""The torch modules that become ONNX graphs (explicit gradient, rules, DT-CWT, base layer,
CAM), and how they are written, cached and described by manifests.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.export.graphs.onnx_export import export_graphs
    from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET, MIN_OPSET

__all__ = ["export_graphs", "DEFAULT_OPSET", "MIN_OPSET"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "export_graphs": "onnx_export",
    "DEFAULT_OPSET": "opsets",
    "MIN_OPSET": "opsets",
})
