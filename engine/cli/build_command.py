"""`semfuse-rt build`: export the ONNX graphs (and TensorRT engines where possible)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from semfuse_rt.engine.api import DEFAULT_LAYER
from semfuse_rt.engine.cli import app
from semfuse_rt.export.onnx_export import DEFAULT_OPSET, export_graphs
from semfuse_rt.export.weights import load_vgg19


@app.command("build")
def build_command(
    layer: List[str] = typer.Option([DEFAULT_LAYER], help="VGG19 layer(s) to export; repeat for several."),
    weights: Optional[Path] = typer.Option(None, help="VGG19 weights file (default: the cached Oxford weights)."),
    out: Optional[Path] = typer.Option(None, help="Engine directory (default: under the user cache dir; one per layer)."),
    opset: int = typer.Option(DEFAULT_OPSET, help="ONNX opset (>= 17)."),
    force: bool = typer.Option(False, help="Rebuild even if the directory is up to date."),
) -> None:
    """Export the features and explicit-gradient graphs to ONNX, with a manifest."""
    vgg = load_vgg19(weights)
    for name in layer:
        directory = out / name if out and len(layer) > 1 else out
        graphs = export_graphs(vgg, name, directory, opset=opset, force=force)
        state = "built" if graphs.built else "up to date"
        typer.echo(f"{name}: {state} -> {graphs.directory}")
