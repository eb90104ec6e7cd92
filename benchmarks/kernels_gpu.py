"""GPU parity and achieved bandwidth of the CUDA fusion kernels.

    python benchmarks/kernels_gpu.py [--channels 64 --height 1024 --width 1024 --repeats 30]

Needs a CUDA GPU, torch built with CUDA, and cuda-python. First every kernel is checked
against the Torch rules on the same device tensors (tests/support/kernels/gpu_parity.py). Then
each kernel is timed with CUDA events on torch's current stream, and the bytes it must move
(tests/support/kernels/traffic.py, explained in kernels/README.md) are divided by its time and
compared with the bandwidth of a device-to-device copy measured in the same run.

Exit status: 0 when parity holds and choose-max (K = 2, fp16) reaches at least 70% of the
copy bandwidth; 1 when either fails; 2, with one line on stderr, when there is no GPU or no
cuda-python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The parity check and the traffic model are test-only code, in tests/support/ rather than in
# the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TARGET_FRACTION_OF_COPY = 0.70
COPY_BYTES = 512 * 1024 * 1024


def unavailable_reason() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed"
    # The kernels need what the cuda backend needs: a GPU visible to torch and cuda-python.
    from semfuse_rt.engine.backends.cuda.loader import unusable_reason

    return unusable_reason()


def mean_time_ms(launch, repeats: int) -> float:
    """Mean time of `launch()` on torch's current stream, after warm-up launches."""
    import torch

    for _ in range(3):
        launch()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        launch()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of a device-to-device copy (each byte read once, written once)."""
    import torch

    source = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    milliseconds = mean_time_ms(lambda: target.copy_(source), repeats)
    return 2 * COPY_BYTES / (milliseconds * 1e-3)


def measure_kernels(runner, c: int, h: int, w: int, repeats: int):
    """(name, milliseconds, bytes moved) for each kernel on one C x H x W feature map."""
    import torch

    from support.kernels import traffic

    stream = torch.cuda.current_stream().cuda_stream
    shape = (1, c, h, w)
    elements = c * h * w
    results = []

    def features(k, dtype):
        return [torch.randn(shape, device="cuda").to(dtype) for _ in range(k)]

    def time_choose_max(k, dtype, size):
        inputs = features(k, dtype)
        fused = torch.empty_like(inputs[0])
        labels = torch.empty(shape, dtype=torch.int32, device="cuda")
        name = str(dtype).removeprefix("torch.")
        pointers = [f.data_ptr() for f in inputs]
        ms = mean_time_ms(
            lambda: runner.choose_max(
                pointers, fused.data_ptr(), labels.data_ptr(), elements, name, stream=stream
            ),
            repeats,
        )
        return (f"choose_max {name} K={k}", ms, traffic.choose_max_bytes(k, elements, size))

    for k, dtype, size in ((2, torch.float16, 2), (3, torch.float16, 2), (2, torch.float32, 4)):
        results.append(time_choose_max(k, dtype, size))

    def time_selection_kernels():
        """CAM choose-max and the majority filter on one K = 2 fp16 problem."""
        timings = []
        inputs = features(2, torch.float16)
        weights = [torch.rand((1, h, w), device="cuda") for _ in range(2)]
        fused = torch.empty_like(inputs[0])
        labels = torch.empty(shape, dtype=torch.int32, device="cuda")
        pointers = [f.data_ptr() for f in inputs]
        weight_pointers = [x.data_ptr() for x in weights]
        ms = mean_time_ms(
            lambda: runner.cam_choose_max(
                pointers,
                weight_pointers,
                fused.data_ptr(),
                labels.data_ptr(),
                shape,
                "float16",
                stream=stream,
            ),
            repeats,
        )
        timings.append(("cam_choose_max float16 K=2", ms, traffic.cam_choose_max_bytes(2, 1, c, h, w, 2)))

        runner.choose_max(
            pointers,
            fused.data_ptr(),
            labels.data_ptr(),
            elements,
            "float16",
            stream=stream,
        )
        filtered = torch.empty_like(labels)
        ms = mean_time_ms(
            lambda: runner.majority_filter(
                labels.data_ptr(), filtered.data_ptr(), 2, c, h, w, 5, stream=stream
            ),
            repeats,
        )
        timings.append(("majority_filter w=5", ms, traffic.majority_filter_bytes(elements)))
        ms = mean_time_ms(
            lambda: runner.majority_fuse(
                pointers,
                labels.data_ptr(),
                filtered.data_ptr(),
                fused.data_ptr(),
                c,
                h,
                w,
                "float16",
                window=5,
                stream=stream,
            ),
            repeats,
        )
        timings.append(("majority_fuse float16 K=2 w=5", ms, traffic.majority_fuse_bytes(elements, 2)))
        return timings

    def time_adam():
        timings = []
        x, g, m, v = (torch.randn(elements, device="cuda") for _ in range(4))
        v.abs_()
        step = torch.ones(1, dtype=torch.int32, device="cuda")
        ms = mean_time_ms(
            lambda: runner.adam_update(
                x.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), elements, 10, 0.01, stream=stream
            ),
            repeats,
        )
        timings.append(("adam_update", ms, traffic.adam_bytes(elements)))
        ms = mean_time_ms(
            lambda: runner.adam_update_device_step(
                x.data_ptr(),
                g.data_ptr(),
                m.data_ptr(),
                v.data_ptr(),
                elements,
                step.data_ptr(),
                0.01,
                stream=stream,
            ),
            repeats,
        )
        timings.append(("adam_update_device_step", ms, traffic.adam_bytes(elements)))
        return timings

    results.extend(time_selection_kernels())
    results.extend(time_adam())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args(argv)

    reason = unavailable_reason()
    if reason is not None:
        print(f"kernels_gpu: cannot run here: {reason}", file=sys.stderr)
        return 2

    import torch

    from semfuse_rt.kernels.runner import KernelRunner
    from support.kernels.gpu_parity import check_parity

    torch.cuda.set_device(args.device)
    print(f"device: {torch.cuda.get_device_name(args.device)}")
    with KernelRunner(args.device) as runner:
        print(f"compute capability: {runner.compute_capability}")
        parity = check_parity(runner)
        for result in parity:
            print(f"parity  {'ok  ' if result.ok else 'FAIL'}  {result.check}  {result.detail}")
        parity_ok = all(result.ok for result in parity)

        copy = copy_bandwidth(args.repeats)
        print(f"device-to-device copy: {copy / 1e9:.0f} GB/s")
        fractions = {}
        for name, ms, moved in measure_kernels(runner, args.channels, args.height, args.width, args.repeats):
            bandwidth = moved / (ms * 1e-3)
            fractions[name] = bandwidth / copy
            print(
                f"{name:32s} {ms:8.3f} ms {moved / 1e6:9.1f} MB "
                f"{bandwidth / 1e9:7.0f} GB/s {100 * fractions[name]:5.1f}% of copy"
            )

    target = fractions["choose_max float16 K=2"]
    target_ok = target >= TARGET_FRACTION_OF_COPY
    verdict = "met" if target_ok else "NOT met"
    print(
        f"choose_max float16 K=2 on {args.channels} x {args.height} x {args.width}: "
        f"{100 * target:.1f}% of copy bandwidth (target {100 * TARGET_FRACTION_OF_COPY:.0f}%): {verdict}"
    )
    print(f"parity: {'ok' if parity_ok else 'FAILED'}")
    return 0 if parity_ok and target_ok else 1


if __name__ == "__main__":
    sys.exit(main())
