"""The semantic phase: the fused image's content at the scale a classifier sees it, moved
towards the union of the inputs' deep VGG19 features.

The optimisation at relu1_1 matches edges and local contrast, which decides Q^AB/F and
Q_Y; what an ImageNet classifier recognises lies in the deep layers, at the scale of the
whole image. So after the loop the result x is area-downsampled to `size` pixels on its
longer side (z0), and `steps` Adam steps move z from z0 towards the method's rule applied
to the inputs' relu5_1 maps at that size (choose-max: whatever any input shows). Only the
change z - z0, upsampled bilinearly, is added to x: the full-resolution detail stays the
loop's. On the 26 sets of ../shared/datasets it keeps 10 input classes in the top 5 of
three EfficientNet-Lite judges that the loop alone loses, and loses 2; the net gain lies all
in the half of the sets its settings were tuned on (benchmarks/RESULTS.md, "A semantic phase
at relu5_1" and "The default returns to `blend`"). The `semantic` preset runs it; the
default does not.

It runs in PyTorch on the fusion runner's device for every backend (a 160-pixel image
through relu5_1), so all backends compute the same function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from semfuse_rt.engine.backends.torch.loader import TorchModelLoader
from semfuse_rt.engine.backends.torch.runner import TorchRunner
from semfuse_rt.engine.io.colour import luma
from semfuse_rt.engine.limits.option_checks import check_lr, check_steps
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import VGG19Weights
from semfuse_rt.kernels.adam_scalars import AdamSchedule

SEMANTIC_LAYER = "relu5_1"
MIN_SIZE = 32  # relu5_1 pools four times: 32 pixels leave a 2 x 2 map
BAND_ROWS = 256  # full-resolution rows the upsampled change is added to at a time


@dataclass(frozen=True)
class SemanticSettings:
    steps: int  # 0: no semantic phase
    size: int = 160  # longer side of the image the phase works on, in pixels
    lr: float = 0.2

    def __post_init__(self):
        try:
            check_steps(self.steps)
        except SemfuseError as error:
            raise SemfuseError(str(error).replace("--steps", "--semantic-steps")) from None
        if self.steps:
            check_lr(self.lr)
        if not (isinstance(self.size, int) and self.size >= MIN_SIZE):
            raise SemfuseError(f"the semantic phase's size must be a whole number of at least {MIN_SIZE} "
                               f"pixels, got {self.size}")


def small_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the longer side `size` (never above the image's own) and the aspect kept."""
    scale = min(1.0, size / max(height, width))
    return max(MIN_SIZE, round(height * scale)), max(MIN_SIZE, round(width * scale))


def area_downsample(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float32 2-D plane averaged over areas to (h, w)."""
    return cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def small_inputs(images: Sequence[np.ndarray], mixed: bool, size: tuple[int, int]) -> np.ndarray:
    """(K, 3, h, w) pixels 0..255 of each input at `size`, made as `prepare` makes the full
    ones (grey to 3 channels, colour to luma where the inputs mix grey and colour), but
    downsampled first so that a large input is never held in floating point whole."""
    out = np.empty((len(images), 3, *size), np.float32)
    for k, image in enumerate(images):
        image = np.asarray(image)
        scale = 1.0 / 257.0 if image.dtype == np.uint16 else 1.0
        planes = [image[..., c] for c in range(3)] if image.ndim == 3 else [image]
        channels = [area_downsample(plane.astype(np.float32), size) for plane in planes]
        small = np.stack(channels, axis=-1) * np.float32(scale)
        if mixed and image.ndim == 3:
            small = luma(small)[..., None]
        out[k] = small.transpose(2, 0, 1)  # one channel broadcasts to all 3
    return out


def _bilinear_taps(small: int, large: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `large` output positions: the two source indices and the second one's
    weight, as torch's bilinear interpolation with align_corners=False (clamped at the ends)."""
    position = np.clip((np.arange(large) + 0.5) * (small / large) - 0.5, 0.0, small - 1)
    first = np.floor(position).astype(np.int64)
    second = np.minimum(first + 1, small - 1)
    return first, second, (position - first).astype(np.float32)


def add_upsampled(fused: np.ndarray, change: np.ndarray) -> None:
    """fused (3, H, W) += change (3, h, w) upsampled bilinearly, in bands of rows so that no
    full-size temporary is made."""
    height, width = fused.shape[1:]
    x0, x1, wx = _bilinear_taps(change.shape[2], width)
    wide = change[:, :, x0] * (1.0 - wx) + change[:, :, x1] * wx  # (3, h, W): h is small
    y0, y1, wy = _bilinear_taps(change.shape[1], height)
    for top in range(0, height, BAND_ROWS):
        rows = slice(top, min(top + BAND_ROWS, height))
        weight = wy[rows, None]
        fused[:, rows] += wide[:, y0[rows]] * (1.0 - weight) + wide[:, y1[rows]] * weight


class SemanticPhase:
    """Owns a PyTorch runner at relu5_1 on `device`; a context manager like the runners."""

    def __init__(self, weights: VGG19Weights, settings: SemanticSettings, device: torch.device):
        self.settings = settings
        self.schedule = AdamSchedule(steps=settings.steps, lr=settings.lr)
        self.runner = TorchRunner(TorchModelLoader(weights, SEMANTIC_LAYER, device))

    def __enter__(self) -> SemanticPhase:
        self.runner.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.__exit__(*exc)

    def size(self, height: int, width: int) -> tuple[int, int]:
        return small_size(height, width, self.settings.size)

    def __call__(self, fused: np.ndarray, inputs: np.ndarray, rule, weights=None) -> None:
        """Moves fused (3, H, W) pixels in place. inputs: small_inputs at self.size(H, W);
        weights: a callable giving the rule's per-input weights at a map size (the
        semantic methods' CAMs), or None."""
        size = (inputs.shape[-2], inputs.shape[-1])
        device = self.runner.device
        start = torch.from_numpy(np.stack([area_downsample(plane, size) for plane in fused])[None]).to(device)
        features = self.runner.features(torch.from_numpy(inputs).to(device))
        target = self.runner.fuse_features(features, rule, weights(features.shape[-2:]) if weights else None)
        moved = self.runner.optimise(start, target, self.schedule).image
        add_upsampled(fused, (moved - start)[0].cpu().numpy())
