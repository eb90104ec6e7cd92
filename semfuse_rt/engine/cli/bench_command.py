"""`semfuse-rt bench`: the whole fuse pipeline per stage, and the loop's step latency per
backend against PyTorch eager."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from semfuse_rt.engine.benchmarking import DEFAULT_LOOP_STEPS, DEFAULT_REPEATS, DEFAULT_RUNS, DEFAULT_SIZES
from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.screen import screen
from semfuse_rt.engine.fuse import DEFAULT_LAYER, DEFAULT_METHOD, default_presets


@app.command("bench")
def bench_command(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Images for the pipeline timing (default: a "
                                                             "synthetic 520x520 colour pair)."),
    # The pipeline's and the loop's options default to None, so that one given for a part
    # that does not run (--method with --no-pipeline, say) is an error, not silence.
    method: Optional[str] = typer.Option(None, "--method", "-m", help=f"Pipeline: fusion method (default "
                                                                      f"{DEFAULT_METHOD})."),
    preset: Optional[str] = typer.Option(None, help=f"Pipeline: preset (default {default_presets()})."),
    backend: Optional[str] = typer.Option(None, help="Pipeline: backend (default auto)."),
    runs: Optional[int] = typer.Option(None, help=f"Pipeline: timed fuses, percentiles over these (default "
                                                  f"{DEFAULT_RUNS})."),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline", help="Time the whole fuse per stage."),
    backends: Optional[str] = typer.Option(None, help="Loop: comma-separated backends (default: all available)."),
    layers: Optional[str] = typer.Option(None, help=f"Loop: comma-separated VGG19 layers (default {DEFAULT_LAYER})."),
    sizes: Optional[str] = typer.Option(None, help=f"Loop: comma-separated square sizes in pixels (default "
                                                   f"{DEFAULT_SIZES}; '' to skip)."),
    steps: Optional[int] = typer.Option(None, help=f"Loop: steps of the whole-loop timing, more than 10 (default "
                                                   f"{DEFAULT_LOOP_STEPS})."),
    repeats: Optional[int] = typer.Option(None, help=f"Loop: timed runs per measurement, median reported (default "
                                                     f"{DEFAULT_REPEATS})."),
    warmup: int = typer.Option(1, help="Untimed runs first (pipeline and loop)."),
    out: Path = typer.Option(Path("bench-results"), help="Folder for bench.json, bench.md and the PNG charts."),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights file."),
    graph: Optional[Path] = typer.Option(None, "--graph", metavar="FILE.onnx",
                                         help="Time a graph from `semfuse-rt export` in ONNX Runtime (CPU) beside "
                                              "the fuse its manifest records, instead of the DT-CWT baseline; no "
                                              "loop timing."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress bar, nor the notice of a first-time weights fetch."),
) -> None:
    """Time the whole fuse per stage (p50/p90/p99) and the optimisation loop per backend; or, with
    --graph, an exported graph beside the fuse it was exported from."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from semfuse_rt.engine.benchmarking import check_bench_options
    from semfuse_rt.engine.benchmarking import planned_measurements, run_benchmark, write_reports
    from semfuse_rt.engine.benchmarking import GraphBench, summary_line
    from semfuse_rt.engine.benchmarking import TOTAL, run_pipeline_benchmark
    from semfuse_rt.engine.io import SYNTHETIC_SIDE, synthetic_pair
    from semfuse_rt.engine.io import progress_bar
    from semfuse_rt.export.networks import load_vgg19

    # Every option is checked before anything is loaded or any folder is made.
    checked = check_bench_options(inputs=inputs, method=method, preset=preset, backend=backend, runs=runs,
                                  pipeline=pipeline, backends=backends, layers=layers, sizes=sizes, steps=steps,
                                  repeats=repeats, warmup=warmup, graph=graph, out=out)
    runs, steps = checked.runs, checked.steps
    console = screen()
    graph_bench, pair_side = None, SYNTHETIC_SIDE
    if graph is not None:
        graph_bench = GraphBench(graph, weights, backend, show_progress=not quiet)
        if not inputs:
            pair_side = graph_bench.synthetic_side()
    else:
        given: dict[str, Any] = dict(checked.fuse_options)
        vgg = load_vgg19(weights, show_progress=not quiet)
        if checked.optimised:
            given["weights"] = vgg
    plan = planned_measurements(checked.backends, checked.layers, checked.sizes)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    report, rows = None, []
    with progress_bar(*columns, enabled=not quiet) as bar:
        if pipeline:
            task = bar.add_task("pipeline", total=runs + warmup)
            paths = inputs or synthetic_pair(out / "inputs", pair_side)

            def on_run(done, total):
                bar.update(task, completed=done)

            if graph_bench is not None:
                report = graph_bench.run(paths, runs, warmup, on_run=on_run)
            else:
                report = run_pipeline_benchmark(paths, checked.method, runs, warmup, **given, on_run=on_run)
            bar.remove_task(task)
        if plan:
            task = bar.add_task("loop", total=len(plan))

            def start(what):
                size, layer, name = what
                bar.update(task, description=f"loop {size}^2 {layer} {name}")

            rows = run_benchmark(vgg, checked.backends, checked.layers, checked.sizes, steps, checked.repeats, warmup,
                                 on_row=lambda row: bar.advance(task), on_start=start)
    if report is not None:
        table = Table("stage", "p50 ms", "p90 ms", "p99 ms",
                      title=f"whole fuse, file to file: {report.size}, backend {report.backend}")
        for stage, values in report.summary().items():
            style = "bold" if stage == TOTAL else None
            table.add_row(stage, *(f"{values[p]:.1f}" for p in ("p50", "p90", "p99")), style=style)
        console.print(table)
        if report.agreement:
            console.print(summary_line(report))
    if rows:
        table = Table("size", "layer", "backend", "step ms", "x eager", f"{steps}-step loop ms", "ms / step",
                      "x eager", "peak MiB", title="optimisation loop")
        for r in rows:
            table.add_row(f"{r.size}^2", r.layer, r.backend, f"{r.step_ms:.1f}", f"{r.step_speedup:.2f}",
                          f"{r.fuse_ms:.0f}", f"{r.fuse_step_ms:.1f}", f"{r.fuse_speedup:.2f}", f"{r.peak_mib:.0f}")
        console.print(table)
    written = write_reports(rows, out, "semfuse-rt " + " ".join(sys.argv[1:]), report)
    typer.echo("reports: " + ", ".join(str(p) for p in written.values()))
