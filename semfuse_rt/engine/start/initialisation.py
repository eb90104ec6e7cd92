"""Where the image optimisation starts, by name: one `Start` per initialisation, registered in
`STARTS` (`register_start`). What callers ask of a start is one of its attributes (multiscale,
spans_image, dtcwt_verify, ...), never a comparison with its name.

- `mean`: the mean of the inputs; `max`: their per-pixel maximum (one torch op each).
- `dtcwt`: DT-CWT choose-max fusion of the inputs, a classic multiresolution result the
  optimisation then refines; `dtcwt-verified`: the same with 3 x 3 consistency verification
  of the choices. Torch ops on the pixels' device (export/graphs/dtcwt_graph.py), or the graph in
  ONNX Runtime.
- `pyramid-blend`: a Laplacian-pyramid blend with per-pixel weights from the inputs' local
  contrast and structural agreement (engine/start/pyramid_blend.py, `agreement_blend`); where the
  inputs disagree its low frequencies mix only locally.
- `whole-pyramid-blend`: the same weights with one pyramid down to a band of 3 pixels
  everywhere, so the inputs' tones mix across the whole image as in exposure fusion
  (Mertens et al.); the `exposure` preset's start (benchmarks/RESULTS.md, "Exposure stacks").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from semfuse_rt.engine.start.pyramid_depth import MIN_COARSE, WHOLE_COARSEST
from semfuse_rt.registry import Registry

if TYPE_CHECKING:
    import torch

VERIFY_WINDOW = 3


@dataclass(frozen=True)
class Start:
    name: str
    image: Callable[[torch.Tensor], torch.Tensor]  # (K, 3, H, W) inputs -> (1, 3, H, W)
    multiscale: bool  # built on a decimated transform: tiles start on its grid
    spans_image: bool  # its lowest band reaches across the image: tiles take a preview's tone
    dtcwt_verify: int | None = None  # a DT-CWT start's verification window (0: none)
    # The least sides of the coarsest bands of its pyramids whose depth follows the image's size.
    pyramid_coarsest: tuple[float, ...] = ()
    # The same start on the CPU without torch: (K, 3, H, W) float32 numpy -> (1, 3, H, W) float32.
    cpu_image: Callable[[np.ndarray], np.ndarray] | None = None


def _mean_cpu(pixels: np.ndarray) -> np.ndarray:
    return pixels.mean(axis=0, keepdims=True, dtype=np.float32)


def _max_cpu(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=0, keepdims=True)


def _mean(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.mean(dim=0, keepdim=True)


def _max(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.max(dim=0, keepdim=True).values


def _dtcwt(verify: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def start(pixels: torch.Tensor) -> torch.Tensor:
        # float64 on the CPU, as the numpy reference (engine/evaluation/baselines.py) computes; a GPU's
        # float32 differs from it by about 1e-4 grey levels.
        import torch  # here, so that `--help` (the names) loads no torch

        from semfuse_rt.export.graphs.dtcwt_graph import dtcwt_start

        return dtcwt_start(pixels, verify, dtype=torch.float64 if pixels.device.type == "cpu" else None)
    return start


def _pyramid_blend(coarsest: float | None) -> Callable[[torch.Tensor], torch.Tensor]:
    def start(pixels: torch.Tensor) -> torch.Tensor:
        # In the pixels' float32: half float64's time on the CPU, and the same scores on every
        # development set to four decimals (benchmarks/RESULTS.md, "The `blend` default").
        from semfuse_rt.engine.start.pyramid_blend import agreement_blend

        return agreement_blend(pixels, coarsest=coarsest)
    return start


def _pyramid_blend_cpu(coarsest: float | None) -> Callable[[np.ndarray], np.ndarray]:
    def start(pixels: np.ndarray) -> np.ndarray:
        # The same rule in numpy and OpenCV (engine/start/pyramid_blend_cpu.py): no torch, both cores.
        from semfuse_rt.engine.start.pyramid_blend_cpu import agreement_blend_cpu

        return agreement_blend_cpu(pixels, coarsest=coarsest)
    return start


STARTS: Registry[Start] = Registry("initialisation")


def register_start(start: Start) -> Start:
    return STARTS.register(start.name, start)


for _start in (
    Start("mean", _mean, multiscale=False, spans_image=False, cpu_image=_mean_cpu),
    Start("max", _max, multiscale=False, spans_image=False, cpu_image=_max_cpu),
    Start("dtcwt", _dtcwt(0), multiscale=True, spans_image=False, dtcwt_verify=0),
    Start("dtcwt-verified", _dtcwt(VERIFY_WINDOW), multiscale=True, spans_image=False, dtcwt_verify=VERIFY_WINDOW),
    Start("pyramid-blend", _pyramid_blend(None), multiscale=True, spans_image=True,
          pyramid_coarsest=(1, MIN_COARSE), cpu_image=_pyramid_blend_cpu(None)),
    Start("whole-pyramid-blend", _pyramid_blend(WHOLE_COARSEST), multiscale=True, spans_image=True,
          pyramid_coarsest=(WHOLE_COARSEST,), cpu_image=_pyramid_blend_cpu(WHOLE_COARSEST)),
):
    register_start(_start)
INITIALISATIONS = STARTS.names()  # the built-in starts; help text reads STARTS itself


def check_initialisation(how: str) -> str:
    return STARTS.check(how)


def initial_image(pixels: torch.Tensor, how: str) -> torch.Tensor:
    """(K, 3, H, W) inputs -> (1, 3, H, W) starting image, as torch ops (what an exported graph
    traces; a runner on the CPU runs the start's `cpu_image` where it has one)."""
    return STARTS[check_initialisation(how)].image(pixels)


def has_cpu_start(init: str) -> bool:
    """Whether start `init` runs on the CPU without torch."""
    return STARTS[init].cpu_image is not None


def start_image(planes: np.ndarray, init: str) -> np.ndarray:
    """(K, 3, H, W) float32 pixels in 0..255 -> the start (3, H, W) float32, without torch
    (`has_cpu_start(init)` must hold)."""
    start = STARTS[init].cpu_image
    if start is None:
        raise ValueError(f"start {init!r} has no CPU form; the Fuser runs it")
    return start(planes)[0]
