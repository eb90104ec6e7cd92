"""The networks and their weights: VGG19 and the CAM classifiers; fetching, verifying,
converting and loading weights.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.export.networks.weights import cached_weights, load_vgg19

__all__ = ["cached_weights", "load_vgg19"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "cached_weights": "weights",
    "load_vgg19": "weights",
})
