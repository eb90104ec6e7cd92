"""The kernels' rules with torch ops, in the kernels' calling convention (K maps of one shape,
int32 labels), for the GPU parity check and for callers that hold a list of maps: each is
the rule's own torch form (kernels/rules/), not a second copy of it. And Adam's twin.

Same conventions as the CUDA kernels (see README.md): int32 labels in 0..K-1, ties to the
lowest k, NaN keys rank as -inf, majority windows clipped at the border with the centre
label winning the ties it is part of. Features may be a stacked (K, ...) tensor or a
sequence of K tensors of one shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.arguments import check_input_count, check_window
from semfuse_rt.kernels.rules import choose_max as _choose_max
from semfuse_rt.kernels.rules.majority import filter_labels


def _stack(features: Sequence[torch.Tensor]) -> torch.Tensor:
    stacked = torch.stack(list(features))
    check_input_count(len(stacked))
    return stacked


def choose_max(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(F*, D) with D = argmax_k |F_k|."""
    stacked = _stack(features)
    labels = _choose_max.choose(stacked)
    return _choose_max.gather(stacked, labels)[0], labels[0].to(torch.int32)


def cam_choose_max(
    features: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """D = argmax_k W_k(y, x) |F_k(c, y, x)|; features (..., C, H, W), weights (..., H, W) fp32."""
    stacked = _stack(features)
    labels = _choose_max.choose(stacked, torch.stack(list(weights)))
    return _choose_max.gather(stacked, labels)[0], labels[0].to(torch.int32)


def majority_filter(labels: torch.Tensor, num_inputs: int, window: int = 5) -> torch.Tensor:
    """Labels (..., H, W), each leading index a plane; returns int32 labels."""
    check_input_count(num_inputs)
    check_window(window)
    return filter_labels(labels, num_inputs, window).to(torch.int32)


def gather_by_label(features: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """F*(i) = F_{D(i)}(i)."""
    return _choose_max.gather(torch.stack(list(features)), labels[None])[0]


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
