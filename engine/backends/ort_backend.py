"""ONNX Runtime backend: the exported features and explicit-gradient graphs.

The loop keeps every buffer bound once (IO binding): the image, moments, target, loss and
gradient live in arrays allocated before the first step, ONNX Runtime writes into them and
Adam updates them in place, so a step allocates nothing. On CUDA the same buffers are
device tensors and no step copies to the host. On the CPU, a layer that is one
convolution runs its gradient in bands of rows (ort_row_bands.py), which keeps the
64-channel maps in cache.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.engine.backends.ort_row_bands import BAND_ROWS, RowBandGradient
from semfuse_rt.engine.errors import SemfuseError
from semfuse_rt.export.onnx_export import export_graphs
from semfuse_rt.export.weights import VGG19Weights


def usable() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def providers() -> list[str]:
    """Fastest first among what this onnxruntime build offers (TensorRT's EP is the trt
    backend's business). CUDA only where torch can hold the bound device buffers too."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider") if torch.cuda.is_available() else ("CPUExecutionProvider",)
    return [p for p in wanted if p in available]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OrtRunner(FusionRunner):
    name = "ort"

    def __init__(self, weights: VGG19Weights, layer: str, *, provider: str | None = None,
                 threads: int | None = None, engine_dir=None, band_rows: int | None = BAND_ROWS):
        """threads: ONNX Runtime's intra-op threads, and with row bands the number of
        single-threaded band sessions (default: one per core). band_rows: rows per band of
        the CPU gradient where the layer allows bands; None runs the whole-image graph."""
        if band_rows is not None and band_rows < 1:
            raise SemfuseError(f"a band needs at least one row, got band_rows={band_rows}")
        self.weights = weights
        self.layer = layer
        self.provider = provider
        self.threads = threads
        self.engine_dir = engine_dir
        self.band_rows = band_rows
        self.features_session = self.gradient_session = None
        self.band_sessions, self.band_pool, self.band_padding = [], None, None

    @property
    def on_cuda(self) -> bool:
        return self.provider == "CUDAExecutionProvider"

    def activate(self) -> None:
        import onnxruntime as ort

        graphs = export_graphs(self.weights, self.layer, self.engine_dir)
        self.provider = self.provider or providers()[0]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        chosen = [self.provider] + (["CPUExecutionProvider"] if self.on_cuda else [])
        self.features_session = ort.InferenceSession(str(graphs.features), options, providers=chosen)
        self.gradient_session = ort.InferenceSession(str(graphs.gradient), options, providers=chosen)
        if self.band_rows and graphs.row_bands and not self.on_cuda:
            options.intra_op_num_threads = 1
            workers = self.threads or _cores()
            self.band_sessions = [ort.InferenceSession(str(graphs.row_bands), options, providers=chosen)
                                  for _ in range(workers)]
            self.band_pool = ThreadPoolExecutor(workers - 1, "semfuse-bands") if workers > 1 else None
            self.band_padding = graphs.row_band_padding

    def deactivate(self) -> None:
        if self.band_pool is not None:
            self.band_pool.shutdown()
        self.features_session = self.gradient_session = self.band_pool = None
        self.band_sessions = []

    @contextlib.contextmanager
    def loop_context(self):
        """On the CPU, torch's share of a step (Adam) runs on one thread: with more, its
        OpenMP workers go on spinning on the cores that ONNX Runtime's threads need next
        (a banded 512^2 step on the 2-core VM: 29-31 ms, against 23-26 ms on one thread)."""
        threads = torch.get_num_threads()
        if self.on_cuda or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda") if self.on_cuda else torch.device("cpu")

    def _bind(self, binding, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        """Bind a contiguous float32 torch tensor's memory, host or device, by pointer."""
        bind = binding.bind_output if output else binding.bind_input
        device = "cuda" if tensor.is_cuda else "cpu"
        bind(name, device, tensor.device.index or 0, np.float32, list(tensor.shape), tensor.data_ptr())

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, torch.float32).contiguous()
        if not self.on_cuda:
            return torch.from_numpy(self.features_session.run(["features"], {"image": pixels.numpy()})[0])
        binding = self.features_session.io_binding()
        self._bind(binding, "image", pixels)
        binding.bind_output("features", "cuda")
        self.features_session.run_with_iobinding(binding)
        return torch.from_dlpack(binding.get_outputs()[0])

    def gradient_function(self, x, target):
        """Binds x, target, loss and grad once; each call runs the graph into them."""
        target = target.to(self.device, torch.float32).contiguous()
        if self.band_sessions:
            return RowBandGradient(self.band_sessions, x, target, self.band_padding, self.band_rows, self.band_pool)
        loss = torch.empty(x.shape[0], device=x.device)
        grad = torch.empty_like(x)
        binding = self.gradient_session.io_binding()
        self._bind(binding, "image", x)
        self._bind(binding, "target", target)
        self._bind(binding, "loss", loss, output=True)
        self._bind(binding, "grad", grad, output=True)
        run = self.gradient_session.run_with_iobinding

        def evaluate():
            run(binding)
            return loss, grad

        return evaluate

    def loss_and_grad(self, image, target):
        x = image.to(self.device, torch.float32).contiguous()
        return self.gradient_function(x, target)()
