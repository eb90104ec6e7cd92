"""Semantic fusion: class activation maps (torch and ONNX Runtime), the classifiers, the
semantic phase and heat-maps.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.semantic.cam import input_cams
    from semfuse_rt.engine.semantic.classifier import load_classifier, top_k
    from semfuse_rt.engine.semantic.heatmaps import overlay_heatmap

__all__ = ["input_cams", "load_classifier", "top_k", "overlay_heatmap"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "input_cams": "cam",
    "load_classifier": "classifier",
    "top_k": "classifier",
    "overlay_heatmap": "heatmaps",
})
