"""The PyTorch runner: eager forward, gradients by torch.autograd."""
from __future__ import annotations

import torch

from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.engine.backends.torch.loader import NormalisedChain, TorchModelLoader


class TorchRunner(FusionRunner):
    name = "torch"

    def __init__(self, loader: TorchModelLoader):
        self.loader = loader
        self.model: NormalisedChain | None = None

    @property
    def active_model(self) -> NormalisedChain:
        if self.model is None:
            raise RuntimeError("the torch runner is used outside its context")
        return self.model

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
            return self.active_model(pixels.to(self.device, torch.float32))

    def loss_and_grad(self, image, target):
        x = image.detach().requires_grad_(True)
        loss = (self.active_model(x) - target).square().sum(dim=(1, 2, 3))
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad
