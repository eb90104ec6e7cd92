"""The runner interface every backend implements (after Polygraphy's runners).

A runner is a context manager that owns whatever it allocates (sessions, device memory);
inside it, `features` computes N_l on a batch and `optimise` runs the fixed-step image
optimisation towards a target map. Parity tests loop over runners with this one interface.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import torch

from semfuse_rt.kernels.adam_scalars import AdamSchedule
from semfuse_rt.kernels.torch_rules import adam_update

# progress(step, total, loss) after each step
ProgressCallback = Callable[[int, int, float], None]


def report_steps(losses: list[float], progress: ProgressCallback | None) -> None:
    """For loops that run on the device in one go: tell the callback about every step after."""
    if progress:
        for t, loss in enumerate(losses, start=1):
            progress(t, len(losses), loss)


@dataclass
class Optimised:
    image: torch.Tensor  # (1, 3, H, W) pixels 0..255, unclipped
    # The loss at the image each step starts from; none after the last step, which would
    # cost one more gradient evaluation (a third of a 2-step warm video frame's loop).
    losses: list[float] = field(default_factory=list)


class FusionRunner(ABC):
    name: str = "base"

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.deactivate()
        return False

    def activate(self) -> None:
        """Build or load what the runner needs; called once on entering the context."""

    def deactivate(self) -> None:
        """Release sessions and device memory."""

    @abstractmethod
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(K, 3, H, W) RGB pixels 0..255 -> (K, C, h, w) feature maps at the layer."""

    def reused_features(self, pixels: torch.Tensor, slot: str) -> torch.Tensor:
        """features(pixels), which a backend may write into a buffer it keeps for `slot` and
        reuses (large maps written into fresh memory spend much of their time on page
        faults): valid until the next call for the same slot."""
        return self.features(pixels)

    def release_scratch(self) -> None:
        """Free the buffers reused_features keeps."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the optimisation's tensors live."""

    @abstractmethod
    def loss_and_grad(self, image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L = ||N_l(image) - target||^2 per image (N,), and dL/d image; image is (N, 3, H, W)."""

    def gradient_function(self, x: torch.Tensor, target: torch.Tensor,
                          release_target: bool = False) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        """A callable giving (loss, grad) at x's current contents. Backends that can bind
        buffers once return one that writes into the same memory every call."""
        return lambda: self.loss_and_grad(x, target)

    def fuse_features(self, features: torch.Tensor, rule, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The target (1, C, h, w) from features (K, C, h, w) by a FeatureRule (kernels/rules/),
        on the device the features are on: its kernels on a GPU, its torch twin elsewhere."""
        return rule.fuse(features, weights)[None]

    def start(self, pixels: torch.Tensor, how: str) -> torch.Tensor:
        """The optimisation's start (1, 3, H, W) from pixels (K, 3, H, W), on this device: on the
        CPU the start's numpy form where it has one (the same rule without torch ops, which run
        on one thread here), sharing the tensors' memory."""
        from semfuse_rt.engine.start.initialisation import STARTS, check_initialisation, initial_image

        cpu_image = STARTS[check_initialisation(how)].cpu_image
        if self.device.type == "cpu" and cpu_image is not None:
            planes = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(cpu_image(planes))
        return initial_image(pixels.to(self.device, torch.float32), how)

    def mean_base(self, fused: torch.Tensor, pixels: torch.Tensor, sigma: float) -> torch.Tensor:
        """fused (1, 3, H, W) over the mean base layer of pixels (K, 3, H, W), on this device."""
        from semfuse_rt.export.graphs.base_layer_graph import MeanBaseLayer

        layer = MeanBaseLayer(sigma).to(self.device)
        with torch.no_grad():
            return layer(fused.to(self.device, torch.float32), pixels.to(self.device, torch.float32))

    def loop_context(self) -> contextlib.AbstractContextManager:
        """What the optimisation loop (and a benchmark of its steps) and the streamed rule
        run inside."""
        return contextlib.nullcontext()

    def optimise(self, init: torch.Tensor, target: torch.Tensor, schedule: AdamSchedule,
                 progress: ProgressCallback | None = None, release_target: bool = False) -> Optimised:
        """Adam from init towards the target. release_target: the caller is done with the
        target, and a runner that keeps its own copy (ONNX Runtime's row bands) may free it
        (the tensor is left empty)."""
        x = init.to(self.device, torch.float32).clone().contiguous()
        target = target.to(self.device, torch.float32).contiguous()
        evaluate = self.gradient_function(x, target, release_target)
        m, v, scratch = torch.zeros_like(x), torch.zeros_like(x), torch.empty_like(x)
        # Losses stay on the device until the end, so a GPU loop has no per-step sync
        # unless a progress bar asks for the value.
        history = torch.empty(schedule.steps, device=self.device)
        with self.loop_context():
            for t in range(1, schedule.steps + 1):
                loss, grad = evaluate()
                torch.sum(loss, 0, keepdim=True, out=history[t - 1:t])
                adam_update(x, m, v, grad, t, schedule, scratch)
                if progress:
                    progress(t, schedule.steps, float(history[t - 1]))
        return Optimised(x, history.tolist())
