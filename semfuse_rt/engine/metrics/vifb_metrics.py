"""The VIFB benchmark's 13 metrics, computed as its MATLAB code computes them.

X. Zhang, P. Ye and G. Xiao, "VIFB: a visible and infrared image fusion benchmark", CVPR
Workshops 2020 (github.com/xingchenzhang/VIFB, folder metrics/). Published fusion tables quote
these numbers, so they are kept in the benchmark's conventions even where those differ from
the metrics' papers or from engine/metrics/metrics.py (the project's own conventions): VIFB's "RMSE"
is sqrt(sum of squared errors) / (number of pixels), its PSNR is built on that, its MI is in
nats on min-max-normalised images, its SSIM is the sum over the two sources, its SD is
called "Variance", and so on. Each function's docstring says what VIFB's code does.

Inputs are images as engine/io/images.py loads them: HxW grey or HxWx3 RGB, uint8 or uint16.
VIFB's code works on 8-bit images (256-bin histograms, PSNR's peak 255), so 16-bit images are
first reduced to 8 bits (nearest level, x / 257).

Colour, as VIFB's code handles it (it reads every image as stored; its infrared images are
RGB JPEGs with three equal channels):
- colour fused image: each metric is computed channel by channel, channel k of the fused
  image against channel k of each colour source, or the grey source itself, and the channel
  values are averaged. SF is the exception: VIFB's code indexes the HxWx3 array as H x 3W, so
  it is the SF of the three channels side by side (seams included).
- grey fused image: colour sources are turned grey with MATLAB's rgb2gray weights. VIFB's
  code rounds that grey to 8 bits for CE, MI and SSIM (it converts the uint8 image) but not for
  PSNR, RMSE and Q^AB/F (it converts after double()); both are kept. VIFB's Qcb and Qcv fail
  on that combination; here they use the rounded grey.

VIFB is a two-source benchmark. For K > 2 sources the per-source terms are combined as VIFB
combines its two: averaged (CE, RMSE, the PSNR's error), summed and scaled by 2 / K (MI,
SSIM: the two-source sum, kept on that scale for any K), or weighted by saliency (Q^AB/F,
Qcb, Qcv); for K = 2 each is exactly VIFB's value.

Scoring several fused images of one pair: `VifbReference(sources).scores(fused)` computes
the sources' side of every metric once (their histograms, gradients, contrast and CSF-filtered
images), so that each further fused image costs only its own side.

A metric that VIFB's code makes NaN or infinite (PSNR of a fused image equal to every source;
Qcb or Qcv of a constant non-zero image) is returned as such.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache

import cv2
import numpy as np

from semfuse_rt.engine.metrics.metrics import (
    MATLAB_RGB2GRAY, SSIM_C1, SSIM_C2, _edge_preservation, _mi_and_entropies, _sobel_strength_orientation,
    _ssim_from_statistics, entropy, spatial_frequency, ssim_window_mean, standard_deviation,
)

__all__ = ["VIFB_METRICS", "VifbReference", "vifb_metrics"]

# (key, higher is better), in the order the project reports them.
VIFB_METRICS: tuple[tuple[str, bool], ...] = (
    ("CE", False), ("EN", True), ("MI", True), ("PSNR", True), ("SSIM", True), ("RMSE", False),
    ("AG", True), ("EI", True), ("SD", True), ("SF", True), ("Qabf", True), ("Qcb", True),
    ("Qcv", False),
)

_PEAK = 255.0
_LEVELS = 256

# Qcb (Chen & Blum 2009, Z. Liu's code as VIFB ships it): the contrast sensitivity DoG, the
# two Gaussians of the local contrast and the masking nonlinearity k C^p / (h C^q + Z).
_QCB_F0, _QCB_F1, _QCB_A = 15.3870, 1.3456, 0.7622
_QCB_FREQUENCY_SCALE = 30  # freqspace's u times cols / 30, v times rows / 30
_QCB_GAUSSIAN_HALF = 15  # 31 x 31 taps, not normalised
_QCB_SIGMA_1, _QCB_SIGMA_2 = 2.0, 4.0
_QCB_K, _QCB_H, _QCB_Z = 1.0, 1.0, 0.0001  # p = 3, q = 2, written out as products below

# Qcv (Chen & Varshney 2007, Z. Liu's code as VIFB ships it): 16 x 16 regions, saliency
# exponent alpha = 5, Mannos-Sakrison CSF at 1/8 of the image size.
_QCV_WINDOW = 16
_QCV_ALPHA = 5
_QCV_FREQUENCY_SCALE = 8

_SOBEL_ROWS = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)  # fspecial('sobel')
# conv2 flips its kernels: VIFB's Q^AB/F x response is the correlation with this one.
_QABF_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)


# --------------------------------------------------------------------------- frequency responses

@lru_cache(maxsize=8)
def _radial_frequency(shape: tuple[int, int], scale: int) -> np.ndarray:
    """sqrt(u^2 + v^2) over MATLAB's freqspace grid, u scaled by cols / scale and v by
    rows / scale, laid out as rfft2's half spectrum (zero frequency first)."""
    rows, columns = shape
    # freqspace(n) = ((0:n-1) - floor(n/2)) * 2/n, here times n / scale.
    u = (np.arange(columns) - columns // 2) * (2.0 / scale)
    v = (np.arange(rows) - rows // 2) * (2.0 / scale)
    radius = np.fft.ifftshift(np.hypot(u[None, :], v[:, None]))
    return radius[:, :columns // 2 + 1]


@lru_cache(maxsize=4)
def _qcb_dog(shape: tuple[int, int]) -> np.ndarray:
    r = _radial_frequency(shape, _QCB_FREQUENCY_SCALE)
    return np.exp(-(r / _QCB_F0) ** 2) - _QCB_A * np.exp(-(r / _QCB_F1) ** 2)


@lru_cache(maxsize=4)
def _qcv_csf(shape: tuple[int, int]) -> np.ndarray:
    r = _radial_frequency(shape, _QCV_FREQUENCY_SCALE)
    return 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)


def _filtered(spectrum: np.ndarray, response: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # Both responses are even in u and v, so MATLAB's ifft2 result is real up to rounding: the
    # half-spectrum transform gives that real part.
    import scipy.fft  # on first use: command help lists these metrics without loading scipy

    return scipy.fft.irfft2(spectrum * response, s=shape)


# --------------------------------------------------------------------------- one grey plane

def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _stretched_levels(plane: np.ndarray) -> np.ndarray:
    """mutinf's levels: stretched to 0..1 by min and max, int16(x * 255) (half away from 0)."""
    low, high = plane.min(), plane.max()
    if high == low:
        return np.zeros(plane.shape, dtype=np.intp)
    return np.floor((plane - low) / (high - low) * 255 + 0.5).astype(np.intp)


def _normalise1(plane: np.ndarray) -> np.ndarray:
    """Z. Liu's normalize1, which Qcb and Qcv apply to every input: stretched to 0..255 and
    rounded (0 / 0, NaN, for a constant non-zero plane, as in MATLAB)."""
    low, high = plane.min(), plane.max()
    if low == 0 and high == 0:
        return plane
    with np.errstate(divide="ignore", invalid="ignore"):
        return _round_half_away((plane - low) / (high - low) * 255)


def _block_sums(values: np.ndarray) -> np.ndarray:
    """blkproc's distinct 16 x 16 blocks, the image zero-padded to whole blocks (so a partial
    block's mean2 still divides by 256)."""
    rows, columns = values.shape
    size = _QCV_WINDOW
    padded = np.zeros((-(-rows // size) * size, -(-columns // size) * size))
    padded[:rows, :columns] = values
    return padded.reshape(padded.shape[0] // size, size, padded.shape[1] // size, size).sum(axis=(1, 3))


class _Plane:
    """One grey plane (float64, 0..255) and what the metrics derive from it alone, each
    computed on first use and kept: a source's are reused for every fused image."""

    def __init__(self, values: np.ndarray):
        self.values = values

    @cached_property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0], self.values.shape[1])

    @cached_property
    def histogram(self) -> np.ndarray:
        return np.bincount(self.values.astype(np.intp).ravel(), minlength=_LEVELS) / self.values.size

    @cached_property
    def stretched_levels(self) -> np.ndarray:
        return _stretched_levels(self.values)

    @cached_property
    def ssim_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian-window mean and mean square at every fully-inside position ('valid')."""
        return ssim_window_mean(self.values), ssim_window_mean(self.values * self.values)

    @cached_property
    def qabf_edges(self) -> tuple[np.ndarray, np.ndarray]:
        # 255 * im2double(double image) in VIFB's code: the scale reaches Q^AB/F where
        # g_S == g_F, whose relative strength VIFB sets to g_F itself.
        return _sobel_strength_orientation(_PEAK * self.values, cv2.BORDER_CONSTANT, _QABF_X)

    @cached_property
    def normalised(self) -> np.ndarray:
        return _normalise1(self.values)

    @cached_property
    def normalised_spectrum(self) -> np.ndarray:
        import scipy.fft  # on first use: command help lists these metrics without loading scipy

        return scipy.fft.rfft2(self.normalised)

    @cached_property
    def qcb_contrast(self) -> np.ndarray:
        """Chen-Blum's masked local contrast of the DoG-filtered plane: C = |G1 * I / G2 * I - 1|
        with unnormalised Gaussians of sigma 2 and 4, zero-padded (filter2 'same'), then
        C^3 / (C^2 + 1e-4)."""
        filtered = _filtered(self.normalised_spectrum, _qcb_dog(self.shape), self.shape)
        x = np.arange(-_QCB_GAUSSIAN_HALF, _QCB_GAUSSIAN_HALF + 1, dtype=np.float64)

        def smoothed(sigma: float) -> np.ndarray:
            taps = np.exp(-x * x / (2 * sigma * sigma))
            out = cv2.sepFilter2D(filtered, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_CONSTANT)
            return out / (2 * math.pi * sigma * sigma)

        with np.errstate(divide="ignore", invalid="ignore"):
            contrast = np.abs(smoothed(_QCB_SIGMA_1) / smoothed(_QCB_SIGMA_2) - 1)
            square = contrast * contrast
            return _QCB_K * square * contrast / (_QCB_H * square + _QCB_Z)

    @cached_property
    def qcv_filtered(self) -> np.ndarray:
        """The normalised plane through the Mannos-Sakrison CSF. VIFB filters the difference
        S - F; the filter is linear, so filtering each once gives the same difference."""
        return _filtered(self.normalised_spectrum, _qcv_csf(self.shape), self.shape)

    @cached_property
    def qcv_saliency(self) -> np.ndarray:
        """Per 16 x 16 block, sum g^5 of the normalised plane's zero-padded Sobel magnitude."""
        gx = cv2.filter2D(self.normalised, cv2.CV_64F, _QABF_X, borderType=cv2.BORDER_CONSTANT)
        gy = cv2.filter2D(self.normalised, cv2.CV_64F, _SOBEL_ROWS, borderType=cv2.BORDER_CONSTANT)
        return _block_sums(np.hypot(gx, gy) ** _QCV_ALPHA)


# --------------------------------------------------------------------------- per-plane metrics

PlaneMetric = Callable[[list[_Plane], _Plane], float]


def cross_entropy(sources: list[_Plane], fused: _Plane) -> float:
    """metricsCross_entropy: mean over sources of sum_l p_S(l) log2(p_S(l) / p_F(l)) over the
    grey levels both histograms hold (Bulanon et al. 2009)."""
    terms = []
    for source in sources:
        both = (source.histogram > 0) & (fused.histogram > 0)
        p_source, p_fused = source.histogram[both], fused.histogram[both]
        terms.append(float((p_source * np.log2(p_source / p_fused)).sum()))
    return float(np.mean(terms))


def mutual_information(sources: list[_Plane], fused: _Plane) -> float:
    """metricsMutinf: MI(A;F) + MI(B;F) in nats, each image first stretched by its own min and
    max to 256 levels (Qu et al. 2002)."""
    # The shared helper's MI in bits, times ln 2: the same sum in nats.
    total = sum(_mi_and_entropies(source.stretched_levels, fused.stretched_levels)[0] for source in sources)
    return 2.0 * total * math.log(2.0) / len(sources)


def _vifb_error(source: _Plane, fused: _Plane) -> float:
    """VIFB's "mse": sqrt(sum of squared differences) / number of pixels."""
    difference = source.values - fused.values
    return math.sqrt(float(np.vdot(difference, difference))) / difference.size


def rmse(sources: list[_Plane], fused: _Plane) -> float:
    """metricsRmse: the mean over sources of VIFB's "mse", sqrt(sum (S - F)^2) / (M N). Not a
    root mean square: it is sqrt(M N) times smaller, so it shrinks with the image's size."""
    return float(np.mean([_vifb_error(source, fused) for source in sources]))


def psnr(sources: list[_Plane], fused: _Plane) -> float:
    """metricsPsnr: 20 log10(255 / sqrt(e)), e the mean over sources of VIFB's "mse" (see
    `rmse`): about 60 dB where the usual PSNR is about 15."""
    with np.errstate(divide="ignore"):
        return float(20.0 * np.log10(_PEAK / np.sqrt(rmse(sources, fused))))


def ssim(sources: list[_Plane], fused: _Plane) -> float:
    """metricsSsim: SSIM(A,F) + SSIM(B,F), each the mean SSIM map over the fully-inside
    11 x 11 Gaussian windows (sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255; Wang et al. 2004)."""
    mu_f, square_f = fused.ssim_moments
    total = 0.0
    for source in sources:
        mu_s, square_s = source.ssim_moments
        cov = ssim_window_mean(source.values * fused.values) - mu_s * mu_f
        total += float(_ssim_from_statistics(mu_s, mu_f, square_s - mu_s * mu_s, square_f - mu_f * mu_f, cov,
                                             SSIM_C1, SSIM_C2).mean())
    return 2.0 * total / len(sources)


def qabf(sources: list[_Plane], fused: _Plane) -> float:
    """metricsQabf: Q^AB/F with zero-padded Sobel filters and G = g_F where g_S == g_F, as
    engine/metrics/metrics.py's `qabf_vifb`, on the planes scaled by 255 as VIFB's code scales them."""
    g_fused, a_fused = fused.qabf_edges
    numerator = denominator = 0.0
    for source in sources:
        g_source, a_source = source.qabf_edges
        preserved = _edge_preservation(g_source, a_source, g_fused, a_fused, equal_is_fused=True)
        numerator += float(np.vdot(preserved, g_source))
        denominator += float(g_source.sum())
    return numerator / denominator if denominator > 0 else math.nan


def qcb(sources: list[_Plane], fused: _Plane) -> float:
    """metricsQcb (Chen & Blum 2009): per pixel the contrast preserved, min(C_S, C_F) /
    max(C_S, C_F) of the masked local contrasts (`_Plane.qcb_contrast`), weighted by
    C_S^2 / sum_S C_S^2, averaged over the image."""
    c_fused = fused.qcb_contrast
    saliency = [source.qcb_contrast * source.qcb_contrast for source in sources]
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.sum(saliency, axis=0)
        quality = np.zeros(c_fused.shape)
        for weight, source in zip(saliency, sources):
            c_source = source.qcb_contrast
            # The code's own form, so that it is NaN where MATLAB's is (inf * 0 at a zero contrast).
            mask = (c_source < c_fused).astype(np.float64)
            quality += weight / total * ((c_source / c_fused) * mask + (c_fused / c_source) * (1 - mask))
    return float(quality.mean())


def qcv(sources: list[_Plane], fused: _Plane) -> float:
    """metricsQcv (Chen & Varshney 2007): per 16 x 16 block, the source's saliency
    lambda = sum g^5 and the dissimilarity D = mean of (CSF-filtered S - F)^2, all on planes
    stretched to 0..255; Qcv = sum lambda D / sum lambda over blocks and sources."""
    numerator = denominator = 0.0
    block_area = _QCV_WINDOW * _QCV_WINDOW
    for source in sources:
        difference = source.qcv_filtered - fused.qcv_filtered
        dissimilarity = _block_sums(difference * difference) / block_area
        numerator += float(np.vdot(source.qcv_saliency, dissimilarity))
        denominator += float(source.qcv_saliency.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def average_gradient(plane: np.ndarray) -> float:
    """metricsAvg_gradient: MATLAB's gradient (central differences, one-sided at the border);
    sum of sqrt((dx^2 + dy^2) / 2) over all M N pixels, divided by (M - 1)(N - 1)."""
    rows, columns = plane.shape
    dy, dx = np.gradient(plane)
    return float(np.sqrt((dx * dx + dy * dy) / 2.0).sum()) / ((rows - 1) * (columns - 1))


def edge_intensity(plane: np.ndarray) -> float:
    """metricsEdge_intensity: mean Sobel magnitude, the image's border replicated."""
    gx = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_ROWS, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(plane, cv2.CV_64F, _SOBEL_ROWS.T, borderType=cv2.BORDER_REPLICATE)
    return float(np.hypot(gx, gy).mean())


# --------------------------------------------------------------------------- images

def _eight_bit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint16:
        return np.rint(image / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"VIFB metrics take uint8 or uint16 images, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"VIFB metrics take HxW or HxWx3 images, got shape {image.shape}")
    return image


# Which grey plane of a colour source pairs with a grey fused image (module docstring).
_ROUNDED_GREY, _UNROUNDED_GREY = "rounded grey", "unrounded grey"
_ROUNDED_METRICS = (cross_entropy, mutual_information, ssim, qcb, qcv)


class VifbReference:
    """The sources of one image set, ready to score fused images on VIFB's 13 metrics."""

    def __init__(self, sources: Sequence[np.ndarray]):
        if len(sources) < 2:
            raise ValueError(f"VIFB metrics need at least 2 sources, got {len(sources)}")
        self._sources = [_eight_bit(source) for source in sources]
        size = self._sources[0].shape[:2]
        if any(source.shape[:2] != size for source in self._sources):
            raise ValueError("VIFB metrics need sources of one size, got "
                             + ", ".join(f"{s.shape[1]}x{s.shape[0]}" for s in self._sources))
        self._planes: dict[int | str, list[_Plane]] = {}

    def _source_planes(self, key: int | str) -> list[_Plane]:
        """Channel `key` of each source (a grey source as itself), or each source in grey."""
        if key not in self._planes:
            planes = []
            for source in self._sources:
                if source.ndim == 2:
                    values = source.astype(np.float64)
                elif isinstance(key, int):
                    values = source[:, :, key].astype(np.float64)
                else:
                    grey = source.astype(np.float64) @ MATLAB_RGB2GRAY
                    # rgb2gray of uint8 rounds (half away from zero; levels are never negative).
                    values = np.floor(grey + 0.5) if key == _ROUNDED_GREY else grey
                planes.append(_Plane(values))
            self._planes[key] = planes
        return self._planes[key]

    def scores(self, fused: np.ndarray) -> dict[str, float]:
        """The 13 metrics of VIFB_METRICS for one fused image of this set, by key."""
        fused = _eight_bit(fused)
        if fused.shape[:2] != self._sources[0].shape[:2]:
            raise ValueError(f"fused image {fused.shape[1]}x{fused.shape[0]} differs in size from the sources "
                             f"({self._sources[0].shape[1]}x{self._sources[0].shape[0]})")
        # (fused plane, source key for the rounded-grey metrics, source key for the others)
        channels: list[tuple[_Plane, int | str, int | str]]
        if fused.ndim == 3:
            channels = [(_Plane(fused[:, :, k].astype(np.float64)), k, k) for k in range(3)]
        else:
            channels = [(_Plane(fused.astype(np.float64)), _ROUNDED_GREY, _UNROUNDED_GREY)]

        def channel_mean(metric: PlaneMetric) -> float:
            return float(np.mean([
                metric(self._source_planes(rounded if metric in _ROUNDED_METRICS else unrounded), plane)
                for plane, rounded, unrounded in channels]))

        planes = [plane.values for plane, _, _ in channels]
        return {
            "CE": channel_mean(cross_entropy),
            "EN": float(np.mean([entropy(plane) for plane in planes])),
            "MI": channel_mean(mutual_information),
            "PSNR": channel_mean(psnr),
            "SSIM": channel_mean(ssim),
            "RMSE": channel_mean(rmse),
            "AG": float(np.mean([average_gradient(plane) for plane in planes])),
            "EI": float(np.mean([edge_intensity(plane) for plane in planes])),
            "SD": float(np.mean([standard_deviation(plane) for plane in planes])),
            # VIFB's code indexes the H x W x 3 array as H x 3W: the channels side by side.
            "SF": spatial_frequency(np.hstack(planes)),
            "Qabf": channel_mean(qabf),
            "Qcb": channel_mean(qcb),
            "Qcv": channel_mean(qcv),
        }


def vifb_metrics(sources: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
    """The 13 metrics of VIFB_METRICS, as VIFB's code computes them (colour: module docstring)."""
    return VifbReference(sources).scores(fused)
