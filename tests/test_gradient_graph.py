"""The explicit loss gradient (what the engines run) against torch.autograd."""
import pytest
import torch

from semfuse_rt.export.graphs.gradient_graph import ExplicitLossGradient
from semfuse_rt.export.networks.normalisation import CAFFE, TORCHVISION
from semfuse_rt.export.networks.vgg19 import VGG19Features, conv_shapes, CONV_NAMES


def random_convs(generator):
    return {
        name: (torch.randn(c_out, c_in, 3, 3, generator=generator, dtype=torch.float64) * (2.0 / (9 * c_in)) ** 0.5,
               torch.randn(c_out, generator=generator, dtype=torch.float64) * 0.1)
        for name, (c_in, c_out) in zip(CONV_NAMES[:5], conv_shapes()[:5])
    }


def autograd_reference(features, normalisation, pixels, target):
    x = pixels.clone().requires_grad_(True)
    loss = (features(normalisation.apply(x)) - target).square().sum(dim=(1, 2, 3))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


@pytest.mark.parametrize("layer", ["conv1_1", "relu1_1", "relu1_2", "pool1", "relu2_1", "pool2", "relu3_1"])
@pytest.mark.parametrize("normalisation", [CAFFE, TORCHVISION], ids=["caffe", "torchvision"])
def test_explicit_gradient_matches_autograd_random_weights(layer, normalisation):
    generator = torch.Generator().manual_seed(hash((layer, normalisation.name)) % 2**31)
    features = VGG19Features({k: v for k, v in random_convs(generator).items()}, layer).double()
    explicit = ExplicitLossGradient(features, normalisation).double()
    pixels = torch.rand(2, 3, 37, 53, generator=generator, dtype=torch.float64) * 255
    other = torch.rand(2, 3, 37, 53, generator=generator, dtype=torch.float64) * 255
    target = features(normalisation.apply(other)).detach()
    loss, grad = explicit(pixels, target)
    want_loss, want_grad = autograd_reference(features, normalisation, pixels, target)
    assert torch.allclose(loss, want_loss, rtol=1e-12)
    assert ((grad - want_grad).norm() / want_grad.norm()).item() < 1e-12


def test_explicit_gradient_matches_autograd_real_weights(vgg_weights):
    generator = torch.Generator().manual_seed(7)
    for layer in ("relu1_1", "relu1_2"):
        features = VGG19Features(vgg_weights.convs, layer)
        explicit = ExplicitLossGradient(features, vgg_weights.normalisation)
        pixels = torch.rand(1, 3, 33, 47, generator=generator) * 255
        target = features(vgg_weights.normalisation.apply(torch.rand(1, 3, 33, 47, generator=generator) * 255))
        loss, grad = explicit(pixels, target)
        want_loss, want_grad = autograd_reference(features, vgg_weights.normalisation, pixels, target)
        assert torch.allclose(loss, want_loss, rtol=1e-5)
        assert ((grad - want_grad).norm() / want_grad.norm()).item() < 1e-5
