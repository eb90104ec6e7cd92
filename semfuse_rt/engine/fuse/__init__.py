"""The fuse: the `Fuser`, its options object, methods, presets, the start-only fuser that
needs no torch, file-to-file fusing and the result type.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.fuse.fuse_options import FuseOptions, cli_fields
    from semfuse_rt.engine.fuse.methods import DEFAULT_LAYER, DEFAULT_METHOD, METHODS, default_presets, option_flag
    from semfuse_rt.engine.fuse.presets import PRESETS

__all__ = [
    "FuseOptions", "cli_fields", "DEFAULT_LAYER", "DEFAULT_METHOD", "METHODS", "default_presets", "option_flag",
    "PRESETS"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "FuseOptions": "fuse_options",
    "cli_fields": "fuse_options",
    "DEFAULT_LAYER": "methods",
    "DEFAULT_METHOD": "methods",
    "METHODS": "methods",
    "default_presets": "methods",
    "option_flag": "methods",
    "PRESETS": "presets",
})
