"""`semfuse-rt fuse-batch SETS -o OUTDIR`: fuse every set of a folder or CSV, resumably."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from semfuse_rt.engine.streams import DEFAULT_EXTENSION, BatchReport, DiskFull, SetOutcome, plan_batch, run_batch
from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.streams import RaySettings
from semfuse_rt.engine.cli.shared_options import (check_ray_flags, fuse_option, gpus_per_actor_option,
                                                  max_pixels_option, quiet_option, ray_actors_option,
                                                  ray_address_option, ray_timeout_option)
from semfuse_rt.engine.evaluation import find_sets
from semfuse_rt.engine.fuse import FuseOptions
from semfuse_rt.engine.io import progress_bar
from semfuse_rt.errors import SemfuseError


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@app.command("fuse-batch")
def fuse_batch_command(
    sets: Path = typer.Argument(..., metavar="DIR|SETS.csv",
                                help="Folder of categories of sets, or a .csv listing sets "
                                     "(the layout of `semfuse-rt eval`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the fused images: "
                                                           "OUTDIR/CATEGORY/SET.EXT (created)."),
    ext: str = typer.Option(DEFAULT_EXTENSION.lstrip("."), "--ext",
                            help="Output format: png | tif | jpg | bmp. jpg and bmp hold 8 bits: a batch with "
                                 "16-bit sets is refused before any work, naming them."),
    force: bool = typer.Option(False, "--force", help="Fuse again the sets whose output exists (default: skip them)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w",
                                          help="Fuse in N processes on this machine, sharing its cores (default 1)."),
    ray: bool = typer.Option(False, "--ray", help="Fuse on Ray actors (pip install 'semfuse-rt\\[ray]')."),
    ray_address: Optional[str] = ray_address_option(),
    ray_actors: int = ray_actors_option(),
    num_gpus_per_actor: float = gpus_per_actor_option(),
    ray_timeout: Optional[float] = ray_timeout_option(),
    method: str = fuse_option("method"),
    layer: Optional[str] = fuse_option("layer"),
    preset: Optional[str] = fuse_option("preset"),
    steps: Optional[int] = fuse_option("steps"),
    lr: Optional[float] = fuse_option("lr"),
    decay: Optional[str] = fuse_option("decay"),
    init: Optional[str] = fuse_option("init"),
    window: Optional[int] = fuse_option("window"),
    mean_base: Optional[float] = fuse_option("mean_base"),
    semantic_steps: Optional[int] = fuse_option("semantic_steps"),
    backend: Optional[str] = fuse_option("backend"),
    weights: Optional[Path] = fuse_option("weights"),
    classes: Optional[int] = fuse_option("classes"),
    cam_weights: Optional[Path] = fuse_option("cam_weights"),
    max_pixels: int = max_pixels_option(),
    memory_budget: Optional[str] = fuse_option("memory_budget"),
    tile: Optional[int] = fuse_option("tile"),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse every image set of a folder or CSV into OUTDIR, with the options of fuse.

    Sets are found as `semfuse-rt eval` finds them. Each set's output is
    OUTDIR/CATEGORY/SET.EXT, written atomically; a run skips the outputs
    that exist, so an interrupted batch resumes where it stopped. A set that
    fails (a malformed CSV row too, by its line) is listed at the end and the
    others go on; the exit status is 1. A full disk stops the batch at once,
    keeping the sets fused so far.

    --workers N fuses in N processes on this machine; --ray on Ray actors,
    on the cluster at --ray-address or on a local Ray instance.
    """
    if ray and workers is not None:
        raise SemfuseError("--workers runs processes on this machine; with --ray give --ray-actors")
    check_ray_flags(ray, ray_address, ray_actors, num_gpus_per_actor, ray_timeout)
    if sets.is_dir() and _inside(output, sets):
        raise SemfuseError(f"{output}: is inside {sets}, where a later run would take the fused images for sets; "
                           "write them elsewhere")
    discovery = find_sets(sets, keep_rejected=True)
    errors = Console(stderr=True)
    for reason in discovery.skipped:
        errors.print(f"not a set: {reason}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    plan = plan_batch(discovery.sets, output, ext=ext, force=force, rejected=discovery.rejected)
    options = FuseOptions(
        method=method, layer=layer, preset=preset, steps=steps, lr=lr, decay=decay, init=init, window=window,
        mean_base=mean_base, semantic_steps=semantic_steps, backend=backend, weights=weights, classes=classes,
        cam_weights=cam_weights, memory_budget=memory_budget, tile=tile, show_progress=not quiet)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with progress_bar(*columns, enabled=not quiet) as bar:
            task = bar.add_task("fusing sets", total=len(plan.todo), failed=0)
            failures = 0

            def advance(outcome: SetOutcome) -> None:
                nonlocal failures
                failures += not outcome.ok
                bar.update(task, advance=1, failed=failures)

            # --ray names the executor; the library looks it up (engine/streams/executor_registry.py).
            executor, count, settings = (
                ("ray", ray_actors, RaySettings(address=ray_address, num_gpus_per_actor=num_gpus_per_actor,
                                                connect_timeout_s=ray_timeout))
                if ray else ("processes", 1 if workers is None else workers, None))
            report = run_batch(plan, options, executor=executor, workers=count, ray=settings, max_pixels=max_pixels,
                               on_outcome=advance)
    except DiskFull as full:
        for outcome in full.earlier:  # the batch's error line follows them
            typer.echo(f"failed {outcome.key}: {outcome.error}", err=True)
        raise
    _print_report(report, output)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: BatchReport, output: Path) -> None:
    typer.echo(f"{report.summary()} -> {output}")
    for outcome in report.failed:
        typer.echo(f"failed {outcome.key}: {outcome.error}", err=True)
