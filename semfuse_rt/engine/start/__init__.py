"""The start images: their registry, the pyramid blend (torch, and numpy with OpenCV), its
rule's constants and depth, the DT-CWT start.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.start.initialisation import INITIALISATIONS

__all__ = ["INITIALISATIONS"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "INITIALISATIONS": "initialisation",
})
