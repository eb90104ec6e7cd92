"""Latency of one optimisation step and of a whole fixed-step fuse, per backend and layer,
as ratios against the PyTorch-eager autograd baseline measured in the same run."""
from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.torch_rules import adam_update
from semfuse_rt.engine.backends import available_backends, create_runner
from semfuse_rt.engine.limits.memory import PeakResident, resident_bytes
from semfuse_rt.cache import atomic_write_bytes
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import VGG19Weights

BASELINE = "torch-eager"  # the straightforward implementation: TorchRunner, autograd


@dataclass
class BenchRow:
    backend: str
    layer: str
    size: int
    step_ms: float  # median over runs of (STEP_RUN consecutive steps) / STEP_RUN: gradient plus Adam
    fuse_ms: float  # median of a whole `steps`-step optimisation
    steps: int
    step_speedup: float  # baseline step_ms / step_ms, same run
    fuse_speedup: float
    peak_mib: float  # peak resident growth during the fuse runs
    loop_growth_mib: float  # highest resident size after step 10 over the size at step 10, one run

    @property
    def fuse_step_ms(self) -> float:
        return self.fuse_ms / max(self.steps, 1)


# Steps timed back to back per run: one step alone includes waking thread pools and cold
# caches, which a loop does not pay every step.
STEP_RUN = 10


def median_ms(function: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _measure(runner, size: int, steps: int, repeats: int, warmup: int, generator) -> dict:
    pixels = torch.rand(2, 3, size, size, generator=generator) * 255
    target = runner.features(pixels).max(dim=0, keepdim=True).values  # any target of the right shape
    x = pixels.mean(dim=0, keepdim=True).to(runner.device).contiguous()
    evaluate = runner.gradient_function(x, target.to(runner.device))
    m, v, scratch = torch.zeros_like(x), torch.zeros_like(x), torch.empty_like(x)
    schedule = AdamSchedule(steps=steps)
    counter = iter(range(1, 10**9))

    def step_run():
        for _ in range(STEP_RUN):
            _, grad = evaluate()
            adam_update(x, m, v, grad, next(counter), schedule, scratch)

    with runner.loop_context():
        step_ms = median_ms(step_run, repeats, warmup) / STEP_RUN
    rss = {}

    def watch(step, total, loss):
        if step >= 10:
            rss[step] = resident_bytes()

    init = pixels.mean(dim=0, keepdim=True)
    with PeakResident() as peak:
        runner.optimise(init, target, schedule, progress=watch)  # the first warm-up run, watched
        fuse_ms = median_ms(lambda: runner.optimise(init, target, schedule), repeats, max(warmup - 1, 0))
    growth = (max(rss.values()) - rss[10]) / 2**20 if steps > 10 else 0.0
    return {"step_ms": step_ms, "fuse_ms": fuse_ms, "peak_mib": peak.growth / 2**20, "loop_growth_mib": growth}


MIN_SIZE = 16


def largest_size() -> int:
    """The largest square the loop can time here: both inputs', the target's and the
    loop's buffers (memory_budget's estimate of a whole-image fuse of a pair) within the
    memory available, as a fuse's default budget allows."""
    from semfuse_rt.engine.limits.memory_budget import FIXED_BYTES, bytes_per_pixel, default_budget

    budget = default_budget(capped=False)[0]
    if budget is None:  # the memory available is unknown: as large as a fuse's pixels may be
        from semfuse_rt.engine.io.images import DEFAULT_MAX_PIXELS

        return math.isqrt(DEFAULT_MAX_PIXELS)
    return max(MIN_SIZE, math.isqrt(max(0, budget - FIXED_BYTES) // bytes_per_pixel(2)))


def check_sizes(texts: Sequence[str]) -> list[int]:
    """--sizes as whole numbers of pixels, each one a loop that fits in memory here."""
    try:
        sizes = [int(text) for text in texts]
    except ValueError:
        raise SemfuseError(f"--sizes takes comma-separated whole numbers, got {','.join(texts)!r}") from None
    largest = largest_size() if sizes else 0
    for size in sizes:
        if not MIN_SIZE <= size <= largest:
            raise SemfuseError(f"--sizes must be from {MIN_SIZE} to {largest} pixels here (a larger loop would not "
                               f"fit in the memory available), got {size}")
    return sizes


def planned_measurements(backends: Sequence[str], layers: Sequence[str], sizes: Sequence[int]) -> list[tuple]:
    """(size, layer, backend) in the order they run, the eager baseline first in each group."""
    plan = []
    for size in sizes:
        for layer in layers:
            usable = available_backends(layer)
            plan.append((size, layer, BASELINE))
            plan.extend((size, layer, b) for b in backends if b != "torch" and b in usable)
    return plan


def run_benchmark(weights: VGG19Weights, backends: Sequence[str] | None = None,
                  layers: Sequence[str] = ("relu1_1",), sizes: Sequence[int] = (256, 512),
                  steps: int = 20, repeats: int = 3, warmup: int = 1,
                  on_row: Callable[[BenchRow], None] | None = None,
                  on_start: Callable[[tuple], None] | None = None) -> list[BenchRow]:
    """Every planned measurement; `on_start(size, layer, backend)` before each, `on_row` after."""
    rows, base = [], None
    for size, layer, backend in planned_measurements(backends or available_backends(), layers, sizes):
        if on_start:
            on_start((size, layer, backend))
        generator = torch.Generator().manual_seed(size)
        with create_runner("torch" if backend == BASELINE else backend, weights, layer) as runner:
            result = _measure(runner, size, steps, repeats, warmup, generator)
        if backend == BASELINE:
            base = result
        assert base is not None, "planned_measurements puts the baseline first"
        row = BenchRow(backend, layer, size, steps=steps, step_speedup=base["step_ms"] / result["step_ms"],
                       fuse_speedup=base["fuse_ms"] / result["fuse_ms"], **result)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def machine_description() -> dict:
    description = {"machine": platform.machine(), "processor": platform.processor() or "unknown",
                   "cpus": torch.get_num_threads(), "torch": torch.__version__,
                   "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime

        description["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return description


# The reports' file names in the --out folder, by kind.
REPORT_NAMES = {"json": "bench.json", "md": "bench.md", "pipeline png": "pipeline.png", "png": "bench.png"}


def check_report_folder(directory: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Before any timing: the --out folder can be written (or made), and no report would
    replace one of the pipeline's input images or a folder."""
    from semfuse_rt.engine.io.images import InputFiles, check_writable_folder

    directory = check_writable_folder(directory, "--out")
    images = InputFiles((source, f"input {index}") for index, source in enumerate(inputs, start=1))
    for name in REPORT_NAMES.values():
        path = directory / name
        replaced = images.replaced_by(path)
        if replaced is not None:
            raise SemfuseError(f"--out {directory}: the report {path} would replace {replaced[1]} ({replaced[0]}); "
                               "give --out another folder")
        if path.is_dir():
            raise SemfuseError(f"--out {directory}: the report {path} is a folder; give --out another folder")


def write_reports(rows: Sequence[BenchRow], directory: Path, command: str, pipeline=None) -> dict[str, Path]:
    """bench.json, bench.md and the charts: pipeline.png (stages) and bench.png (steps)."""
    from semfuse_rt.engine.benchmarking.pipeline_benchmark import pipeline_chart, pipeline_markdown

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "machine": machine_description(),
               "rows": [{**asdict(r), "fuse_step_ms": r.fuse_step_ms} for r in rows]}
    paths = {kind: directory / REPORT_NAMES[kind] for kind in ("json", "md")}
    sections = []
    if pipeline is not None:
        payload["pipeline"] = {**asdict(pipeline), "ms": pipeline.summary()}
        sections.append(pipeline_markdown(pipeline))
        paths["pipeline png"] = directory / REPORT_NAMES["pipeline png"]
        pipeline_chart(pipeline, paths["pipeline png"])
    if rows:
        sections.append(markdown_table(rows))
        paths["png"] = directory / REPORT_NAMES["png"]
        _chart(rows, paths["png"])
    atomic_write_bytes(paths["json"], (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], "\n".join(sections).encode())
    return paths


def markdown_table(rows: Sequence[BenchRow]) -> str:
    lines = ["| size | layer | backend | step ms | x eager | fuse ms | fuse ms / step | x eager | peak MiB "
             "| loop growth MiB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.size}^2 | {r.layer} | {r.backend} | {r.step_ms:.1f} | {r.step_speedup:.2f} | "
                     f"{r.fuse_ms:.0f} | {r.fuse_step_ms:.1f} | {r.fuse_speedup:.2f} | {r.peak_mib:.0f} | "
                     f"{r.loop_growth_mib:.1f} |")
    return "\n".join(lines) + "\n"


def _chart(rows: Sequence[BenchRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.size, r.layer) for r in rows})
    backends = list(dict.fromkeys(r.backend for r in rows))
    figure, axis = plt.subplots(figsize=(max(2.2 * len(groups) + 2, 6.5), 4.4))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        values = [next((r.step_ms for r in rows if (r.size, r.layer) == g and r.backend == backend), 0) for g in groups]
        bars = axis.bar([g + i * width for g in range(len(groups))], values, width, label=backend)
        for bar, g in zip(bars, groups):
            row = next((r for r in rows if (r.size, r.layer) == g and r.backend == backend), None)
            if row:
                axis.annotate(f"{row.step_speedup:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=8)
    axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    axis.set_xticklabels([f"{layer}\n{size}^2" for size, layer in groups])
    axis.set_ylabel("one step, ms (median)")
    axis.set_title("Optimisation step latency\n(label: speed-up over PyTorch eager)")
    axis.legend()
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    tmp.replace(path)
