"""The kernels' rules written with torch ops: the fallback on any torch device, and the
other side of the GPU parity check.

Same conventions as the CUDA kernels (see README.md): int32 labels in 0..K-1, ties to the
lowest k, NaN keys rank as -inf, majority windows clipped at the border with the centre
label winning the ties it is part of. Features may be a stacked (K, ...) tensor or a
sequence of K tensors of one shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.arguments import check_input_count, check_window


def _rank(key: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(key), torch.full_like(key, -math.inf), key)


def _keep_first_maximum(
    features: Sequence[torch.Tensor], keys: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    fused = features[0].clone()
    labels = torch.zeros(features[0].shape, dtype=torch.int32, device=features[0].device)
    best = keys[0]
    for k in range(1, len(features)):
        larger = keys[k] > best  # strictly: equal keys stay with the lower k
        best = torch.where(larger, keys[k], best)
        fused = torch.where(larger, features[k], fused)
        labels = torch.where(larger, torch.full_like(labels, k), labels)
    return fused, labels


def choose_max(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(F*, D) with D = argmax_k |F_k|; keys in fp32 as the kernels form them."""
    features = list(features)
    check_input_count(len(features))
    keys = [_rank(f.float().abs()) for f in features]
    return _keep_first_maximum(features, keys)


def cam_choose_max(
    features: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """D = argmax_k W_k(y, x) |F_k(c, y, x)|; features (..., C, H, W), weights (..., H, W) fp32."""
    features = list(features)
    check_input_count(len(features))
    keys = [_rank(w.float().unsqueeze(-3) * f.float().abs()) for f, w in zip(features, weights, strict=True)]
    return _keep_first_maximum(features, keys)


def majority_filter(labels: torch.Tensor, num_inputs: int, window: int = 5) -> torch.Tensor:
    """Labels (..., H, W), each leading index a plane; returns int32 labels."""
    check_input_count(num_inputs)
    check_window(window)
    shape = labels.shape
    planes = labels.reshape(-1, 1, shape[-2], shape[-1])
    # Zero padding adds no votes, which is the clipped window; counts are small integers,
    # exact in fp32.
    counts = torch.stack(
        [
            F.avg_pool2d(
                (planes == k).float(),
                window,
                stride=1,
                padding=window // 2,
                count_include_pad=True,
                divisor_override=1,
            )
            for k in range(num_inputs)
        ]
    )
    top = counts.max(dim=0).values
    lowest_tied = torch.zeros_like(planes, dtype=torch.int32)
    for k in reversed(range(num_inputs)):
        lowest_tied = torch.where(counts[k] == top, torch.full_like(lowest_tied, k), lowest_tied)
    centre_valid = (planes >= 0) & (planes < num_inputs)
    centre_count = counts.gather(0, planes.clamp(0, num_inputs - 1).long()[None])[0]
    filtered = torch.where(centre_valid & (centre_count == top), planes.to(torch.int32), lowest_tied)
    return filtered.reshape(shape)


def gather_by_label(features: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """F*(i) = F_{D(i)}(i)."""
    fused = features[0].clone()
    for k in range(1, len(features)):
        fused = torch.where(labels == k, features[k], fused)
    return fused


def majority_fuse(
    features: Sequence[torch.Tensor], labels: torch.Tensor, window: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    features = list(features)
    filtered = majority_filter(labels, len(features), window)
    return filtered, gather_by_label(features, filtered)


def adam_update(x: torch.Tensor, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor,
                t: int, schedule: AdamSchedule, scratch: torch.Tensor | None = None) -> None:
    """The Adam kernel's twin: one in-place step (t from 1) in torch.optim.Adam's arithmetic
    order, so the Torch path can be checked against torch.optim.Adam itself. With `scratch`
    (like x) the step allocates nothing."""
    m.lerp_(grad, 1.0 - schedule.beta1)
    v.mul_(schedule.beta2).addcmul_(grad, grad, value=1.0 - schedule.beta2)
    denominator = torch.sqrt(v, out=scratch) if scratch is not None else v.sqrt()
    denominator.div_(schedule.root_correction(t)).add_(schedule.eps)
    x.addcdiv_(m, denominator, value=-schedule.step_size(t))
