"""Sets up the cuda backend on one GPU: the device and its stream, the compiled kernels
(NVRTC, cached), the fused first-layer gradient with the weights in constant memory, and
the features chain as torch ops on the same GPU."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from semfuse_rt.engine.backends.cuda.first_layer_gradient import LAYERS, FirstLayerGradient
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import VGG19Weights

if TYPE_CHECKING:  # both need cuda-python at import
    from semfuse_rt.engine.backends.cuda_device import CudaDevice
    from semfuse_rt.kernels.runner import KernelRunner


@functools.cache
def unusable_reason(device: int = 0) -> str | None:
    """Why the CUDA backend cannot run here (no CUDA torch, no cuda-python), or None."""
    if not torch.cuda.is_available() or device >= torch.cuda.device_count():
        return "no CUDA GPU is visible to torch"
    from semfuse_rt.kernels.cuda_api import cuda_modules

    try:
        cuda_modules()
    except SemfuseError as error:
        return str(error)
    return None


def usable(layer: str | None = None) -> bool:
    return (layer is None or layer in LAYERS) and unusable_reason() is None


@dataclass
class CudaResources:
    cuda: CudaDevice
    kernels: KernelRunner  # entered
    gradient: FirstLayerGradient
    features: torch.nn.Module

    def close(self) -> None:
        self.gradient.close()
        self.kernels.__exit__(None, None, None)
        self.cuda.close()


class CudaKernelLoader:
    def __init__(self, weights: VGG19Weights, layer: str, *, device: int = 0):
        if layer not in LAYERS:
            raise SemfuseError(f"the cuda backend fuses at {' or '.join(LAYERS)}, not {layer}; "
                               "use --backend trt, ort or torch for deeper layers")
        self.weights, self.layer, self.device = weights, layer, device

    def __call__(self) -> CudaResources:
        from semfuse_rt.engine.backends.cuda_device import CudaDevice
        from semfuse_rt.export.graphs.gradient_graph import NormalisedFeatures
        from semfuse_rt.export.networks.vgg19 import VGG19Features
        from semfuse_rt.kernels.runner import KernelRunner

        reason = unusable_reason(self.device)
        if reason is not None:
            raise SemfuseError(f"the cuda backend is not usable here: {reason}")
        chain = VGG19Features(self.weights.convs, self.layer).eval()
        features = NormalisedFeatures(chain, self.weights.normalisation).eval().to(torch.device("cuda", self.device))
        cuda = CudaDevice(self.device)
        kernels = KernelRunner(self.device).__enter__()
        return CudaResources(cuda, kernels, FirstLayerGradient(cuda, kernels, self.weights, self.layer), features)
