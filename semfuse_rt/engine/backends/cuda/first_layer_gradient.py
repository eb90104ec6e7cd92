"""The fused first-layer loss-gradient kernel behind the GradientEngine interface that the
captured loop drives: at conv1_1/relu1_1 the gradient is one kernel
(kernels/first_layer_gradient.cuh) that never stores the 64-channel activations."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import VGG19Weights

if TYPE_CHECKING:  # it needs cuda-python at import
    from semfuse_rt.engine.backends.cuda_device import DeviceBuffer

# layer -> whether the loss is taken after conv1_1's ReLU
LAYERS = {"conv1_1": False, "relu1_1": True}


class FirstLayerGradient:
    """The fused kernel behind the gradient-engine interface FixedStepLoop drives:
    set_input_shapes, shape and enqueue with image, target, loss and grad addresses."""

    def __init__(self, cuda, kernels, weights: VGG19Weights, layer: str):
        """`kernels`: a KernelRunner of this gradient's own; its constant memory takes the weights."""
        from semfuse_rt.export.graphs.gradient_graph import pixel_space_convs
        from semfuse_rt.export.networks.vgg19 import VGG19Features

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
        self._partials: dict[tuple[int, ...], DeviceBuffer] = {}
        self._shape: tuple[int, ...] | None = None

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

    @property
    def _image_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            raise RuntimeError("set_input_shapes() comes before shape() and enqueue()")
        return self._shape

    def shape(self, name: str) -> tuple[int, ...]:
        return self._image_shape if name == "grad" else (self._image_shape[0],)

    def enqueue(self, addresses: dict[str, int], stream: int) -> None:
        image = self._image_shape
        self.kernels.first_layer_gradient(addresses["image"], addresses["target"], self.parameters["offset"].ptr,
                                          image, self.relu, addresses["grad"], addresses["loss"],
                                          self._partials[image].ptr, stream=stream)

    def close(self) -> None:
        for buffer in [*self.parameters.values(), *self._partials.values()]:
            self.cuda.free(buffer)
        self.parameters, self._partials = {}, {}
