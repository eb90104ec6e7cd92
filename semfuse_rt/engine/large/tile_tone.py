"""The low frequencies of a tiled fuse's start, taken from a preview of the whole image.

A `pyramid-blend` start reaches across the whole image: its deepest bands carry the global
tone of an exposure stack. Started crop by crop, each tile would get a tone of its own, and
neighbouring tiles of a 1 MP exposure stack differed by up to 15 grey levels in their means
(benchmarks/RESULTS.md, "The `blend` default", tiles). So a tiled fuse first starts a
preview: every input shrunk by area averaging to at most PREVIEW_PIXELS (and PREVIEW_BYTES
for the whole stack), started as the whole image would be. Each tile keeps its own start's detail
and takes the preview's frequencies below a Gaussian of CROSSOVER preview pixels:

    tile start = S - G(S) + G(preview) resampled to the crop,  G: Gaussian of CROSSOVER / scale px

where S is the crop's own start and scale the preview's size over the image's.
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from semfuse_rt.engine.start.pyramid_blend import gaussian
from semfuse_rt.engine.io.sources import prepare

PREVIEW_PIXELS = 1 << 20
PREVIEW_BYTES = 64 << 20  # the preview stack's float32 pixels, at most
CROSSOVER = 2.0  # preview pixels


def preview_scale(count: int, height: int, width: int) -> float:
    """The preview's side over the image's (at most 1)."""
    pixels = min(PREVIEW_PIXELS, PREVIEW_BYTES // (12 * count))
    return min(1.0, (pixels / (height * width)) ** 0.5)


class PreviewTone:
    """The whole image's start at preview size, low-passed; `tile_start` gives each crop's
    start its low frequencies. `start` maps (K, 3, h, w) pixels to the (1, 3, h, w) start."""

    def __init__(self, images: Sequence[np.ndarray], start: Callable[[torch.Tensor], torch.Tensor]):
        height, width = images[0].shape[:2]
        self.size = (height, width)
        self.scale = preview_scale(len(images), height, width)
        size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        # One input in memory at a time (a spilled input is read whole only while it shrinks).
        small = [cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_AREA) for image in images]
        preview = start(torch.from_numpy(prepare(small).pixels))
        del small
        self.low = gaussian(preview.detach().float().cpu(), CROSSOVER)[0].numpy()  # (3, h, w)

    @property
    def sigma(self) -> float:
        """The crossover in the image's pixels."""
        return CROSSOVER / self.scale

    def low_frequencies(self, crop: tuple[int, int, int, int]) -> np.ndarray:
        """(3, y1 - y0, x1 - x0): the preview's low frequencies over the crop, bilinear, with
        pixel centres aligned as area averaging places them."""
        y0, y1, x0, x1 = crop
        small_h, small_w = self.low.shape[1:]
        rows = ((np.arange(y0, y1) + 0.5) * small_h / self.size[0] - 0.5).astype(np.float32)
        cols = ((np.arange(x0, x1) + 0.5) * small_w / self.size[1] - 0.5).astype(np.float32)
        map_x = np.broadcast_to(cols[None, :], (len(rows), len(cols)))
        map_y = np.broadcast_to(rows[:, None], (len(rows), len(cols)))
        return np.stack([cv2.remap(channel, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                         for channel in self.low])

    def tile_start(self, start: torch.Tensor, crop: tuple[int, int, int, int]) -> torch.Tensor:
        """The crop's own (1, 3, h, w) start with the preview's low frequencies in place of its own."""
        own_low = gaussian(start.detach().float().cpu(), self.sigma).to(start)
        low = torch.from_numpy(self.low_frequencies(crop)).to(start)[None]
        return start - own_low + low


class TileStart:
    """A WarmStart (engine/fuse/fuser.py) for one tile: its own start, toned by the preview."""

    schedule = None

    def __init__(self, tone: PreviewTone, crop: tuple[int, int, int, int],
                 start: Callable[[torch.Tensor], torch.Tensor]):
        self.tone, self.crop, self._start = tone, crop, start

    def start(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tone.tile_start(self._start(pixels), self.crop)

    def optimised(self, image: torch.Tensor) -> None:
        pass
