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
    layer: list[str] | None = typer.Option(None, help=f"VGG19 layer(s) to export (default {DEFAULT_LAYER}); repeat "
                                                      "for several."),
    weights: Path | None = typer.Option(None, help="VGG19 weights file (default: the cached Oxford weights)."),
    out: Path | None = typer.Option(None, help="Engine directory (default: under the user cache dir; one per layer). "
                                                        "With --graph, its engine's folder (default: the graph's)."),
    opset: int | None = typer.Option(None, help=f"ONNX opset, {MIN_OPSET} to the newest this torch exports "
                                                f"(default {DEFAULT_OPSET})."),
    force: bool = typer.Option(False, help="Rebuild even if the directory is up to date."),
    trt: bool = typer.Option(False, "--trt", help="Also build TensorRT engines for this GPU."),
    precision: str | None = typer.Option(None, help=f"TensorRT precision: fp32, fp16 or bf16 (default "
                                                    f"{DEFAULT_PRECISION}; with --graph, the graph's own)."),
    shapes: str | None = typer.Option(
        None, help=f"TensorRT profile MIN,OPT,MAX, each NxHxW (images x height x width); default {DEFAULT_SHAPES}."),
    workspace: int | None = typer.Option(
        None, help=f"TensorRT builder workspace limit in MiB (default {DEFAULT_WORKSPACE_MIB})."),
    device: int = typer.Option(0, help="CUDA device to build the TensorRT engines for."),
    graph: Path | None = typer.Option(None, "--graph", metavar="FILE.onnx",
                                      help="With --trt: build one engine of a whole-fuse graph that `semfuse-rt "
                                           "export` wrote (FILE.GPU.plan beside it, or in --out) instead."),
) -> None:
    """Export the features and explicit-gradient graphs to ONNX; with --trt, build TensorRT engines.

    With --trt --graph FILE.onnx, build instead the engine of a whole fuse that `export` wrote.
    """
    # Here, not at the top: the exporter imports torch, which `--help` and usage errors need not wait for.
    from semfuse_rt.export import check_build_options
    from semfuse_rt.export.graphs import export_graphs
    from semfuse_rt.export.networks import load_vgg19

    # Checked before the weights load (a first run fetches them) and before any folder is made.
    plan = check_build_options(layer, opset, default_layer=DEFAULT_LAYER, trt=trt, precision=precision, shapes=shapes,
                               workspace_mib=workspace, graph=graph, weights=weights)
    if plan.graph is not None:
        from semfuse_rt.engine.deploy import build_graph_engine

        artefact = build_graph_engine(plan.graph, precision=plan.precision, shapes=plan.shapes,
                                      workspace_mib=workspace, out=out, device=device, force=force,
                                      log=lambda message: typer.echo(message, err=True))
        state = f"built ({artefact.reason})" if artefact.built else "up to date"
        typer.echo(f"{plan.graph.name}: TensorRT {artefact.manifest['precision']} engine {state} -> {artefact.path}")
        return
    vgg = load_vgg19(weights)
    exported = []
    for name in plan.layers:
        directory = out / name if out and len(plan.layers) > 1 else out
        graphs = export_graphs(vgg, name, directory, opset=plan.opset, force=force)
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
        artefacts = build_fusion_engines(graphs.directory, name, env, precision=plan.precision or DEFAULT_PRECISION,
                                         shapes=plan.shapes or DEFAULT_SHAPES, workspace_mib=workspace, force=force,
                                         log=lambda message: typer.echo(message, err=True))
        for kind, artefact in artefacts.items():
            state = f"built ({artefact.reason})" if artefact.built else "up to date"
            typer.echo(f"{name}: TensorRT {plan.precision} {kind} engine {state} -> {artefact.path}")
