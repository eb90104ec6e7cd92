"""The Gaussian blur, defined once (issue 29): its taps, its border rules, and the blur as
OpenCV and as torch ops. Users: the mean base layer (export/graphs/base_layer_graph.py), the
pyramid-blend start in torch and in numpy (engine/start/pyramid_blend.py, pyramid_blend_cpu.py),
the tiles' preview tone (engine/large/tile_tone.py, through pyramid_blend.gaussian) and the
synthetic timing pair (engine/io/synthetic.py).

The kernel is cv2.GaussianBlur's for float images: 2 round(4 sigma) + 1 taps of
exp(-x^2 / (2 sigma^2)), normalised, in float32. The torch form convolves with these very
taps, so on float32 planes the two forms agree to rounding (tests/test_gaussian_blur.py).
The border is the caller's: the base layer reflects with the edge pixel repeated (as its
graph always has), the pyramid blend about the edge pixel (as every filter of its rule does).

Not the metrics' windows: those are MATLAB's fspecial('gaussian', 11, 1.5) and 7 x 7 kernels
of fixed size in float64 (engine/metrics/metrics.py), part of each metric's definition.

A top-level module because export/ and engine/ both use it and export/ may not import engine/.
Only the torch form imports torch, so the torch-free CPU start can use the rest.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


class Border(enum.IntEnum):
    """How a blur extends a plane past its edges; the values are OpenCV's border types."""

    REFLECT = cv2.BORDER_REFLECT  # ...cba|abc...xyz|zyx...: the edge pixel repeated
    REFLECT_101 = cv2.BORDER_REFLECT_101  # ...cb|abc...xyz|yx...: mirrored about the edge pixel


def tap_count(sigma: float) -> int:
    """Taps of cv2.GaussianBlur's kernel for a float image and ksize (0, 0)."""
    return int(round(sigma * 8 + 1)) | 1


def gaussian_taps(sigma: float) -> np.ndarray:
    """The kernel's taps, float32: cv2.GaussianBlur's own for float images."""
    return cv2.getGaussianKernel(tap_count(sigma), sigma, cv2.CV_32F).ravel().astype(np.float32)


def opencv_blur(image: np.ndarray, sigma: float, border: Border) -> np.ndarray:
    """An (H, W) or (H, W, C) image blurred per channel by cv2.GaussianBlur, whose kernel for a
    float32 image is gaussian_taps(sigma)."""
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=int(border))


def fold_indices(index: torch.Tensor, length: int, border: Border) -> torch.Tensor:
    """Indices into a length-`length` axis extended past its ends by `border`, as often as
    needed (a kernel wider than the plane reflects again). While a graph is traced for export,
    `length` is the tracer's symbolic size."""
    import torch

    if border is Border.REFLECT:
        folded = torch.remainder(index, 2 * length)
        return torch.where(folded < length, folded, 2 * length - 1 - folded)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    folded = torch.remainder(index, period)
    return torch.where(folded < length, folded, period - folded)


def _uses_convolution(planes: torch.Tensor) -> bool:
    """F.conv2d on the CPU (torch's own convolution) and in an exported graph (one Conv node
    per axis); shifted sums on a GPU, where cuDNN would run a float32 convolution in TF32 by
    default (a 10-bit mantissa)."""
    import torch

    return planes.device.type == "cpu" or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _correlate(padded: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """(M, 1, H', W') padded along `dim` (2 or 3) by len(taps) - 1 -> the taps' weighted sums
    at each position where they fit."""
    from torch.nn import functional as F

    if _uses_convolution(padded):
        return F.conv2d(padded, taps.view(1, 1, -1, 1) if dim == 2 else taps.view(1, 1, 1, -1))
    size = padded.shape[dim] - taps.shape[0] + 1
    weights = [float(t) for t in taps.tolist()]
    out = padded.narrow(dim, 0, size) * weights[0]
    for i, t in enumerate(weights[1:], start=1):
        out = out + t * padded.narrow(dim, i, size)
    return out


def torch_blur(planes: torch.Tensor, taps: torch.Tensor, border: Border) -> torch.Tensor:
    """(N, C, H, W) blurred per plane with the separable `taps` (odd length, the planes' dtype
    and device): rows first, then columns."""
    import torch

    n, c, h, w = planes.shape
    pad = taps.shape[0] // 2
    flat = planes.reshape(n * c, 1, h, w)
    columns = fold_indices(torch.arange(-pad, w + pad, device=planes.device), w, border)
    rows = _correlate(flat.index_select(3, columns), taps, 3)
    lines = fold_indices(torch.arange(-pad, h + pad, device=planes.device), h, border)
    return _correlate(rows.index_select(2, lines), taps, 2).reshape(n, c, h, w)
