"""The cuda backend on a GPU: the fused kernel's loss and gradient against float64 autograd,
and the captured loop against the Torch backend's loop on the CPU. Skipped without a GPU;
benchmarks/gpu_checks.sh runs it where one is lent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.engine.backends import create_runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("layer", ["relu1_1", "conv1_1"])
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 64, 48)])
def test_loss_and_grad_match_autograd(random_vgg_weights, layer, shape):
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(shape, generator=generator) * 255
    with create_runner("torch", random_vgg_weights, layer, device="cpu") as reference:
        target = reference.features(torch.rand(shape, generator=generator) * 255)
        model = reference.model.chain.double()
        x = image.double().requires_grad_(True)
        offset, scale = (t.double() for t in random_vgg_weights.normalisation.tensors())
        normalised = (x[:, list(random_vgg_weights.normalisation.order)] - offset) / scale
        want_loss = (model(normalised) - target.double()).square().sum(dim=(1, 2, 3))
        (want_grad,) = torch.autograd.grad(want_loss.sum(), x)
    with create_runner("cuda", random_vgg_weights, layer) as runner:
        loss, grad = runner.loss_and_grad(image.cuda(), target.cuda())
    assert torch.allclose(loss.cpu().double(), want_loss.detach(), rtol=1e-5, atol=0)
    error = (grad.cpu().double() - want_grad).abs().max() / want_grad.abs().max()
    assert error <= 1e-5


def test_captured_loop_follows_the_torch_loop(random_vgg_weights):
    generator = torch.Generator().manual_seed(2)
    pixels = torch.rand(2, 3, 45, 61, generator=generator) * 255
    init = pixels.mean(dim=0, keepdim=True)
    schedule = AdamSchedule(steps=30, lr=1.0)
    with create_runner("torch", random_vgg_weights, "relu1_1", device="cpu") as reference:
        target = reference.features(pixels).amax(dim=0, keepdim=True)
        want = reference.optimise(init, target, schedule)
    with create_runner("cuda", random_vgg_weights, "relu1_1") as runner:
        first = runner.optimise(init.cuda(), target.cuda(), schedule)
        again = runner.optimise(init.cuda(), target.cuda(), schedule)
    assert torch.equal(first.image, again.image) and first.losses == again.losses
    assert np.allclose(first.losses, want.losses, rtol=1e-3)
    assert (first.image.cpu() - want.image).abs().max() <= 1.0
