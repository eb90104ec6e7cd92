"""`semfuse-rt build`: export the ONNX graphs (and TensorRT engines where possible)."""
from __future__ import annotations

from pathlib import Path

import typer

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.fuse import DEFAULT_LAYER
from semfuse_rt.export.graphs import DEFAULT_OPSET, MIN_OPSET
from semfuse_rt.export.tensorrt import DEFAULT_PRECISION, DEFAULT_WORKSPACE_MIB
from semfuse_rt.export.tensorrt import DEFAULT_SHAPES


@app.command("build")
def build_command(
    layer: list[str] = typer.Option([DEFAULT_LAYER], help="VGG19 layer(s) to export; repeat for several."),
    weights: Path | None = typer.Option(None, help="VGG19 weights file (default: the cached Oxford weights)."),
    out: Path | None = typer.Option(None, help="Engine directory (default: under the user cache dir; one per layer)."),
    opset: int = typer.Option(DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} to the newest this torch exports."),
    force: bool = typer.Option(False, help="Rebuild even if the directory is up to date."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT engines for this GPU."),
    precision: str = typer.Option(DEFAULT_PRECISION, help="TensorRT precision: fp32, fp16 or bf16."),
    shapes: str | None = typer.Option(
        None, help=f"TensorRT profile MIN,OPT,MAX, each NxHxW (images x height x width); default {DEFAULT_SHAPES}."),
    workspace: int | None = typer.Option(
        None, help=f"TensorRT builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MIB})."),
    device: int = typer.Option(0, help="CUDA device to build the TensorRT engines for."),
) -> None:
    """Export the features and explicit-gradient graphs to ONNX; with --trt, build TensorRT engines."""
    # Here, not at the top: the exporter imports torch, which `--help` and usage errors need not wait for.
    from semfuse_rt.export import check_build_options
    from semfuse_rt.export.graphs import export_graphs
    from semfuse_rt.export.networks import load_vgg19

    # Checked before the weights load (a first run fetches them) and before any folder is made.
    plan = check_build_options(layer, opset, trt=trt, precision=precision, shapes=shapes, workspace_mib=workspace)
    vgg = load_vgg19(weights)
    exported = []
    for name in plan.layers:
        directory = out / name if out and len(plan.layers) > 1 else out
        graphs = export_graphs(vgg, name, directory, opset=opset, force=force)
        exported.append((name, graphs))
        state = "built" if graphs.built else "up to date"
        typer.echo(f"{name}: {state} -> {graphs.directory}")
    if not trt:
        return

    from semfuse_rt.export.tensorrt import TrtUnavailable, build_fusion_engines, detect_environment

    try:
        env = detect_environment(device)
    except TrtUnavailable as error:
        typer.echo(f"TensorRT engines not built: {error}; the ONNX graphs above are ready for a machine that has it.",
                   err=True)
        return
    for name, graphs in exported:
        artefacts = build_fusion_engines(graphs.directory, name, env, precision=precision,
                                         shapes=plan.shapes or DEFAULT_SHAPES, workspace_mib=workspace, force=force,
                                         log=lambda message: typer.echo(message, err=True))
        for kind, artefact in artefacts.items():
            state = f"built ({artefact.reason})" if artefact.built else "up to date"
            typer.echo(f"{name}: TensorRT {precision} {kind} engine {state} -> {artefact.path}")
