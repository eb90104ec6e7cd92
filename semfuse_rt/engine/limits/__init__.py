"""What the options, the machine and its memory allow: the option checks, how many workers
the cores and memory carry, torch's threads, memory readings and the memory budget, the
pixel limit.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.limits.memory import peak_resident_bytes
    from semfuse_rt.engine.limits.memory_budget import address_space_limit, describe, memory_at_hand
    from semfuse_rt.engine.limits.pixel_limit import DEFAULT_MAX_PIXELS

__all__ = ["peak_resident_bytes", "address_space_limit", "describe", "memory_at_hand", "DEFAULT_MAX_PIXELS"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "peak_resident_bytes": "memory",
    "address_space_limit": "memory_budget",
    "describe": "memory_budget",
    "memory_at_hand": "memory_budget",
    "DEFAULT_MAX_PIXELS": "pixel_limit",
})
