"""The fused first-layer gradient kernel (kernels/first_layer_gradient.cuh) through its host
build, against torch.autograd; and the cuda backend's behaviour where it cannot run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from semfuse_rt.engine.backends import available_backends, create_runner, resolve_backend
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.gradient_graph import pixel_space_convs
from semfuse_rt.export.networks.normalisation import CAFFE
from semfuse_rt.export.networks.vgg19 import VGG19Features
from support.kernels import host


def autograd_reference(image, target, weight, bias, offset, relu):
    x = torch.from_numpy(image).double().requires_grad_(True)
    z = F.conv2d(x - torch.from_numpy(offset).double().view(1, 3, 1, 1), torch.from_numpy(weight).double(),
                 torch.from_numpy(bias).double(), padding=1)
    activation = torch.relu(z) if relu else z
    loss = (activation - torch.from_numpy(target).double()).square().sum(dim=(1, 2, 3))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().numpy(), grad.numpy()


def random_problem(rng, n, h, w, scale=0.01):
    image = (rng.random((n, 3, h, w)) * 255).astype(np.float32)
    weight = (rng.standard_normal((64, 3, 3, 3)) * scale).astype(np.float32)
    bias = (rng.standard_normal(64) * 0.5).astype(np.float32)
    offset = np.array([123.7, 116.8, 103.9], np.float32)
    # Targets like fused ReLU features: non-negative, zero in places.
    target = np.maximum(rng.standard_normal((n, 64, h, w)), 0).astype(np.float32)
    return image, target, weight, bias, offset


def relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


# Sizes around the 16-pixel tile: one pixel, partial tiles, exact tiles, odd shapes.
@pytest.mark.parametrize("n,h,w", [(1, 1, 1), (1, 16, 16), (2, 37, 53), (1, 17, 33), (3, 5, 70)])
@pytest.mark.parametrize("relu", [True, False])
def test_matches_autograd(rng, n, h, w, relu):
    problem = random_problem(rng, n, h, w)
    loss, grad = host.first_layer_gradient(*problem, relu)
    want_loss, want_grad = autograd_reference(*problem, relu)
    assert relative_error(loss, want_loss) <= 1e-5
    assert relative_error(grad, want_grad) <= 1e-5


def test_relu_mask_matters(rng):
    """With a large negative bias most units are off: the masked gradient must differ."""
    image, target, weight, bias, offset = random_problem(rng, 1, 20, 20)
    bias -= 3.0
    _, with_mask = host.first_layer_gradient(image, target, weight, bias, offset, True)
    _, without = host.first_layer_gradient(image, target, weight, bias, offset, False)
    assert relative_error(with_mask, without) > 0.1
    assert relative_error(with_mask, autograd_reference(image, target, weight, bias, offset, True)[1]) <= 1e-5


def test_folded_vgg_weights_give_the_features_graph_loss(rng):
    """With conv1_1 folded as the exported graphs fold it, the kernel's loss is the loss of
    VGG19's own relu1_1 on the normalised image."""
    generator = torch.Generator().manual_seed(3)
    convs = {"conv1_1": (torch.randn(64, 3, 3, 3, generator=generator) * 0.05, torch.randn(64, generator=generator))}
    features = VGG19Features(convs, "relu1_1")
    offset, folded = pixel_space_convs(features, CAFFE)
    pixels = torch.rand(1, 3, 23, 31, generator=generator) * 255
    target = torch.relu(torch.randn(1, 64, 23, 31, generator=generator))
    with torch.no_grad():
        want = (features(CAFFE.apply(pixels)) - target).square().sum().item()
    loss, _ = host.first_layer_gradient(pixels.numpy(), target.numpy(), folded[0][0].numpy(), folded[0][1].numpy(),
                                        offset.numpy(), True)
    assert abs(loss[0] - want) <= 1e-5 * want


def test_rejects_shapes_it_cannot_take(rng):
    image, target, weight, bias, offset = random_problem(rng, 1, 8, 8)
    with pytest.raises(ValueError):
        host.first_layer_gradient(image[:, :2], target, weight, bias, offset, True)
    with pytest.raises(ValueError):
        host.first_layer_gradient(image, target[:, :32], weight, bias, offset, True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_backend_says_why_it_cannot_run(random_vgg_weights):
    assert "cuda" not in available_backends("relu1_1")
    with pytest.raises(SemfuseError, match="not usable here at relu1_1"):
        resolve_backend("cuda", "relu1_1")
    with pytest.raises(SemfuseError, match="not usable here"), create_runner("cuda", random_vgg_weights, "relu1_1"):
        pass


def test_cuda_backend_refuses_deeper_layers(random_vgg_weights):
    with pytest.raises(SemfuseError, match="relu1_2"):
        create_runner("cuda", random_vgg_weights, "relu1_2")
