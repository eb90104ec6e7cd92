"""Two-scale recombination: the optimised image's detail over the inputs' mean base layer.

Choose-max at relu1_1 compares responses that include each input's local brightness, so
where the inputs' brightness differs (infrared against visible, CT against MR) the target
pulls the result towards one input's level. Multiresolution fusion avoids this by averaging
the lowpass band; this does the same for the optimised image: with B = Gaussian blur of
standard deviation `sigma`,

    result = I* - B(I*) + B(mean_k I_k) = I* + B(mean_k I_k - I*)

The `refined` and `fast` presets use sigma 8; `paper` leaves it off (sigma 0), as the method
was published. The pipeline runs MeanBaseLayer where the optimised image is: this graph in ONNX
Runtime, the torch module on the other backends' device (engine/backends/base.py). tests/support/base_layer_reference.py
is its OpenCV yardstick.

B is semfuse_rt/gaussian_blur.py's blur, with BORDER_REFLECT (the edge pixel repeated:
...cba|abc...|cba...). Shapes are dynamic; the taps are part of the graph (the exporter needs
a convolution's kernel shape), so each sigma has its own file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from semfuse_rt import gaussian_blur
from semfuse_rt.gaussian_blur import Border, gaussian_taps, torch_blur


class MeanBaseLayer(nn.Module):
    """(fused (1, 3, H, W), pixels (K, 3, H, W)) -> fused over the inputs' mean base layer."""

    taps: torch.Tensor  # a buffer

    def __init__(self, sigma: float):
        super().__init__()
        self.register_buffer("taps", torch.from_numpy(gaussian_taps(sigma)))

    def forward(self, fused: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        return fused + torch_blur(pixels.mean(dim=0, keepdim=True) - fused, self.taps, Border.REFLECT)


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

    return exported_graph(base_layer_graph_name(sigma), (sys.modules[__name__], gaussian_blur), build, directory)
