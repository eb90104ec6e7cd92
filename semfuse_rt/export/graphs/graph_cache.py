"""Small graphs that depend on no weights (feature rules, the base layer), exported once per
code version and opset into one cache folder, each listed in its manifest with its sha256."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

from semfuse_rt.cache import atomic_write_bytes, cache_dir, sha256_of
from semfuse_rt.export.graphs.manifest import (
    manifest_for, read_manifest, rebuild_reason, source_sha256, tool_versions,
                                       write_manifest)
from semfuse_rt.export.graphs.onnx_export import _export, _simplify
from semfuse_rt.export.graphs.opsets import DEFAULT_OPSET


def exported_graph(name: str, source_modules: tuple, build: Callable[[], tuple[torch.nn.Module, tuple, dict, dict]],
                   directory: Path | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX file `name`, exported by `build() -> (module, example args, io names, dynamic
    axes)` unless the folder holds it intact for this code and opset."""
    digest = source_sha256(*source_modules)
    directory = Path(directory) if directory else cache_dir("engines") / f"small-opset{opset}-{digest[:10]}"
    directory.mkdir(parents=True, exist_ok=True)
    key = {"graph_source_sha256": digest, "opset": opset}
    existing = read_manifest(directory)
    current = manifest_for(existing, key)
    reason = rebuild_reason(directory, existing, key, [name])
    if reason is None and current is not None:
        return directory / name
    if reason is not None and not (current is not None and name not in current.get("files", {})):
        print(f"semfuse-rt: exporting {name} in {directory} again: {reason}", file=sys.stderr)
    module, args, io, dynamic = build()
    with torch.no_grad():
        model, _ = _simplify(_export(module.eval(), args, io, dynamic, opset))
    atomic_write_bytes(directory / name, model.SerializeToString())
    files = dict(current.get("files", {})) if current is not None else {}
    files[name] = sha256_of(directory / name)
    io_all = dict(current.get("io", {})) if current is not None else {}
    io_all[name] = io
    write_manifest(directory, dict(key, files=files, io=io_all, tools=tool_versions("torch", "onnx", "onnxslim")))
    return directory / name
