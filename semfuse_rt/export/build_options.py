"""The options of `semfuse-rt build`, checked before the weights load (a first run fetches
them) and before any folder is made: the ONNX opset and layers, and the TensorRT engines'
precision, profile shapes and workspace, which are errors even where TensorRT is missing."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.opsets import check_opset
from semfuse_rt.export.tensorrt.trt_build import DEFAULT_PRECISION, PRECISIONS
from semfuse_rt.export.tensorrt.trt_profiles import ShapeSpec, parse_shapes


@dataclass(frozen=True)
class BuildPlan:
    """A checked `build`: the layers to export at `opset`; with `trt`, the engines' settings
    (`shapes` None: the default profile; `workspace_mib` None: the default limit)."""

    layers: list[str]
    opset: int
    trt: bool
    precision: str
    shapes: ShapeSpec | None
    workspace_mib: int | None


def check_build_options(layers: Sequence[str], opset: int, *, trt: bool, precision: str = DEFAULT_PRECISION,
                        shapes: str | None = None, workspace_mib: int | None = None) -> BuildPlan:
    # Here, not at the top: vgg19.py imports torch, which the command's --help need not wait for.
    from semfuse_rt.export.networks.vgg19 import check_layer

    if precision not in PRECISIONS:
        raise SemfuseError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    spec = parse_shapes(shapes) if shapes is not None else None
    if workspace_mib is not None and workspace_mib < 1:
        raise SemfuseError(f"--workspace must be at least 1 MiB, got {workspace_mib}")
    if not trt and (shapes is not None or workspace_mib is not None or precision != DEFAULT_PRECISION):
        raise SemfuseError("--precision, --shapes and --workspace apply to TensorRT engines; add --trt")
    check_opset(opset)
    return BuildPlan([check_layer(name) for name in layers], opset, trt, precision, spec, workspace_mib)
