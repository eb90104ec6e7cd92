"""The one place where user options are range-checked, against the limits the kernels and
graphs really have; each problem is a one-line SemfuseError naming the option."""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.source import MAX_WINDOW

MAX_STEPS = 100_000
# The learning rate is in pixel units: a step of more than the whole 0..255 range only
# overshoots.
MAX_LR = 255.0
MAX_CLASSES = 1000


def _number(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise SemfuseError(f"{name} must be a finite number, got {value}")
    return float(value)


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise SemfuseError(f"--steps must be a whole number from 0 to {MAX_STEPS}, got {steps}")
    return steps


def check_lr(lr: float) -> float:
    if not 0 < _number("--lr", lr) <= MAX_LR:
        raise SemfuseError(f"--lr is in pixel units and must be above 0 and at most {MAX_LR:g}, got {lr:g}")
    return float(lr)


def check_window(window: int) -> int:
    if not isinstance(window, int) or not (1 <= window <= MAX_WINDOW and window % 2 == 1):
        raise SemfuseError(f"--window must be an odd number from 1 to {MAX_WINDOW}, got {window}")
    return window


def check_mean_base(sigma: float) -> float:
    if _number("--mean-base", sigma) < 0:
        raise SemfuseError(f"--mean-base sigma must be 0 (off) or positive, got {sigma:g}")
    return float(sigma)


def check_classes(classes: int) -> int:
    if not isinstance(classes, int) or not 1 <= classes <= MAX_CLASSES:
        raise SemfuseError(f"--classes must be from 1 to {MAX_CLASSES}, got {classes}")
    return classes


def smallest_side(layer: str) -> int:
    """The least image side that leaves a feature map at `layer`: each max-pool halves it."""
    # Here, not at the top: export/networks/vgg19.py imports torch, and the limits above are shown by
    # `--help`, which loads no torch.
    from semfuse_rt.export.networks.vgg19 import layers_up_to

    return 2 ** sum(1 for _, kind, _ in layers_up_to(layer) if kind == "pool")


def check_image_fits(layer: str, mean_base: float, height: int, width: int) -> None:
    """What depends on the images: every backend needs at least a 1x1 map at the layer, and
    a base-layer sigma beyond the image's longer side changes nothing but the run time."""
    need = smallest_side(layer)
    if min(height, width) < need:
        raise SemfuseError(f"{width}x{height} images are too small for --layer {layer}: it needs at least "
                           f"{need}x{need} (each pooling layer halves the size)")
    if mean_base > max(height, width):
        raise SemfuseError(f"--mean-base {mean_base:g} is larger than the {width}x{height} image; "
                           f"use at most {max(height, width)} (a larger sigma gains nothing)")


def check_option_names(given: Iterable[str], known: Iterable[str]) -> None:
    """A misspelt keyword fails where it is written, naming the closest valid one, rather
    than as a TypeError deep in a backend on the first call."""
    names = sorted(set(known))
    for name in given:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; the options are {', '.join(names)}"
            raise SemfuseError(f"unknown option {name!r}{hint}")
