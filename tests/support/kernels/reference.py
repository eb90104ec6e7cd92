"""Plain numpy versions of the kernels' rules: slow, obvious, and the yardstick for the tests.

Conventions (docs/method.md plus the kernels' own choices, see README.md): labels are int32 in
0..K-1; choose-max ties go to the lowest k; a NaN key ranks as -inf; majority windows are
clipped at the border, labels outside 0..K-1 do not vote, and a tie keeps the centre label
if it is tied, else the lowest tied label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semfuse_rt.kernels.adam_scalars import BETAS, EPS


def _rank(key: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(key), np.float32(-np.inf), key)


def _keep_first_maximum(
    features: Sequence[np.ndarray], keys: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    fused = features[0].copy()
    labels = np.zeros(features[0].shape, np.int32)
    best = keys[0]
    for k in range(1, len(features)):
        larger = keys[k] > best  # strictly: equal keys stay with the lower k
        best = np.where(larger, keys[k], best)
        fused = np.where(larger, features[k], fused)
        labels = np.where(larger, np.int32(k), labels)
    return fused, labels


def choose_max(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    keys = [_rank(np.abs(f.astype(np.float32))) for f in features]
    return _keep_first_maximum(features, keys)


def cam_choose_max(
    features: Sequence[np.ndarray], weights: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, C, H, W) or (C, H, W); weights (N, H, W) or (H, W), float32."""
    shape = features[0].shape
    keys = []
    for f, w in zip(features, weights, strict=True):
        per_pixel = w.astype(np.float32).reshape(shape[:-3] + (1,) + shape[-2:])
        with np.errstate(invalid="ignore"):  # 0 * inf is NaN, ranked by _rank
            keys.append(_rank(per_pixel * np.abs(f.astype(np.float32))))
    return _keep_first_maximum(features, keys)


def majority_filter(labels: np.ndarray, num_inputs: int, window: int = 5) -> np.ndarray:
    """Labels (..., H, W); every leading index is its own plane."""
    r = window // 2
    padded = np.pad(labels, [(0, 0)] * (labels.ndim - 2) + [(r, r), (r, r)], constant_values=-1)
    # numpy 1.26's stubs take one axis; the function takes a tuple of them (numpy's docs).
    windows = np.lib.stride_tricks.sliding_window_view(padded, (window, window),
                                                       axis=(-2, -1))  # type: ignore[call-overload]
    counts = np.stack([(windows == k).sum(axis=(-2, -1)) for k in range(num_inputs)])
    top = counts.max(axis=0)
    lowest_tied = np.argmax(counts == top, axis=0).astype(np.int32)  # first True
    centre_valid = (labels >= 0) & (labels < num_inputs)
    centre_count = np.take_along_axis(counts, np.clip(labels, 0, num_inputs - 1)[None], axis=0)[0]
    return np.where(centre_valid & (centre_count == top), labels, lowest_tied).astype(np.int32)


def gather_by_label(features: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.choose(labels, features)


def adam_update(
    x: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    lr: float,
    betas: tuple[float, float] = BETAS,
    eps: float = EPS,
) -> None:
    """In place, float32, the operation order of torch.optim.Adam's single-tensor path."""
    beta1, beta2 = betas
    f32 = np.float32
    m += f32(1.0 - beta1) * (g - m)
    v *= f32(beta2)
    v += (f32(1.0 - beta2) * g) * g
    denominator = np.sqrt(v) / f32(np.sqrt(1.0 - beta2**t)) + f32(eps)
    x += (f32(-(lr / (1.0 - beta1**t))) * m) / denominator
