"""CUDA backend for the first layer: the fused gradient kernel in the captured fixed-step loop.

At conv1_1 and relu1_1 (the paper's layer) the loss gradient is one kernel
(kernels/first_layer_gradient.cuh) that never stores the 64-channel activations, and the
whole optimisation (gradient kernel, loss reduction, fused Adam) is one CUDA graph with one
sync at the end: the loop of engine/trt_runtime.py with the kernel in the engine's place.
Features are the exported features graph's own computation, run by torch on the GPU.

Needs torch with CUDA and cuda-python; deeper layers use the other backends.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from semfuse_rt.engine.adam import AdamSchedule
from semfuse_rt.engine.backends.base import FusionRunner, Optimised, ProgressCallback
from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.export.weights import VGG19Weights

# layer -> whether the loss is taken after conv1_1's ReLU
LAYERS = {"conv1_1": False, "relu1_1": True}


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


class FirstLayerGradient:
    """The fused kernel behind the gradient-engine interface FixedStepLoop drives:
    set_input_shapes, shape and enqueue with image, target, loss and grad addresses."""

    def __init__(self, cuda, kernels, weights: VGG19Weights, layer: str):
        """`kernels`: a KernelRunner of this gradient's own; its constant memory takes the weights."""
        from semfuse_rt.export.gradient_graph import pixel_space_convs
        from semfuse_rt.export.vgg19 import VGG19Features

        self.cuda, self.kernels, self.relu = cuda, kernels, LAYERS[layer]
        offset, convs = pixel_space_convs(VGG19Features(weights.convs, layer), weights.normalisation)
        weight, bias = convs[0]
        self.parameters = {}
        for name, value in (("weight", weight), ("bias", bias), ("offset", offset)):
            array = np.ascontiguousarray(value.detach().float().numpy())
            buffer = self.parameters[name] = cuda.alloc(array.nbytes)
            cuda.upload(buffer.ptr, array)
        kernels.set_first_layer_weights(self.parameters["weight"].ptr, self.parameters["bias"].ptr,
                                        stream=cuda.stream)
        cuda.synchronize()
        # One scratch buffer per image shape, kept until close: captured loops hold its address.
        self._partials = {}
        self._shape = None

    def set_input_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        from semfuse_rt.kernels.runner import FIRST_LAYER_CHANNELS, check_first_layer_shape, first_layer_partials

        image = tuple(int(v) for v in shapes["image"])
        n, _, h, w = check_first_layer_shape(image)
        target = tuple(int(v) for v in shapes["target"])
        if target != (n, FIRST_LAYER_CHANNELS, h, w):
            raise SemfuseError(f"target {target} does not fit image {image} at this layer")
        if image not in self._partials:
            self._partials[image] = self.cuda.alloc(4 * first_layer_partials(image))
        self._shape = image

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape if name == "grad" else (self._shape[0],)

    def enqueue(self, addresses: dict[str, int], stream: int) -> None:
        self.kernels.first_layer_gradient(addresses["image"], addresses["target"], self.parameters["offset"].ptr,
                                          self._shape, self.relu, addresses["grad"], addresses["loss"],
                                          self._partials[self._shape].ptr, stream=stream)

    def close(self) -> None:
        for buffer in [*self.parameters.values(), *self._partials.values()]:
            self.cuda.free(buffer)
        self.parameters, self._partials = {}, {}


class CudaRunner(FusionRunner):
    name = "cuda"

    def __init__(self, weights: VGG19Weights, layer: str, *, device: int = 0):
        if layer not in LAYERS:
            raise SemfuseError(f"the cuda backend fuses at {' or '.join(LAYERS)}, not {layer}; "
                               "use --backend trt, ort or torch for deeper layers")
        self.weights, self.layer, self.device_index = weights, layer, device
        self.cuda = self.kernels = self.gradient = None
        self._loops = {}

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.device_index)

    def activate(self) -> None:
        from semfuse_rt.engine.trt_runtime import CudaDevice
        from semfuse_rt.export.gradient_graph import NormalisedFeatures
        from semfuse_rt.export.vgg19 import VGG19Features
        from semfuse_rt.kernels.runner import KernelRunner

        reason = unusable_reason(self.device_index)
        if reason is not None:
            raise SemfuseError(f"the cuda backend is not usable here: {reason}")
        chain = VGG19Features(self.weights.convs, self.layer).eval()
        self.model = NormalisedFeatures(chain, self.weights.normalisation).eval().to(self.device)
        self.cuda = CudaDevice(self.device_index)
        self.kernels = KernelRunner(self.device_index).__enter__()
        self.gradient = FirstLayerGradient(self.cuda, self.kernels, self.weights, self.layer)

    def deactivate(self) -> None:
        for loop in self._loops.values():
            loop.close()
        self._loops.clear()
        if self.gradient is not None:
            self.gradient.close()
            self.gradient = None
        if self.kernels is not None:
            self.kernels.__exit__(None, None, None)
            self.kernels = None
        if self.cuda is not None:
            self.cuda.close()
            self.cuda = None
        torch.cuda.empty_cache()

    def _tensor(self, value: torch.Tensor) -> torch.Tensor:
        return value.detach().to(self.device, torch.float32).contiguous()

    def _handover(self) -> None:
        """Torch's queued work on our tensors must finish before the runtime's stream reads them."""
        torch.cuda.current_stream(self.device).synchronize()

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self._tensor(pixels))

    def loss_and_grad(self, image: torch.Tensor, target: torch.Tensor):
        image, target = self._tensor(image), self._tensor(target)
        loss, grad = torch.empty(image.shape[0], device=self.device), torch.empty_like(image)
        self.gradient.set_input_shapes({"image": tuple(image.shape), "target": tuple(target.shape)})
        self._handover()
        self.gradient.enqueue({"image": image.data_ptr(), "target": target.data_ptr(), "loss": loss.data_ptr(),
                               "grad": grad.data_ptr()}, self.cuda.stream)
        self.cuda.synchronize()
        return loss, grad

    def optimise(self, init: torch.Tensor, target: torch.Tensor, schedule: AdamSchedule,
                 progress: ProgressCallback | None = None) -> Optimised:
        from semfuse_rt.engine.trt_runtime import FixedStepLoop, run_loop_on_device

        init, target = self._tensor(init), self._tensor(target)
        betas = (schedule.beta1, schedule.beta2)
        key = (tuple(init.shape), tuple(target.shape), schedule.steps, schedule.lr, betas, schedule.eps,
               schedule.decay)
        if key not in self._loops:
            self._loops[key] = FixedStepLoop(self.cuda, self.gradient, self.kernels, init.shape, target.shape,
                                             schedule.steps, schedule.lr, betas, schedule.eps, schedule.decay)
        image = torch.empty_like(init)
        self._handover()
        losses = run_loop_on_device(self.cuda, self._loops[key], init.data_ptr(), target.data_ptr(), image.data_ptr())
        if progress:
            for t in range(1, schedule.steps + 1):
                progress(t, schedule.steps, losses[t - 1])
        return Optimised(image, losses)
