"""The manifest beside a graph that `semfuse-rt export` wrote (FILE.onnx.json): where it is,
and reading it back for a command that takes the graph (`bench --graph`, `build --trt
--graph`), which must find it records this very file."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from semfuse_rt.engine.io.images import refuse_link_loop
from semfuse_rt.errors import SemfuseError

MANIFEST_SUFFIX = ".json"
# What a command taking the graph reads from its manifest.
_MANIFEST_KEYS = ("preset", "method", "options", "images", "shorter_side", "files", "weights_sha256")


def manifest_path(graph: Path) -> Path:
    return graph.with_name(graph.name + MANIFEST_SUFFIX)


def read_manifest(graph: Path, option: str = "--graph") -> dict:
    """The manifest beside `graph`; `option` names the graph in the one-line errors."""
    refuse_link_loop(graph)
    if not graph.is_file():
        raise SemfuseError(f"{option} {graph}: no such file; give a graph written by semfuse-rt export")
    if graph.suffix.lower() != ".onnx":
        raise SemfuseError(f"{option} {graph}: not an .onnx file; give a graph written by semfuse-rt export")
    beside = manifest_path(graph)
    if not beside.is_file():
        raise SemfuseError(f"{option} {graph}: no manifest {beside.name} beside it; {option} takes graphs "
                           "written by semfuse-rt export, whose manifest says what they fuse")
    try:
        manifest = json.loads(beside.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SemfuseError(f"{option} {graph}: cannot read its manifest {beside.name} ({error})") from None
    missing = [key for key in _MANIFEST_KEYS if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise SemfuseError(f"{option} {graph}: {beside.name} is not a manifest of semfuse-rt export (no "
                           f"{', '.join(missing)}); export the graph again")
    recorded = manifest["files"].get(graph.name) if isinstance(manifest["files"], dict) else None
    if recorded != hashlib.sha256(graph.read_bytes()).hexdigest():
        raise SemfuseError(f"{option} {graph}: its sha256 is not the one {beside.name} records for {graph.name}; "
                           "the graph was changed or renamed after the export: export it again")
    return manifest
