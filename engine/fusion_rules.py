"""The target map F* (method.md): K feature maps (K, C, H, W) -> (C, H, W).

On a CUDA device with cuda-python the custom kernels run on torch's current stream, on
torch's own buffers; everywhere else their torch-op twins in `kernels.torch_rules` do.
Both follow the same conventions (ties to the lowest k, NaN never wins, clipped windows).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch

from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.kernels import torch_rules

RULES = ("max", "majority")


def check_rule(rule: str, window: int) -> None:
    if rule not in RULES:
        raise SemfuseError(f"unknown fusion rule {rule!r}; use one of {', '.join(RULES)}")
    if rule == "majority" and (window < 1 or window % 2 == 0):
        raise SemfuseError(f"majority window must be an odd positive number, got {window}")


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


def _fuse_with_kernels(runner, features, rule, window, weights):
    k, c, h, w = features.shape
    dtype = {torch.float32: "float32", torch.float16: "float16"}[features.dtype]
    inputs = [features[i].data_ptr() for i in range(k)]
    fused = torch.empty_like(features[0])
    labels = torch.empty((c, h, w), dtype=torch.int32, device=features.device)
    stream = torch.cuda.current_stream(features.device).cuda_stream
    if weights is None:
        runner.choose_max(inputs, fused.data_ptr(), labels.data_ptr(), c * h * w, dtype, stream=stream)
    else:
        weights = weights.to(torch.float32).contiguous()
        runner.cam_choose_max(inputs, [weights[i].data_ptr() for i in range(k)], fused.data_ptr(),
                              labels.data_ptr(), (1, c, h, w), dtype, stream=stream)
    if rule == "majority":
        filtered = torch.empty_like(labels)
        runner.majority_fuse(inputs, labels.data_ptr(), filtered.data_ptr(), fused.data_ptr(),
                             c, h, w, dtype, window, stream=stream)
    return fused


def fuse_features(features: torch.Tensor, rule: str, window: int = 5,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """F* by choose-max (`weights` (K, H, W): CAM-weighted), then the majority filter."""
    check_rule(rule, window)
    features = features.contiguous()
    if features.is_cuda and features.dtype in (torch.float32, torch.float16):
        runner = _kernel_runner(features.device.index or 0)
        if runner is not None:
            return _fuse_with_kernels(runner, features, rule, window, weights)
    maps = list(features)
    if weights is None:
        fused, labels = torch_rules.choose_max(maps)
    else:
        fused, labels = torch_rules.cam_choose_max(maps, list(weights))
    if rule == "majority":
        _, fused = torch_rules.majority_fuse(maps, labels, window)
    return fused
