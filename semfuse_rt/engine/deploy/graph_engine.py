"""`semfuse-rt build --trt --graph FILE.onnx`: a TensorRT engine of a whole-fuse graph that
`semfuse-rt export` wrote, beside it (FILE.GPU.plan and its manifest) or in `--out`.

Everything is checked before TensorRT is looked for, so that an option that cannot work
says so on a machine without it too: the graph and its manifest, the precision (the
graph's own), the profile against the sizes the graph takes, and the folder."""
from __future__ import annotations

from pathlib import Path

from semfuse_rt.engine.deploy.graph_manifest import read_manifest
from semfuse_rt.engine.io.images import check_writable_folder
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.tensorrt.trt_build import EngineArtefact, Log, TrtUnavailable, detect_environment
from semfuse_rt.export.tensorrt.trt_profiles import ShapeSpec
from semfuse_rt.export.tensorrt.whole_fuse_engine import build_whole_fuse_engine, whole_fuse_shapes


def build_graph_engine(graph: Path, *, precision: str | None = None, shapes: ShapeSpec | None = None,
                       workspace_mib: int | None = None, out: Path | None = None, device: int = 0,
                       force: bool = False, log: Log | None = None) -> EngineArtefact:
    """The engine of `graph` for GPU `device`, built, or reused while it is up to date."""
    graph = Path(graph)
    manifest = read_manifest(graph)
    own = manifest.get("precision", "fp32")
    if precision is not None and precision != own:
        raise SemfuseError(f"--precision {precision}: the engine computes in its graph's own precision, {own} for "
                           f"{graph.name}; export the graph {'with' if precision == 'fp16' else 'without'} --fp16 "
                           "for that")
    refused = manifest.get("tensorrt_problems") or []
    if refused:
        raise SemfuseError(f"--graph {graph}: TensorRT's ONNX parser would refuse it ({'; '.join(refused)})")
    whole_fuse_shapes(manifest, shapes)
    if out is not None:
        check_writable_folder(out, "--out")
    try:
        env = detect_environment(device)
    except TrtUnavailable as error:
        raise SemfuseError(f"TensorRT engine not built: {error}") from None
    return build_whole_fuse_engine(graph, manifest, env, shapes=shapes, workspace_mib=workspace_mib, directory=out,
                                   force=force, log=log)
