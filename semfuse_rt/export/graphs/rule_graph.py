"""Feature rules as ONNX graphs: K feature maps (K, C, h, w) -> the target F* (1, C, h, w).

What is exported is the rule's own torch form (`FeatureRule.module`, kernels/rules/), the
one the torch backends run where the kernels do not, so ONNX Runtime runs the same rule. K,
C, h and w are dynamic in the exported graphs; a majority window is fixed per graph.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from semfuse_rt.kernels.rules import rule_modules

if TYPE_CHECKING:
    from semfuse_rt.kernels.rules.base import FeatureRule


def export_rule_graph(rule: FeatureRule, weighted: bool = False, directory=None) -> Path:
    """The rule's graph file (exported on first use): inputs `features` (K, C, h, w) and,
    weighted, `weights` (K, h, w) float32; output `target` (1, C, h, w)."""
    from semfuse_rt.export.graphs.graph_cache import exported_graph

    def build():
        features = torch.randn(2, 3, 9, 11)
        args = (features, torch.rand(2, 9, 11)) if weighted else (features,)
        io = {"inputs": ["features", "weights"] if weighted else ["features"], "outputs": ["target"]}
        dynamic = {"features": {0: "inputs", 1: "channels", 2: "height", 3: "width"},
                   "target": {1: "channels", 2: "height", 3: "width"}}
        if weighted:
            dynamic["weights"] = {0: "inputs", 1: "height", 2: "width"}
        return rule.module(), args, io, dynamic

    # The graphs follow the code of this module and of the rules (kernels/rules/).
    return exported_graph(rule.graph_name(weighted), (sys.modules[__name__], *rule_modules()), build, directory)
