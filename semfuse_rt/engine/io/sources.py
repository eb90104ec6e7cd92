"""Turning K user images into the 3-channel pixel batch the network sees, and back.

docs/method.md, "Inputs": grey images are replicated to 3 channels; all-grey sets give a grey
result (luma of the fused image); mixed grey + colour sets fuse on luma and keep the colour
inputs' chroma. 16-bit images are scaled to 0..255 for the network and back on output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from semfuse_rt.engine.io.colour import luma, rgb_to_ycbcr, ycbcr_to_rgb
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.images import describe_size
from semfuse_rt.engine.io.spilled_images import SpilledImage


MIN_SIDE = 4


@dataclass
class Sources:
    pixels: np.ndarray  # (K, 3, H, W) float32, RGB in 0..255
    mode: str  # "colour", "grey" or "mixed"
    dtype: np.dtype  # of the output: the deepest input's
    chroma: np.ndarray | None  # (H, W, 2) Cb, Cr kept for "mixed"

    @property
    def count(self) -> int:
        return self.pixels.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[2], self.pixels.shape[3]


def check_images(images: Sequence[np.ndarray]) -> None:
    if len(images) < 2:
        raise SemfuseError(f"fusion needs at least 2 images, got {len(images)}")
    for index, image in enumerate(images, start=1):
        if not isinstance(image, (np.ndarray, SpilledImage)) or image.dtype not in (np.uint8, np.uint16):
            kind = getattr(image, "dtype", type(image).__name__)
            raise SemfuseError(f"input {index}: unsupported mode ({kind}); use uint8 or uint16 arrays")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise SemfuseError(f"input {index}: unsupported shape {image.shape}; use HxW or HxWx3")
        if min(image.shape[:2]) < MIN_SIDE:
            raise SemfuseError(f"input {index}: {describe_size(image)} is too small; images need at least "
                               f"{MIN_SIDE} pixels a side")
    first = images[0]
    for index, image in enumerate(images[1:], start=2):
        if image.shape[:2] != first.shape[:2]:
            raise SemfuseError(
                f"sizes differ: input 1 is {describe_size(first)} but input {index} is "
                f"{describe_size(image)}; fusion needs registered images of one size"
            )


def _as_255(image: np.ndarray) -> np.ndarray:
    scaled = np.asarray(image).astype(np.float64)  # a spilled image is read whole here
    return scaled / 257.0 if image.dtype == np.uint16 else scaled


def prepare(images: Sequence[np.ndarray], with_pixels: bool = True) -> Sources:
    """The network's pixel batch and what `finish` needs; without pixels (a tiled fuse
    prepares them tile by tile) `pixels` is empty: (K, 3, 0, 0)."""
    check_images(images)
    colour = [image.ndim == 3 for image in images]
    mode = "colour" if all(colour) else "grey" if not any(colour) else "mixed"
    dtype = np.dtype(np.uint16) if any(i.dtype == np.uint16 for i in images) else np.dtype(np.uint8)
    height, width = images[0].shape[:2] if with_pixels else (0, 0)
    # Filled one input at a time: only one input's float64 temporaries exist at once.
    pixels = np.empty((len(images), 3, height, width), np.float32)
    for k, image in enumerate(images if with_pixels else ()):
        if image.dtype == np.uint8 and not (mode == "mixed" and image.ndim == 3):
            # 8-bit values are exact in float32: no float64 copy (a 12 MP input's is 288 MB).
            image = np.asarray(image)
            pixels[k] = image if image.ndim == 2 else image.transpose(2, 0, 1)
            continue
        scaled = _as_255(image)
        if mode == "mixed" and scaled.ndim == 3:
            scaled = luma(scaled)
        pixels[k] = scaled if scaled.ndim == 2 else scaled.transpose(2, 0, 1)  # grey: to all 3 channels
    chroma = None
    if mode == "mixed":
        colour_inputs = [rgb_to_ycbcr(_as_255(i))[:, :, 1:] for i in images if i.ndim == 3]
        chroma = np.mean(colour_inputs, axis=0)
    return Sources(pixels, mode, dtype, chroma)


FINISH_ROWS = 256  # rows converted at a time: float64 temporaries stay small on large images


def finish(fused: np.ndarray, sources: Sources) -> np.ndarray:
    """(3, H, W) float result in 0..255 -> an image of the inputs' mode and bit depth."""
    height, width = fused.shape[1:]
    out = np.empty((height, width, 3) if sources.mode != "grey" else (height, width), sources.dtype)
    for top in range(0, height, FINISH_ROWS):
        rows = slice(top, top + FINISH_ROWS)
        chroma = sources.chroma[rows] if sources.chroma is not None else None  # kept for "mixed" only
        out[rows] = _finish_rows(fused[:, rows], sources.mode, sources.dtype, chroma)
    return out


def _finish_rows(fused: np.ndarray, mode: str, dtype: np.dtype, chroma: np.ndarray | None) -> np.ndarray:
    rgb = np.clip(fused.astype(np.float64).transpose(1, 2, 0), 0.0, 255.0)
    if mode == "grey":
        out = luma(rgb)
    elif mode == "mixed":
        out = ycbcr_to_rgb(np.concatenate([luma(rgb)[:, :, None], chroma], axis=2))
    else:
        out = rgb
    if dtype == np.uint16:
        out = out * 257.0
    maximum = np.iinfo(dtype).max
    return np.clip(np.rint(out), 0, maximum).astype(dtype)
