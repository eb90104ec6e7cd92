"""`semfuse-rt cam IMAGE -o heatmap.png`: what the classifier sees, and where."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.screen import screen


def _top5_table(predictions, network: str) -> Table:
    table = Table(title=f"{network}: top-5 ImageNet classes")
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("index", justify="right")
    table.add_column("probability", justify="right")
    for rank, prediction in enumerate(predictions, start=1):
        table.add_row(str(rank), prediction.label, str(prediction.index), f"{prediction.probability:.3f}")
    return table


@app.command("cam")
def cam_command(
    image: Path = typer.Argument(..., help="Image to explain (grey or RGB, 8- or 16-bit)."),
    output: Path = typer.Option(..., "--output", "-o", help="Overlay image (.png, .tif, .jpg, .bmp)."),
    classes: int = typer.Option(1, "--classes", min=1, max=1000,
                                help="Map the K most probable classes, weighted by probability."),
    cam_weights: Optional[Path] = typer.Option(
        None, "--cam-weights",
        help="Full torchvision VGG19 file (with classifier head): VGG19 is then the CAM network.",
    ),
) -> None:
    """Save IMAGE with its class activation map overlaid and print its top-5 classes."""
    from semfuse_rt.engine.semantic import input_cams
    from semfuse_rt.engine.semantic import load_classifier, top_k
    from semfuse_rt.engine.semantic import overlay_heatmap
    from semfuse_rt.engine.io import check_not_an_input, check_output, load_image, save_image

    check_not_an_input(output, [image])  # as fuse does: the overlay may not replace the image it shows
    picture = load_image(image)
    check_output(output)  # fail before the network runs, not after
    classifier = load_classifier(cam_weights)
    cams = input_cams(classifier, [picture], classes)
    save_image(output, overlay_heatmap(picture, cams.maps[0].numpy()))
    screen().print(_top5_table(top_k(cams.probabilities[0], 5, classifier.class_names), classifier.name))
    typer.echo(f"CAM of {classes} class{'es' if classes > 1 else ''} -> {output}")
