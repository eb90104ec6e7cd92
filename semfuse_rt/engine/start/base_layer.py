"""Two-scale recombination: the optimised image's detail over the inputs' mean base layer.

Choose-max at relu1_1 compares responses that include each input's local brightness, so
where the inputs' brightness differs (infrared against visible, CT against MR) the target
pulls the result towards one input's level. Multiresolution fusion avoids this by averaging
the lowpass band; this does the same for the optimised image: with B = Gaussian blur of
standard deviation `sigma`, result = I* - B(I*) + B(mean_k I_k). The `refined` and `fast`
presets use sigma 8; `paper` leaves it off (sigma 0), as the method was published.

The pipeline runs export/graphs/base_layer_graph.py's MeanBaseLayer where the optimised image is
(a graph in ONNX Runtime, torch ops on a GPU); this is its OpenCV reference.
"""
from __future__ import annotations

import cv2
import numpy as np

from semfuse_rt.errors import SemfuseError


def gaussian_base(planes: np.ndarray, sigma: float) -> np.ndarray:
    """(C, H, W) float -> the same blurred per plane (reflecting borders)."""
    return np.stack([cv2.GaussianBlur(p, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for p in planes])


def with_mean_base(fused: np.ndarray, pixels: np.ndarray, sigma: float) -> np.ndarray:
    """fused (3, H, W) and the inputs (K, 3, H, W), pixel units; sigma in pixels, > 0."""
    if not sigma > 0:
        raise SemfuseError(f"base-layer sigma must be positive, got {sigma}")
    fused = fused.astype(np.float32)
    return fused - gaussian_base(fused, sigma) + gaussian_base(pixels.mean(axis=0).astype(np.float32), sigma)
