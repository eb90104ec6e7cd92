"""One size per set: each set's sources' sizes from their headers, and --match-size.

Fusion and the metrics need a set's images at one size. Some benchmarks ship sources that
show one scene at different resolutions: RoadScene pairs a 500x329 infrared image with a
1404x1026 visible one, registered once the visible image is resized to the infrared one's
size. --match-size does that for every set: each image goes to the size of the set's
smallest image (fewest pixels, ties to the first), by area averaging. Without it, a set of
several sizes stops `eval` and `score` before any image is decoded.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from semfuse_rt.engine.evaluation.datasets import FusionSet
from semfuse_rt.engine.io.images import image_file_size
from semfuse_rt.errors import SemfuseError

__all__ = ["MATCH_SIZE_FIX", "Size", "shown", "smallest_size", "match_sizes", "source_sizes",
           "check_one_size_per_set"]

Size = tuple[int, int]  # (width, height), as image_file_size gives it

MATCH_SIZE_FIX = "add --match-size to resize each set to its smallest image"


def shown(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def smallest_size(sizes: Sequence[Size]) -> Size:
    """The size with the fewest pixels; of equals, the first (min keeps the first)."""
    return min(sizes, key=lambda size: size[0] * size[1])


def match_sizes(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every image at the size of the smallest, by area averaging; the others' aspect
    follows the smallest image's, as the benchmarks that need this register their pairs."""
    width, height = smallest_size([(image.shape[1], image.shape[0]) for image in images])
    return [image if image.shape[:2] == (height, width)
            else cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in images]


def source_sizes(fusion_set: FusionSet) -> list[Size]:
    """Each source's size from its header: no image is decoded."""
    return [image_file_size(path) for path in fusion_set.sources]


def check_one_size_per_set(sets: Sequence[FusionSet]) -> None:
    """Before any work: every set's sources share one size. Otherwise one line naming the
    first set that does not, its sizes, how many sets are like it, and --match-size."""
    uneven = [(fusion_set, sizes) for fusion_set in sets if len(set(sizes := source_sizes(fusion_set))) > 1]
    if uneven:
        fusion_set, sizes = uneven[0]
        others = f", as in {len(uneven)} sets" if len(uneven) > 1 else ""
        raise SemfuseError(f"{fusion_set.key}: sizes differ ({', '.join(map(shown, dict.fromkeys(sizes)))})"
                           f"{others}; {MATCH_SIZE_FIX}")
