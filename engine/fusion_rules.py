"""The fusion rules of method.md on torch tensors (any device): the target map F*.

Features come as (K, C, H, W): K inputs' maps at one layer. Labels are int64 (C, H, W).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from semfuse_rt.engine.errors import SemfuseError

RULES = ("max", "majority")


def choose_max(features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """D(c,y,x) = argmax_k W_k(y,x) |F_k(c,y,x)|, ties to the lowest k.

    `weights` (K, H, W) are the CAM weights of method 3; None means plain choose-max.
    """
    magnitude = features.abs()
    if weights is not None:
        magnitude = magnitude * weights[:, None]
    # torch.argmax returns the first maximal index, which is the lowest-k tie rule.
    return magnitude.argmax(dim=0)


def majority_filter(labels: torch.Tensor, count: int, window: int = 5) -> torch.Tensor:
    """Most frequent label in a window x window neighbourhood, per channel.

    Windows are clipped at the border (zero padding adds no votes). Ties keep the centre
    label when it is among the tied labels, else the lowest tied label.
    """
    if window < 1 or window % 2 == 0:
        raise SemfuseError(f"majority window must be an odd positive number, got {window}")
    one_hot = torch.stack([(labels == k) for k in range(count)]).to(torch.float32)
    # Vote counts are small integers, exact in fp32.
    votes = F.avg_pool2d(one_hot, window, stride=1, padding=window // 2,
                         count_include_pad=True, divisor_override=1)
    best = votes.max(dim=0).values
    tied = votes == best
    centre_tied = tied.gather(0, labels[None]).squeeze(0)
    lowest_tied = tied.to(torch.uint8).argmax(dim=0)
    return torch.where(centre_tied, labels, lowest_tied)


def gather_fused(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """F*(c,y,x) = F_{D(c,y,x)}(c,y,x)."""
    return features.gather(0, labels[None]).squeeze(0)


def fuse_features(features: torch.Tensor, rule: str, window: int = 5,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    if rule not in RULES:
        raise SemfuseError(f"unknown fusion rule {rule!r}; use one of {', '.join(RULES)}")
    labels = choose_max(features, weights)
    if rule == "majority":
        labels = majority_filter(labels, features.shape[0], window)
    return gather_fused(features, labels)
