"""GPU parity: every CUDA kernel against the Torch rules on the same CUDA tensors.

Used by benchmarks/kernels_gpu.py and by the GPU-only test. Selections (labels, fused maps)
must be bit-identical; Adam within rtol 1e-5, atol 1e-6 after 10 steps (nvcc and torch
may each fuse different multiply-adds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.torch_rules import adam_update
from semfuse_rt.kernels import torch_rules
from semfuse_rt.kernels.runner import KernelRunner


@dataclass(frozen=True)
class ParityResult:
    check: str
    ok: bool
    detail: str = ""


def _tie_prone(generator: torch.Generator, shape, dtype, device) -> torch.Tensor:
    values = torch.randint(-3, 4, shape, generator=generator, device=device).float() * 0.5
    values[torch.rand(shape, generator=generator, device=device) < 0.02] = float("nan")
    return values.to(dtype)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    view = torch.int16 if a.dtype == torch.float16 else torch.int32
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def _misaligned_copy(t: torch.Tensor) -> torch.Tensor:
    """Same values, data one element past a 16-byte boundary: forces the scalar path."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


def check_parity(runner: KernelRunner, shape=(2, 16, 67, 129), seed: int = 0) -> list[ParityResult]:
    device = torch.device("cuda", runner.device_ordinal)
    generator = torch.Generator(device=device).manual_seed(seed)
    stream = torch.cuda.current_stream(device).cuda_stream
    n, c, h, w = shape
    results = []
    for dtype in (torch.float32, torch.float16):
        name = str(dtype).removeprefix("torch.")
        for k in (2, 3):
            features = [_tie_prone(generator, shape, dtype, device) for _ in range(k)]
            for aligned in (True, False):
                inputs = features if aligned else [_misaligned_copy(f) for f in features]
                fused = torch.empty_like(features[0]) if aligned else _misaligned_copy(features[0])
                labels = torch.empty(shape, dtype=torch.int32, device=device)
                runner.choose_max(
                    [f.data_ptr() for f in inputs],
                    fused.data_ptr(),
                    labels.data_ptr(),
                    fused.numel(),
                    name,
                    stream=stream,
                )
                expected_fused, expected_labels = torch_rules.choose_max(features)
                ok = torch.equal(labels, expected_labels) and _same_bits(fused, expected_fused)
                placement = "aligned" if aligned else "misaligned"
                results.append(ParityResult(f"choose_max {name} K={k} {placement}", ok))

            weights = [
                torch.randint(0, 5, (n, h, w), generator=generator, device=device).float() / 4
                for _ in range(k)
            ]
            fused = torch.empty_like(features[0])
            cam_labels = torch.empty(shape, dtype=torch.int32, device=device)
            runner.cam_choose_max(
                [f.data_ptr() for f in features],
                [x.data_ptr() for x in weights],
                fused.data_ptr(),
                cam_labels.data_ptr(),
                shape,
                name,
                stream=stream,
            )
            expected_fused, expected_labels = torch_rules.cam_choose_max(features, weights)
            ok = torch.equal(cam_labels, expected_labels) and _same_bits(fused, expected_fused)
            results.append(ParityResult(f"cam_choose_max {name} K={k}", ok))

            _, labels = torch_rules.choose_max(features)
            for window in (3, 5):
                filtered = torch.empty_like(labels)
                fused = torch.empty_like(features[0])
                runner.majority_fuse(
                    [f.data_ptr() for f in features],
                    labels.data_ptr(),
                    filtered.data_ptr(),
                    fused.data_ptr(),
                    n * c,
                    h,
                    w,
                    name,
                    window=window,
                    stream=stream,
                )
                expected_labels, expected_fused = torch_rules.majority_fuse(features, labels, window)
                ok = torch.equal(filtered, expected_labels) and _same_bits(fused, expected_fused)
                results.append(ParityResult(f"majority_fuse {name} K={k} w={window}", ok))
                only_labels = torch.empty_like(labels)
                runner.majority_filter(
                    labels.data_ptr(), only_labels.data_ptr(), k, n * c, h, w, window, stream=stream
                )
                results.append(
                    ParityResult(
                        f"majority_filter K={k} w={window}", torch.equal(only_labels, expected_labels)
                    )
                )
    results.extend(_adam_parity(runner, generator, device, stream))
    torch.cuda.synchronize(device)
    return results


def _adam_parity(runner: KernelRunner, generator, device, stream) -> list[ParityResult]:
    lr = 0.7
    x0 = torch.randn((3, 301, 257), generator=generator, device=device) * 50
    host_t = [x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)]
    device_t = [x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)]
    rules = [x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)]
    step = torch.zeros(1, dtype=torch.int32, device=device)
    for t in range(1, 11):
        g = torch.randn(x0.shape, generator=generator, device=device) * 10.0 ** (t % 4 - 2)
        x, m, v = host_t
        runner.adam_update(
            x.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), x.numel(), t, lr, stream=stream
        )
        runner.advance_step(step.data_ptr(), stream=stream)
        x, m, v = device_t
        runner.adam_update_device_step(
            x.data_ptr(),
            g.data_ptr(),
            m.data_ptr(),
            v.data_ptr(),
            x.numel(),
            step.data_ptr(),
            lr,
            stream=stream,
        )
        x, m, v = rules
        adam_update(x, m, v, g, t, AdamSchedule(steps=10, lr=lr))
    results = [ParityResult("adam step counter", int(step.item()) == 10, f"t = {int(step.item())}")]
    for label, state in (("adam host step", host_t), ("adam device step", device_t)):
        ok = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(state, rules, strict=True))
        worst = max(float((a - b).abs().max()) for a, b in zip(state, rules, strict=True))
        results.append(ParityResult(label, ok, f"max |diff| {worst:.3g}"))
    return results
