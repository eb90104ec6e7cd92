"""What a fuse returns, and the clock that times its stages: shared by the `Fuser` and the
start-only fuse (engine/fuse/start_only.py), and free of torch so that the start-only fuse, which
needs none, does not wait for it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from semfuse_rt.engine.semantic.cam import Retention

# Images from this size on hand the heap's free memory back after a fuse (memory.py); below
# it, the 10 ms that costs would be a few percent of a small fuse, a video frame's say.
TRIM_PIXELS = 1 << 20


def run_description(method: str, preset: str | None, backend: str | None) -> str:
    """`max (preset blend) on torch`: what ran and where, as the summary lines say it."""
    return method + (f" (preset {preset})" if preset else "") + (f" on {backend}" if backend else "")


@dataclass
class FusionResult:
    image: np.ndarray
    method: str
    backend: str | None  # None where nothing runs on a backend (method `cam`, a start-only fuse)
    preset: str | None  # None where nothing is optimised
    seconds: float
    losses: list[float] = field(default_factory=list)
    cams: np.ndarray | None = None  # (K, H, W) each input's CAM in [0, 1], semantic methods only
    retention: list[Retention] | None = None  # fuse_files(report=True): each input's class in the result
    stages: dict[str, float] = field(default_factory=dict)  # seconds per pipeline stage, in order
    tiles: int = 1  # crops the image was fused in (memory-bounded fusion of large images)
    halo_share: float = 0.0  # of the pixels fused in tiles, the share beyond the image's own (tiling.halo_share)

    @property
    def relative_loss(self) -> float | None:
        """The loss at the last step over the loss at the first (None without optimisation,
        or with one step)."""
        if len(self.losses) < 2 or self.losses[0] == 0:
            return None
        return self.losses[-1] / self.losses[0]

    def summary(self, count: int) -> str:
        """One line for people: what ran, where, how long, how far the loss fell."""
        how = run_description(self.method, self.preset, self.backend)
        if self.tiles > 1:
            how += f" in {self.tiles} tiles (halos {self.halo_share:.0%} of the pixels fused)"
        relative = self.relative_loss
        loss = f", loss at the last step {relative:.3f} of the first" if relative is not None else ""
        return f"fused {count} images with {how} in {self.seconds:.2f} s{loss}"


class StageClock:
    """Seconds per stage; on a GPU each lap waits for the queued work, so a stage is charged
    for its own kernels and not for the next stage's wait."""

    def __init__(self, device: torch.device | None):
        self.cuda = device is not None and device.type == "cuda"
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.cuda:
            import torch  # only a GPU's clock has queued work to wait for

            torch.cuda.synchronize()
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
        self._last = now
