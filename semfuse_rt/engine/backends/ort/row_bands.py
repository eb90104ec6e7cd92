"""The whole-image loss gradient on ONNX Runtime's CPU provider, one band of rows at a time.

The row-band graph (export/graphs/gradient_graph.py: RowBandLossGradient) gives band [a, b)'s share
of the loss and its share of dL/dI on image rows a-1..b; the shares add up to the
whole-image values exactly. Each band's 64-channel maps then fit in cache, where the
whole-image graph streams 64 MiB maps through memory several times a step (measured in
benchmarks/RESULTS.md, "Optimisation-step latency").

Every buffer is bound once; a call copies the current image rows into the bands, runs them
and adds their shares up, allocating nothing. The bands are split between single-threaded
sessions, one per core, each working through its own bands: a session with two threads
wakes its second thread for every node of every band (about 300 times a step), and on the
CI VM those wake-ups stretched a 27 ms step to 70 ms for minutes at a time.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from onnxruntime import InferenceSession, IOBinding

# Rows per band. On the 2-core CI VM a relu1_1 step with bands of 8 or 16 rows took 25 ms at
# 512^2 (32 rows: 32 ms, 64 rows: 40 ms, the whole image: 45-50 ms) and 7 ms at 256^2.
BAND_ROWS = 16


def band_ranges(height: int, rows: int) -> list[tuple[int, int]]:
    """Row ranges [a, b) of at most `rows` rows that tile 0..height."""
    if rows < 1:
        raise ValueError(f"a band needs at least one row, got {rows}")
    return [(a, min(a + rows, height)) for a in range(0, height, rows)]


@dataclass
class _Band:
    image_rows: slice  # the image rows this band reads and writes: a-1..b clipped to the image
    band_rows: slice  # the same rows in the band's own buffers
    pixels: np.ndarray  # (N, 3, h+2, W)
    loss: np.ndarray  # (N,)
    grad: np.ndarray  # (N, 3, h+2, W)
    target: np.ndarray  # (N, C, h, W), the band's copy of the target rows
    binding: IOBinding
    session: InferenceSession


class RowBandGradient:
    """Callable giving (loss, grad) at x's current contents, computed band by band.

    sessions: one or more sessions of the row-band graph; the bands are shared out among
    them in contiguous runs, the first run on the calling thread and the others on `pool`.
    """

    def __init__(self, sessions, x: torch.Tensor, target: torch.Tensor, padding_pixel, rows: int = BAND_ROWS,
                 pool: ThreadPoolExecutor | None = None):
        n, _, height, width = x.shape
        if len(sessions) > 1 and pool is None:
            raise ValueError("several sessions need a thread pool to run on")
        self.pool = pool
        self.x = x.numpy()  # shares x's memory: the optimiser updates it in place
        self.loss = torch.zeros(n)
        self.grad = torch.zeros_like(x)
        self._loss, self._grad = self.loss.numpy(), self.grad.numpy()
        padding = np.asarray(padding_pixel, np.float32).reshape(1, 3, 1)
        host_target = target.numpy()
        self.bands = []
        ranges = band_ranges(height, rows)
        share = -(-len(ranges) // len(sessions))
        for index, (a, b) in enumerate(ranges):
            session = sessions[index // share]
            pixels = np.empty((n, 3, b - a + 2, width), np.float32)
            # Rows above and below the image hold the padding pixel for good.
            if a == 0:
                pixels[:, :, 0] = padding
            if b == height:
                pixels[:, :, -1] = padding
            top, bottom = max(a - 1, 0), min(b + 1, height)
            band = _Band(slice(top, bottom), slice(top - (a - 1), bottom - (a - 1)), pixels,
                         np.empty(n, np.float32), np.empty_like(pixels),
                         np.ascontiguousarray(host_target[:, :, a:b]), session.io_binding(), session)
            for name, array in (("image_rows", band.pixels), ("target_rows", band.target)):
                band.binding.bind_input(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            for name, array in (("loss", band.loss), ("grad_rows", band.grad)):
                band.binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            self.bands.append(band)
        self.shares = [self.bands[i:i + share] for i in range(0, len(self.bands), share)]

    def _run(self, bands: list[_Band]) -> None:
        for band in bands:
            np.copyto(band.pixels[:, :, band.band_rows], self.x[:, :, band.image_rows])
            band.session.run_with_iobinding(band.binding)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        # numpy, not torch, for the copies and sums: torch's OpenMP workers would spin on
        # the cores that ONNX Runtime's threads need next.
        pool = self.pool  # None only with one session, which makes one share
        others = [pool.submit(self._run, bands) for bands in self.shares[1:]] if pool is not None else []
        self._run(self.shares[0])
        for future in others:
            future.result()
        # Summed after all bands ran: neighbouring bands share a row of the gradient.
        self._loss.fill(0)
        self._grad.fill(0)
        for band in self.bands:
            self._loss += band.loss
            self._grad[:, :, band.image_rows] += band.grad[:, :, band.band_rows]
        return self.loss, self.grad
