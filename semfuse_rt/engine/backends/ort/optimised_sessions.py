"""ONNX Runtime sessions that load from an optimised model cached beside their graph.

ONNX Runtime optimises a graph each time a session opens it (the DT-CWT start's: 0.15-0.2 s
of a one-shot fuse on the 2-core VM, the CAM classifier's 0.1 s). The first session writes
the optimised model, `optimised/STEM-KEY/model.onnx` beside the graph, with its larger
initializers in `model.onnx.data`; later ones open that with no optimisation (0.02 s for the
CAM graph), and ONNX Runtime memory-maps the data file instead of copying the weights.

The key covers what the optimised model depends on: the graph file (size, modification time
and inode: graphs are replaced by rename, never edited in place), ONNX Runtime's version,
the optimisation level, the providers, and the CPU's instruction-set flags (the layout
transformations pick kernels by them). A folder appears whole, by rename, or not at all; a
failure to write it, or to load it, costs only the optimisation, never the fuse.
"""
from __future__ import annotations

import hashlib
import platform
import secrets
import shutil
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from semfuse_rt.cache import TEMP_SUFFIX

if TYPE_CHECKING:
    from onnxruntime import InferenceSession, SessionOptions

FOLDER = "optimised"
MODEL = "model.onnx"
DATA = MODEL + ".data"
# Initializers from this size on go to the data file, where they are memory-mapped.
EXTERNAL_MIN_BYTES = 1024


@lru_cache(maxsize=1)
def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return flags or f"{platform.machine()} {platform.processor()}"


def cache_key(graph: Path, level: str, providers: Sequence[str]) -> str:
    import onnxruntime as ort

    stat = graph.stat()
    parts = [str(stat.st_size), str(stat.st_mtime_ns), str(stat.st_ino), ort.__version__, level, *providers,
             _cpu_signature()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def optimised_folder(graph: Path, level: str, providers: Sequence[str]) -> Path:
    return graph.parent / FOLDER / f"{graph.stem}-{cache_key(graph, level, providers)}"


def open_session(graph: str | Path, level: str, providers: Sequence[str],
                 configure: Callable[[SessionOptions], None] | None = None) -> InferenceSession:
    """A session on `graph` at optimisation `level` (a GraphOptimizationLevel name) on
    `providers`; `configure` sets the rest of its options (threads, allocators)."""
    import onnxruntime as ort

    graph = Path(graph)

    def options(at: str) -> SessionOptions:
        made = ort.SessionOptions()
        if configure is not None:
            configure(made)
        made.graph_optimization_level = getattr(ort.GraphOptimizationLevel, at)
        return made

    if level == "ORT_DISABLE_ALL":
        return ort.InferenceSession(str(graph), options(level), providers=list(providers))
    folder = optimised_folder(graph, level, providers)
    if (folder / MODEL).is_file():
        try:
            return ort.InferenceSession(str(folder / MODEL), options("ORT_DISABLE_ALL"), providers=list(providers))
        except Exception:  # noqa: BLE001 - a damaged cached model is rebuilt, whatever ONNX Runtime raises
            shutil.rmtree(folder, ignore_errors=True)
    return _session_writing(graph, folder, options(level), providers)


def _session_writing(graph: Path, folder: Path, options: SessionOptions, providers: Sequence[str]) -> InferenceSession:
    """The session on `graph`, writing its optimised model into `folder` on the way."""
    import onnxruntime as ort

    staging = folder.parent / f".{folder.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        staging.mkdir(parents=True)
    except OSError:  # a folder that cannot be written: no cache, the same session
        return ort.InferenceSession(str(graph), options, providers=list(providers))
    try:
        options.optimized_model_filepath = str(staging / MODEL)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_MIN_BYTES))
        session = ort.InferenceSession(str(graph), options, providers=list(providers))
        try:
            staging.rename(folder)
        except OSError:  # another process wrote it first
            pass
        else:
            _remove_older(folder)
        return session
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_older(kept: Path) -> None:
    """The graph's optimised models under other keys: written before it was rebuilt."""
    stem = kept.name.rsplit("-", 1)[0]
    for folder in kept.parent.glob(f"{stem}-*"):
        if folder != kept and folder.name.rsplit("-", 1)[0] == stem:
            shutil.rmtree(folder, ignore_errors=True)
