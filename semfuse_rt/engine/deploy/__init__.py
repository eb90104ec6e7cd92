"""The whole fuse of a preset as one portable ONNX graph (`semfuse-rt export`), what checks
it for TensorRT, and its TensorRT engine (`build --trt --graph`).

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.deploy.graph_engine import build_graph_engine
    from semfuse_rt.engine.deploy.whole_fuse_export import DEFAULT_SIZE, export_fuse

__all__ = ["build_graph_engine", "DEFAULT_SIZE", "export_fuse"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "build_graph_engine": "graph_engine",
    "DEFAULT_SIZE": "whole_fuse_export",
    "export_fuse": "whole_fuse_export",
})
