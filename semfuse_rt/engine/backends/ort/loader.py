"""Exports the graphs for a layer (once, cached) and opens ONNX Runtime sessions on them."""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from semfuse_rt.engine.backends.ort.optimised_sessions import open_session
from semfuse_rt.engine.backends.ort.row_bands import BAND_ROWS
from semfuse_rt.engine.limits.workers import cores as cores  # here too, where the batch and Ray code look
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.graphs.onnx_export import export_graphs
from semfuse_rt.export.networks.weights import VGG19Weights

if TYPE_CHECKING:  # imported where a session opens: onnxruntime takes a while to import
    from onnxruntime import InferenceSession


def usable() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def providers() -> list[str]:
    """Fastest first among what this onnxruntime build offers (TensorRT's EP is the trt
    backend's business). CUDA only where torch can hold the bound device buffers too."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = (("CUDAExecutionProvider", "CPUExecutionProvider") if torch.cuda.is_available()
              else ("CPUExecutionProvider",))
    return [p for p in wanted if p in available]


@functools.lru_cache(maxsize=None)
def share_cpu_arena() -> None:
    """One CPU memory arena for every session of the process. Each session's own arena
    keeps its peak for good, so a fuse held the sum of its graphs' peaks (features, rule,
    start, gradient, base layer); shared, it holds about the largest one. A 2 x 2 MP fuse on
    the 2-core VM peaked at 2.6 GiB instead of 3.4 GiB, and no longer grew on the next call."""
    import onnxruntime as ort

    where = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # 0 / -1: ONNX Runtime's defaults (no cap, its usual growth and chunk sizes).
    ort.create_and_register_allocator(where, ort.OrtArenaCfg(0, -1, -1, -1))


@dataclass
class OrtSessions:
    provider: str
    features: InferenceSession
    gradient: InferenceSession
    # single-threaded row-band gradient sessions
    band_sessions: list[InferenceSession] = field(default_factory=list)
    band_rows: int | None = None
    band_padding: list[float] | None = None  # the pixel above and below the image, per channel

    @property
    def on_cuda(self) -> bool:
        return self.provider == "CUDAExecutionProvider"


class OrtSessionLoader:
    def __init__(self, weights: VGG19Weights, layer: str, *, provider: str | None = None,
                 threads: int | None = None, engine_dir=None, band_rows: int | None = BAND_ROWS):
        """threads: ONNX Runtime's intra-op threads, and with row bands the number of
        single-threaded band sessions (default: one per core). band_rows: rows per band of
        the CPU gradient where the layer allows bands; None runs the whole-image graph."""
        if band_rows is not None and band_rows < 1:
            raise SemfuseError(f"a band needs at least one row, got band_rows={band_rows}")
        self.weights, self.layer = weights, layer
        self.provider, self.threads, self.engine_dir, self.band_rows = provider, threads, engine_dir, band_rows

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if (self.provider or providers()[0]) == "CUDAExecutionProvider" else "cpu")

    def _provider_list(self) -> tuple[str, list[str]]:
        provider = self.provider or providers()[0]
        return provider, [provider] + (["CPUExecutionProvider"] if provider == "CUDAExecutionProvider" else [])

    def _configure(self, options) -> None:
        share_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        if self.threads:
            options.intra_op_num_threads = self.threads

    def session(self, path):
        """A session on one of the small graphs (rules, start, base layer), on this loader's
        provider. Not ORT_ENABLE_ALL: its NCHWc layout wraps the DT-CWT graph's one-channel
        convolutions in reorders that cost more than they save (2 x 520^2 colour start on
        the 2-core VM: 101 ms against 61 ms); the rule graphs run alike either way."""
        return open_session(path, "ORT_ENABLE_EXTENDED", self._provider_list()[1], self._configure)

    def __call__(self) -> OrtSessions:
        graphs = export_graphs(self.weights, self.layer, self.engine_dir)
        provider, chosen = self._provider_list()
        # Not ENABLE_ALL for the features: its NCHWc layout adds a reordered copy of the
        # 64-channel maps (2 MP on the 2-core VM: 0.10 s and 0.5 GB more than 0.07 s).
        features = open_session(graphs.features, "ORT_ENABLE_EXTENDED", chosen, self._configure)
        gradient = open_session(graphs.gradient, "ORT_ENABLE_ALL", chosen, self._configure)
        sessions = OrtSessions(provider, features, gradient)
        # Bands are a CPU measure: they keep the 64-channel maps in cache.
        if self.band_rows and graphs.row_bands and not sessions.on_cuda:
            def one_thread(options) -> None:
                self._configure(options)
                options.intra_op_num_threads = 1

            sessions.band_sessions = [open_session(graphs.row_bands, "ORT_ENABLE_ALL", chosen, one_thread)
                                      for _ in range(self.threads or cores())]
            sessions.band_rows, sessions.band_padding = self.band_rows, graphs.row_band_padding
        return sessions
