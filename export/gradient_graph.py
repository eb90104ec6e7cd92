"""The loss gradient with its backward written out, so an engine needs no autograd.

For N_l, a chain of convolutions, ReLUs and max-pools after the input normalisation,

    L = sum (N_l(I) - F*)^2,   dL/dI = J_norm^T J_1^T ... J_n^T 2 (N_l(I) - F*)

where a convolution's transpose is a transposed convolution with the same weights, a
ReLU's is its mask (output > 0), and a max-pool's routes each gradient to the argmax
(a scatter to the forward's argmax indices). No weight gradients are ever formed.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from semfuse_rt.export.normalisation import Normalisation
from semfuse_rt.export.vgg19 import VGG19Features


class NormalisedFeatures(nn.Module):
    """Pixels (N, 3, H, W) in 0..255 RGB -> features: the graph `features.onnx` holds."""

    def __init__(self, features: VGG19Features, normalisation: Normalisation):
        super().__init__()
        self.features = features
        offset, scale = normalisation.tensors()
        self.order = list(normalisation.order)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features((pixels[:, self.order] - self.offset) / self.scale)


class ExplicitLossGradient(nn.Module):
    """(pixels (N,3,H,W), target (N,C,h,w)) -> (loss (N,), dloss/dpixels (N,3,H,W))."""

    def __init__(self, features: VGG19Features, normalisation: Normalisation):
        super().__init__()
        self.features = features
        offset, scale = normalisation.tensors()
        self.order = list(normalisation.order)
        self.inverse_order = [self.order.index(c) for c in range(3)]
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, pixels: torch.Tensor, target: torch.Tensor):
        x = (pixels[:, self.order] - self.offset) / self.scale
        # What each layer's backward needs, recorded on the way forward.
        tape = []
        convs = iter(self.features.convs)
        for _, kind, _ in self.features.plan:
            if kind == "conv":
                conv = next(convs)
                tape.append(("conv", conv.weight.flip(2, 3).transpose(0, 1)))
                x = conv(x)
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
        grad = 2.0 * residual
        for kind, saved in reversed(tape):
            if kind == "conv":
                # A stride-1 transposed convolution is a convolution with the kernel
                # flipped and its in/out channels swapped; engines run Conv faster.
                grad = F.conv2d(grad, saved, padding=1)
            elif kind == "relu":
                grad = grad * saved.to(grad.dtype)
            else:
                indices, before = saved
                # Scatter into the forward's argmax positions (max_unpool, in ops that
                # every exporter and engine handles, odd sizes included).
                flat = torch.zeros_like(before).flatten(2)
                grad = flat.scatter(2, indices.flatten(2), grad.flatten(2)).view_as(before)
        grad = (grad / self.scale)[:, self.inverse_order]
        return loss, grad
