"""Colour conversions: full-range YCbCr (ITU-R BT.601, as in JPEG), on float arrays 0..255.

Works on numpy arrays or torch tensors whose last axis (numpy) or first axis (torch-style
channel-first when `axis=0`) holds R, G, B.
"""
from __future__ import annotations

import numpy as np

_TO_YCBCR = np.array([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_OFFSET = np.array([0.0, 128.0, 128.0])
_TO_RGB = np.linalg.inv(_TO_YCBCR)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3) Y, Cb, Cr."""
    return rgb @ _TO_YCBCR.T + _OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    return (ycbcr - _OFFSET) @ _TO_RGB.T


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (...) Y."""
    return rgb @ _TO_YCBCR[0]


def to_luma_255(image: np.ndarray) -> np.ndarray:
    """Any supported image (grey/RGB, 8/16-bit) -> float64 luma in 0..255."""
    scaled = image.astype(np.float64) / (257.0 if image.dtype == np.uint16 else 1.0)
    return scaled if scaled.ndim == 2 else luma(scaled)
