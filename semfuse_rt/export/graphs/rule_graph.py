"""Feature rules as graphs: K feature maps (K, C, h, w) -> the target F* (1, C, h, w).

The same torch modules run as torch ops (CPU, or a GPU without the custom kernels) and are
exported to ONNX for ONNX Runtime, so the rule runs where the features are. They follow
docs/method.md's conventions, as the kernels and their twins in kernels/torch_rules.py do:
keys |F_k| (W_k |F_k| with CAM weights), NaN ranks below everything, ties to the lowest k
(argmax takes the first maximum); the majority window is clipped at the borders (zero
padding adds no votes) and a tie keeps the centre's label if it is among the tied, else the
lowest. K, C, h and w are dynamic in the exported graphs; the window is fixed per graph.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


def _keys(features: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    keys = features.abs()
    if weights is not None:
        keys = keys * weights.unsqueeze(1)
    return torch.where(torch.isnan(keys), torch.full_like(keys, -math.inf), keys)


class ChooseMaxGraph(nn.Module):
    """F*(c, y, x) = F_D(c, y, x) with D = argmax_k key_k(c, y, x)."""

    def choose(self, features: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return torch.argmax(_keys(features, weights), dim=0, keepdim=True)

    def forward(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return torch.gather(features, 0, self.choose(features, weights))


class MajorityGraph(ChooseMaxGraph):
    """Choose-max, then per channel the label most frequent in the window x window
    neighbourhood decides which input's value is taken."""

    row: torch.Tensor  # buffers: the box sum's two passes
    column: torch.Tensor

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.register_buffer("row", torch.ones(1, 1, 1, window))
        self.register_buffer("column", torch.ones(1, 1, window, 1))

    def forward(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        k, c, h, w = features.shape
        labels = self.choose(features, weights)  # (1, C, h, w)
        candidates = torch.arange(k, device=features.device).view(-1, 1, 1, 1)
        votes = (labels == candidates).to(features.dtype if features.is_floating_point() else torch.float32)
        # A separable box sum of 0/1 votes: exact small integers, clipped at the borders.
        half = self.window // 2
        planes = votes.reshape(k * c, 1, h, w)
        counts = F.conv2d(F.conv2d(planes, self.row.to(planes.dtype), padding=(0, half)),
                          self.column.to(planes.dtype), padding=(half, 0)).reshape(k, c, h, w)
        # Twice the count, plus one for the centre's own label: the centre wins the ties it
        # is part of, argmax's first maximum the others.
        score = counts * 2 + votes
        return torch.gather(features, 0, torch.argmax(score, dim=0, keepdim=True))


def rule_graph_name(rule: str, window: int, weighted: bool) -> str:
    return f"rule-{rule}{f'-w{window}' if rule == 'majority' else ''}{'-weighted' if weighted else ''}.onnx"


def export_rule_graph(rule: str, window: int = 5, weighted: bool = False, directory=None) -> Path:
    """The rule's graph file: inputs `features` (K, C, h, w) and, weighted, `weights` (K, h, w)
    float32; output `target` (1, C, h, w)."""
    import sys

    from semfuse_rt.export.graphs.graph_cache import exported_graph

    def build():
        module = MajorityGraph(window) if rule == "majority" else ChooseMaxGraph()
        features = torch.randn(2, 3, 9, 11)
        args = (features, torch.rand(2, 9, 11)) if weighted else (features,)
        io = {"inputs": ["features", "weights"] if weighted else ["features"], "outputs": ["target"]}
        dynamic = {"features": {0: "inputs", 1: "channels", 2: "height", 3: "width"},
                   "target": {1: "channels", 2: "height", 3: "width"}}
        if weighted:
            dynamic["weights"] = {0: "inputs", 1: "height", 2: "width"}
        return module, args, io, dynamic

    return exported_graph(rule_graph_name(rule, window, weighted), (sys.modules[__name__],), build, directory)
