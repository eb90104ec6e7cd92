"""How a weights set expects its input, as an affine map from RGB pixels in 0..255.

network_input[c] = (pixels[order[c]] - offset[c]) / scale[c]

Keeping the optimisation variable in RGB pixel units for every weights set means the
learning rate means the same thing whichever weights are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalisation:
    name: str
    order: tuple[int, int, int]
    offset: tuple[float, float, float]
    scale: tuple[float, float, float]

    def tensors(self, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        offset = torch.tensor(self.offset, dtype=dtype, device=device).view(1, 3, 1, 1)
        scale = torch.tensor(self.scale, dtype=dtype, device=device).view(1, 3, 1, 1)
        return offset, scale

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        offset, scale = self.tensors(pixels.dtype, pixels.device)
        return (pixels[:, list(self.order)] - offset) / scale


# Oxford VGG19 as distributed for Keras/Caffe: BGR, 0..255, minus the ImageNet mean.
CAFFE = Normalisation("caffe", (2, 1, 0), (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
# torchvision: RGB in 0..1, ImageNet mean/std.
TORCHVISION = Normalisation(
    "torchvision",
    (0, 1, 2),
    (0.485 * 255, 0.456 * 255, 0.406 * 255),
    (0.229 * 255, 0.224 * 255, 0.225 * 255),
)

BY_NAME = {n.name: n for n in (CAFFE, TORCHVISION)}
