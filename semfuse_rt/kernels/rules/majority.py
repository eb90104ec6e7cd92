"""Majority: choose-max, then each element takes the label most common in its window x window
neighbourhood of the same channel (docs/method.md, "local majority").

The window is clipped at the borders (zero padding adds no votes); a tie keeps the centre's
label if it is among the tied, else the lowest, as the kernels do.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.arguments import check_window
from semfuse_rt.kernels.rules import choose_max
from semfuse_rt.kernels.source import MAX_WINDOW
from semfuse_rt.kernels.rules.base import FeatureRule, InputFeatures, dtype_name, stream_of

if TYPE_CHECKING:
    from semfuse_rt.kernels.runner import KernelRunner


def filter_labels(labels: torch.Tensor, count: int, window: int) -> torch.Tensor:
    """Labels (..., H, W) in 0..count-1, each leading index a plane filtered on its own ->
    the majority labels, int64, of the same shape."""
    height, width = labels.shape[-2], labels.shape[-1]
    planes = labels.reshape(1, -1, height, width)
    candidates = torch.arange(count, device=labels.device).view(-1, 1, 1, 1)
    votes = (planes == candidates).to(torch.float32)  # (K, planes, H, W)
    # A separable box sum of 0/1 votes: small integers, rounded in case a convolution
    # algorithm (an FFT on a GPU) leaves them a hair off.
    half = window // 2
    row = torch.ones(1, 1, 1, window, dtype=torch.float32, device=labels.device)
    column = torch.ones(1, 1, window, 1, dtype=torch.float32, device=labels.device)
    counts = F.conv2d(F.conv2d(votes.reshape(-1, 1, height, width), row, padding=(0, half)), column,
                      padding=(half, 0)).reshape(votes.shape).round()
    # Twice the count, plus one for the centre's own label: the centre wins the ties it is
    # part of, argmax's first maximum the others.
    return torch.argmax(counts * 2 + votes, dim=0).reshape(labels.shape)


class MajorityModule(nn.Module):
    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        labels = filter_labels(choose_max.choose(features, weights), features.shape[0], self.window)
        return choose_max.gather(features, labels)


class Majority(FeatureRule):
    name = "majority"
    kernels = ("semfuse_choose_max", "semfuse_cam_choose_max", "semfuse_majority_fuse")

    def __init__(self, window: int = 5):
        """A bad window is the user's error (the --window option), not a kernel call's."""
        try:
            self.window = check_window(window if isinstance(window, int) else -1)
        except ValueError:
            raise SemfuseError(f"the majority window must be odd and from 1 to {MAX_WINDOW}, got {window}") from None
        self._choice = choose_max.ChooseMax()

    @classmethod
    def with_options(cls, window: int) -> Majority:
        return cls(window)

    def module(self) -> nn.Module:
        return MajorityModule(self.window)

    def graph_name(self, weighted: bool) -> str:
        return f"rule-{self.name}-w{self.window}{'-weighted' if weighted else ''}.onnx"

    def fuse_on_kernels(self, kernels: KernelRunner, features: torch.Tensor,
                        weights: torch.Tensor | None) -> torch.Tensor:
        fused, labels = self._choice.choose(features, weights)
        k, c, h, w = features.shape
        filtered = torch.empty_like(labels)
        kernels.majority_fuse([features[i].data_ptr() for i in range(k)], labels.data_ptr(), filtered.data_ptr(),
                              fused.data_ptr(), c, h, w, dtype_name(features), self.window,
                              stream=stream_of(features))
        return fused

    def streamed_target(self, count: int, features: InputFeatures, fuse: Callable[[torch.Tensor], torch.Tensor],
                        lap: Callable[[], None], nonnegative: bool = False) -> torch.Tensor:
        """The filter needs every input's choice: uint8 labels in a first pass over the
        inputs, the values in a second."""
        first = features(0)[0]
        best = first.abs().nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        del first
        labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
        for k in range(1, count):
            key = features(k)[0].abs_().nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
            larger = key > best
            labels[larger] = k
            torch.maximum(best, key, out=best)
            lap()
        del best
        chosen = filter_labels(labels, count, self.window)
        lap()
        target = None
        for k in range(count):
            maps = features(k)[0]
            target = maps if target is None else torch.where(chosen == k, maps, target)
            lap()
        assert target is not None  # count >= 2
        return target[None]


RULE = Majority
