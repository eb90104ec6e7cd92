"""Choose-max: per element, the input whose (CAM-weighted) magnitude is largest.

F*(c, y, x) = F_D(c, y, x) with D = argmax_k key_k(c, y, x), key_k = |F_k| (W_k |F_k| with
CAM weights W (K, H, W)); NaN keys rank below everything and ties go to the lowest k
(argmax takes the first maximum), as the kernels do.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from semfuse_rt.kernels.rules.base import FeatureRule, InputFeatures, dtype_name, kernels_for, stream_of

if TYPE_CHECKING:
    from semfuse_rt.kernels.runner import KernelRunner


def keys(features: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The magnitudes the choice compares: features (K, ..., C, H, W), weights (K, ..., H, W)."""
    magnitude = features.abs()
    if weights is not None:
        magnitude = magnitude * weights.unsqueeze(-3)
    return torch.where(torch.isnan(magnitude), torch.full_like(magnitude, -math.inf), magnitude)


def choose(features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The labels D (1, ...) of a stack (K, ...), int64."""
    return torch.argmax(keys(features, weights), dim=0, keepdim=True)


def gather(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """F*(i) = F_{D(i)}(i): a stack (K, ...) and labels (1, ...) -> (1, ...)."""
    return torch.gather(features, 0, labels.long())


class ChooseMaxModule(nn.Module):
    def forward(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return gather(features, choose(features, weights))


class ChooseMax(FeatureRule):
    name = "max"
    kernels = ("semfuse_choose_max", "semfuse_cam_choose_max")
    running_reduction = True

    def module(self) -> nn.Module:
        return ChooseMaxModule()

    def choose(self, features: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused (C, H, W), labels (C, H, W)) of a stack (K, C, H, W): its kernels' int32
        labels on a GPU, else the torch form's int64."""
        features = features.contiguous()
        kernels = kernels_for(features)
        if kernels is None:
            labels = choose(features, weights)
            return gather(features, labels)[0], labels[0]
        return self._choose_on_kernels(kernels, features, weights)

    def _choose_on_kernels(self, kernels: KernelRunner, features: torch.Tensor,
                           weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        k, c, h, w = features.shape
        inputs = [features[i].data_ptr() for i in range(k)]
        fused = torch.empty_like(features[0])
        labels = torch.empty((c, h, w), dtype=torch.int32, device=features.device)
        if weights is None:
            kernels.choose_max(inputs, fused.data_ptr(), labels.data_ptr(), c * h * w, dtype_name(features),
                               stream=stream_of(features))
        else:
            weights = weights.to(torch.float32).contiguous()
            kernels.cam_choose_max(inputs, [weights[i].data_ptr() for i in range(k)], fused.data_ptr(),
                                   labels.data_ptr(), (1, c, h, w), dtype_name(features), stream=stream_of(features))
        return fused, labels

    def fuse_on_kernels(self, kernels, features, weights):
        return self._choose_on_kernels(kernels, features, weights)[0]

    def reduce_into(self, target: torch.Tensor, features: torch.Tensor, band: int = 1 << 20,
                    nonnegative: bool = False) -> torch.Tensor:
        """One step of choose-max as a running reduction over the inputs, in place: where the
        next input's key beats the target's, take its value (ties stay with the earlier
        input, NaN never wins). Both (1, C, H, W). Done a band of rows (about `band`
        elements) at a time, so the keys are cache-sized temporaries instead of full-size
        maps: at 2 x 64 x 1000^2 on the 2-core VM, 0.18 s and no memory beyond the maps,
        against 0.43 s and about 2 GB of temporaries for the rule graph on ONNX Runtime.

        `nonnegative`: the magnitude is the value and a tie is the same value, so the rule is
        `fmax` (which also lets no NaN win), one pass instead of seven."""
        if nonnegative:
            return torch.fmax(target, features, out=target)
        rows = max(1, band // max(1, target.shape[1] * target.shape[3]))
        for top in range(0, target.shape[2], rows):
            kept, offered = target[0, :, top:top + rows], features[0, :, top:top + rows]
            wins = offered.abs().nan_to_num_(nan=-math.inf) > kept.abs().nan_to_num_(nan=-math.inf)
            kept.copy_(torch.where(wins, offered, kept))
        return target

    def streamed_target(self, count: int, features: InputFeatures, fuse: Callable[[torch.Tensor], torch.Tensor],
                        lap: Callable[[], None], nonnegative: bool = False) -> torch.Tensor:
        """The rule between the target so far (first, so ties stay with the lower k) and the
        next input's maps: in place on the CPU, by its kernels on the pair on a GPU."""
        target = features(0)
        for k in range(1, count):
            if not target.is_cuda:
                self.reduce_into(target, features(k), nonnegative=nonnegative)
            else:
                target = fuse(torch.cat([target, features(k)]))
            lap()
        return target


RULE = ChooseMax
