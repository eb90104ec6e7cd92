"""`semfuse-rt bench`: the whole fuse pipeline per stage, and the loop's step latency per
backend against PyTorch eager."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.screen import screen
from semfuse_rt.engine.fuse.methods import DEFAULT_LAYER, DEFAULT_METHOD, default_presets
from semfuse_rt.errors import SemfuseError


DEFAULT_RUNS = 10
DEFAULT_LOOP_STEPS = 20
DEFAULT_REPEATS = 3
DEFAULT_SIZES = "256"


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _check_graph_options(pipeline: bool, **options) -> None:
    """What --graph leaves no part to: the fuse is the one the graph's manifest records, and
    the loop is not timed."""
    given = [f"--{name}" for name, value in options.items() if value is not None] + \
        ([] if pipeline else ["--no-pipeline"])
    if given:
        raise SemfuseError(f"{given[0]} does not apply with --graph: it times the graph beside the fuse its "
                           "manifest records (preset and options), and not the loop; leave it out")


def _check_unused(reason: str, unused: bool, **options) -> None:
    """Options of a part of the benchmark that `reason` turns off."""
    given = [f"--{name}" if name != "inputs" else "input images" for name, value in options.items()
             if value is not None]
    if unused and given:
        raise SemfuseError(f"{given[0]} does nothing with {reason}: that part of the benchmark does not run")


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

    from semfuse_rt.engine.backends import available_backends, resolve_backend
    from semfuse_rt.engine.benchmarking.benchmark import (
        check_report_folder, check_sizes, planned_measurements, run_benchmark,
                                             write_reports)
    from semfuse_rt.engine.deploy.whole_fuse_export import manifest_path
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.benchmarking.graph_benchmark import GraphBench, summary_line
    from semfuse_rt.engine.benchmarking.pipeline_benchmark import TOTAL, run_pipeline_benchmark
    from semfuse_rt.engine.io.synthetic_pair import SYNTHETIC_SIDE, synthetic_pair
    from semfuse_rt.engine.io.progress import progress_bar
    from semfuse_rt.export.networks.vgg19 import check_layer
    from semfuse_rt.export.networks.weights import load_vgg19

    # Every option is checked before anything is loaded or any folder is made.
    if graph is not None:
        _check_graph_options(pipeline, method=method, preset=preset, backends=backends, layers=layers, sizes=sizes,
                             steps=steps, repeats=repeats)
    size_list = check_sizes(_split(DEFAULT_SIZES if sizes is None else sizes) or []) if graph is None else []
    _check_unused("--no-pipeline", not pipeline, inputs=inputs, method=method, preset=preset, backend=backend,
                  runs=runs)
    _check_unused("--sizes ''", not size_list, backends=backends, layers=layers, steps=steps, repeats=repeats)
    method, runs = method or DEFAULT_METHOD, DEFAULT_RUNS if runs is None else runs
    steps, repeats = DEFAULT_LOOP_STEPS if steps is None else steps, DEFAULT_REPEATS if repeats is None else repeats
    chosen = [resolve_backend(b) for b in _split(backends) or []] if backends else available_backends()
    layer_list = [check_layer(layer) for layer in _split(layers or DEFAULT_LAYER) or []]
    for name, value, least in (("--runs", runs, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                               ("--steps", steps, 11)):
        if value < least:
            raise SemfuseError(f"{name} must be at least {least}, got {value}")
    if inputs is not None and len(inputs) == 1:
        raise SemfuseError("the pipeline timing needs at least 2 images, got 1")
    check_report_folder(out, [*(inputs or ()), *((graph, manifest_path(graph)) if graph is not None else ())])
    console = screen()
    graph_bench, pair_side = None, SYNTHETIC_SIDE
    if graph is not None:
        graph_bench = GraphBench(graph, weights, backend, show_progress=not quiet)
        if not inputs:
            pair_side = graph_bench.synthetic_side()
    else:
        given: dict[str, Any] = {name: value for name, value in (("preset", preset), ("backend", backend))
                                 if value is not None}
        fuses_with_vgg = Fuser(method, **given).method.optimised  # the pipeline's options, checked
        vgg = load_vgg19(weights, show_progress=not quiet)
        if fuses_with_vgg:
            given["weights"] = vgg
    plan = planned_measurements(chosen, layer_list, size_list)
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
                report = run_pipeline_benchmark(paths, method, runs, warmup, **given, on_run=on_run)
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
