"""The ONNX Runtime runner.

The loop keeps every buffer bound once (IO binding): the image, moments, target, loss and
gradient live in arrays allocated before the first step, ONNX Runtime writes into them and
Adam updates them in place, so a step allocates nothing. On CUDA the same buffers are
device tensors and no step copies to the host. On the CPU, a layer that is one
convolution runs its gradient in bands of rows (row_bands.py), which keeps the 64-channel
maps in cache.
"""
from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from semfuse_rt.engine.backends.base import FusionRunner
from semfuse_rt.engine.backends.ort.loader import OrtSessionLoader, OrtSessions
from semfuse_rt.engine.backends.ort.row_bands import RowBandGradient
from semfuse_rt.engine.limits.torch_threads import torch_threads
from semfuse_rt.export.networks.vgg19 import feature_shape


def _bind(binding, name: str, tensor: torch.Tensor, output: bool = False) -> None:
    """Bind a contiguous float32 torch tensor's memory, host or device, by pointer."""
    bind = binding.bind_output if output else binding.bind_input
    device = "cuda" if tensor.is_cuda else "cpu"
    bind(name, device, tensor.device.index or 0, np.float32, list(tensor.shape), tensor.data_ptr())


def _shrinking_arena():
    """Run options that hand the arena's free memory back after the run: the start and the
    base layer need several times the image in temporaries, and kept in the arena, those
    would sit under the features and the loop's buffers (2 x 2 MP: a 2.16 GiB peak, 1.6 GiB
    with this)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OrtRunner(FusionRunner):
    name = "ort"

    def __init__(self, loader: OrtSessionLoader):
        self.loader = loader
        self.sessions: OrtSessions | None = None
        self.band_pool: ThreadPoolExecutor | None = None
        self._small_sessions: dict = {}  # rule, start and base-layer graphs by file, opened on first use
        self._scratch: dict[str, torch.Tensor] = {}  # reused_features' buffers by slot, flat

    @property
    def active_sessions(self) -> OrtSessions:
        if self.sessions is None:
            raise RuntimeError("the ort runner is used outside its context")
        return self.sessions

    def activate(self) -> None:
        self.sessions = self.loader()
        workers = len(self.sessions.band_sessions)
        # The first band share runs on the calling thread, the others on this pool.
        self.band_pool = ThreadPoolExecutor(workers - 1, "semfuse-bands") if workers > 1 else None

    def deactivate(self) -> None:
        if self.band_pool is not None:
            self.band_pool.shutdown()
        self.sessions, self.band_pool = None, None
        self._small_sessions = {}
        self._scratch = {}

    def _small_session(self, path):
        if path not in self._small_sessions:
            self._small_sessions[path] = self.loader.session(path)
        return self._small_sessions[path]

    def fuse_features(self, features, rule, weights=None):
        """On the CPU the rule runs as its exported graph (a third of torch's time for
        choose-max at 2 x 64 x 520^2); on CUDA the rule's kernels take the device tensors."""
        if self.on_cuda:
            return super().fuse_features(features, rule, weights)
        from semfuse_rt.export.graphs.rule_graph import export_rule_graph

        session = self._small_session(export_rule_graph(rule, weighted=weights is not None))
        feeds = {"features": features.detach().float().contiguous().numpy()}
        if weights is not None:
            feeds["weights"] = weights.detach().float().contiguous().numpy()
        return torch.from_numpy(session.run(["target"], feeds)[0])

    def start(self, pixels, how):
        """On the CPU the DT-CWT starts run the project's one DT-CWT (export/graphs/dtcwt_graph.py)
        in float32: as its exported graph where that suits the pixels (`graph_suits`: two
        colour inputs), else as its torch ops. The others as every runner on the CPU runs them:
        their numpy form (`Start.cpu_image`, FusionRunner.start)."""
        from semfuse_rt.engine.start.initialisation import STARTS

        verify = STARTS[how].dtcwt_verify
        if self.on_cuda:
            return super().start(pixels, how)
        if verify is None:
            with self.loop_context():  # any torch ops: on one thread (engine/limits/torch_threads.py)
                return super().start(pixels, how)
        from semfuse_rt.export.graphs.dtcwt_graph import dtcwt_start, export_dtcwt_graph, graph_suits

        if not graph_suits(pixels):
            with torch_threads(1):
                return dtcwt_start(pixels.float(), verify, dtype=None)
        session = self._small_session(export_dtcwt_graph(verify))
        feeds = {"pixels": pixels.detach().float().contiguous().numpy()}
        return torch.from_numpy(session.run(["start"], feeds, _shrinking_arena())[0])

    def mean_base(self, fused, pixels, sigma):
        if self.on_cuda:
            return super().mean_base(fused, pixels, sigma)
        from semfuse_rt.export.graphs.base_layer_graph import export_base_layer_graph

        session = self._small_session(export_base_layer_graph(sigma))
        feeds = {"fused": fused.detach().float().contiguous().numpy(),
                 "pixels": pixels.detach().float().contiguous().numpy()}
        return torch.from_numpy(session.run(["result"], feeds, _shrinking_arena())[0])

    @property
    def on_cuda(self) -> bool:
        return self.sessions.on_cuda if self.sessions else self.loader.device.type == "cuda"

    def loop_context(self):
        """On the CPU, torch's share of a step (Adam) runs on one thread: with more, its
        OpenMP workers go on spinning on the cores that ONNX Runtime's threads need next
        (a banded 512^2 step on the 2-core VM: 29-31 ms, against 23-26 ms on one thread)."""
        return contextlib.nullcontext() if self.on_cuda else torch_threads(1)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda") if self.on_cuda else torch.device("cpu")

    def features(self, pixels: torch.Tensor, slot: str | None = None) -> torch.Tensor:
        pixels = pixels.to(self.device, torch.float32).contiguous()
        session = self.active_sessions.features
        binding = session.io_binding()
        if not self.on_cuda:
            # Written straight into an array of ours: a plain run keeps the maps in the
            # arena and copies them out, twice the memory while they are large.
            shape = feature_shape(self.loader.layer, *pixels.shape[:1], *pixels.shape[2:])
            features = self._scratch_maps(slot, shape) if slot else torch.empty(shape)
            _bind(binding, "image", pixels)
            _bind(binding, "features", features, output=True)
            session.run_with_iobinding(binding)
            return features

        _bind(binding, "image", pixels)
        binding.bind_output("features", "cuda")
        session.run_with_iobinding(binding)
        return torch.from_dlpack(binding.get_outputs()[0])

    def reused_features(self, pixels: torch.Tensor, slot: str) -> torch.Tensor:
        return self.features(pixels, slot)

    def _scratch_maps(self, slot: str, shape) -> torch.Tensor:
        count = math.prod(shape)
        if slot not in self._scratch or self._scratch[slot].numel() < count:
            self._scratch.pop(slot, None)  # the old buffer goes before the larger one is taken
            self._scratch[slot] = torch.empty(count)
        return self._scratch[slot][:count].view(shape)

    def release_scratch(self) -> None:
        self._scratch = {}

    def gradient_function(self, x, target, release_target=False):
        """Binds x, target, loss and grad once; each call runs the graph into them."""
        target = target.to(self.device, torch.float32).contiguous()
        sessions = self.active_sessions
        if sessions.band_sessions:
            gradient = RowBandGradient(sessions.band_sessions, x, target, sessions.band_padding, sessions.band_rows,
                                       self.band_pool)
            if release_target:  # the bands hold their own rows of it
                target.set_()
            return gradient
        loss = torch.empty(x.shape[0], device=x.device)
        grad = torch.empty_like(x)
        binding = sessions.gradient.io_binding()
        _bind(binding, "image", x)
        _bind(binding, "target", target)
        _bind(binding, "loss", loss, output=True)
        _bind(binding, "grad", grad, output=True)
        run = sessions.gradient.run_with_iobinding

        def evaluate():
            run(binding)
            return loss, grad

        return evaluate

    def loss_and_grad(self, image, target):
        x = image.to(self.device, torch.float32).contiguous()
        return self.gradient_function(x, target)()
