"""A TensorRT engine of a whole-fuse graph that `semfuse-rt export` wrote (`build --trt
--graph FILE.onnx`): the fuse of a preset, start to rounding, as one engine.

The graph's manifest says how many images it takes (fixed, the `images` input's first
dimension) and which shorter sides: a pyramid-blend start's depth depends on the size, so
the graph refuses sides outside that range, and the optimisation profile must stay inside
it. The network is strongly typed, so the engine computes in the graph's own types: its
precision is the export's (`export --fp16` for float16), never lowered here.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.tensorrt.trt_build import (
    DEFAULT_WORKSPACE_MIB,
    EngineArtefact,
    EngineRequest,
    Log,
    TrtEnvironment,
    ensure_engine,
)
from semfuse_rt.export.tensorrt.trt_profiles import (
    DEFAULT_SHAPES,
    ShapePoint,
    ShapeSpec,
    input_profiles,
    onnx_input_dims,
)


def _keep_the_graphs_types(model, _precision):
    return model, {}


def whole_fuse_shapes(manifest: dict, shapes: ShapeSpec | None = None) -> ShapeSpec:
    """The profile for a graph with this manifest: `shapes` checked against what the graph
    takes, or by default every size whose sides both lie in its range of shorter sides
    (256 to 1024 a side where it takes any size above its least), tuned for the least."""
    images = manifest["images"]
    least, most = manifest["shorter_side"]
    if shapes is None:
        if most is None:
            low = max(least, DEFAULT_SHAPES.min.height)
            high = max(low, DEFAULT_SHAPES.max.height)
            opt = min(max(low, DEFAULT_SHAPES.opt.height), high)
        else:
            low = opt = least
            high = most
        return ShapeSpec(ShapePoint(images, low, low), ShapePoint(images, opt, opt), ShapePoint(images, high, high))
    for point in (shapes.min, shapes.opt, shapes.max):
        if point.batch != images:
            raise SemfuseError(f"--shapes {shapes}: this graph fuses {images} images (its first dimension is fixed "
                               f"at export), so every N must be {images}")
    # Over the profile's box the shorter side runs from min(MIN's sides) to min(MAX's sides).
    smallest, largest = min(shapes.min.height, shapes.min.width), min(shapes.max.height, shapes.max.width)
    if smallest < least or (most is not None and largest > most):
        sides = f"{least} to {most}" if most is not None else f"{least} or more"
        raise SemfuseError(f"--shapes {shapes}: this graph takes images whose shorter side is {sides} pixels, and "
                           f"the profile reaches shorter sides of {smallest} to {largest}")
    return shapes


def engine_path(graph: Path, env: TrtEnvironment, directory: Path | None = None) -> Path:
    """FILE.GPU.plan, beside the graph or in `directory`: one engine per GPU kind."""
    return (directory or graph.parent) / f"{graph.stem}.{env.gpu.key}.plan"


def build_whole_fuse_engine(graph: Path, manifest: dict, env: TrtEnvironment, *, shapes: ShapeSpec | None = None,
                            workspace_mib: int | None = None, directory: Path | None = None, force: bool = False,
                            build: Callable | None = None, log: Log | None = None) -> EngineArtefact:
    """The engine of `graph` (whose `manifest` the caller has read and checked) on `env`,
    built, or reused while its own manifest matches; `build` as ensure_engine takes it."""
    import onnx

    spec = whole_fuse_shapes(manifest, shapes)
    precision = manifest.get("precision", "fp32")
    dims = onnx_input_dims(onnx.load(str(graph), load_external_data=False))
    request = EngineRequest(graph, engine_path(graph, env, directory), precision, input_profiles(dims, spec),
                            str(spec), workspace_mib or DEFAULT_WORKSPACE_MIB, _keep_the_graphs_types)
    return ensure_engine(request, env, force=force, strict=True, build=build, log=log)
