"""Standard objective metrics for image fusion, from their published definitions.

Every metric works on luma (ITU-R BT.601 Y) in 0..255 as float64: `fusion_metrics` converts
images of any supported mode (grey/RGB, 8/16-bit) with `to_luma_255`; the metric functions
themselves take 2-D float arrays. The fusion metrics take the K >= 2 sources and the fused
image; for K = 2 each is exactly its published two-source form, and the K-source form is the
usual generalisation stated in each docstring (terms averaged or summed over sources).

A metric that is undefined for its input (Q^AB/F when no source has an edge; Q_MI when
a source and the fused image are both constant; SSIM and Q_Y on images smaller than their
window) returns NaN rather than an arbitrary number; summaries skip NaNs.

Histogram-based metrics (EN, MI, Q_MI) use 256 bins of unit width: luma is rounded to the
nearest integer level 0..255, as the 8-bit implementations these metrics were defined with.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import cv2
import numpy as np

from semfuse_rt.engine.io.colour import to_luma_255

__all__ = [
    "METRIC_NAMES", "to_luma_255", "fusion_metrics",
    "qabf", "qabf_vifb", "qmi", "qy", "mean_ssim", "mutual_information",
    "entropy", "standard_deviation", "spatial_frequency", "average_gradient",
    "ssim_map",
]

# Report order. Every metric here is "higher is better" for fusion quality, with the usual
# caveat that EN/SD/SF/AG also grow with noise and artefacts.
METRIC_NAMES = ("Qabf", "QabfV", "Qmi", "Qy", "SSIM", "MI", "EN", "SD", "SF", "AG")

# Xydeas & Petrovic (2000) constants: sigmoids for edge strength (g) and orientation (alpha)
# preservation, and the weighting exponent L. Gamma values make Q(1, 1) ~ 1.
QABF_GAMMA_G, QABF_KAPPA_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_KAPPA_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8
QABF_L = 1.0
# MATLAB's rgb2gray weights, as the benchmarks' code converts colour: the first row of the
# inverse of the NTSC YIQ matrix, not BT.601's rounded 0.299 / 0.587 / 0.114.
MATLAB_RGB2GRAY = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]

# Sobel operator, applied by correlation. Only the magnitude and the difference of
# orientations between images enter Q^AB/F (the sign matters only against the pi/2 given to
# s_x = 0, hence qabf_vifb's own x kernel).
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_SOBEL_Y = _SOBEL_X.T.copy()
# Far below any real Sobel response of 8- or 16-bit data in 0..255 units (>= 1/257).
_ROUNDING_NOISE = 1e-9

# SSIM (Wang et al. 2004): K1 = 0.01, K2 = 0.03, dynamic range L = 255.
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2
SSIM_WINDOW, SSIM_WINDOW_SIGMA = 11, 1.5
# Q_Y's local windows (Yang et al. 2008, as in Liu et al.'s reference code): 7 x 7 Gaussian.
QY_WINDOW, QY_WINDOW_SIGMA, QY_SIMILAR = 7, 1.5, 0.75

_LEVELS = 256


# --------------------------------------------------------------------------- helpers

def _checked(sources: Sequence[np.ndarray], fused: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Sources and fused image as float64 2-D arrays of one shape."""
    if len(sources) < 2:
        raise ValueError(f"fusion metrics need at least 2 sources, got {len(sources)}")
    fused = np.asarray(fused, dtype=np.float64)
    sources = [np.asarray(source, dtype=np.float64) for source in sources]
    for source in sources:
        if source.shape != fused.shape or source.ndim != 2:
            raise ValueError(
                f"metric inputs must be 2-D luma arrays of one shape; got {source.shape} "
                f"and fused {fused.shape}"
            )
    return sources, fused


def _filter(image: np.ndarray, kernel: np.ndarray, border: int) -> np.ndarray:
    return cv2.filter2D(image, cv2.CV_64F, kernel, borderType=border)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma): a fixed-size window of the metric's own, not
    the blur of semfuse_rt/gaussian_blur.py (whose size follows sigma)."""
    column = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)
    window = column @ column.T
    return window / window.sum()


_SSIM_TAPS = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_WINDOW_SIGMA, cv2.CV_64F)  # fspecial's 11 x 11 window, separated


def ssim_window_mean(values: np.ndarray) -> np.ndarray:
    """The SSIM window's weighted mean of float64 `values` at every position where the 11 x 11
    window lies inside (VIFB's SSIM and MEF-SSIM): one separable pass."""
    return _valid(cv2.sepFilter2D(values, cv2.CV_64F, _SSIM_TAPS, _SSIM_TAPS, borderType=cv2.BORDER_REFLECT),
                  SSIM_WINDOW)


def _valid(image: np.ndarray, size: int) -> np.ndarray:
    """Crop a same-size filter result to the positions where the window lies inside."""
    half = size // 2
    return image[half:image.shape[0] - half, half:image.shape[1] - half]


def _local_statistics(a: np.ndarray, b: np.ndarray,
                      window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means, variances and covariance of a and b over every fully-inside window."""
    size = window.shape[0]
    if a.shape[0] < size or a.shape[1] < size:
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is smaller than the {size}x{size} window")

    def mean(x: np.ndarray) -> np.ndarray:
        return _valid(_filter(x, window, cv2.BORDER_REFLECT), size)

    mu_a, mu_b = mean(a), mean(b)
    # E[x^2] - E[x]^2 can come out a hair below zero on flat patches; variances cannot.
    var_a = np.maximum(mean(a * a) - mu_a * mu_a, 0.0)
    var_b = np.maximum(mean(b * b) - mu_b * mu_b, 0.0)
    cov = mean(a * b) - mu_a * mu_b
    return mu_a, mu_b, var_a, var_b, cov


def _ssim_from_statistics(mu_a, mu_b, var_a, var_b, cov, c1: float, c2: float) -> np.ndarray:
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )


def _levels(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, _LEVELS - 1).astype(np.intp)


def _entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _joint_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    index = _levels(a).ravel() * _LEVELS + _levels(b).ravel()
    return np.bincount(index, minlength=_LEVELS * _LEVELS).reshape(_LEVELS, _LEVELS)


def _mi_and_entropies(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """MI(a; b) = H(a) + H(b) - H(a, b) in bits, with H(a) and H(b)."""
    joint = _joint_counts(a, b)
    h_a = _entropy_of_counts(joint.sum(axis=1))
    h_b = _entropy_of_counts(joint.sum(axis=0))
    h_ab = _entropy_of_counts(joint.ravel())
    # Rounding can leave MI at -1e-16 for independent images.
    return max(h_a + h_b - h_ab, 0.0), h_a, h_b


# --------------------------------------------------------------------------- fusion metrics

def _sobel_strength_orientation(image: np.ndarray, border: int = cv2.BORDER_REFLECT,
                                x_kernel: np.ndarray = _SOBEL_X) -> tuple[np.ndarray, np.ndarray]:
    # Mirror the image at its border (scipy.ndimage.sobel's default "reflect") rather than
    # zero-pad as MATLAB's conv2(..., 'same') does: zero padding turns the image frame into
    # a strong edge that every fused image "preserves", inflating Q^AB/F on small images
    # (by ~0.05 on the TNO pairs). qabf_vifb zero-pads, as published tables do.
    sx = _filter(image, x_kernel, border)
    sy = _filter(image, _SOBEL_Y, border)
    # Luma of RGB carries float rounding (0.299 g + 0.587 g + 0.114 g != g exactly); a
    # response that small is a flat patch, and must get the flat-patch orientation below.
    sx[np.abs(sx) < _ROUNDING_NOISE] = 0.0
    sy[np.abs(sy) < _ROUNDING_NOISE] = 0.0
    strength = np.hypot(sx, sy)
    # alpha = arctan(sy / sx) in (-pi/2, pi/2]; a zero horizontal response is a vertical
    # gradient (pi/2), the reference implementation's convention.
    ratio = np.divide(sy, sx, out=np.zeros_like(sy), where=sx != 0)
    orientation = np.where(sx != 0, np.arctan(ratio), math.pi / 2)
    return strength, orientation


def _edge_preservation(g_source, a_source, g_fused, a_fused, equal_is_fused: bool = False) -> np.ndarray:
    """Q^{SF}(n, m): how well the fused image keeps the source's edge strength and orientation."""
    larger = np.maximum(g_source, g_fused)
    smaller = np.minimum(g_source, g_fused)
    # Relative strength G = min/max; equal strengths (including both zero) preserve fully,
    # or, in VIFB's code, G = g_F where g_S == g_F.
    equal = g_fused if equal_is_fused else np.ones_like(larger)
    relative_strength = np.divide(smaller, larger, out=equal.copy(), where=g_source != g_fused)
    relative_orientation = 1.0 - np.abs(a_source - a_fused) / (math.pi / 2)
    q_g = QABF_GAMMA_G / (1.0 + np.exp(QABF_KAPPA_G * (relative_strength - QABF_SIGMA_G)))
    q_a = QABF_GAMMA_A / (1.0 + np.exp(QABF_KAPPA_A * (relative_orientation - QABF_SIGMA_A)))
    return q_g * q_a


def qabf(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """Q^AB/F, the gradient-based edge-transfer metric of Xydeas & Petrovic.

    C. S. Xydeas and V. Petrovic, "Objective image fusion performance measure",
    Electronics Letters 36(4):308-309, 2000.

    Sobel responses s_x, s_y (3 x 3, image mirrored at the border) give edge strength
    g = sqrt(s_x^2 + s_y^2) and orientation alpha = arctan(s_y / s_x) (pi/2 where s_x = 0).
    Per pixel, G^SF = min(g_S, g_F) / max(g_S, g_F) (1 where equal) and
    A^SF = 1 - |alpha_S - alpha_F| / (pi/2); Q^SF = Q_g Q_alpha with sigmoids
    Q_g = Gamma_g / (1 + exp(kappa_g (G - sigma_g))), Q_alpha likewise, using
    Gamma_g = 0.9994, kappa_g = -15, sigma_g = 0.5, Gamma_alpha = 0.9879, kappa_alpha = -22,
    sigma_alpha = 0.8. The score weights each pixel by source strength w_S = g_S^L, L = 1:

        Q = sum_S sum_nm Q^SF w_S / sum_S sum_nm w_S

    which for two sources is Q^AB/F exactly. NaN when no source has any gradient.
    """
    return _qabf(sources, fused, cv2.BORDER_REFLECT, equal_is_fused=False)


def qabf_vifb(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """Q^AB/F as the VIFB benchmark's code (and CDDFuse's port of it) computes it, the
    convention of most published fusion tables: the Sobel filters zero-pad the image
    (conv2 'same'), and where g_S == g_F the relative strength G is g_F itself rather than 1.
    Otherwise as `qabf`; usually higher, since the zero-padded frame is an edge every image
    shares."""
    # conv2 flips its kernels: VIFB's x response is the negative of this module's, which
    # matters where one image's s_x is 0 (orientation pi/2) and the other's is not.
    return _qabf(sources, fused, cv2.BORDER_CONSTANT, equal_is_fused=True, x_kernel=-_SOBEL_X)


def _qabf(sources, fused, border: int, equal_is_fused: bool, x_kernel: np.ndarray = _SOBEL_X) -> float:
    sources, fused = _checked(sources, fused)
    g_fused, a_fused = _sobel_strength_orientation(fused, border, x_kernel)
    numerator = denominator = 0.0
    for source in sources:
        g_source, a_source = _sobel_strength_orientation(source, border, x_kernel)
        weight = g_source ** QABF_L
        preserved = _edge_preservation(g_source, a_source, g_fused, a_fused, equal_is_fused)
        numerator += float((preserved * weight).sum())
        denominator += float(weight.sum())
    return numerator / denominator if denominator > 0 else math.nan


def qmi(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """Q_MI, normalised mutual information of Hossny et al.

    M. Hossny, S. Nahavandi and D. Creighton, "Comments on 'Information measure for
    performance of image fusion'", Electronics Letters 44(18):1066-1067, 2008.

    Q_MI = 2 [MI(A;F) / (H(A) + H(F)) + MI(B;F) / (H(B) + H(F))], range 0..2. For K sources,
    Q_MI = (4 / K) sum_k MI(I_k;F) / (H(I_k) + H(F)), i.e. twice the mean over sources of the
    per-source normalised MI 2 MI / (H_k + H_F) (each in 0..1), which equals Hossny's form for
    K = 2. NaN when some source and the fused image are both constant (0 / 0).
    """
    sources, fused = _checked(sources, fused)
    terms = []
    for source in sources:
        mi, h_source, h_fused = _mi_and_entropies(source, fused)
        total = h_source + h_fused
        if total == 0:
            return math.nan
        terms.append(2.0 * mi / total)
    return 2.0 * float(np.mean(terms))


def qy(sources: Sequence[np.ndarray], fused: np.ndarray,
       *, c1: float = SSIM_C1, c2: float = SSIM_C2) -> float:
    """Q_Y, the SSIM-based fusion metric of Yang et al.

    C. Yang, J.-Q. Zhang, X.-R. Wang and X. Liu, "A novel similarity based quality metric for
    image fusion", Information Fusion 9(2):156-160, 2008.

    Local statistics over sliding windows (the windowed-quality-index scheme Piella & Heijmans,
    ICIP 2003, introduced for fusion), here a 7 x 7 Gaussian window with sigma 1.5 at every
    fully-inside position, as in Liu et al.'s reference implementation (Z. Liu et al., IEEE
    TPAMI 34(1), 2012). Per window w, with lambda(w) = s_A / (s_A + s_B) (s = local variance):

        Q(w) = lambda SSIM(A,F|w) + (1 - lambda) SSIM(B,F|w)   if SSIM(A,B|w) >= 0.75
        Q(w) = max(SSIM(A,F|w), SSIM(B,F|w))                    otherwise

    and Q_Y is the mean of Q(w). SSIM uses Wang et al.'s stabilising constants
    C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2 so that flat windows (black medical backgrounds,
    clear sky) have a defined similarity; where both sources are flat lambda = 1/2.
    For K sources: lambda_k = s_k / sum_j s_j, "similar" means every pair of sources has
    SSIM >= 0.75 in the window, otherwise the max over k; for K = 2 this is the definition above.
    """
    sources, fused = _checked(sources, fused)
    if min(fused.shape) < QY_WINDOW:
        return math.nan
    window = _gaussian_window(QY_WINDOW, QY_WINDOW_SIGMA)
    to_fused, variances = [], []
    for source in sources:
        mu_s, mu_f, var_s, var_f, cov = _local_statistics(source, fused, window)
        to_fused.append(_ssim_from_statistics(mu_s, mu_f, var_s, var_f, cov, c1, c2))
        variances.append(var_s)
    similar = np.ones_like(to_fused[0], dtype=bool)
    for i, j in combinations(range(len(sources)), 2):
        similar &= ssim_map(sources[i], sources[j], window=window, c1=c1, c2=c2) >= QY_SIMILAR
    total_variance = np.sum(variances, axis=0)
    weighted = np.zeros_like(to_fused[0])
    for variance, ssim_to_fused in zip(variances, to_fused):
        weight = np.divide(variance, total_variance, out=np.full_like(variance, 1.0 / len(sources)),
                           where=total_variance > 0)
        weighted += weight * ssim_to_fused
    best = np.max(to_fused, axis=0)
    return float(np.where(similar, weighted, best).mean())


def ssim_map(a: np.ndarray, b: np.ndarray, *, window: np.ndarray | None = None,
             c1: float = SSIM_C1, c2: float = SSIM_C2) -> np.ndarray:
    """Local SSIM at every fully-inside window position (Wang et al. 2004).

    Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment: from
    error visibility to structural similarity", IEEE TIP 13(4):600-612, 2004. Default window:
    11 x 11 Gaussian, sigma 1.5; no downsampling.
    """
    if window is None:
        window = _gaussian_window(SSIM_WINDOW, SSIM_WINDOW_SIGMA)
    return _ssim_from_statistics(*_local_statistics(a, b, window), c1, c2)


def mean_ssim(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """Mean over sources of SSIM(I_k, F) (Wang et al. 2004; 11 x 11 Gaussian window,
    sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255). Some papers report the two-source sum instead;
    the mean keeps 1 as the ideal and is comparable across set sizes."""
    sources, fused = _checked(sources, fused)
    if min(fused.shape) < SSIM_WINDOW:
        return math.nan
    return float(np.mean([ssim_map(source, fused).mean() for source in sources]))


def mutual_information(sources: Sequence[np.ndarray], fused: np.ndarray) -> float:
    """MI = MI(A;F) + MI(B;F) in bits (G. Qu, D. Zhang and P. Yan, "Information measure for
    performance of image fusion", Electronics Letters 38(7):313-315, 2002), 256-bin
    histograms. For K sources (2 / K) sum_k MI(I_k;F): the same sum for two sources, kept on
    that scale for larger sets so that values stay comparable across set sizes."""
    sources, fused = _checked(sources, fused)
    total = sum(_mi_and_entropies(source, fused)[0] for source in sources)
    return 2.0 * total / len(sources)


# --------------------------------------------------------------------------- fused-image-only metrics

def entropy(fused: np.ndarray) -> float:
    """EN: Shannon entropy of the 256-bin grey-level histogram, in bits (J. W. Roberts,
    J. van Aardt and F. Ahmed, J. Appl. Remote Sens. 2(1), 2008)."""
    fused = np.asarray(fused, dtype=np.float64)
    return _entropy_of_counts(np.bincount(_levels(fused).ravel(), minlength=_LEVELS))


def standard_deviation(fused: np.ndarray) -> float:
    """SD: population standard deviation of the grey levels (contrast)."""
    fused = np.asarray(fused, dtype=np.float64)
    return float(np.std(fused))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) (A. M. Eskicioglu and P. S. Fisher, IEEE Trans. Commun.
    43(12), 1995), with RF^2 = (1/MN) sum_{i, j>=2} (F[i,j] - F[i,j-1])^2 and CF^2 likewise
    down columns; M x N is the image size."""
    fused = np.asarray(fused, dtype=np.float64)
    rows, columns = fused.shape
    row_sq = float((np.diff(fused, axis=1) ** 2).sum()) / (rows * columns)
    column_sq = float((np.diff(fused, axis=0) ** 2).sum()) / (rows * columns)
    return math.sqrt(row_sq + column_sq)


def average_gradient(fused: np.ndarray) -> float:
    """AG = 1/((M-1)(N-1)) sum sqrt((dF/dx^2 + dF/dy^2) / 2) with forward differences over the
    (M-1) x (N-1) positions that have both (G. Cui et al., Optics Communications 341, 2015)."""
    fused = np.asarray(fused, dtype=np.float64)
    dx = np.diff(fused, axis=1)[:-1, :]
    dy = np.diff(fused, axis=0)[:, :-1]
    return float(np.sqrt((dx * dx + dy * dy) / 2.0).mean())


# --------------------------------------------------------------------------- everything at once

def fusion_metrics(sources: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
    """All of METRIC_NAMES for images in any supported mode (converted to luma 0..255)."""
    source_luma = [to_luma_255(source) for source in sources]
    fused_luma = to_luma_255(fused)
    return {
        "Qabf": qabf(source_luma, fused_luma),
        "QabfV": qabf_vifb(source_luma, fused_luma),
        "Qmi": qmi(source_luma, fused_luma),
        "Qy": qy(source_luma, fused_luma),
        "SSIM": mean_ssim(source_luma, fused_luma),
        "MI": mutual_information(source_luma, fused_luma),
        "EN": entropy(fused_luma),
        "SD": standard_deviation(fused_luma),
        "SF": spatial_frequency(fused_luma),
        "AG": average_gradient(fused_luma),
    }
