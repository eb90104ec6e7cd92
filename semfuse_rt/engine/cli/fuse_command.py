"""`semfuse-rt fuse A B [C ...] -o OUT`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from semfuse_rt.engine.backends import BACKENDS
from semfuse_rt.engine.fuse.methods import DEFAULT_LAYER, DEFAULT_METHOD, DEFAULT_WINDOW, METHODS, default_presets
from semfuse_rt.engine.limits.pixel_limit import DEFAULT_MAX_PIXELS
from semfuse_rt.engine.start.initialisation import INITIALISATIONS
from semfuse_rt.engine.limits.option_checks import MAX_LR
from semfuse_rt.engine.fuse.presets import PRESETS, preset_values
from semfuse_rt.kernels.adam_scalars import DECAYS
from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.progress import step_progress

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
    method: str = typer.Option(DEFAULT_METHOD, "--method", "-m", help=" | ".join(METHODS)),
    # Options that only some methods use default to None, so that the library can tell one
    # the user gave (an error where the method does not use it) from the default.
    layer: Optional[str] = typer.Option(None, help=f"VGG19 layer whose features are fused (default {DEFAULT_LAYER})."),
    preset: Optional[str] = typer.Option(None, help=f"{' | '.join(PRESETS)}: a pyramid blend weighted by the "
                                                    "inputs' own contrast and agreement, alone (blend), then 10 "
                                                    "steps (blend-steps), with a whole-image pyramid for "
                                                    "exposure stacks (exposure), with the semantic phase "
                                                    "(semantic); as published (paper); or from the DT-CWT "
                                                    "start: 30 steps (refined), 10 (fast) (default "
                                                    f"{default_presets()})."),
    steps: Optional[int] = typer.Option(None, help=f"Adam steps of the image optimisation (preset: "
                                                   f"{preset_values('steps')})."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate in pixel units, above 0 and at most "
                                                  f"{MAX_LR:g} (preset: {preset_values('lr')})."),
    decay: Optional[str] = typer.Option(None, help=f"Learning rate over the steps: {' | '.join(DECAYS)} "
                                                   f"(preset: {preset_values('decay')})."),
    init: Optional[str] = typer.Option(None, help=f"Starting image: {' | '.join(INITIALISATIONS)} "
                                                  f"(preset: {preset_values('init')})."),
    window: Optional[int] = typer.Option(None, help=f"majority, cam-majority: filter window, odd (default "
                                                    f"{DEFAULT_WINDOW})."),
    mean_base: Optional[float] = typer.Option(None, "--mean-base",
                                              help="Put the optimised detail over the inputs' mean base layer "
                                                   f"(Gaussian sigma in pixels; 0: off) (preset: "
                                                   f"{preset_values('mean_base')})."),
    semantic_steps: Optional[int] = typer.Option(None, "--semantic-steps",
                                                 help="Adam steps of the semantic phase at relu5_1 on a 160-pixel "
                                                      "copy; 0: off (preset: "
                                                      f"{preset_values('semantic_steps')})."),
    backend: Optional[str] = typer.Option(None, help=f"{' | '.join(BACKENDS)} (default auto)."),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights: torchvision .pth, Keras .h5 or cache file."),
    classes: Optional[int] = typer.Option(None, "--classes",
                                          help="Semantic methods: CAMs of the K most probable classes, weighted by "
                                               "probability (default 1)."),
    cam_weights: Optional[Path] = typer.Option(None, "--cam-weights",
                                               help="Full torchvision VGG19 file: VGG19 is then the CAM network."),
    save_cams: Optional[Path] = typer.Option(None, "--save-cams", help="Folder for each input's CAM overlay."),
    report: bool = typer.Option(False, "--report",
                                help="Print whether each input's top-1 class survives in the result."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels",
                                   help="Largest input accepted, in pixels per image (read from its header)."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget",
                                                help="Memory a fuse may take (e.g. 8G; default: 80% of the "
                                                     "memory available, or of a GPU's free memory, at most 3G). "
                                                     "Larger images are fused in tiles that fit; what cannot "
                                                     "fit is refused before any work."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Fuse in tiles of this many pixels a side (default: "
                                                            "only when the whole image would not fit the memory "
                                                            "budget)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print the time of each stage and the "
                                                                "peak resident memory."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress bar, nor the notice of a first-time weights fetch."),
) -> None:
    """Fuse registered images into one that keeps the important content of all."""
    # Here, not at the top: the library imports numpy and OpenCV, and torch where the fuse is
    # not its start alone, which `--help` and usage errors need not wait for.
    from semfuse_rt.engine.api import fuse_files

    # Only the options given: None leaves one to the method or preset, and the library picks
    # the fuser (engine/api.py, make_fuser) by the options it is given.
    given = {name: value for name, value in dict(
        layer=layer, preset=preset, steps=steps, lr=lr, decay=decay, init=init, window=window, mean_base=mean_base,
        backend=backend, weights=weights, classes=classes, cam_weights=cam_weights, memory_budget=memory_budget,
        tile=tile, semantic_steps=semantic_steps).items() if value is not None}
    with step_progress("fusing", enabled=not quiet) as progress:
        result = fuse_files(inputs, output, method, save_cams=save_cams, report=report, progress=progress,
                            max_pixels=max_pixels, show_progress=not quiet, **given)
    if report:
        from semfuse_rt.engine.cli.screen import screen

        screen().print(retention_table(inputs, result.retention))
    typer.echo(f"{result.summary(len(inputs))} -> {output}")
    if verbose:
        from semfuse_rt.engine.limits.memory import peak_resident_bytes
        from semfuse_rt.engine.limits.memory_budget import describe

        stages = ", ".join(f"{stage} {seconds * 1e3:.0f} ms" for stage, seconds in result.stages.items())
        typer.echo(f"stages: {stages}; peak resident memory {describe(peak_resident_bytes())}")
