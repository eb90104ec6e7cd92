"""`semfuse-rt fuse A B [C ...] -o OUT`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from semfuse_rt.engine.fuse import FuseOptions
from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.progress import step_progress
from semfuse_rt.engine.cli.shared_options import fuse_option, max_pixels_option, quiet_option

if TYPE_CHECKING:
    from rich.table import Table


def retention_table(paths, rows) -> Table:
    from rich.table import Table  # here: only --report prints a table

    table = Table(title="semantic retention: each input's top-1 class in the fused image")
    for column in ("input", "top-1 class", "p(input)", "rank in fused", "p(fused)"):
        table.add_column(column)
    for path, row in zip(paths, rows):
        table.add_row(Path(path).name, row.class_name, f"{row.input_probability:.3f}",
                      str(row.fused_rank), f"{row.fused_probability:.3f}")
    return table


@app.command("fuse")
def fuse_command(
    inputs: List[Path] = typer.Argument(..., metavar="A B [C ...]",
                                        help="Two or more registered images of one scene."),
    output: Path = typer.Option(..., "--output", "-o", help="Fused image (.png, .tif, .jpg, .bmp)."),
    # The library's options (engine/fuse/fuse_options.py): flags, defaults and help.
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
    save_cams: Optional[Path] = typer.Option(None, "--save-cams", help="Folder for each input's CAM overlay."),
    report: bool = typer.Option(False, "--report",
                                help="Print whether each input's top-1 class survives in the result."),
    max_pixels: int = max_pixels_option(),
    memory_budget: Optional[str] = fuse_option("memory_budget"),
    tile: Optional[int] = fuse_option("tile"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the time of each stage and the "
                                                                "peak resident memory."),
    quiet: bool = quiet_option(),
) -> None:
    """Fuse registered images into one that keeps the important content of all."""
    # Here, not at the top: the library imports numpy and OpenCV, and torch where the fuse is
    # not its start alone, which `--help` and usage errors need not wait for.
    from semfuse_rt.engine.api import fuse_files

    # None leaves an option to the method or preset; the library checks them all here and picks
    # the fuser (engine/api.py, make_fuser) by the options given.
    options = FuseOptions.from_keywords(
        method=method, layer=layer, preset=preset, steps=steps, lr=lr, decay=decay, init=init, window=window,
        mean_base=mean_base, semantic_steps=semantic_steps, backend=backend, weights=weights, classes=classes,
        cam_weights=cam_weights, memory_budget=memory_budget, tile=tile, show_progress=not quiet)
    with step_progress("fusing", enabled=not quiet) as progress:
        result = fuse_files(inputs, output, options, save_cams=save_cams, report=report, progress=progress,
                            max_pixels=max_pixels)
    if report:
        from semfuse_rt.engine.cli.screen import screen

        screen().print(retention_table(inputs, result.retention))
    typer.echo(f"{result.summary(len(inputs))} -> {output}")
    if verbose:
        from semfuse_rt.engine.limits import peak_resident_bytes
        from semfuse_rt.engine.limits import describe

        stages = ", ".join(f"{stage} {seconds * 1e3:.0f} ms" for stage, seconds in result.stages.items())
        typer.echo(f"stages: {stages}; peak resident memory {describe(peak_resident_bytes())}")
