"""`semfuse-rt bench`: the whole fuse pipeline per stage, and the loop's step latency per
backend against PyTorch eager."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from semfuse_rt.engine.cli import app
from semfuse_rt.engine.presets import DEFAULT_PRESET


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command("bench")
def bench_command(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Images for the pipeline timing (default: a "
                                                             "synthetic 520x520 colour pair)."),
    method: str = typer.Option("max", "--method", "-m", help="Pipeline: fusion method."),
    preset: str = typer.Option(DEFAULT_PRESET, help="Pipeline: preset (and --steps etc. via `fuse` options)."),
    backend: str = typer.Option("auto", help="Pipeline: backend."),
    runs: int = typer.Option(10, help="Pipeline: timed fuses (percentiles over these)."),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline", help="Time the whole fuse per stage."),
    backends: Optional[str] = typer.Option(None, help="Loop: comma-separated backends (default: all available)."),
    layers: str = typer.Option("relu1_1", help="Loop: comma-separated VGG19 layers."),
    sizes: str = typer.Option("256", help="Loop: comma-separated square sizes in pixels ('' to skip)."),
    steps: int = typer.Option(20, help="Loop: steps of the whole-loop timing (more than 10)."),
    repeats: int = typer.Option(3, help="Loop: timed runs per measurement (median reported)."),
    warmup: int = typer.Option(1, help="Untimed runs first (pipeline and loop)."),
    out: Path = typer.Option(Path("bench-results"), help="Folder for bench.json, bench.md and the PNG charts."),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Time the whole fuse per stage (p50/p90/p99) and the optimisation loop per backend."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from semfuse_rt.engine.backends import available_backends, resolve_backend
    from semfuse_rt.engine.benchmark import planned_measurements, run_benchmark, write_reports
    from semfuse_rt.engine.pipeline_benchmark import TOTAL, run_pipeline_benchmark, synthetic_pair
    from semfuse_rt.engine.progress import progress_bar
    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.export.vgg19 import check_layer
    from semfuse_rt.export.weights import load_vgg19

    chosen = [resolve_backend(b) for b in _split(backends)] if backends else available_backends()
    layer_list = [check_layer(layer) for layer in _split(layers)]
    try:
        size_list = [int(s) for s in _split(sizes) or []]
    except ValueError:
        raise SemfuseError(f"--sizes takes comma-separated integers, got {sizes!r}") from None
    if any(size < 16 for size in size_list):
        raise SemfuseError(f"--sizes must be at least 16 pixels, got {sizes}")
    for name, value, least in (("--runs", runs, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                               ("--steps", steps, 11)):
        if value < least:
            raise SemfuseError(f"{name} must be at least {least}, got {value}")
    if inputs is not None and len(inputs) == 1:
        raise SemfuseError("the pipeline timing needs at least 2 images, got 1")
    console = Console()
    vgg = load_vgg19(weights)
    plan = planned_measurements(chosen, layer_list, size_list)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    report, rows = None, []
    with progress_bar(*columns, enabled=not quiet) as bar:
        if pipeline:
            task = bar.add_task("pipeline", total=runs + warmup)
            paths = inputs or synthetic_pair(out / "inputs")
            report = run_pipeline_benchmark(paths, method, runs, warmup, preset=preset, backend=backend,
                                            weights=vgg, on_run=lambda done, total: bar.update(task, completed=done))
            bar.remove_task(task)
        if plan:
            task = bar.add_task("loop", total=len(plan))

            def start(what):
                size, layer, name = what
                bar.update(task, description=f"loop {size}^2 {layer} {name}")

            rows = run_benchmark(vgg, chosen, layer_list, size_list, steps, repeats, warmup,
                                 on_row=lambda row: bar.advance(task), on_start=start)
    if report is not None:
        table = Table("stage", "p50 ms", "p90 ms", "p99 ms",
                      title=f"whole fuse, file to file: {report.size}, backend {report.backend}")
        for stage, values in report.summary().items():
            style = "bold" if stage == TOTAL else None
            table.add_row(stage, *(f"{values[p]:.1f}" for p in ("p50", "p90", "p99")), style=style)
        console.print(table)
    if rows:
        table = Table("size", "layer", "backend", "step ms", "x eager", f"{steps}-step loop ms", "ms / step",
                      "x eager", "peak MiB", title="optimisation loop")
        for r in rows:
            table.add_row(f"{r.size}^2", r.layer, r.backend, f"{r.step_ms:.1f}", f"{r.step_speedup:.2f}",
                          f"{r.fuse_ms:.0f}", f"{r.fuse_step_ms:.1f}", f"{r.fuse_speedup:.2f}", f"{r.peak_mib:.0f}")
        console.print(table)
    written = write_reports(rows, out, "semfuse-rt " + " ".join(sys.argv[1:]), report)
    typer.echo("reports: " + ", ".join(str(p) for p in written.values()))
