"""Feature rules: how K feature maps (K, C, H, W) become the target F* (docs/method.md).

A rule is one class. On a CUDA device with cuda-python it runs its custom kernel on torch's
current stream, on torch's own buffers; elsewhere its torch-op twin in `kernels.torch_rules`
does, and ONNX Runtime runs its graph (export/graphs/rule_graph.py). Both follow the same conventions
(ties to the lowest k, NaN never wins, clipped windows). With CAM weights (K, H, W), choose-max compares W_k * |F_k|.
"""
from __future__ import annotations

import importlib.util
import math
from abc import ABC, abstractmethod
from functools import lru_cache

import torch

from semfuse_rt.engine.limits.option_checks import check_window
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.rule_graph import export_rule_graph
from semfuse_rt.kernels import torch_rules
from semfuse_rt.kernels.source import MAX_INPUTS


@lru_cache(maxsize=None)
def _kernel_runner(device_index: int):
    """One KernelRunner per GPU for the process, or None where the kernels cannot load."""
    if importlib.util.find_spec("cuda") is None:
        return None
    from semfuse_rt.kernels.runner import KernelRunner

    try:
        return KernelRunner(device_index).__enter__()
    except Exception:  # no driver, NVRTC or cubin: the torch twins compute the same rule
        return None


def _kernels_for(features: torch.Tensor):
    """The kernels where they apply (a GPU, a float type, no more inputs than they take)."""
    if features.is_cuda and features.dtype in (torch.float32, torch.float16) and len(features) <= MAX_INPUTS:
        return _kernel_runner(features.device.index or 0)
    return None


def _dtype_name(features: torch.Tensor) -> str:
    return {torch.float32: "float32", torch.float16: "float16"}[features.dtype]


class FeatureRule(ABC):
    name: str

    @abstractmethod
    def fuse(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(K, C, H, W) features, optional (K, H, W) CAM weights -> (C, H, W) target."""

    @abstractmethod
    def graph(self, weighted: bool = False):
        """The rule's ONNX graph file (export/graphs/rule_graph.py), exported on first use."""


class ChooseMax(FeatureRule):
    """Per element, the input whose (weighted) magnitude is largest."""

    name = "max"

    def choose(self, features: torch.Tensor, weights: torch.Tensor | None):
        """(fused, int32 labels) of the choice; the kernel path when the features are on a GPU."""
        features = features.contiguous()
        kernels = _kernels_for(features)
        if kernels is None:
            maps = list(features)
            if weights is None:
                return torch_rules.choose_max(maps)
            return torch_rules.cam_choose_max(maps, list(weights))
        k, c, h, w = features.shape
        inputs = [features[i].data_ptr() for i in range(k)]
        fused = torch.empty_like(features[0])
        labels = torch.empty((c, h, w), dtype=torch.int32, device=features.device)
        stream = torch.cuda.current_stream(features.device).cuda_stream
        if weights is None:
            kernels.choose_max(inputs, fused.data_ptr(), labels.data_ptr(), c * h * w, _dtype_name(features),
                               stream=stream)
        else:
            weights = weights.to(torch.float32).contiguous()
            kernels.cam_choose_max(inputs, [weights[i].data_ptr() for i in range(k)], fused.data_ptr(),
                                   labels.data_ptr(), (1, c, h, w), _dtype_name(features), stream=stream)
        return fused, labels

    def fuse(self, features, weights=None):
        return self.choose(features, weights)[0]

    def reduce_into(self, target: torch.Tensor, features: torch.Tensor, band: int = 1 << 20,
                    nonnegative: bool = False) -> torch.Tensor:
        """One step of choose-max as a running reduction over the inputs, in place: where the
        next input's key beats the target's, take its value (ties stay with the earlier
        input, NaN never wins). Both (1, C, H, W). Done a band of rows (about `band`
        elements) at a time, so the keys are cache-sized temporaries instead of full-size
        maps: at 2 x 64 x 1000^2 on the 2-core VM, 0.18 s and no memory beyond the maps,
        against 0.43 s and about 2 GB of temporaries for the rule graph on ONNX Runtime.

        `nonnegative`: the maps are a ReLU's or a pool's over one (export/networks/vgg19.py
        `is_nonnegative`), so the magnitude is the value and a tie is the same value: the
        rule is `fmax` (which also lets no NaN win), one pass instead of seven."""
        if nonnegative:
            return torch.fmax(target, features, out=target)
        rows = max(1, band // max(1, target.shape[1] * target.shape[3]))
        for top in range(0, target.shape[2], rows):
            kept, offered = target[0, :, top:top + rows], features[0, :, top:top + rows]
            wins = offered.abs().nan_to_num_(nan=-math.inf) > kept.abs().nan_to_num_(nan=-math.inf)
            kept.copy_(torch.where(wins, offered, kept))
        return target

    def graph(self, weighted=False):
        return export_rule_graph("max", weighted=weighted)


class Majority(ChooseMax):
    """Choose-max, then each element takes the label most common in its window x window
    neighbourhood of the same channel (docs/method.md, "local majority")."""

    name = "majority"

    def __init__(self, window: int = 5):
        self.window = check_window(window)

    def graph(self, weighted=False):
        return export_rule_graph("majority", self.window, weighted)

    def fuse(self, features, weights=None):
        features = features.contiguous()
        fused, labels = self.choose(features, weights)
        kernels = _kernels_for(features)
        if kernels is None:
            return torch_rules.majority_fuse(list(features), labels, self.window)[1]
        k, c, h, w = features.shape
        filtered = torch.empty_like(labels)
        kernels.majority_fuse([features[i].data_ptr() for i in range(k)], labels.data_ptr(), filtered.data_ptr(),
                              fused.data_ptr(), c, h, w, _dtype_name(features), self.window,
                              stream=torch.cuda.current_stream(features.device).cuda_stream)
        return fused


RULES: dict[str, type[FeatureRule]] = {rule.name: rule for rule in (ChooseMax, Majority)}


def feature_rule(name: str, window: int = 5) -> FeatureRule:
    if name not in RULES:
        raise SemfuseError(f"unknown fusion rule {name!r}; use one of {', '.join(RULES)}")
    return Majority(window) if RULES[name] is Majority else RULES[name]()


def fuse_features(features: torch.Tensor, rule: str, window: int = 5,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """F* by the named rule (`weights` (K, H, W): CAM-weighted)."""
    return feature_rule(rule, window).fuse(features, weights)
