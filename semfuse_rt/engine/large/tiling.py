"""Tiles for fusing images larger than memory allows at once.

Each tile is fused on its own crop: the core it contributes plus a halo. At a layer of
receptive-field radius r, one optimisation step's gradient at a pixel depends on the image
within 2r and the target within r, and Adam is elementwise, so after T steps a crop with a
halo of 2rT + r gives its core exactly the whole-image optimisation; the base layer reads
its Gaussian's radius further. The DT-CWT start is not tile-exact (its decimation grids
depend on the crop), so neighbouring cores overlap and are cross-faded: a linear ramp over
the overlap hides what differs. Crop origins sit on the pooling grid, so deeper layers'
features are the whole image's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semfuse_rt.export.networks.vgg19 import layers_up_to

OVERLAP = 32  # pixels over which neighbouring cores are cross-faded
MIN_TILE = 64  # a smaller core would spend nearly all its work on the halo
DTCWT_GRID = 16  # 2^levels of the DT-CWT start
START_MARGIN = 32  # extra context for the DT-CWT start beyond what the loop needs


def receptive_radius(layer: str) -> tuple[int, int]:
    """(radius in input pixels of one feature's receptive field, the pooling stride)."""
    size, stride = 1, 1
    for _, kind, _ in layers_up_to(layer):
        if kind == "conv":
            size += 2 * stride
        elif kind == "pool":
            size += stride
            stride *= 2
    return size // 2, stride


def halo(layer: str, steps: int, base_sigma: float) -> int:
    """The crop margin that keeps a core's loop and base layer exactly the whole image's.
    A step reaches 2r further (the features a pixel feeds, and their inputs), plus what a
    pooling grid's stride adds to the features a pixel can reach."""
    radius, stride = receptive_radius(layer)
    base = int(round(base_sigma * 4)) + 1 if base_sigma > 0 else 0
    return (2 * radius + stride - 1) * steps + radius + base + START_MARGIN


@dataclass(frozen=True)
class Tile:
    crop: tuple[int, int, int, int]  # y0, y1, x0, x1 of the crop in the image
    core: tuple[int, int, int, int]  # y0, y1, x0, x1 this tile contributes to (with its overlap)

    def weights(self, height: int, width: int) -> np.ndarray:
        """(h, w) cross-fade weights over the core, in crop coordinates' core slice."""
        y0, y1, x0, x1 = self.core
        rows = _ramp(y0, y1, height)
        columns = _ramp(x0, x1, width)
        return np.outer(rows, columns).astype(np.float32)


def _ramp(start: int, stop: int, length: int) -> np.ndarray:
    """1 inside, rising over OVERLAP at an interior start and falling at an interior stop."""
    positions = np.arange(start, stop) + 0.5
    ramp = np.ones(stop - start)
    if start > 0:
        ramp = np.minimum(ramp, (positions - start) / OVERLAP)
    if stop < length:
        ramp = np.minimum(ramp, (stop - positions) / OVERLAP)
    return np.clip(ramp, 0.0, 1.0)


def _spans(length: int, core: int) -> list[tuple[int, int]]:
    """ceil(length / core) spans of equal size (to a pixel) covering 0..length, each with
    OVERLAP // 2 more at an interior end: neighbours share OVERLAP pixels."""
    count = max(1, math.ceil(length / core))
    edges = [round(i * length / count) for i in range(count + 1)]
    half = OVERLAP // 2
    return [(max(0, a - half) if a > 0 else 0, min(length, b + half) if b < length else length)
            for a, b in zip(edges, edges[1:])]


def halo_share(tiles: list[Tile], height: int, width: int) -> float:
    """The share of the pixels fused in `tiles` that lie beyond the height x width image's own:
    the halos and overlaps, fused for their neighbours' sake and thrown away."""
    fused = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in (tile.crop for tile in tiles))
    return max(0.0, 1 - height * width / fused) if fused else 0.0


def plan_tiles(height: int, width: int, core: int, margin: int, grid: int = 1) -> list[Tile]:
    """Tiles whose cores (at most core x core, plus the OVERLAP shared with each neighbour)
    cover the image, each with `margin` more on every side where the image has it, crops
    starting on multiples of `grid`."""
    tiles = []
    for cy0, cy1 in _spans(height, core):
        for cx0, cx1 in _spans(width, core):
            y0 = max(0, (cy0 - margin) // grid * grid)
            x0 = max(0, (cx0 - margin) // grid * grid)
            tiles.append(Tile((y0, min(height, cy1 + margin), x0, min(width, cx1 + margin)), (cy0, cy1, cx0, cx1)))
    return tiles


def core_for_budget(crop_pixels: int, margin: int, grid: int = 1) -> int:
    """The largest core side whose crop (core, overlap, margins and the grid's rounding)
    has at most crop_pixels."""
    side = int(math.isqrt(max(crop_pixels, 0)))
    return side - 2 * (margin + grid) - OVERLAP
