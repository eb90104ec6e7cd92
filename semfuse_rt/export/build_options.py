"""The options of `semfuse-rt build`, checked before the weights load (a first run fetches
them) and before any folder is made: the ONNX opset and layers, and the TensorRT engines'
precision, profile shapes and workspace, which are errors even where TensorRT is missing.
With `--graph` it builds an engine of a graph that `export` wrote instead, and the options
of the per-layer graphs do not apply."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET, check_opset
from semfuse_rt.export.tensorrt.trt_build import DEFAULT_PRECISION, PRECISIONS
from semfuse_rt.export.tensorrt.trt_profiles import ShapeSpec, parse_shapes


@dataclass(frozen=True)
class BuildPlan:
    """A checked `build`: the layers to export at `opset`, or the exported `graph` to build
    an engine of; with `trt`, the engines' settings (`precision` None: the default, or with
    `graph` the graph's own; `shapes` None: the default profile; `workspace_mib` None: the
    default limit)."""

    layers: list[str]
    opset: int
    trt: bool
    precision: str | None
    shapes: ShapeSpec | None
    workspace_mib: int | None
    graph: Path | None = None


def check_build_options(layers: Sequence[str] | None, opset: int | None, *, default_layer: str, trt: bool,
                        precision: str | None = None, shapes: str | None = None, workspace_mib: int | None = None,
                        graph: Path | None = None, weights: Path | None = None) -> BuildPlan:
    """`layers`, `opset`, `precision` and `weights` are None where the user gave none;
    `default_layer` is the fuse's (engine/fuse/methods.py)."""
    # Here, not at the top: vgg19.py imports torch, which the command's --help need not wait for.
    from semfuse_rt.export.networks.vgg19 import check_layer

    if precision is not None and precision not in PRECISIONS:
        raise SemfuseError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    spec = parse_shapes(shapes) if shapes is not None else None
    if workspace_mib is not None and workspace_mib < 1:
        raise SemfuseError(f"--workspace must be at least 1 MiB, got {workspace_mib}")
    if not trt and (shapes is not None or workspace_mib is not None or precision not in (None, DEFAULT_PRECISION)):
        raise SemfuseError("--precision, --shapes and --workspace apply to TensorRT engines; add --trt")
    if graph is not None:
        if not trt:
            raise SemfuseError("--graph builds a TensorRT engine of a graph that semfuse-rt export wrote; add --trt")
        given = [flag for flag, present in (("--layer", bool(layers)), ("--opset", opset is not None),
                                            ("--weights", weights is not None)) if present]
        if given:
            flags = f"{', '.join(given[:-1])} and {given[-1]} apply" if len(given) > 1 else f"{given[0]} applies"
            raise SemfuseError(f"{flags} to the per-layer graphs that build exports, not to --graph, whose graph "
                               "semfuse-rt export wrote with its own")
        return BuildPlan([], DEFAULT_OPSET, trt, precision, spec, workspace_mib, Path(graph))
    opset = DEFAULT_OPSET if opset is None else opset
    check_opset(opset)
    return BuildPlan([check_layer(name) for name in (layers or [default_layer])], opset, trt,
                     precision or DEFAULT_PRECISION, spec, workspace_mib)
