import torch

from semfuse_rt.engine.adam import AdamSchedule, adam_update


def test_adam_update_takes_torch_optim_adams_steps():
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(1, 3, 8, 9, generator=generator) * 50
    grads = [torch.randn(1, 3, 8, 9, generator=generator) * 10 ** (i % 4 - 2) for i in range(25)]
    schedule = AdamSchedule(steps=25, lr=0.7)

    x, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        adam_update(x, m, v, g, t, schedule)

    reference = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([reference], lr=0.7)
    for g in grads:
        reference.grad = g.clone()
        optimiser.step()
    # Two float32 ulps at 128: the same arithmetic, not necessarily fused the same way.
    assert torch.allclose(x, reference.detach(), rtol=0, atol=2e-5)
    assert not torch.allclose(x, start)
