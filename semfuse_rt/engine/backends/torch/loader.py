"""Builds the VGG19 feature chain up to a layer, after the weights' normalisation, on a
torch device: the reference the exported graphs are checked against."""
from __future__ import annotations

import torch
from torch import nn

from semfuse_rt.export.networks.normalisation import Normalisation
from semfuse_rt.export.networks.vgg19 import VGG19Features
from semfuse_rt.export.networks.weights import VGG19Weights


class NormalisedChain(nn.Module):
    """(N, 3, H, W) RGB pixels 0..255 -> N_l: Normalisation.apply, then the VGG19 chain.

    The offset, scale and channel order are buffers, so they live where the model does and a
    CUDA graph can capture the forward (no host tensor is made per call)."""

    offset: torch.Tensor
    scale: torch.Tensor
    order: torch.Tensor

    def __init__(self, chain: VGG19Features, normalisation: Normalisation):
        super().__init__()
        self.chain = chain
        offset, scale = normalisation.tensors()
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)
        self.register_buffer("order", torch.tensor(normalisation.order))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.chain((pixels.index_select(1, self.order) - self.offset) / self.scale)


class TorchModelLoader:
    def __init__(self, weights: VGG19Weights, layer: str, device: str | torch.device | None = None):
        self.weights, self.layer = weights, layer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def __call__(self) -> NormalisedChain:
        chain = VGG19Features(self.weights.convs, self.layer)
        return NormalisedChain(chain, self.weights.normalisation).to(self.device).eval()
