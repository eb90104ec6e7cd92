"""Images in and out: reading and writing every format atomically, K inputs as planes of one
mode and depth and back, inputs spilled to disk, colour, side-by-side pictures, progress
bars, the synthetic pair.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.io.images import check_not_an_input, check_output, load_image, save_image
    from semfuse_rt.engine.io.progress import progress_bar
    from semfuse_rt.engine.io.side_by_side import VIEW
    from semfuse_rt.engine.io.synthetic import SYNTHETIC_SIDE, synthetic_pair

__all__ = [
    "check_not_an_input", "check_output", "load_image", "save_image", "progress_bar", "VIEW", "SYNTHETIC_SIDE",
    "synthetic_pair"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "check_not_an_input": "images",
    "check_output": "images",
    "load_image": "images",
    "save_image": "images",
    "progress_bar": "progress",
    "VIEW": "side_by_side",
    "SYNTHETIC_SIDE": "synthetic",
    "synthetic_pair": "synthetic",
})
