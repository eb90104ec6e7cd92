"""VGG19's convolutional trunk, cut after a named layer.

Layer names follow the paper and the Keras/torchvision convention: conv{b}_{i}, relu{b}_{i}
and pool{b} for blocks b = 1..5.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.errors import SemfuseError

# Convolutions per block and their output channels (Simonyan & Zisserman, configuration E).
BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def _layer_sequence() -> list[tuple[str, str, int]]:
    """(name, kind, conv index) for every layer in order; kind is conv, relu or pool."""
    layers = []
    conv_index = 0
    for block, (n_convs, _) in enumerate(BLOCKS, start=1):
        for i in range(1, n_convs + 1):
            layers.append((f"conv{block}_{i}", "conv", conv_index))
            layers.append((f"relu{block}_{i}", "relu", conv_index))
            conv_index += 1
        layers.append((f"pool{block}", "pool", -1))
    return layers


LAYERS = _layer_sequence()
LAYER_NAMES = [name for name, _, _ in LAYERS]
CONV_NAMES = [name for name, kind, _ in LAYERS if kind == "conv"]


def conv_shapes() -> list[tuple[int, int]]:
    """(in_channels, out_channels) of each of the 16 convolutions."""
    shapes, channels = [], 3
    for n_convs, out in BLOCKS:
        for _ in range(n_convs):
            shapes.append((channels, out))
            channels = out
    return shapes


def check_layer(layer: str) -> str:
    if layer not in LAYER_NAMES:
        raise SemfuseError(
            f"unknown VGG19 layer {layer!r}; use one of {', '.join(LAYER_NAMES)}"
        )
    return layer


def is_nonnegative(layer: str) -> bool:
    """Whether the layer's maps are never negative: a ReLU's, or a max pool over one."""
    check_layer(layer)
    return not layer.startswith("conv")


def layers_up_to(layer: str) -> list[tuple[str, str, int]]:
    check_layer(layer)
    index = LAYER_NAMES.index(layer)
    return LAYERS[: index + 1]


def output_channels(layer: str) -> int:
    channels = 3
    for _, kind, conv_index in layers_up_to(layer):
        if kind == "conv":
            channels = conv_shapes()[conv_index][1]
    return channels


def feature_shape(layer: str, count: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(N, C, h, w) of the features of `count` images of height x width at `layer`."""
    for _, kind, _ in layers_up_to(layer):
        if kind == "pool":
            height, width = height // 2, width // 2
    return count, output_channels(layer), height, width


class VGG19Features(nn.Module):
    """N_l: normalised network input (1..K, 3, H, W) -> feature map at `layer`.

    `state` maps conv names (conv1_1 ...) to (weight, bias) in torch layout. Only the
    convolutions up to `layer` are kept, so cutting early costs nothing.
    """

    def __init__(self, state: dict[str, tuple[torch.Tensor, torch.Tensor]], layer: str):
        super().__init__()
        self.layer = check_layer(layer)
        self.plan = layers_up_to(layer)
        self.convs = nn.ModuleList()
        for name, kind, _ in self.plan:
            if kind != "conv":
                continue
            weight, bias = state[name]
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
            assert conv.bias is not None  # nn.Conv2d's default: bias=True
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)
            conv.requires_grad_(False)
            self.convs.append(conv)

    @property
    def conv_layers(self) -> list[nn.Conv2d]:
        """The convolutions in order, typed (a ModuleList's items are plain Modules to mypy)."""
        return cast(list[nn.Conv2d], list(self.convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convs = iter(self.convs)
        for _, kind, _ in self.plan:
            if kind == "conv":
                x = next(convs)(x)
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2)
        return x
