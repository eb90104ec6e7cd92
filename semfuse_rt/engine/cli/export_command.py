"""`semfuse-rt export -o fuse.onnx`: a whole fuse of a preset as one ONNX graph."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.shared_options import fuse_option
from semfuse_rt.export.graphs import DEFAULT_OPSET, MIN_OPSET
from semfuse_rt.engine.deploy import DEFAULT_SIZE
from semfuse_rt.kernels import MAX_INPUTS

_HELP = """Export a whole fuse of a preset as one ONNX graph, to run without this package.

The graph takes the K images of one fuse as `images`, (K, H, W, 3)
uint8 RGB (a grey image replicated to three channels), and gives
`fused` (H, W, 3) uint8 and `fused_luma` (H, W) uint8, the result of a
grey set. It holds the start, the rule, the preset's optimisation steps
unrolled, the base layer and the final rounding, and matches
`semfuse-rt fuse` with the same options within a grey level or so.
OUT.json beside it is its manifest. examples/deploy runs it with
onnxruntime in Python or Node.js.

A pyramid-blend start (presets blend and exposure) has as many levels
as the image allows, so its graph takes a range of shorter sides set
by --size: 512x512 gives 512 to 1023 pixels for blend, 384 to 767 for
exposure. Other starts take any size. The graph refuses other sizes.

--triton DIR writes a Triton Inference Server model repository instead:
DIR/NAME/config.pbtxt (platform onnxruntime_onnx, no batching: K is
the graph's first dimension) and DIR/NAME/1/model.onnx with its
manifest. DIR/NAME must not exist yet, or be empty."""


@app.command("export", help=_HELP)
def export_command(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The graph (.onnx); its manifest is "
                                                                        "OUT.json. Or --triton."),
    triton: Optional[Path] = typer.Option(None, "--triton", metavar="DIR",
                                          help="Instead of -o: a Triton Inference Server model repository, made if "
                                               "missing; writes DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx."),
    model_name: Optional[str] = typer.Option(None, "--model-name", metavar="NAME",
                                             help="With --triton: the model's name (default semfuse_PRESET)."),
    method: str = typer.Option("max", "--method", "-m", help="max | majority (the CAM methods cannot be exported)."),
    layer: Optional[str] = fuse_option("layer"),
    preset: Optional[str] = fuse_option("preset"),
    steps: Optional[int] = fuse_option("steps"),
    lr: Optional[float] = fuse_option("lr"),
    decay: Optional[str] = fuse_option("decay"),
    init: Optional[str] = fuse_option("init"),
    window: Optional[int] = fuse_option("window"),
    mean_base: Optional[float] = fuse_option("mean_base"),
    semantic_steps: Optional[int] = fuse_option("semantic_steps"),
    weights: Optional[Path] = fuse_option("weights"),
    inputs: int = typer.Option(2, "--inputs", help=f"Images each fuse takes, fixed in the graph (2 to {MAX_INPUTS})."),
    size: Optional[str] = typer.Option(None, "--size", metavar="WxH",
                                       help="A pyramid-blend start: a size whose shorter side's range the graph "
                                            f"takes (default {DEFAULT_SIZE})."),
    opset: int = typer.Option(DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} to the newest this torch exports."),
    fp16: bool = typer.Option(False, "--fp16", help="Compute in float16 (inputs and outputs stay uint8); the "
                                                     "manifest gives its error against float32 on the bundled pair."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No notice of a first-time weights fetch."),
) -> None:
    # Here, not at the top: the exporter imports torch, which `--help` and usage errors need not wait for.
    from semfuse_rt.engine.deploy import export_fuse
    from semfuse_rt.engine.fuse import FuseOptions

    options = FuseOptions(method=method, layer=layer, preset=preset, steps=steps, lr=lr, decay=decay, init=init,
                          window=window, mean_base=mean_base, semantic_steps=semantic_steps)
    exported = export_fuse(output, options, images=inputs, size=size, opset=opset, weights=weights,
                           show_progress=not quiet, triton=triton, model_name=model_name, fp16=fp16)
    typer.echo(exported.summary())
