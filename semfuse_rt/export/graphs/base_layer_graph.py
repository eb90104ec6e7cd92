"""The mean base layer as a graph (see engine/start/base_layer.py for why):

    result = I* - B(I*) + B(mean_k I_k) = I* + B(mean_k I_k - I*)

B is cv2.GaussianBlur's separable Gaussian for float images, with its BORDER_REFLECT (the
edge pixel repeated: ...cba|abc...|cba...). Shapes are dynamic; the taps are part of the
graph (the exporter needs a convolution's kernel shape), so each sigma has its own file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F



def gaussian_taps(sigma: float) -> torch.Tensor:
    """cv2.GaussianBlur's own kernel for float images: 2 * round(4 sigma) + 1 taps."""
    size = int(round(sigma * 8 + 1)) | 1
    return torch.from_numpy(cv2.getGaussianKernel(size, sigma, cv2.CV_32F).ravel().astype(np.float32))


def _symmetric(length: int, pad: int, device) -> torch.Tensor:
    """Indices of a length-`length` axis extended by `pad` on each side, mirrored with the
    edge repeated, as often as needed (a kernel wider than the image reflects again). While
    the graph is traced for export, the sizes are the tracer's symbolic ones."""
    positions = torch.arange(-pad, length + pad, device=device)
    folded = torch.remainder(positions, 2 * length)
    return torch.where(folded < length, folded, 2 * length - 1 - folded)


def gaussian_blur(planes: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) blurred per plane with the separable `taps`."""
    n, c, h, w = planes.shape
    pad = taps.shape[0] // 2
    flat = planes.reshape(n * c, 1, h, w)
    rows = flat.index_select(3, _symmetric(w, pad, planes.device))
    rows = F.conv2d(rows, taps.view(1, 1, 1, -1))
    columns = rows.index_select(2, _symmetric(h, pad, planes.device))
    return F.conv2d(columns, taps.view(1, 1, -1, 1)).reshape(n, c, h, w)


class MeanBaseLayer(nn.Module):
    """(fused (1, 3, H, W), pixels (K, 3, H, W)) -> fused over the inputs' mean base layer."""

    taps: torch.Tensor  # a buffer

    def __init__(self, sigma: float):
        super().__init__()
        self.register_buffer("taps", gaussian_taps(sigma))

    def forward(self, fused: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        return fused + gaussian_blur(pixels.mean(dim=0, keepdim=True) - fused, self.taps)


def base_layer_graph_name(sigma: float) -> str:
    return f"mean-base-layer-sigma{sigma:g}.onnx"


def export_base_layer_graph(sigma: float, directory=None) -> Path:
    """The graph file for `sigma`: inputs `fused` (1, 3, H, W) and `pixels` (K, 3, H, W),
    output `result` (1, 3, H, W), float32 pixels."""
    from semfuse_rt.export.graphs.graph_cache import exported_graph

    def build():
        args = (torch.rand(1, 3, 9, 11) * 255, torch.rand(2, 3, 9, 11) * 255)
        io = {"inputs": ["fused", "pixels"], "outputs": ["result"]}
        dynamic = {"fused": {2: "height", 3: "width"}, "pixels": {0: "inputs", 2: "height", 3: "width"},
                   "result": {2: "height", 3: "width"}}
        return MeanBaseLayer(sigma), args, io, dynamic

    return exported_graph(base_layer_graph_name(sigma), (sys.modules[__name__],), build, directory)
