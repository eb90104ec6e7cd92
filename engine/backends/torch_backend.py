"""The PyTorch backend: eager forward, gradients by torch.autograd. The reference."""
from __future__ import annotations

import torch

from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.export.vgg19 import VGG19Features
from semfuse_rt.export.weights import VGG19Weights


class TorchRunner(FusionRunner):
    name = "torch"

    def __init__(self, weights: VGG19Weights, layer: str, device: str | None = None):
        self.weights = weights
        self.layer = layer
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = None

    @property
    def device(self) -> torch.device:
        return self._device

    def activate(self) -> None:
        self.model = VGG19Features(self.weights.convs, self.layer).to(self.device).eval()

    def deactivate(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.weights.normalisation.apply(pixels.to(self.device)))

    def loss_and_grad(self, image, target):
        x = image.detach().requires_grad_(True)
        loss = (self.model(self.weights.normalisation.apply(x)) - target).square().sum(dim=(1, 2, 3))
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad
