"""The mean base layer in OpenCV: the yardstick for semfuse_rt/export/graphs/base_layer_graph.py's
MeanBaseLayer (the package's one definition, which its docstring explains), its ONNX graph and
the fuse's `mean_base` option.

result = I* - B(I*) + B(mean_k I_k), B: cv2.GaussianBlur of standard deviation `sigma` with
BORDER_REFLECT, called here directly rather than through semfuse_rt/gaussian_blur.py, so the
reference does not share the code it checks."""
from __future__ import annotations

import cv2
import numpy as np


def gaussian_base(planes: np.ndarray, sigma: float) -> np.ndarray:
    """(C, H, W) float -> the same blurred per plane (reflecting borders)."""
    return np.stack([cv2.GaussianBlur(p, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for p in planes])


def with_mean_base(fused: np.ndarray, pixels: np.ndarray, sigma: float) -> np.ndarray:
    """fused (3, H, W) and the inputs (K, 3, H, W), pixel units; sigma in pixels, > 0."""
    assert sigma > 0, sigma
    fused = fused.astype(np.float32)
    return fused - gaussian_base(fused, sigma) + gaussian_base(pixels.mean(axis=0).astype(np.float32), sigma)
