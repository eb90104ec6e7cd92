"""A runner without a network, for checking optimisation loops: its loss is
||image - goal||^2, so any loop that replays `FusionRunner.optimise` (a captured graph, an
engine's fixed-step loop) can be compared with it on small arrays."""
from __future__ import annotations

import torch

from semfuse_rt.engine.backends.base import FusionRunner


class QuadraticRunner(FusionRunner):
    device = torch.device("cpu")

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the quadratic runner has no features: it only optimises")

    def loss_and_grad(self, image: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (image - goal).square().sum(dim=(1, 2, 3)), 2 * (image - goal)
