"""Per-pixel evidence weights computed from the inputs themselves, and Laplacian-pyramid
blends with them (Burt & Adelson 1983; Mertens, Kautz & Van Reeth, "Exposure fusion", 2007;
enfuse's focus-stacking recipe). `agreement_blend` is the start image of the `pyramid-blend`
initialisation (engine/start/initialisation.py) and the `blend` preset.

Measures, per input k and pixel, on 0..1 pixels:

- contrast C_k: the standard deviation of the luma in a 5 x 5 box around the pixel
  (enfuse's contrast measure; reflect-101 borders, as everywhere here);
- structural agreement A (one map for all inputs): the mean over k of the local correlation
  of input k's luma with the mean of the other inputs' luma, negative counted as 0. High
  where the inputs show one scene at different exposures or focus, about 0 where they show
  different things (infrared against visible, CT against MR) or are flat.

`pyramid_blend` sums each input's Laplacian bands times the Gaussian pyramid of its weight.

`agreement_blend`, the rule (every number a fixed constant, no per-category switch):

    T     = std over k of blur_8(luma_k)                  (how far the inputs' tones differ)
    p     = 1 + 2 (1 - min(T / 0.05, 1))                  (3 where tones agree, 1 where not)
    hard  = one-hot majority_9(argmax_k blur_3(C_k))      (the sharpest input wins, verified)
    soft  = blur_4(C_k^p) / sum_j blur_4(C_j^p)           (contrast-weighted average)
    g     = blur_2(A), A over 9 x 9 windows
    W_k   = g soft_k + (1 - g) hard_k
    deep  = pyramid blend with W as deep as the image allows (coarsest side 1-2 px)
    local = pyramid blend with W down to a band of at least 8 pixels
    start = s deep + (1 - s) local,  s = blur_8(A)
    whole = pyramid blend with W down to a band of at least 3 pixels (`whole-pyramid-blend`)

(blur_s: Gaussian of standard deviation s px; majority_9: each pixel's most frequent label
in a 9 x 9 box.) Where the inputs disagree (different modalities) each pixel's detail comes
from its sharpest input and low frequencies mix only locally, so one input's brightness
does not leak across the image (a CT's black background stays black). Where they agree
(exposure and focus stacks) details are averaged by contrast and the pyramid goes down to
the whole image, which keeps the global tone of an exposure stack. The `whole` start stops
one or two levels short of the 1-2 px band: those last levels set each region's tone from
the whole image's average weights, and on MEFB's tune half stopping at 3 px kept MEF-SSIM
above Mertens' and raised Q_Y from 0.846 to 0.902 (benchmarks/RESULTS.md, "Exposure stacks"). Where they agree in
tone too (a focus stack: the inputs differ only in sharpness) the soft weights sharpen
towards the sharpest input, which keeps its structure (Q_Y) rather than an average.

Everything is torch ops on the pixels' device, except that on the CPU the box means, the
Gaussian blurs and the pyramid's reduce step call OpenCV (the same filters, equal to
rounding; far faster than single-channel torch convolutions there). The `pyramid-blend`
start runs it in float32. The deep pyramid's support is the whole image: a tiled
fuse takes its tiles' lowest frequencies from a preview of the whole image
(engine/large/tile_tone.py); the local pyramid's support is about 2^L * 4 pixels for L levels.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.nn import functional as F

from semfuse_rt.engine.start.blend_rule import CONTRAST_WINDOW, CORRELATION_FLOOR, EPS, LUMA, RULE, SOFT_TOTAL_FLOOR
from semfuse_rt.engine.start.pyramid_depth import pyramid_levels
from semfuse_rt.gaussian_blur import Border, fold_indices, gaussian_taps, opencv_blur, torch_blur

_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)  # Burt & Adelson's 5-tap kernel, a = 0.375


def _fold(index: torch.Tensor, length: int) -> torch.Tensor:
    """Reflect-101 (OpenCV's default border: ...cb|abc|ba...) of indices, as often as needed."""
    return fold_indices(index, length, Border.REFLECT_101)


def _pad(planes: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-101 padding of the last two axes that also works on sides <= pad."""
    h, w = planes.shape[-2:]
    rows = _fold(torch.arange(-pad, h + pad, device=planes.device), h)
    cols = _fold(torch.arange(-pad, w + pad, device=planes.device), w)
    return planes.index_select(-2, rows).index_select(-1, cols)


def _reduce_last(planes: torch.Tensor) -> torch.Tensor:
    n = planes.shape[-1]
    m = (n + 1) // 2
    padded = planes.index_select(-1, _fold(torch.arange(-2, n + 2, device=planes.device), n))
    out = padded[..., 0:2 * m - 1:2] * _TAPS[0]
    for j, t in enumerate(_TAPS[1:], start=1):
        out = out + t * padded[..., j:j + 2 * m - 1:2]
    return out / 16.0


def reduce(planes: torch.Tensor) -> torch.Tensor:
    """One Gaussian pyramid level down: the 5-tap blur (reflect-101) at every second row and
    column only: cv2.pyrDown on the CPU (the same numbers, to rounding), shifted sums elsewhere."""
    if planes.device.type == "cpu" and not torch.jit.is_tracing() and min(planes.shape[-2:]) > 1:
        import cv2
        import numpy as np

        flat = planes.detach().reshape(-1, *planes.shape[-2:]).numpy()
        out = np.stack([cv2.pyrDown(p) for p in flat])
        return torch.from_numpy(out).reshape(*planes.shape[:-2], *out.shape[-2:])
    return _reduce_last(_reduce_last(planes).transpose(-1, -2)).transpose(-1, -2)


def _expand_axis(planes: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Axis `dim` (2 or 3 of an (N, C, H, W) tensor) up from m to n in (2m - 1, 2m) samples."""
    # Zeros between the samples, then the 5-tap kernel times 2 with reflect-101 borders at the
    # new size, as two phases: even outputs (x[i-1] + 6 x[i] + x[i+1]) / 8, odd (x[i] + x[i+1]) / 2.
    m = planes.shape[dim]
    ext = _fold(2 * torch.arange(-1, m + 1, device=planes.device), n) // 2
    x = planes.index_select(dim, ext)
    left, centre, right = x.narrow(dim, 0, m), x.narrow(dim, 1, m), x.narrow(dim, 2, m)
    even = (left + 6.0 * centre + right) / 8.0
    odd = (centre + right) / 2.0
    both = torch.stack((even, odd), dim=dim + 1)  # (..., m, 2, ...): the phases interleaved
    return both.flatten(dim, dim + 1).narrow(dim, 0, n)


def expand(planes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) one level up to `size` (H, W) (cv2.pyrUp's filter; its borders at odd
    sizes differ): zeros between the samples, blurred with 4x the kernel, per phase."""
    rows = _expand_axis(planes, size[1], 3)
    return _expand_axis(rows, size[0], 2)


def _box_mean(planes: torch.Tensor, window: int) -> torch.Tensor:
    """(N, C, H, W) -> mean over a window x window box, reflect-101 borders (cv2.blur on the CPU)."""
    if planes.device.type == "cpu" and not torch.jit.is_tracing():
        import cv2
        import numpy as np

        flat = planes.detach().reshape(-1, *planes.shape[-2:]).numpy()
        out = np.stack([cv2.blur(p, (window, window), borderType=cv2.BORDER_REFLECT_101) for p in flat])
        return torch.from_numpy(out).reshape(planes.shape)
    pad = window // 2
    return F.avg_pool2d(_pad(planes, pad), window, stride=1)


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """(K, 3, H, W) -> (K, 1, H, W), BT.601."""
    weights = torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(dim=1, keepdim=True)


def local_contrast(grey: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """(N, 1, H, W) luma -> its standard deviation in a window x window box."""
    mean = _box_mean(grey, window)
    square = _box_mean(grey * grey, window)
    return (square - mean * mean).clamp_min(0).sqrt()


def gaussian(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by a Gaussian of standard deviation `sigma` px, reflect-101 borders
    (semfuse_rt/gaussian_blur.py): OpenCV's form on the CPU, the torch form elsewhere."""
    if planes.device.type == "cpu" and not torch.jit.is_tracing():
        import numpy as np

        flat = planes.detach().reshape(-1, *planes.shape[-2:]).numpy()
        out = np.stack([opencv_blur(p, sigma, Border.REFLECT_101) for p in flat])
        return torch.from_numpy(out).reshape(planes.shape)
    return torch_blur(planes, torch.from_numpy(gaussian_taps(sigma)).to(planes), Border.REFLECT_101)


def pyramid_blend(pixels: torch.Tensor, weights: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """(K, C, H, W) pixels and (K, 1, H, W) weights summing to 1 -> (1, C, H, W) blend.

    Laplacian bands of each input times the Gaussian pyramid of its weight, summed over k,
    then collapsed. `levels`: bands (None: down to MIN_COARSE; at most down to 1 pixel)."""
    pairs = ((pixels[k:k + 1], weights[k:k + 1]) for k in range(len(pixels)))
    return pyramid_blends(pairs, pixels.shape[-2:], (levels,))[0]


def _depth(levels: int | None, h: int, w: int) -> int:
    return pyramid_levels(h, w) if levels is None else max(1, min(int(levels), pyramid_levels(h, w, 1)))


def pyramid_blends(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], size: Sequence[int],
                   levels: Sequence[int | None]) -> list[torch.Tensor]:
    """`pyramid_blend` at several depths, sharing the bands they have in common. `pairs`
    yields each input's (1, C, H, W) image and (1, 1, H, W) weight in turn, so that memory
    does not grow with the number of inputs."""
    h, w = size
    depths = [_depth(level, h, w) for level in levels]
    deepest = max(depths)
    bands: list[torch.Tensor] = []
    tops: dict[int, torch.Tensor] = {}  # blended Laplacian bands; the weighted Gaussian level ending each depth
    for image, weight in pairs:
        for level in range(deepest):
            if level + 1 in depths:
                top = weight * image
                tops[level] = top if level not in tops else tops[level] + top
            if level == deepest - 1:
                break
            smaller = reduce(image)
            band = weight * (image - expand(smaller, image.shape[-2:]))
            if len(bands) <= level:
                bands.append(band)
            else:
                bands[level] += band
            image, weight = smaller, reduce(weight)
    results = []
    for depth in depths:
        result = tops[depth - 1]
        for band in reversed(bands[:depth - 1]):
            result = band + expand(result, band.shape[-2:])
        results.append(result)
    return results


FULL_DEPTH = 1 << 20  # levels: as deep as the image allows


def _correlation(a: torch.Tensor, b: torch.Tensor, window: int, floor: float) -> torch.Tensor:
    """Local correlation of two (1, 1, H, W) maps in a window, clamped to [0, 1]."""
    mean_a, mean_b = _box_mean(a, window), _box_mean(b, window)
    var_a = (_box_mean(a * a, window) - mean_a * mean_a).clamp_min(0)
    var_b = (_box_mean(b * b, window) - mean_b * mean_b).clamp_min(0)
    cov = _box_mean(a * b, window) - mean_a * mean_b
    return (cov / ((var_a * var_b).sqrt() + floor)).clamp(0, 1)


def agreement_blend(pixels: torch.Tensor, *, hard_smooth: float = RULE.hard_smooth,
                    soft_power: float = RULE.soft_power, sharpen: float = RULE.sharpen,
                    soft_smooth: float = RULE.soft_smooth, tone_smooth: float = RULE.tone_smooth,
                    tone_spread: float = RULE.tone_spread, majority: int = RULE.majority,
                    gate_window: int = RULE.gate_window, gate_smooth: float = RULE.gate_smooth,
                    deep_smooth: float = RULE.deep_smooth, coarsest: float | None = None,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, 3, H, W) in 0..255 -> (1, 3, H, W): the rule in the module docstring, in `dtype`
    (default: the pixels' own). `coarsest`: one pyramid down to a band of at least that many
    pixels a side (the `whole` start) instead of the deep and local mix.

    Streamed over the inputs: one pass sums the lumas and their local means' moments; a
    second accumulates the agreement, the soft weights' normaliser and the hard mask (a
    running maximum and uint8 labels, ties to the lower k); a third verifies the mask by
    majority; a fourth forms each input's weight and adds its pyramid. Each input's contrast
    is recomputed rather than kept, so memory does not grow with K."""
    count = len(pixels)
    dtype = dtype or pixels.dtype

    def image(k: int) -> torch.Tensor:
        return pixels[k:k + 1].to(dtype)

    def grey(k: int) -> torch.Tensor:
        return luma(image(k) / 255.0)

    def contrast(k: int) -> torch.Tensor:
        return local_contrast(grey(k)) + EPS

    total = grey(0)
    tone_sum = gaussian(total, tone_smooth)
    tone_squares = tone_sum * tone_sum
    for k in range(1, count):
        luma_k = grey(k)
        tone = gaussian(luma_k, tone_smooth)
        total += luma_k
        tone_sum += tone
        tone_squares += tone * tone
    tone_mean = tone_sum / count
    spread = (tone_squares / count - tone_mean * tone_mean).clamp_min(0).sqrt()
    del tone_sum, tone_squares, tone_mean
    power = soft_power + sharpen * (1 - (spread / tone_spread).clamp(0, 1))
    del spread

    agreement = torch.zeros_like(total)
    soft_total = torch.zeros_like(total)
    best = torch.full_like(total, -math.inf)
    labels = torch.zeros(total.shape, dtype=torch.uint8, device=total.device)
    for k in range(count):
        luma_k = grey(k)
        agreement += _correlation(luma_k, (total - luma_k) / (count - 1), gate_window, CORRELATION_FLOOR)
        measure = local_contrast(luma_k) + EPS
        del luma_k
        soft_total += gaussian(measure ** power, soft_smooth)
        key = gaussian(measure, hard_smooth)
        labels[key > best] = k  # strictly larger: ties stay with the lower k
        torch.maximum(best, key, out=best)
    del total, best
    agreement /= count
    gate = gaussian(agreement, gate_smooth).clamp_(0, 1)
    share = gaussian(agreement, deep_smooth).clamp_(0, 1)
    del agreement
    if majority > 1:
        labels = _majority_labels(labels, count, majority, dtype)

    def weight(k: int) -> torch.Tensor:
        soft = gaussian(contrast(k) ** power, soft_smooth)
        soft = torch.where(soft_total > 0, soft / soft_total.clamp_min(SOFT_TOTAL_FLOOR), 1.0 / count)
        return gate * soft + (1 - gate) * (labels == k).to(dtype)

    pairs = ((image(k), weight(k)) for k in range(count))
    if coarsest is not None:
        depth = pyramid_levels(pixels.shape[-2], pixels.shape[-1], coarsest)
        return pyramid_blends(pairs, pixels.shape[-2:], (depth,))[0]
    deep, local = pyramid_blends(pairs, pixels.shape[-2:], (FULL_DEPTH, None))
    return share * deep + (1 - share) * local


def _majority_labels(labels: torch.Tensor, count: int, window: int, dtype: torch.dtype) -> torch.Tensor:
    """Each pixel's most frequent label in a window x window box (ties to the lower k): the
    consistency verification of choose-max rules, one label's votes at a time."""
    most = _box_mean((labels == 0).to(dtype), window)
    verified = torch.zeros_like(labels)
    for k in range(1, count):
        votes = _box_mean((labels == k).to(dtype), window)
        verified[votes > most] = k
        torch.maximum(most, votes, out=most)
    return verified
