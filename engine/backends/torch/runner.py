"""The PyTorch runner: eager forward, gradients by torch.autograd."""
from __future__ import annotations

import torch

from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.engine.backends.torch.loader import TorchModelLoader


class TorchRunner(FusionRunner):
    name = "torch"

    def __init__(self, loader: TorchModelLoader):
        self.loader = loader
        self.model = None

    @property
    def device(self) -> torch.device:
        return self.loader.device

    def activate(self) -> None:
        self.model = self.loader()

    def deactivate(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(pixels.to(self.device, torch.float32))

    def loss_and_grad(self, image, target):
        x = image.detach().requires_grad_(True)
        loss = (self.model(x) - target).square().sum(dim=(1, 2, 3))
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad
