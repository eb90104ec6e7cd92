"""GPU check of the TensorRT backend: build, parity, latency.

    python benchmarks/trt_gpu_check.py [--layer relu1_1 --size 512 --steps 100 --repeats 10]
                                       [--precisions fp16,fp32] [--pairs 4] [--json PATH]

Runs on a GPU machine with torch (CUDA), cuda-python and, where present, TensorRT, CuPy and
onnxruntime-gpu; needs no network and no installed semfuse-rt (it imports the package from
this checkout). Whatever cannot run here is listed as NOT MEASURED with the reason.

1. Builds the ONNX graphs and, with TensorRT, the engines for each precision (timed).
2. Loop check without TensorRT: the runtime's captured fixed-step loop (engine/backends/captured_loop.py:
   CUDA graph, fused Adam kernel, per-step loss slots, one sync) driven by a CuPy quadratic
   gradient, against the same Adam on the host.
3. Parity on the shared pairs (max difference in grey levels): fused images from Torch on
   CUDA and from the cuda backend (fusion rules in the CUDA kernels) against Torch on the CPU
   (target <= 1), and with TensorRT at each precision against the fp32 Torch reference
   (target <= 2 for fp16).
4. Latency for 2 x SIZE^2 RGB at LAYER, STEPS steps, data on the device: the optimisation loop
   alone and end to end (features, fusion rule, loop, result), for TensorRT fp16/fp32,
   ONNX Runtime CUDA, the cuda backend (fused first-layer gradient kernel, relu1_1 and
   conv1_1 only), Torch CUDA eager autograd, Torch CUDA graph, and the exported graphs
   (explicit backward) run by torch as one CUDA graph. Targets (H100):
   TensorRT end to end <= 5 ms and >= 10x faster than Torch eager.

Exit status: 0 every check ran and passed; 1 a check failed; 2 no GPU (one line on stderr);
3 ran, but the TensorRT checks could not (TensorRT absent).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The quadratic runner is test-only code, in tests/support/ rather than in the installed package.
sys.path.insert(0, str(ROOT / "tests"))
TARGET_MS = 5.0
TARGET_SPEEDUP = 10.0
TARGET_GREY_LEVELS = 2


def bootstrap() -> list[str]:
    """Import semfuse_rt from this checkout when it is not installed; returns notes."""
    notes = []
    try:
        importlib.import_module("semfuse_rt.engine")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import semfuse_rt

        # pyproject maps semfuse_rt.engine/export/kernels onto the top-level folders.
        semfuse_rt.__path__.append(str(ROOT))
        notes.append("semfuse_rt imported from the checkout (not installed)")
    try:
        importlib.import_module("platformdirs")
    except ImportError:
        # Only semfuse_rt/cache.py uses it, for the cache root; SEMFUSE_RT_CACHE overrides it anyway.
        shim = types.ModuleType("platformdirs")
        shim.user_cache_dir = lambda name: str(Path.home() / ".cache" / name)
        sys.modules["platformdirs"] = shim
        notes.append("platformdirs missing: cache root ~/.cache/semfuse-rt")
    return notes


def unavailable_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def module_state(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # absent, or present but broken
        return f"absent ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return getattr(module, "__version__", "present")


def environment() -> dict:
    import torch

    properties = torch.cuda.get_device_properties(0)
    info = {
        "gpu": properties.name,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda})",
        "tensorrt": module_state("tensorrt"),
        "cupy": module_state("cupy"),
        "onnx": module_state("onnx"),
        "onnxruntime": module_state("onnxruntime"),
    }
    try:
        from cuda.bindings import runtime  # noqa: F401

        info["cuda-python"] = module_state("cuda.bindings")
    except ImportError:
        info["cuda-python"] = module_state("cuda")
    try:
        import onnxruntime

        info["ort providers"] = ", ".join(onnxruntime.get_available_providers())
    except Exception:
        pass
    return info


def load_weights(layer: str):
    """The Oxford weights when cached here, else seeded random ones (timings are the same;
    parity still compares backends on one set of weights)."""
    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.export.networks.weights import load_vgg19, random_vgg19

    try:
        return load_vgg19(show_progress=False), "Oxford VGG19"
    except (SemfuseError, OSError, ImportError) as error:
        reason = str(error).splitlines()[0]
    return random_vgg19(), f"random, seeded ({reason})"


def shared_pairs(limit: int) -> list[tuple[str, list]]:
    from semfuse_rt.engine.io.images import load_image

    root = Path(os.environ.get("SEMFUSE_RT_DATASETS", ROOT.parent / "shared" / "datasets"))
    candidates = []
    for a in sorted(root.glob("multifocus/lytro-*-A.jpg")):
        candidates.append((a, a.with_name(a.name.replace("-A.", "-B."))))
    for a in sorted(root.glob("infrared_visible/*_IR.png")):
        candidates.append((a, a.with_name(a.name.replace("_IR.", "_Vis."))))
    for a in sorted(root.glob("medical/c*_1.tif")):
        candidates.append((a, a.with_name(a.name.replace("_1.", "_2."))))
    examples = ROOT / "examples"
    if not candidates and (examples / "lytro-01-A.jpg").exists():
        candidates.append((examples / "lytro-01-A.jpg", examples / "lytro-01-B.jpg"))
    pairs = [(f"{a.parent.name}/{a.name}", [load_image(a), load_image(b)]) for a, b in candidates if b.exists()]
    return pairs[:limit]


def bench_images(size: int):
    """2 x size^2 RGB inputs: a crop of a real pair when one is here, else a smooth synthetic pair."""
    import numpy as np

    for _, images in shared_pairs(1):
        if all(im.ndim == 3 and im.shape[0] >= size and im.shape[1] >= size for im in images):
            return [im[:size, :size] for im in images], "shared pair crop"
    y, x = np.mgrid[0:size, 0:size] / size
    a = (np.stack([np.sin(9 * x), np.cos(7 * y), x * y], -1) * 127 + 128).astype(np.uint8)
    b = (np.stack([np.cos(5 * x * y), np.sin(11 * y), 1 - x], -1) * 127 + 128).astype(np.uint8)
    return [a, b], "synthetic"


def median_ms(run, repeats: int) -> float:
    """Median wall time of run(); run must end with the GPU idle (it synchronises)."""
    import torch

    run()
    run()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# --- the pieces every backend row runs ---------------------------------------------------
def torch_reference(weights, layer):
    """The Torch backend on CUDA (its normalisation lives on the device, so graphs capture it)."""
    from semfuse_rt.engine.backends import create_runner

    return create_runner("torch", weights, layer, device="cuda")


def pipeline(runner, pixels, schedule):
    """Features, choose-max target, optimisation: the fuse path of engine/api.py on device."""
    import torch

    from semfuse_rt.kernels.rules import fuse_features
    from semfuse_rt.engine.start.initialisation import initial_image

    features = runner.features(pixels)
    target = fuse_features(features, "max")
    optimised = runner.optimise(initial_image(pixels, "mean"), target[None], schedule)
    if optimised.image.is_cuda:
        torch.cuda.synchronize()
    return optimised


def time_runner(runner, pixels, schedule, repeats: int) -> tuple[float, float]:
    """(loop ms, end-to-end ms) for a runner already inside its context."""
    import torch

    from semfuse_rt.kernels.rules import fuse_features
    from semfuse_rt.engine.start.initialisation import initial_image

    target = fuse_features(runner.features(pixels), "max")[None].contiguous()
    init = initial_image(pixels, "mean").contiguous()

    def loop():
        runner.optimise(init, target, schedule)
        torch.cuda.synchronize()

    return median_ms(loop, repeats), median_ms(lambda: pipeline(runner, pixels, schedule), repeats)


def graph_timing(features, loss_and_grad, pixels, schedule, repeats: int) -> tuple[float, float]:
    """A whole fixed-step loop (the given gradient, the shared Adam update) captured as one
    torch CUDA graph; end to end adds eager features and the fusion rule."""
    import torch

    from semfuse_rt.kernels.torch_rules import adam_update
    from semfuse_rt.kernels.rules import fuse_features
    from semfuse_rt.engine.start.initialisation import initial_image

    target = fuse_features(features(pixels), "max")[None].contiguous()
    init = initial_image(pixels, "mean").contiguous()
    x, m, v, scratch = (torch.empty_like(init) for _ in range(4))
    history = torch.empty(schedule.steps, device="cuda")

    def body():
        x.copy_(init)
        m.zero_()
        v.zero_()
        for t in range(1, schedule.steps + 1):
            loss, grad = loss_and_grad(x, target)
            history[t - 1] = loss.sum()
            adam_update(x, m, v, grad, t, schedule, scratch)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()  # warm-up outside the capture, as torch.cuda.graph requires
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()

    def loop():
        graph.replay()
        torch.cuda.synchronize()

    def end_to_end():
        target.copy_(fuse_features(features(pixels), "max")[None])
        init.copy_(initial_image(pixels, "mean"))
        graph.replay()
        torch.cuda.synchronize()

    return median_ms(loop, repeats), median_ms(end_to_end, repeats)


def torch_graph_timing(weights, layer, pixels, schedule, repeats: int) -> tuple[float, float]:
    """The Torch reference's loop (autograd gradient) as one CUDA graph."""
    with torch_reference(weights, layer) as runner:
        return graph_timing(runner.features, runner.loss_and_grad, pixels, schedule, repeats)


def explicit_graph_timing(weights, layer, pixels, schedule, repeats: int) -> tuple[float, float]:
    """The exported graphs themselves (export/graphs/gradient_graph.py: the computation the TensorRT
    engines run, explicit backward, normalisation folded) as one CUDA graph."""
    import torch

    from semfuse_rt.export.graphs.gradient_graph import ExplicitLossGradient, NormalisedFeatures
    from semfuse_rt.export.networks.vgg19 import VGG19Features

    chain = VGG19Features(weights.convs, layer).eval()
    features = NormalisedFeatures(chain, weights.normalisation).eval().cuda()
    gradient = ExplicitLossGradient(chain, weights.normalisation).eval().cuda()
    with torch.no_grad():
        return graph_timing(features, gradient, pixels, schedule, repeats)


# --- the runtime's loop without TensorRT ---------------------------------------------------
QUADRATIC = r"""
extern "C" __global__ void quadratic(const float* x, const float* y, float* g, float* loss, long long n) {
  float local = 0.f;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float d = x[i] - y[i];
    g[i] = 2.f * d;
    local += d * d;
  }
  // One atomic per warp: one per thread serialises tens of thousands on one address.
  for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xffffffffu, local, offset);
  if ((threadIdx.x & 31) == 0) atomicAdd(loss, local);
}
"""


class CupyQuadratic:
    """A gradient 'engine' for FixedStepLoop: loss = sum (x - y)^2, grad = 2 (x - y)."""

    def __init__(self, cuda, shape):
        import cupy

        self.cupy, self.cuda, self.shape_ = cupy, cuda, tuple(shape)
        self.kernel = cupy.RawKernel(QUADRATIC, "quadratic")
        self.kernel.compile()  # NVRTC now, not inside the capture

    def set_input_shapes(self, shapes):
        assert tuple(shapes["image"]) == self.shape_

    def shape(self, name):
        return self.shape_ if name == "grad" else (self.shape_[0],)

    def enqueue(self, addresses, stream):
        import numpy as np

        count = int(np.prod(self.shape_))
        self.cuda.zero(addresses["loss"], 4 * self.shape_[0])
        with self.cupy.cuda.ExternalStream(stream):
            self.kernel((264,), (256,), (np.uint64(addresses["image"]), np.uint64(addresses["target"]),
                                         np.uint64(addresses["grad"]), np.uint64(addresses["loss"]),
                                         np.int64(count)))


def loop_check(size: int, steps: int, repeats: int) -> dict:
    """FixedStepLoop on the GPU (CUDA graph + Adam kernel) against the Torch loop on the host."""
    import numpy as np
    import torch

    from semfuse_rt.kernels.adam_scalars import AdamSchedule
    from semfuse_rt.engine.backends.captured_loop import FixedStepLoop
    from semfuse_rt.engine.backends.cuda_device import CudaDevice
    from semfuse_rt.kernels.runner import KernelRunner
    from support.quadratic_runner import QuadraticRunner

    shape = (1, 3, size, size)
    rng = np.random.default_rng(0)
    init = (rng.random(shape) * 255).astype(np.float32)
    target = (rng.random(shape) * 255).astype(np.float32)
    cuda = CudaDevice(0)
    try:
        with KernelRunner(0) as kernels:
            loop = FixedStepLoop(cuda, CupyQuadratic(cuda, shape), kernels, shape, shape, AdamSchedule(steps, 1.0))
            cuda.upload(loop.init.ptr, init)
            cuda.upload(loop.target.ptr, target)
            started = time.perf_counter()
            loop.capture()
            capture_ms = (time.perf_counter() - started) * 1e3

            def run():
                loop.launch()
                cuda.synchronize()

            replay_ms = median_ms(run, repeats)
            image, history = np.empty_like(init), np.empty(steps, np.float32)
            cuda.download(image, loop.x.ptr)
            cuda.download(history, loop.history.ptr)
            cuda.synchronize()
            loop.close()
    finally:
        cuda.close()

    want = QuadraticRunner().optimise(torch.from_numpy(init), torch.from_numpy(target), AdamSchedule(steps, 1.0))
    image_error = float(np.abs(image - want.image.numpy()).max())
    loss_error = float(np.max(np.abs(history - np.array(want.losses)) / np.maximum(np.array(want.losses), 1)))
    return {"capture_ms": capture_ms, "replay_ms": replay_ms, "max_image_error": image_error,
            "max_loss_rel_error": loss_error, "ok": image_error <= 1e-3 and loss_error <= 1e-4}


# --- parity on the shared pairs --------------------------------------------------------------
def fuse_pair(runner, images, schedule):
    import torch

    from semfuse_rt.engine.io.sources import finish, prepare

    sources = prepare(images)
    pixels = torch.from_numpy(sources.pixels).to(runner.device)
    optimised = pipeline(runner, pixels, schedule)
    return finish(optimised.image[0].detach().cpu().numpy(), sources)


def device_parity(gpu_runner, weights, layer, pairs, schedule, crop: int = 256) -> list[tuple[str, int]]:
    """A GPU runner (fusion rules in the CUDA kernels) against Torch on the CPU (the torch
    rules), on crops of the shared pairs: the whole fuse path, max difference in grey levels."""
    import numpy as np

    from semfuse_rt.engine.backends import create_runner

    results = []
    with gpu_runner as gpu, create_runner("torch", weights, layer, device="cpu") as cpu:
        for name, images in pairs:
            crops = [im[:crop, :crop] for im in images]
            want = fuse_pair(cpu, crops, schedule).astype(np.int64)
            got = fuse_pair(gpu, crops, schedule).astype(np.int64)
            results.append((name, int(np.abs(got - want).max())))
    return results


def parity(weights, layer, precision, pairs, schedule) -> list[tuple[str, int]]:
    import numpy as np

    from semfuse_rt.engine.backends import create_runner

    results = []
    with torch_reference(weights, layer) as reference, create_runner("trt", weights, layer, precision=precision) as trt:
        for name, images in pairs:
            want = fuse_pair(reference, images, schedule).astype(np.int64)
            got = fuse_pair(trt, images, schedule).astype(np.int64)
            results.append((name, int(np.abs(got - want).max())))
    return results


# --- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="relu1_1")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precisions", default="fp16,fp32")
    parser.add_argument("--pairs", type=int, default=4, help="shared pairs for the parity check")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    notes = bootstrap()
    reason = unavailable_reason()
    if reason is not None:
        print(f"trt_gpu_check: cannot run here: {reason}", file=sys.stderr)
        return 2
    import torch

    # The reference is IEEE fp32: no TF32 in Torch's convolutions or matmuls.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    from semfuse_rt.kernels.adam_scalars import AdamSchedule
    from semfuse_rt.export.tensorrt.trt_build import unavailable_reason as trt_reason

    report = {"environment": environment(), "notes": notes, "not_measured": [], "failures": []}
    for key, value in report["environment"].items():
        print(f"{key:>14}: {value}")
    weights, weights_note = load_weights(args.layer)
    report["weights"] = weights_note
    print(f"{'weights':>14}: {weights_note}")
    schedule = AdamSchedule(steps=args.steps, lr=1.0)
    images, images_note = bench_images(args.size)
    from semfuse_rt.engine.io.sources import prepare

    pixels = torch.from_numpy(prepare(images).pixels).cuda()
    print(f"{'problem':>14}: 2 x {args.size}^2 RGB ({images_note}), {args.layer}, {args.steps} steps")
    rows = []

    def not_measured(what: str, why: str) -> None:
        report["not_measured"].append(f"{what}: {why}")

    def attempt(what: str, run):
        try:
            return run()
        except Exception as error:  # one failing row must not hide the others
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            not_measured(what, f"{type(error).__name__}: {first}")
            traceback.print_exc(file=sys.stderr)
            return None

    # 1. loop machinery without TensorRT
    if module_state("cupy").startswith("absent"):
        not_measured("captured loop check", "CuPy is not installed")
    else:
        check = attempt("captured loop check", lambda: loop_check(args.size, args.steps, args.repeats))
        if check is not None:
            report["loop_check"] = check
            print(f"\ncaptured loop (CuPy quadratic gradient + Adam kernel, CUDA graph): "
                  f"capture {check['capture_ms']:.1f} ms, replay {check['replay_ms']:.3f} ms, "
                  f"max |x - host Adam| {check['max_image_error']:.2e}, "
                  f"max loss rel error {check['max_loss_rel_error']:.2e} -> {'ok' if check['ok'] else 'FAILED'}")
            if not check["ok"]:
                report["failures"].append("captured loop differs from the host Adam loop")

    # 2. baselines
    def eager():
        with torch_reference(weights, args.layer) as runner:
            return time_runner(runner, pixels, schedule, args.repeats)

    timings = {}
    timings["torch CUDA eager autograd"] = attempt("torch CUDA eager autograd", eager)
    timings["torch CUDA graph"] = attempt("torch CUDA graph",
                                          lambda: torch_graph_timing(weights, args.layer, pixels, schedule, args.repeats))
    timings["exported graph in torch, CUDA graph"] = attempt(
        "exported graph in torch, CUDA graph",
        lambda: explicit_graph_timing(weights, args.layer, pixels, schedule, args.repeats))
    ort_providers = report["environment"].get("ort providers", "")
    if "CUDAExecutionProvider" in ort_providers:
        def ort_cuda():
            from semfuse_rt.engine.backends import create_runner

            with create_runner("ort", weights, args.layer, provider="CUDAExecutionProvider") as runner:
                return time_runner(runner, pixels, schedule, args.repeats)

        timings["ORT CUDA (IO binding)"] = attempt("ORT CUDA", ort_cuda)
    else:
        timings["ORT CUDA (IO binding)"] = None
        not_measured("ORT CUDA", f"onnxruntime offers no CUDAExecutionProvider ({ort_providers or 'not installed'})")

    from semfuse_rt.engine.backends import create_runner
    from semfuse_rt.engine.backends.cuda.first_layer_gradient import LAYERS as CUDA_LAYERS

    if args.layer in CUDA_LAYERS:
        def cuda_backend():
            with create_runner("cuda", weights, args.layer) as runner:
                return time_runner(runner, pixels, schedule, args.repeats)

        timings["cuda backend (fused gradient kernel, CUDA graph)"] = attempt("cuda backend", cuda_backend)
    else:
        not_measured("cuda backend", f"it stops at {' and '.join(CUDA_LAYERS)}")

    # 2b. the fuse path on CUDA against the CPU
    pairs = shared_pairs(args.pairs)
    gpu_runners = {"Torch CUDA": lambda: torch_reference(weights, args.layer)}
    if args.layer in CUDA_LAYERS:
        gpu_runners["cuda backend"] = lambda: create_runner("cuda", weights, args.layer)
    for label, make_runner in gpu_runners.items():
        if not pairs:
            not_measured(f"{label} vs CPU parity", "no shared pairs found")
            continue
        found = attempt(f"{label} vs CPU parity",
                        lambda: device_parity(make_runner(), weights, args.layer, pairs, schedule))
        if found is not None:
            report.setdefault("parity", {})[f"{label} vs torch cpu"] = found
            print(f"\nparity {label} vs Torch CPU, 256^2 crops (max grey levels): "
                  + ", ".join(f"{name} {diff}" for name, diff in found))
            if max(diff for _, diff in found) > 1:
                report["failures"].append(f"{label} and Torch CPU fused images differ by more than 1 grey level")

    # 3. TensorRT: build, parity, timing
    missing = trt_reason()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    trt_checked = missing is None
    if missing is not None:
        for precision in precisions:
            timings[f"TensorRT {precision}"] = None
            not_measured(f"TensorRT {precision} build, parity and latency", missing)
    else:
        from semfuse_rt.engine.backends import create_runner

        for precision in precisions:
            def run_trt(precision=precision):
                started = time.perf_counter()
                with create_runner("trt", weights, args.layer, precision=precision) as runner:
                    build_s = time.perf_counter() - started
                    result = time_runner(runner, pixels, schedule, args.repeats)
                report.setdefault("build_seconds", {})[precision] = build_s
                return result

            timings[f"TensorRT {precision}"] = attempt(f"TensorRT {precision}", run_trt)
            if not pairs:
                not_measured(f"TensorRT {precision} parity", "no shared pairs found")
                continue
            found = attempt(f"TensorRT {precision} parity", lambda precision=precision: parity(
                weights, args.layer, precision, pairs, schedule))
            if found is not None:
                report.setdefault("parity", {})[precision] = found
                worst = max(diff for _, diff in found)
                print(f"\nparity TensorRT {precision} vs Torch fp32 (max grey levels): "
                      + ", ".join(f"{name} {diff}" for name, diff in found))
                if precision == "fp16" and worst > TARGET_GREY_LEVELS:
                    report["failures"].append(f"fp16 parity {worst} grey levels > {TARGET_GREY_LEVELS}")

    # 4. the table
    eager_total = (timings.get("torch CUDA eager autograd") or (None, None))[1]
    print(f"\n| backend | loop ms ({args.steps} steps) | end to end ms | vs eager |")
    print("| --- | ---: | ---: | ---: |")
    for name, value in timings.items():
        if value is None:
            print(f"| {name} | not measured | not measured | |")
            continue
        loop_ms, total_ms = value
        speedup = f"{eager_total / total_ms:.1f}x" if eager_total else ""
        print(f"| {name} | {loop_ms:.2f} | {total_ms:.2f} | {speedup} |")
        rows.append({"backend": name, "loop_ms": loop_ms, "end_to_end_ms": total_ms})
    report["latency"] = rows
    if eager_total:
        fastest = min((value[1], name) for name, value in timings.items() if value is not None)
        print(f"\nfastest end to end: {fastest[1]}, {fastest[0]:.2f} ms, {eager_total / fastest[0]:.1f}x eager "
              f"(targets <= {TARGET_MS} ms and >= {TARGET_SPEEDUP}x, on an H100)")
        report["fastest"] = {"backend": fastest[1], "end_to_end_ms": fastest[0]}
    fp16 = timings.get("TensorRT fp16")
    if fp16 is not None and eager_total and (fp16[1] > TARGET_MS or eager_total / fp16[1] < TARGET_SPEEDUP):
        report["failures"].append(f"TensorRT fp16 end to end {fp16[1]:.2f} ms, {eager_total / fp16[1]:.1f}x eager "
                                  f"(targets <= {TARGET_MS} ms and >= {TARGET_SPEEDUP}x, on an H100)")

    for line in report["not_measured"]:
        print(f"NOT MEASURED: {line}")
    for line in report["failures"]:
        print(f"FAILED: {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if report["failures"]:
        return 1
    return 0 if trt_checked else 3


if __name__ == "__main__":
    sys.exit(main())
