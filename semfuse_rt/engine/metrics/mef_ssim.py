"""MEF-SSIM, the multi-exposure fusion metric of Ma, Zeng & Wang, as the MEFB benchmark computes it.

K. Ma, K. Zeng and Z. Wang, "Perceptual quality assessment for multi-exposure image fusion",
IEEE TIP 24(11):3345-3356, 2015; the authors' code (mef_ms_ssim.m, mef_ssim.m), which MEFB
(X. Zhang, Information Fusion 74, 2021) runs through metricsMEF_SSIM.m.

At each of 3 scales, for every 11 x 11 patch (fully inside the image), the sources' patches
x_k are split into mean, contrast c_k = ||x_k - mean_k|| + 0.001 and structure. A reference
patch is built from them: the structures weighted by w_k ~ (c_k / 11)^p, where p = tan(pi R / 2)
(at most 10) grows with the consistency R = ||sum_k (x_k - mean)|| / sum_k ||x_k - mean_k|| of
the sources' structures, scaled to the largest contrast. The patch's score is SSIM's
contrast-structure term against the fused patch, (2 s_rf + C) / (s_r^2 + s_f^2 + C) with
C = (0.03 * 255)^2 and 11 x 11 Gaussian weights (sigma 1.5); the mean luminance is not
compared. A scale's score is the mean over patches; the next scale averages 2 x 2 blocks (the
last row or column repeated on odd sizes) and keeps every second pixel. The result is
prod_l Q_l^beta_l with beta = (0.0448, 0.2856, 0.3001) / 0.6305: the two coarse scales carry
93% of the weight, so large-scale tone and structure decide it.

Inputs are images as engine/io/images.py loads them. MEFB turns colour images grey with MATLAB's
rgb2gray rounded to 8 bits (as here; a grey image is used as it is) and uses 8-bit levels
(C is for 0..255): 16-bit images are first reduced to 8 bits. NaN where MEFB's code gives -Inf:
images under 44 pixels on a side, too small for an 11 x 11 window at the third scale.

The per-patch loops of the reference code are computed here from box and Gaussian filtered
sums: the reference patch's mean, variance and covariance with the fused patch are linear and
bilinear in the sources' patches.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from semfuse_rt.engine.metrics.metrics import MATLAB_RGB2GRAY, SSIM_WINDOW, _valid, ssim_window_mean

__all__ = ["MEF_SSIM_SCALE_WEIGHTS", "mef_ssim", "mef_ssim_scales"]

_RAW_SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001)
MEF_SSIM_SCALE_WEIGHTS: tuple[float, ...] = tuple(w / sum(_RAW_SCALE_WEIGHTS) for w in _RAW_SCALE_WEIGHTS)
_C = (0.03 * 255.0) ** 2
_PATCH = SSIM_WINDOW  # 11: the box window of the contrast and consistency, and the Gaussian's size
_PATCH_AREA = _PATCH * _PATCH
_CONTRAST_FLOOR = 0.001
_MAX_EXPONENT = 10.0
_EPS = np.finfo(np.float64).eps


def _grey_levels(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0)
    elif image.dtype != np.uint8:
        raise ValueError(f"MEF-SSIM takes uint8 or uint16 images, got {image.dtype}")
    image = image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 3:
        # rgb2gray of a uint8 image rounds, half away from zero (levels are never negative).
        return np.floor(image @ MATLAB_RGB2GRAY + 0.5)
    if image.ndim != 2:
        raise ValueError(f"MEF-SSIM takes HxW or HxWx3 images, got shape {image.shape}")
    return image


def _box_sum(values: np.ndarray) -> np.ndarray:
    # Unnormalised: sums of 8-bit levels and their products are exact in float64, so a flat
    # patch has exactly zero spread.
    summed = cv2.boxFilter(values, cv2.CV_64F, (_PATCH, _PATCH), normalize=False, borderType=cv2.BORDER_REFLECT)
    return _valid(summed, _PATCH)


def _scale_score(sources: list[np.ndarray], fused: np.ndarray) -> float:
    """mef_ssim.m at one scale: the mean quality over all fully-inside 11 x 11 patches."""
    count = len(sources)
    box = [_box_sum(x) for x in sources]
    # Patch scatter sum_p (x_k - mean_k)(x_j - mean_j), from box sums.
    scatter = {(k, j): _box_sum(sources[k] * sources[j]) - box[k] * box[j] / _PATCH_AREA
               for k in range(count) for j in range(k, count)}

    def pair(k: int, j: int) -> np.ndarray:
        return scatter[(k, j) if k <= j else (j, k)]

    spread = [np.sqrt(np.maximum(pair(k, k), 0.0)) for k in range(count)]  # ||x_k - mean_k||
    contrast = [s + _CONTRAST_FLOOR for s in spread]
    # ||sum_k x_k - mean|| / sum_k ||x_k - mean_k||, with the reference code's eps guards.
    together = np.sqrt(np.maximum(sum(pair(k, j) for k in range(count) for j in range(count)), 0.0))
    consistency = (together + _EPS) / (sum(spread) + _EPS)
    consistency[consistency > 1] = 1 - _EPS
    consistency[consistency < 0] = _EPS
    exponent = np.minimum(np.tan(math.pi / 2 * consistency), _MAX_EXPONENT)
    weights = [(c / _PATCH) ** exponent + _EPS for c in contrast]
    normaliser = sum(weights)
    # The reference patch is sum_k a_k (x_k - mean_k), a_k = w_k / c_k, rescaled to norm max_k c_k.
    a = [w / normaliser / c for w, c in zip(weights, contrast)]
    norm_sq = sum(a[k] * a[j] * pair(k, j) for k in range(count) for j in range(count))
    norm = np.sqrt(np.maximum(norm_sq, 0.0))
    scale = np.divide(np.max(contrast, axis=0), norm, out=np.zeros_like(norm), where=norm > 0)

    # Gaussian-weighted moments; the patch means cancel in variances and covariances.
    g_fused = ssim_window_mean(fused)
    g_sources = [ssim_window_mean(x) for x in sources]
    var_fused = ssim_window_mean(fused * fused) - g_fused * g_fused
    var_reference = np.zeros_like(g_fused)
    cov_reference_fused = np.zeros_like(g_fused)
    for k in range(count):
        cov_reference_fused += a[k] * (ssim_window_mean(sources[k] * fused) - g_sources[k] * g_fused)
        for j in range(count):
            var_reference += a[k] * a[j] * (ssim_window_mean(sources[k] * sources[j]) - g_sources[k] * g_sources[j])
    var_reference *= scale * scale
    cov_reference_fused *= scale
    quality = (2 * cov_reference_fused + _C) / (var_reference + var_fused + _C)
    return float(quality.mean())


def _downsampled(image: np.ndarray) -> np.ndarray:
    """imfilter(ones(2)/4, 'symmetric', 'same') then every second pixel: 2 x 2 block means,
    the last row or column repeated where the size is odd."""
    rows, columns = image.shape
    padded = np.pad(image, ((0, rows % 2), (0, columns % 2)), mode="edge")
    return 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


def mef_ssim_scales(sources: Sequence[np.ndarray], fused: np.ndarray) -> tuple[float, ...]:
    """MEF-SSIM's score at each of its 3 scales, finest first (NaN for images under 44 px)."""
    if len(sources) < 2:
        raise ValueError(f"MEF-SSIM needs at least 2 sources, got {len(sources)}")
    grey_sources = [_grey_levels(source) for source in sources]
    grey_fused = _grey_levels(fused)
    for source in grey_sources:
        if source.shape != grey_fused.shape:
            raise ValueError(f"source {source.shape[1]}x{source.shape[0]} and fused "
                             f"{grey_fused.shape[1]}x{grey_fused.shape[0]} differ in size")
    levels = len(MEF_SSIM_SCALE_WEIGHTS)
    if min(grey_fused.shape) / 2 ** (levels - 1) < _PATCH:
        return (math.nan,) * levels
    scores = []
    for level in range(levels):
        if level:
            grey_sources = [_downsampled(source) for source in grey_sources]
            grey_fused = _downsampled(grey_fused)
        scores.append(_scale_score(grey_sources, grey_fused))
    return tuple(scores)


def mef_ssim(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """MEFB's MEF-SSIM: prod_l Q_l ^ beta_l over the 3 scales (module docstring). Higher is
    better, 1 at best."""
    scores = mef_ssim_scales(sources, fused)
    with np.errstate(invalid="ignore"):
        return float(np.prod(np.power(scores, MEF_SSIM_SCALE_WEIGHTS)))
