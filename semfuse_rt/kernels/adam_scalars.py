"""The fixed-step Adam schedule every backend runs, and its per-step scalars formed as
torch.optim.Adam forms them (Python floats, i.e. C doubles) for launches whose step counter
lives on the host. The one place the Adam constants are defined."""

from __future__ import annotations

import math
from dataclasses import dataclass

from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.abi import AdamScalars

BETAS = (0.9, 0.999)
EPS = 1e-8
DECAYS = ("constant", "cosine")


def step_lr(lr: float, t: int, steps: int, decay: str = "constant") -> float:
    """The learning rate of step t (from 1) of `steps`: constant, or cosine-annealed from lr
    towards 0 (torch's CosineAnnealingLR with eta_min 0, in closed form), which lets the
    last steps settle instead of moving every pixel by about lr."""
    if decay == "constant":
        return lr
    if decay == "cosine":
        return lr * (0.5 * (1.0 + math.cos(math.pi * (t - 1) / steps)))
    raise ValueError(f"unknown learning-rate decay {decay!r}; use one of {', '.join(DECAYS)}")


@dataclass(frozen=True)
class AdamSchedule:
    """torch.optim.Adam's defaults but lr, for `steps` steps, lr in pixel units (0..255)."""

    steps: int = 100
    lr: float = 1.0
    beta1: float = BETAS[0]
    beta2: float = BETAS[1]
    eps: float = EPS
    decay: str = "constant"  # or "cosine" (step_lr)

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


def adam_scalars(t: int, lr: float, betas: tuple[float, float] = BETAS, eps: float = EPS) -> AdamScalars:
    """Scalars for step t (t counts from 1); ctypes rounds each to float as the kernel expects."""
    if t < 1:
        raise ValueError(f"Adam's step counter starts at 1, got {t}")
    beta1, beta2 = betas
    return AdamScalars(
        one_minus_beta1=1.0 - beta1,
        beta2=beta2,
        one_minus_beta2=1.0 - beta2,
        eps=eps,
        neg_step_size=-(lr / (1.0 - beta1**t)),
        bias_correction2_sqrt=math.sqrt(1.0 - beta2**t),
    )
