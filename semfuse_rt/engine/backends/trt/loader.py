"""Exports the graphs and builds (or finds) TensorRT engines for them on this GPU.

Engines come from export/tensorrt/trt_build.py: built on first use (minutes, once per GPU model,
TensorRT version and precision) or by `semfuse-rt build --trt`, and rebuilt when their
manifest does not match what runs here. Asked for a shape outside the stored profiles, the
loader rebuilds them with the profile widened to cover it.
"""
from __future__ import annotations

import functools
import sys

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import VGG19Weights


@functools.cache
def unusable_reason(device: int = 0) -> str | None:
    """Why TensorRT cannot run here (no tensorrt, no cuda-python, no GPU), or None."""
    from semfuse_rt.export.tensorrt.trt_build import unavailable_reason

    return unavailable_reason(device)


def usable() -> bool:
    return unusable_reason() is None


def _stderr(message: str) -> None:
    print(f"semfuse-rt: {message}", file=sys.stderr)


class TrtEngineLoader:
    def __init__(self, weights: VGG19Weights, layer: str, *, precision: str | None = None, shapes=None,
                 workspace_mib: int | None = None, device: int = 0, engine_dir=None, log=_stderr):
        from semfuse_rt.export.tensorrt.trt_build import DEFAULT_PRECISION, PRECISIONS
        from semfuse_rt.export.tensorrt.trt_profiles import parse_shapes

        self.weights, self.layer = weights, layer
        self.precision = precision or DEFAULT_PRECISION
        if self.precision not in PRECISIONS:
            raise SemfuseError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        self.shapes = parse_shapes(shapes) if isinstance(shapes, str) else shapes
        self.workspace_mib, self.device, self.engine_dir, self.log = workspace_mib, device, engine_dir, log
        self.graphs = self.env = None

    def __call__(self, need=None):
        """{FEATURES: artefact, GRADIENT: artefact} whose profiles cover `need` (a ShapePoint)."""
        from semfuse_rt.export.graphs.onnx_export import export_graphs
        from semfuse_rt.export.tensorrt.trt_build import build_fusion_engines, detect_environment

        reason = unusable_reason(self.device)
        if reason is not None:
            raise SemfuseError(f"the TensorRT backend is not usable here: {reason}")
        if self.graphs is None:
            self.graphs = export_graphs(self.weights, self.layer, self.engine_dir)
            self.env = detect_environment(self.device)
        return build_fusion_engines(self.graphs.directory, self.layer, self.env, precision=self.precision,
                                    shapes=self.shapes, workspace_mib=self.workspace_mib, need=need, log=self.log)
