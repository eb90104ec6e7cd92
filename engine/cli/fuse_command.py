"""`semfuse-rt fuse A B [C ...] -o OUT`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from semfuse_rt.engine.api import DEFAULT_LAYER, fuse_files
from semfuse_rt.engine.cli import app
from semfuse_rt.engine.cli.progress import step_progress


@app.command("fuse")
def fuse_command(
    inputs: List[Path] = typer.Argument(..., help="Two or more registered images of one scene."),
    output: Path = typer.Option(..., "--output", "-o", help="Fused image (.png, .tif, .jpg, .bmp)."),
    method: str = typer.Option("max", "--method", "-m", help="max | majority"),
    layer: str = typer.Option(DEFAULT_LAYER, help="VGG19 layer whose features are fused."),
    steps: int = typer.Option(100, help="Adam steps of the image optimisation."),
    lr: float = typer.Option(1.0, help="Adam learning rate in pixel units (0..255)."),
    init: str = typer.Option("mean", help="Starting image: mean | max of the inputs."),
    window: int = typer.Option(5, help="Majority filter window (odd)."),
    backend: str = typer.Option("auto", help="auto | trt | ort | torch"),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights: torchvision .pth, Keras .h5 or cache file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fuse registered images into one that keeps the important content of all."""
    with step_progress("fusing", enabled=not quiet) as progress:
        result = fuse_files(
            inputs, output, method, layer=layer, steps=steps, lr=lr, init=init,
            window=window, backend=backend, weights=weights, progress=progress,
        )
    relative = result.relative_loss
    loss_text = f", final loss {relative:.3f} of the first step" if relative is not None else ""
    typer.echo(
        f"fused {len(inputs)} images with {result.method} on {result.backend} in "
        f"{result.seconds:.2f} s{loss_text} -> {output}"
    )
