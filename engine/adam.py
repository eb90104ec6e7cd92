"""Fixed-step Adam on the image, written out so every backend takes the same steps.

The update is torch.optim.Adam's (defaults but lr): the same arithmetic order, so the
Torch backend can be checked against torch.optim.Adam itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import DECAYS, step_lr


@dataclass(frozen=True)
class AdamSchedule:
    steps: int = 100
    lr: float = 1.0  # in pixel units (0..255), whatever the weights' normalisation
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decay: str = "constant"  # or "cosine" (kernels/adam_scalars.py: step_lr)

    def __post_init__(self):
        if self.steps < 0:
            raise SemfuseError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SemfuseError(f"learning rate must be a positive number, got {self.lr}")
        if self.decay not in DECAYS:
            raise SemfuseError(f"unknown learning-rate decay {self.decay!r}; use one of {', '.join(DECAYS)}")

    def lr_at(self, t: int) -> float:
        return step_lr(self.lr, t, self.steps, self.decay)

    def step_size(self, t: int) -> float:
        return self.lr_at(t) / (1.0 - self.beta1**t)

    def root_correction(self, t: int) -> float:
        return math.sqrt(1.0 - self.beta2**t)


def adam_update(x: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
                t: int, schedule: AdamSchedule, scratch: torch.Tensor | None = None) -> None:
    """One in-place step; t counts from 1. With `scratch` (like x) the step allocates nothing."""
    m.lerp_(grad, 1.0 - schedule.beta1)
    v.mul_(schedule.beta2).addcmul_(grad, grad, value=1.0 - schedule.beta2)
    denominator = torch.sqrt(v, out=scratch) if scratch is not None else v.sqrt()
    denominator.div_(schedule.root_correction(t)).add_(schedule.eps)
    x.addcdiv_(m, denominator, value=-schedule.step_size(t))
