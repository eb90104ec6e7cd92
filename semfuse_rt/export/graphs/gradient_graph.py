"""The graphs the engines run: features, and the loss gradient with its backward written out.

For N_l, a chain of convolutions, ReLUs and max-pools after the input normalisation,

    L = sum (N_l(I) - F*)^2,   dL/dI = J_norm^T J_1^T ... J_n^T 2 (N_l(I) - F*)

where a convolution's transpose is a transposed convolution with the same weights, a
ReLU's is its mask (output > 0), and a max-pool's routes each gradient to the forward's
argmax. No weight gradients are formed.

The normalisation's channel order and scale are folded into conv1_1's weights (exact: zero
padding of the scaled input is zero padding of the shifted pixels), so both graphs start
with one subtraction on the 3-channel pixels, and the gradient needs no normalisation
backward. The loss's factor 2 is folded into the first backward convolution.

For a layer that is one convolution (conv1_1, relu1_1) there is a third graph, the gradient
of a band of rows (`RowBandLossGradient`): a CPU runs the whole-image graph at the speed of
memory, because each 64-channel map of a 512^2 image (64 MiB) streams through it several
times a step; bands of a few rows keep those maps in cache.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.export.networks.normalisation import Normalisation
from semfuse_rt.export.networks.vgg19 import VGG19Features


def pixel_space_convs(features: VGG19Features, normalisation: Normalisation):
    """(pixel offset (1,3,1,1), [(weight, bias)] with conv1_1 taking `pixels - offset`)."""
    layers = features.conv_layers
    offset, scale = normalisation.tensors(layers[0].weight.dtype)
    order = list(normalisation.order)
    pixel_offset = torch.empty_like(offset)
    pixel_offset[:, order] = offset
    convs = [(c.weight.detach().clone(), _bias(c).detach().clone()) for c in layers]
    first, bias = convs[0]
    folded = torch.empty_like(first)
    # z = sum_c W[:, c] (p[order[c]] - offset[c]) / scale[c]  =>  W'[:, order[c]] = W[:, c] / scale[c]
    folded[:, order] = first / scale.view(1, 3, 1, 1)
    convs[0] = (folded, bias)
    return pixel_offset, convs


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        raise ValueError("VGG19's convolutions have biases")
    return conv.bias


class _PixelSpaceChain(nn.Module):
    offset: torch.Tensor  # a buffer: (1, 3, 1, 1)

    def __init__(self, features: VGG19Features, normalisation: Normalisation):
        super().__init__()
        self.plan = [kind for _, kind, _ in features.plan]
        offset, convs = pixel_space_convs(features, normalisation)
        self.register_buffer("offset", offset)
        for i, (weight, bias) in enumerate(convs):
            self.register_buffer(f"weight{i}", weight)
            self.register_buffer(f"bias{i}", bias)
        self.conv_count = len(convs)

    def conv(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"weight{i}"), getattr(self, f"bias{i}")


class NormalisedFeatures(_PixelSpaceChain):
    """Pixels (N, 3, H, W) in 0..255 RGB -> features: the graph `features.onnx` holds."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels - self.offset
        i = 0
        for kind in self.plan:
            if kind == "conv":
                x = F.conv2d(x, *self.conv(i), padding=1)
                i += 1
            elif kind == "relu":
                x = F.relu(x)
            else:
                x = F.max_pool2d(x, 2)
        return x


class ExplicitLossGradient(_PixelSpaceChain):
    """(pixels (N,3,H,W), target (N,C,h,w)) -> (loss (N,), dloss/dpixels (N,3,H,W))."""

    backward0: torch.Tensor  # a buffer, as are backward1 ... for deeper layers

    def __init__(self, features: VGG19Features, normalisation: Normalisation):
        super().__init__(features, normalisation)
        for i in range(self.conv_count):
            weight = self.conv(i)[0].clone()
            if i == self.conv_count - 1:
                weight = weight * 2.0  # dL/dN_l = 2 (N_l - F*)
            self.register_buffer(f"backward{i}", weight)

    def forward(self, pixels: torch.Tensor, target: torch.Tensor):
        x = pixels - self.offset
        # What each layer's backward needs, recorded on the way forward: ("conv", index),
        # ("relu", mask) or ("pool", (indices, input)).
        tape: list[tuple[str, Any]] = []
        i = 0
        for kind in self.plan:
            if kind == "conv":
                tape.append(("conv", i))
                x = F.conv2d(x, *self.conv(i), padding=1)
                i += 1
            elif kind == "relu":
                x = F.relu(x)
                tape.append(("relu", x > 0))
            else:
                pooled, indices = F.max_pool2d(x, 2, return_indices=True)
                tape.append(("pool", (indices, x)))
                x = pooled
        residual = x - target
        # Summed row by row, then over rows and channels: one float32 sum over millions
        # of terms would lose three digits.
        loss = residual.square().sum(dim=3).sum(dim=2).sum(dim=1)
        grad = residual
        for kind, saved in reversed(tape):
            if kind == "conv":
                # ConvTranspose, not the equivalent Conv with a flipped kernel: ONNX
                # Runtime's CPU Conv is 2.5x slower when it produces 3 channels.
                grad = F.conv_transpose2d(grad, getattr(self, f"backward{saved}"), padding=1)
            elif kind == "relu":
                # Cast-and-multiply, not Where: ONNX Runtime's Where with a broadcast zero
                # runs about four times slower on the CPU.
                grad = grad * saved.to(grad.dtype)
            else:
                indices, before = saved
                # Scatter into the forward's argmax positions (max_unpool, in ops that
                # every exporter and engine handles, odd sizes included).
                flat = torch.zeros_like(before).flatten(2)
                grad = flat.scatter(2, indices.flatten(2), grad.flatten(2)).view_as(before)
        return loss, grad


def supports_row_bands(features: VGG19Features) -> bool:
    return [kind for _, kind, _ in features.plan] in (["conv"], ["conv", "relu"])


class RowBandLossGradient(ExplicitLossGradient):
    """The loss and gradient of feature rows a..b-1, for a layer that is one convolution.

    (pixels (N,3,h+2,W): image rows a-1..b, a row outside the image holding `offset` so it
    shifts to the zero padding; target (N,C,h,W): rows a..b-1) -> (those rows' share of the
    loss (N,), their share of dL/dI on image rows a-1..b (N,3,h+2,W)). Feature row r depends
    on image rows r-1..r+1 only, so the shares of bands that tile the rows sum to the
    whole-image loss and gradient exactly: vertically the convolution uses no padding, and
    its transpose returns all h+2 rows it touches.
    """

    def __init__(self, features: VGG19Features, normalisation: Normalisation):
        if not supports_row_bands(features):
            raise ValueError("row bands need a layer that is one convolution")
        super().__init__(features, normalisation)

    def forward(self, pixels: torch.Tensor, target: torch.Tensor):
        relu = self.plan[-1] == "relu"
        x = F.conv2d(pixels - self.offset, *self.conv(0), padding=(0, 1))
        x = F.relu(x) if relu else x
        residual = x - target
        loss = residual.square().sum(dim=3).sum(dim=2).sum(dim=1)
        grad = residual * (x > 0).to(residual.dtype) if relu else residual
        return loss, F.conv_transpose2d(grad, self.backward0, padding=(0, 1))
