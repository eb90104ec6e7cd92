"""`semfuse-rt bench`: step and fuse latency per backend against PyTorch eager."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from semfuse_rt.engine.cli import app


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command("bench")
def bench_command(
    backends: Optional[str] = typer.Option(None, help="Comma-separated backends (default: all available)."),
    layers: str = typer.Option("relu1_1", help="Comma-separated VGG19 layers."),
    sizes: str = typer.Option("256,512", help="Comma-separated square sizes in pixels."),
    steps: int = typer.Option(20, min=11, help="Steps of the whole-fuse timing."),
    repeats: int = typer.Option(3, min=1, help="Timed runs per measurement (median reported)."),
    warmup: int = typer.Option(1, min=0, help="Untimed runs first."),
    out: Path = typer.Option(Path("bench-results"), help="Folder for bench.json, bench.md and bench.png."),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Time one optimisation step and a whole fuse for each backend and layer."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from semfuse_rt.engine.backends import available_backends, resolve_backend
    from semfuse_rt.engine.benchmark import planned_measurements, run_benchmark, write_reports
    from semfuse_rt.engine.progress import progress_bar
    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.export.vgg19 import check_layer
    from semfuse_rt.export.weights import load_vgg19

    chosen = [resolve_backend(b) for b in _split(backends)] if backends else available_backends()
    layer_list = [check_layer(layer) for layer in _split(layers)]
    try:
        size_list = [int(s) for s in _split(sizes)]
    except ValueError:
        raise SemfuseError(f"--sizes takes comma-separated integers, got {sizes!r}") from None
    if any(size < 16 for size in size_list):
        raise SemfuseError(f"--sizes must be at least 16 pixels, got {sizes}")
    console = Console()
    table = Table("size", "layer", "backend", "step ms", "x eager", f"{steps}-step fuse ms", "ms / step",
                  "x eager", "peak MiB")
    rows = []
    plan = planned_measurements(chosen, layer_list, size_list)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with progress_bar(*columns, enabled=not quiet) as bar:
        task = bar.add_task("bench", total=len(plan))

        def start(what):
            size, layer, backend = what
            bar.update(task, description=f"{size}^2 {layer} {backend}")

        def show(row):
            rows.append(row)
            bar.advance(task)
            bar.console.print(f"  {row.size}^2 {row.layer} {row.backend}: step {row.step_ms:.1f} ms "
                              f"({row.step_speedup:.2f}x), fuse {row.fuse_ms:.0f} ms ({row.fuse_speedup:.2f}x)")

        run_benchmark(load_vgg19(weights), chosen, layer_list, size_list, steps, repeats, warmup,
                      on_row=show, on_start=start)
    for r in rows:
        table.add_row(f"{r.size}^2", r.layer, r.backend, f"{r.step_ms:.1f}", f"{r.step_speedup:.2f}",
                      f"{r.fuse_ms:.0f}", f"{r.fuse_step_ms:.1f}", f"{r.fuse_speedup:.2f}", f"{r.peak_mib:.0f}")
    console.print(table)
    paths = write_reports(rows, out, "semfuse-rt " + " ".join(sys.argv[1:]))
    typer.echo(f"reports: {paths['json']}, {paths['md']}, {paths['png']}")
