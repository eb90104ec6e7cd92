"""VGG19 with its ImageNet head: the paper's CAM network, used when the user supplies a full
torchvision `vgg19` file (convolutions plus `classifier.0/3/6`).

The trunk reuses `VGG19Features` (its conv modules and layer plan); identity "tap" modules
stand at every named layer so Grad-CAM can hook e.g. relu5_4 by name.
"""
from __future__ import annotations

import torch
from torch import nn

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.vgg19 import LAYER_NAMES, VGG19Features
from semfuse_rt.export.networks.weights import VGG19Weights

POOL_SIZE = 7
TRUNK_CHANNELS = 512
HEAD_KEYS = ("classifier.0", "classifier.3", "classifier.6")
NUM_CLASSES = 1000

# The last ReLU at each of the three lowest resolutions before pool5 (56, 28 and 14 pixels
# for a 224 input), as module names of VGG19Classifier.
CAM_LAYERS = ("taps.relu3_4", "taps.relu4_4", "taps.relu5_4")


def _head_linears(head: dict[str, torch.Tensor]) -> list[nn.Linear]:
    """The three FC layers, checked to chain 512*7*7 -> ... -> 1000 (hidden width as stored)."""
    linears, width = [], TRUNK_CHANNELS * POOL_SIZE * POOL_SIZE
    for key in HEAD_KEYS:
        weight, bias = head.get(f"{key}.weight"), head.get(f"{key}.bias")
        if weight is None or bias is None:
            raise SemfuseError(f"VGG19 classifier head lacks {key}.weight/bias")
        if weight.ndim != 2 or weight.shape[1] != width or bias.shape != (weight.shape[0],):
            raise SemfuseError(
                f"VGG19 classifier head: {key} has shape {tuple(weight.shape)}, expected (*, {width})"
            )
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data.copy_(weight)
        linear.bias.data.copy_(bias)
        linears.append(linear)
        width = weight.shape[0]
    if width != NUM_CLASSES:
        raise SemfuseError(f"VGG19 classifier head has {width} outputs, expected {NUM_CLASSES} ImageNet classes")
    return linears


class VGG19Classifier(nn.Module):
    """Network input (normalised as `weights.normalisation` says) -> ImageNet logits.

    features through pool5, adaptive average pool to 7x7, then Linear-ReLU-Dropout twice and
    the last Linear, with torchvision's `classifier.N` indices.
    """

    def __init__(self, weights: VGG19Weights):
        super().__init__()
        if weights.classifier is None:
            raise SemfuseError(
                f"{weights.source}: VGG19 weights without the classifier head cannot classify; "
                "pass a full torchvision vgg19 state dict (with classifier.0/3/6)"
            )
        first, second, last = _head_linears(weights.classifier)
        self.trunk = VGG19Features(weights.convs, "pool5")
        self.taps = nn.ModuleDict({name: nn.Identity() for name in LAYER_NAMES})
        self.avgpool = nn.AdaptiveAvgPool2d(POOL_SIZE)
        self.classifier = nn.Sequential(
            first, nn.ReLU(), nn.Dropout(), second, nn.ReLU(), nn.Dropout(), last,
        )
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        convs = iter(self.trunk.convs)
        for name, kind, _ in self.trunk.plan:
            if kind == "conv":
                x = next(convs)(x)
            elif kind == "relu":
                x = torch.relu(x)
            else:
                x = torch.max_pool2d(x, 2)
            x = self.taps[name](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))
