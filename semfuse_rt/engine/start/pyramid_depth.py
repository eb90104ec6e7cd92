"""How deep a Laplacian pyramid goes for an image's size: pure arithmetic, so that the starts'
registry (engine/start/initialisation.py) and the exported graph's size contract use it without
loading torch."""
from __future__ import annotations

import math

MIN_COARSE = 8  # the local pyramid's coarsest band: its shorter side in pixels, at least
WHOLE_COARSEST = 3  # the same for the `whole-pyramid-blend` start


def pyramid_levels(height: int, width: int, coarsest: float = MIN_COARSE) -> int:
    """Bands of the deepest pyramid whose coarsest band is at least `coarsest` a side."""
    side = min(height, width)
    return 1 + max(0, int(math.floor(math.log2(max(side, 1) / coarsest))))


def same_depth_sides(side: int, coarsest: float) -> tuple[int, int]:
    """The shorter sides (least, most) whose pyramid has as many bands as `side`'s."""
    levels = pyramid_levels(side, side, coarsest)
    least = 1 if levels == 1 else math.ceil(coarsest * 2 ** (levels - 1))
    return least, math.ceil(coarsest * 2 ** levels) - 1
