"""Feature rules: how K feature maps (K, C, H, W) become the target F* (docs/method.md).

Each rule is one module in this package holding all of it: its torch form (a torch module:
what runs where its kernels cannot, and what export/graphs/rule_graph.py exports to ONNX for
ONNX Runtime), the names of its CUDA kernels (fusion_kernels.cu, launched through
kernels/runner.py) and how it launches them, and how it folds many inputs one at a time.
All follow the same conventions (ties to the lowest k, NaN never wins, clipped windows).

This registry is torch-free: it names each rule's module and the options the rule takes,
so that the methods, their option checks and `--help` know the rules without importing
torch; a rule's module is imported when the rule is made (`feature_rule`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from semfuse_rt.registry import Registry

if TYPE_CHECKING:
    import torch

    from semfuse_rt.kernels.rules.base import FeatureRule


@dataclass(frozen=True)
class RuleEntry:
    name: str
    module: str  # the module that defines the rule, as RULE (a FeatureRule subclass)
    windowed: bool = False  # filtered over a window: the rule takes the `window` option

    def rule_class(self) -> type[FeatureRule]:
        return importlib.import_module(self.module).RULE

    def create(self, window: int) -> FeatureRule:
        return self.rule_class().with_options(window)


RULES: Registry[RuleEntry] = Registry("fusion rule")


def register_rule(name: str, module: str, *, windowed: bool = False) -> RuleEntry:
    return RULES.register(name, RuleEntry(name, module, windowed))


register_rule("max", f"{__name__}.choose_max")
register_rule("majority", f"{__name__}.majority", windowed=True)


def rule_modules() -> tuple[ModuleType, ...]:
    """The modules that define the registered rules, and what they share: the code an
    exported rule graph follows."""
    return tuple(importlib.import_module(module) for module in (f"{__name__}.base", *(
        entry.module for entry in RULES.values())))


def feature_rule(name: str, window: int = 5) -> FeatureRule:
    return RULES.lookup(name).create(window)


def fuse_features(features: torch.Tensor, rule: str, window: int = 5,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """F* (C, H, W) by the named rule (`weights` (K, H, W): CAM-weighted)."""
    return feature_rule(rule, window).fuse(features, weights)
