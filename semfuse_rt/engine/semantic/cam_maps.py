"""Class activation maps as data: one result type and the combination of per-layer maps
(docs/method.md section 2), shared by the torch Grad-CAM and the ONNX Runtime CAM runner."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.nn import functional as F


@dataclass
class CAMResult:
    maps: torch.Tensor  # (N, H, W) combined CAM M in [0, 1]
    layer_maps: list[torch.Tensor]  # per target layer (N, K, h_l, w_l): ReLU(sum alpha A), raw
    logits: torch.Tensor  # (N, classes in the model)
    classes: torch.Tensor  # (N, K) class indices whose maps were taken, most probable first
    class_weights: torch.Tensor  # (N, K) their softmax probabilities, renormalised to sum to 1

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each (..., H, W) map rescaled to [0, 1]; a flat map (no evidence anywhere) becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1.0), 0.0)


def map_size(pixels: torch.Tensor, size: Sequence[int] | None) -> tuple[int, int]:
    """The (H, W) a CAM is combined at: `size`, or the input's."""
    height, width = size if size is not None else pixels.shape[-2:]
    return int(height), int(width)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W), bilinear with pixel centres aligned (align_corners=False)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def combine_layer_maps(layer_maps: Sequence[torch.Tensor], class_weights: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """Per-layer, per-class Grad-CAMs (N, K, h_l, w_l) -> one map (N, H, W) in [0, 1]."""
    def weighted(k: int) -> torch.Tensor:
        per_class = torch.stack([normalise_maps(upsample(m[:, k], size)) for m in layer_maps]).mean(0)
        return class_weights[:, k, None, None] * normalise_maps(per_class)

    combined = weighted(0)
    for k in range(1, class_weights.shape[1]):
        combined = combined + weighted(k)
    return normalise_maps(combined)
