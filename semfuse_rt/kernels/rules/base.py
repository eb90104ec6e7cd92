"""`FeatureRule`, what every rule module defines: the rule's torch form, its kernels on a
GPU, and the choice between them by where the features are."""
from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from semfuse_rt.kernels.source import MAX_INPUTS

if TYPE_CHECKING:
    from semfuse_rt.kernels.runner import KernelRunner

# A streamed target's inputs: features(k) gives input k's maps (1, C, H, W).
InputFeatures = Callable[[int], torch.Tensor]


@lru_cache(maxsize=None)
def _kernel_runner(device_index: int) -> KernelRunner | None:
    """One KernelRunner per GPU for the process, or None where the kernels cannot load."""
    if importlib.util.find_spec("cuda") is None:
        return None
    from semfuse_rt.kernels.runner import KernelRunner

    try:
        return KernelRunner(device_index).__enter__()
    except Exception:  # no driver, NVRTC or cubin: the torch form computes the same rule
        return None


def kernels_for(features: torch.Tensor) -> KernelRunner | None:
    """The kernels where they apply (a GPU, a float type, no more inputs than they take)."""
    if features.is_cuda and features.dtype in (torch.float32, torch.float16) and len(features) <= MAX_INPUTS:
        return _kernel_runner(features.device.index or 0)
    return None


def dtype_name(features: torch.Tensor) -> str:
    return {torch.float32: "float32", torch.float16: "float16"}[features.dtype]


def stream_of(features: torch.Tensor) -> int:
    """Torch's current stream on the features' GPU: the kernels run in its order."""
    return torch.cuda.current_stream(features.device).cuda_stream


class FeatureRule(ABC):
    name: str
    # The entry points of its kernels in fusion_kernels.cu (one per feature type where the
    # name has an _f32/_f16 suffix); empty for a rule that has none.
    kernels: tuple[str, ...] = ()
    # A running reduction: the target of inputs 0..k and input k+1's maps give the target of
    # 0..k+1, so a streamed target holds two inputs' maps at a time and needs one pass.
    running_reduction: bool = False

    @classmethod
    def with_options(cls, window: int) -> FeatureRule:
        """The rule with the options it takes (its registry entry says which: a torch-free
        method check asks there)."""
        return cls()

    @abstractmethod
    def module(self) -> nn.Module:
        """The torch form: (features (K, C, h, w), weights (K, h, w) or None) -> (1, C, h, w).
        It runs where the kernels do not, and is what the rule's ONNX graph is exported from."""

    def graph_name(self, weighted: bool) -> str:
        """The file name of its ONNX graph (export/graphs/rule_graph.py)."""
        return f"rule-{self.name}{'-weighted' if weighted else ''}.onnx"

    def fuse(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(K, C, H, W) features, optional (K, H, W) CAM weights -> (C, H, W) target: its
        kernels where they apply, else its torch form."""
        features = features.contiguous()
        kernels = kernels_for(features)
        if kernels is None:
            with torch.no_grad():
                return self.module().to(features.device)(features, weights)[0]
        return self.fuse_on_kernels(kernels, features, weights)

    @abstractmethod
    def fuse_on_kernels(self, kernels: KernelRunner, features: torch.Tensor,
                        weights: torch.Tensor | None) -> torch.Tensor:
        """fuse(), by its kernels on the features' GPU."""

    @abstractmethod
    def streamed_target(self, count: int, features: InputFeatures, fuse: Callable[[torch.Tensor], torch.Tensor],
                        lap: Callable[[], None], nonnegative: bool = False) -> torch.Tensor:
        """The target (1, C, H, W) of `count` inputs whose maps come one input at a time from
        `features`, so that memory does not grow with the count. `fuse` runs the rule on a
        stack (K, C, H, W) where the features are (a runner's fuse_features); `lap` marks the
        end of each step for the stage clock; `nonnegative`: the maps are a ReLU's or a
        pool's over one (export/networks/vgg19.py `is_nonnegative`)."""
