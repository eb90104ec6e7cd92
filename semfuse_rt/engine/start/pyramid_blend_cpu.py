"""`agreement_blend` (engine/start/pyramid_blend.py, whose docstring states the rule) in numpy and
OpenCV, float32, importing no torch: the CPU's `pyramid-blend` and `whole-pyramid-blend`
starts (engine/start/initialisation.py's `cpu_image`) and a torch-free fuse's. Its constants are
engine/start/blend_rule.py's, its pyramids' depths engine/start/pyramid_depth.py's.

The same maps as the torch function, to float32 rounding (tests/test_pyramid_blend_cpu.py
holds it to the float64 torch result), by cheaper routes where an identity allows:

- the tones' spread from blurs of the lumas' differences to the first input's luma (the
  standard deviation over k does not change when every k loses the same map, and the blur
  is linear): one blur fewer, and no float32 cancellation of sums of squares;
- for two inputs one correlation, which is symmetric in them;
- the sharpest input by blur_3(C_k - C_0) against 0 for the first: the same choice, one blur
  fewer, ties still to the lower k;
- the soft weights' normaliser is one blur of the summed C_k^p; the first input's blurred
  C_0^p is kept from that pass and the last input's is the normaliser less the others', so
  two inputs' contrasts are computed once each (memory stays independent of K);
- the contrast's moments in float64 (see `_contrast_rows`), so it is closer to the float64
  rule than the torch float32 start is;
- C^p as exp(p log C) by OpenCV's SIMD functions (a sixth of np.power's time);
- the majority's votes as integer box sums of uint8 masks: the same comparisons;
- cv2.pyrDown is the module's `reduce` exactly; cv2.pyrUp is its `expand` except the last
  row or column of an odd size, which is recomputed by the module's border rule;
- the deep and local pyramids share their finer bands, so the start is the local collapse
  plus s times the expanded difference of the two at the local pyramid's coarsest level.

Large planes are worked on in row strips on a pool of one thread per core (OpenCV and numpy
release the GIL): the Gaussian blurs one strip per core, the per-pixel measures and each
pyramid level in strips of about CACHE_ROWS rows, whose temporaries stay in the cache. Each
strip reads a margin of real rows around its own, so the result is the whole plane's, bit
for bit (tests/test_pyramid_blend_cpu.py). Torch is not involved, so its one-thread pinning
(engine/limits/torch_threads.py) and these threads never run at once.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import cv2
import numpy as np

from semfuse_rt.engine.start.blend_rule import (CONTRAST_WINDOW, CORRELATION_FLOOR, EPS, LUMA, RULE, SOFT_TOTAL_FLOOR,
                                          AgreementRule)
from semfuse_rt.engine.limits.workers import cores
from semfuse_rt.engine.start.pyramid_depth import pyramid_levels
from semfuse_rt.gaussian_blur import Border, opencv_blur

BORDER = cv2.BORDER_REFLECT_101  # as everywhere in the rule
PARALLEL_PIXELS = 1 << 18  # smaller planes filter on one thread: a hand-off costs more than it saves
CACHE_ROWS = 128  # rows of a strip whose float64 temporaries should stay in the cache



@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(cores(), "semfuse-blend")


def _by_rows(filter_: Callable[..., Sequence[np.ndarray]], planes: Sequence[np.ndarray], halo: int,
             rows: int | None = None) -> list[np.ndarray]:
    """filter_(*planes), a list of maps of the planes' (H, W), for a filter that reads at most
    `halo` rows either side, in row strips on the cores: one strip per core, or strips of about
    `rows` rows (so that the filter's temporaries stay in the cache). Each strip is filtered
    with its halo of real rows, so only the image's own borders are reflected, as in one call.
    The filter must not itself hand work to the strips' pool."""
    height = planes[0].shape[0]
    workers = cores()
    strips = max(workers, -(-height // rows) if rows else 1)
    if workers == 1 and strips == 1 or planes[0].size < PARALLEL_PIXELS or height < 4 * halo * strips:
        return list(filter_(*planes))
    bounds = [height * i // strips for i in range(strips + 1)]
    outputs: list[np.ndarray] = []
    allocating = threading.Lock()

    def strip(i: int) -> None:
        top, bottom = bounds[i], bounds[i + 1]
        low, high = max(0, top - halo), min(height, bottom + halo)
        results = filter_(*(plane[low:high] for plane in planes))
        with allocating:
            if not outputs:
                outputs.extend(np.empty((height, *result.shape[1:]), result.dtype) for result in results)
        for output, result in zip(outputs, results):
            output[top:bottom] = result[top - low:bottom - low]

    for done in [_pool().submit(strip, i) for i in range(strips)]:
        done.result()
    return outputs


def _box(plane: np.ndarray, window: int) -> np.ndarray:
    return cv2.blur(plane, (window, window), borderType=BORDER)


def gaussian(plane: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) blurred by the Gaussian of standard deviation `sigma` (semfuse_rt/gaussian_blur.py's
    OpenCV form), reflect-101 borders: the torch function's blur on the CPU."""
    return _by_rows(lambda rows: [opencv_blur(rows, sigma, Border.REFLECT_101)], [plane], int(4 * sigma) + 2)[0]


def _fold(index: np.ndarray, length: int) -> np.ndarray:
    """Reflect-101 of indices, as often as needed (engine/start/pyramid_blend.py's `_fold`)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.remainder(index, period)
    return np.where(index < length, index, period - index)


def _reduce_last(planes: np.ndarray) -> np.ndarray:
    n = planes.shape[-1]
    m = (n + 1) // 2
    padded = planes[..., _fold(np.arange(-2, n + 2), n)]
    taps = (1.0, 4.0, 6.0, 4.0, 1.0)
    out = padded[..., 0:2 * m - 1:2] * np.float32(taps[0])
    for j, tap in enumerate(taps[1:], start=1):
        out += np.float32(tap) * padded[..., j:j + 2 * m - 1:2]
    return out / np.float32(16)


def reduce(plane: np.ndarray) -> np.ndarray:
    """(H, W) one Gaussian pyramid level down to ((H + 1) // 2, (W + 1) // 2): cv2.pyrDown,
    which is the module's `reduce`; its shifted sums where a side is 1, which pyrDown does not
    take."""
    if min(plane.shape) > 1:
        return cv2.pyrDown(plane)
    return np.ascontiguousarray(_reduce_last(_reduce_last(plane).T).T)


def _expand_last(planes: np.ndarray, n: int) -> np.ndarray:
    """The last axis up from m to n in (2m - 1, 2m) samples (engine/start/pyramid_blend.py's
    `_expand_axis`): even outputs (x[i-1] + 6 x[i] + x[i+1]) / 8, odd (x[i] + x[i+1]) / 2."""
    m = planes.shape[-1]
    x = planes[..., _fold(2 * np.arange(-1, m + 1), n) // 2]
    left, centre, right = x[..., 0:m], x[..., 1:m + 1], x[..., 2:m + 2]
    both = np.stack(((left + np.float32(6) * centre + right) / np.float32(8), (centre + right) / np.float32(2)),
                    axis=-1)
    return both.reshape(*planes.shape[:-1], 2 * m)[..., :n]


def _odd_border(last: np.ndarray, before: np.ndarray) -> np.ndarray:
    """The border rule's last sample of an odd size: its right neighbour reflects to the one
    before it, (2 x[m-2] + 6 x[m-1]) / 8."""
    return (np.float32(2) * before + np.float32(6) * last) / np.float32(8)


def expand(plane: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(h, w) one level up to `size` (H, W) in (2h - 1 or 2h, 2w - 1 or 2w): the module's
    `expand`. cv2.pyrUp computes it but for the last row or column of an odd size (it reflects
    about the edge of the even size); those are recomputed."""
    height, width = size
    h, w = plane.shape
    if min(h, w) < 2:
        return np.ascontiguousarray(_expand_last(_expand_last(plane, width).T, height).T)
    out: np.ndarray = cv2.pyrUp(plane, dstsize=(width, height))
    if width % 2:
        out[:, -1] = _expand_last(_odd_border(plane[:, -1], plane[:, -2]), height)
    if height % 2:
        out[-1, :] = _expand_last(_odd_border(plane[-1], plane[-2]), width)
    return out


def _luma_rows(*channels: np.ndarray) -> list[np.ndarray]:
    out = np.multiply(channels[0], np.float32(LUMA[0] / 255.0))
    for channel, weight in zip(channels[1:], LUMA[1:]):
        cv2.scaleAdd(channel, weight / 255.0, out, dst=out)
    return [out]


def _luma(image: np.ndarray) -> np.ndarray:
    """(3, H, W) 0..255 -> (H, W) BT.601 luma in 0..1."""
    return _by_rows(_luma_rows, list(image), 0, rows=CACHE_ROWS)[0]


def _power_rows(shifted_sum: np.ndarray, shifted_squares: np.ndarray | None, *, count: int,
                rule: AgreementRule) -> list[np.ndarray]:
    """The soft weights' power from the sums over k of the blurred tones less the first input's
    (of their squares: None for two inputs, where it is the one tone's square)."""
    mean = shifted_sum * np.float32(1 / count)
    spread = shifted_sum * shifted_sum if shifted_squares is None else shifted_squares.copy()
    spread *= np.float32(1 / count)
    spread -= np.multiply(mean, mean, out=mean)
    np.maximum(spread, 0, out=spread)
    np.sqrt(spread, out=spread)
    spread *= np.float32(1 / rule.tone_spread)
    np.clip(spread, 0, 1, out=spread)
    spread *= np.float32(-rule.sharpen)
    spread += np.float32(rule.soft_power + rule.sharpen)
    return [spread]


def _contrast_rows(grey: np.ndarray, window: int) -> np.ndarray:
    # The moments in float64: in float32 E[l^2] - E[l]^2 loses about 1e-8 of variance, which
    # is a contrast of 1e-4 where an input is nearly flat, enough to flip the sharpest-input
    # choice of three inputs against the float64 rule (measured: 2.5 grey levels on a
    # multifocus triple).
    size = (window, window)
    square: np.ndarray = cv2.sqrBoxFilter(grey, cv2.CV_64F, size, borderType=BORDER)
    mean: np.ndarray = cv2.boxFilter(grey, cv2.CV_64F, size, borderType=BORDER)
    square -= np.multiply(mean, mean, out=mean)
    np.maximum(square, 0, out=square)
    contrast = square.astype(np.float32)
    return np.sqrt(contrast, out=contrast)


def local_contrast(grey: np.ndarray, window: int = CONTRAST_WINDOW) -> np.ndarray:
    """(H, W) luma -> its standard deviation in a window x window box."""
    return _by_rows(lambda rows: [_contrast_rows(rows, window)], [grey], window // 2 + 1, rows=CACHE_ROWS)[0]


def _correlation(a: np.ndarray, b: np.ndarray, window: int, floor: float) -> np.ndarray:
    """Local correlation of two (H, W) maps in a window, clamped to [0, 1] (on one thread)."""
    mean_a, mean_b = _box(a, window), _box(b, window)
    cov = _box(a * b, window)
    cov -= mean_a * mean_b
    var_a = _box(a * a, window)
    var_a -= np.multiply(mean_a, mean_a, out=mean_a)
    var_b = _box(b * b, window)
    var_b -= np.multiply(mean_b, mean_b, out=mean_b)
    del mean_a, mean_b
    np.maximum(var_a, 0, out=var_a)
    np.maximum(var_b, 0, out=var_b)
    var_a *= var_b
    del var_b
    np.sqrt(var_a, out=var_a)
    var_a += np.float32(floor)
    cov /= var_a
    return np.clip(cov, 0, 1, out=cov)


def _power(measure: np.ndarray, power: np.ndarray) -> np.ndarray:
    """measure ** power for positive measures, as exp(power log measure)."""
    out: np.ndarray = cv2.log(measure)
    out *= power
    return cv2.exp(out, dst=out)


def _majority_labels(labels: np.ndarray, count: int, window: int) -> np.ndarray:
    """Each pixel's most frequent label in a window x window box, ties to the lower k: the
    votes are counted exactly, as uint16 box sums."""
    depth = cv2.CV_16U if window * window <= np.iinfo(np.uint16).max else cv2.CV_32S

    def votes(k: int) -> np.ndarray:
        return cv2.boxFilter((labels == k).view(np.uint8), depth, (window, window), normalize=False,
                             borderType=BORDER)

    most = votes(0)
    verified = np.zeros_like(labels)
    for k in range(1, count):
        votes_k = votes(k)
        verified[votes_k > most] = k
        np.maximum(most, votes_k, out=most)
    return verified


def _depth(coarsest: float, height: int, width: int) -> int:
    """Bands of the pyramid down to a band of at least `coarsest` a side (at most down to 1)."""
    return max(1, min(pyramid_levels(height, width, coarsest), pyramid_levels(height, width, 1)))


PYRAMID_MARGIN = 8  # fine rows around a strip: a reduce and an expand read 2 and 1 rows beyond


def _in_strips(work: Callable[[int, int], None], height: int, width: int) -> None:
    """work(top, bottom) over row strips of a pyramid level, each starting at an even row (the
    levels' 2:1 grid), on the cores; strips of about CACHE_ROWS rows, so that each strip's
    temporaries stay in the cache."""
    strips = max(1, min(-(-height // CACHE_ROWS), height // (4 * PYRAMID_MARGIN)))
    if height * width < PARALLEL_PIXELS or strips == 1:
        work(0, height)
        return
    bounds = [2 * (height * i // (2 * strips)) for i in range(strips)] + [height]
    for done in [_pool().submit(work, top, bottom) for top, bottom in zip(bounds, bounds[1:])]:
        done.result()


def _rows_around(top: int, bottom: int, height: int) -> tuple[int, int]:
    return max(0, top - PYRAMID_MARGIN), min(height, bottom + PYRAMID_MARGIN)


def _add_level(image: np.ndarray, weight: np.ndarray, smaller: np.ndarray, band: np.ndarray, first: bool
               ) -> np.ndarray:
    """One input's level: smaller = reduce(image) per channel, band (first: =, else +=)
    weight (image - expand(smaller)); returns reduce(weight). In row strips, each reducing and
    expanding its rows with a margin of real rows and keeping its own: the whole level's numbers."""
    height, width = image.shape[-2:]
    smaller_weight = np.empty(smaller.shape[-2:], np.float32)

    def strip(top: int, bottom: int) -> None:
        low, high = _rows_around(top, bottom, height)
        kept = slice((top - low) // 2, (top - low) // 2 + (bottom + 1) // 2 - top // 2)
        rows = slice(top // 2, (bottom + 1) // 2)
        for channel, reduced, blended in zip(image, smaller, band):
            part = reduce(channel[low:high])
            reduced[rows] = part[kept]
            difference = expand(part, (high - low, width))[top - low:bottom - low]
            np.subtract(channel[top:bottom], difference, out=difference)
            difference *= weight[top:bottom]
            if first:
                blended[top:bottom] = difference
            else:
                blended[top:bottom] += difference
        smaller_weight[rows] = reduce(weight[low:high])[kept]

    _in_strips(strip, height, width)
    return smaller_weight


def _expand_rows(coarse: np.ndarray, size: Sequence[int], combine: Callable[[slice, int, np.ndarray], None]) -> None:
    """expand(coarse[c], size) for each channel, handed over in row strips as
    combine(rows, channel, expanded rows): each strip expands its coarse rows with a margin of
    real rows, which gives the whole level's numbers."""
    height, width = size
    coarse_height = coarse.shape[-2]

    def strip(top: int, bottom: int) -> None:
        low, high = _rows_around(top, bottom, height)
        low_coarse, high_coarse = low // 2, (high + 1) // 2
        fine = height - 2 * low_coarse if high_coarse == coarse_height else 2 * (high_coarse - low_coarse)
        rows = slice(top, bottom)
        for c, plane in enumerate(coarse):
            expanded = expand(plane[low_coarse:high_coarse], (fine, width))
            combine(rows, c, expanded[top - 2 * low_coarse:bottom - 2 * low_coarse])

    _in_strips(strip, height, width)


def laplacian_sums(pairs: Iterable[tuple[np.ndarray, np.ndarray]], depths: Sequence[int]
                   ) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """The blended Laplacian bands (3, h, w), finest first, of pyramids of the given depths
    (bands), and the weighted Gaussian level ending each depth (by its index): each input's
    bands times the Gaussian pyramid of its weight, summed over the inputs. `pairs` yields
    each input's (3, H, W) image and (H, W) weight in turn, so that memory does not grow with
    the number of inputs; the deeper pyramids share the shallower ones' bands."""
    deepest = max(depths)
    bands: list[np.ndarray] = []
    tops: dict[int, np.ndarray] = {}
    smaller_levels: list[np.ndarray] = []  # each level's reduced image, reused by every input
    for image, weight in pairs:
        for level in range(deepest):
            if level + 1 in depths:
                if level in tops:
                    tops[level] += image * weight
                else:
                    tops[level] = image * weight
            if level == deepest - 1:
                break
            height, width = image.shape[-2:]
            if len(smaller_levels) <= level:
                smaller_levels.append(np.empty((len(image), (height + 1) // 2, (width + 1) // 2), np.float32))
            first = len(bands) <= level
            if first:
                bands.append(np.empty(image.shape, np.float32))
            weight = _add_level(image, weight, smaller_levels[level], bands[level], first)
            image = smaller_levels[level]
    return bands, tops


def collapse(bands: Sequence[np.ndarray], top: np.ndarray, add_bands: bool = True) -> np.ndarray:
    """`top` expanded up through each band's size, finest last, adding each band on the way
    (or not: the expansion alone). Writes into the bands when it adds them."""
    result = top
    for band in reversed(bands):
        into = band if add_bands else np.empty_like(band)

        def combine(rows: slice, channel: int, expanded: np.ndarray, into: np.ndarray = into) -> None:
            if add_bands:
                into[channel, rows] += expanded
            else:
                into[channel, rows] = expanded
        _expand_rows(result, band.shape[-2:], combine)
        result = into
    return result


def _tone_power(pixels: np.ndarray, rule: AgreementRule
                ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray | None]:
    """The soft weights' power p from the spread of the inputs' blurred tones, the first and the
    last input's lumas (kept for the next pass) and, for more than two inputs, the lumas' sum."""
    count = len(pixels)
    first = last = _luma(pixels[0])
    total = first.copy() if count > 2 else None
    shifted_sum: np.ndarray | None = None
    shifted_squares: np.ndarray | None = None
    for k in range(1, count):
        last = _luma(pixels[k])
        if total is not None:
            total += last
        tone = gaussian(np.subtract(last, first), rule.tone_smooth)
        if shifted_sum is None:
            shifted_sum = tone
        else:
            if shifted_squares is None:
                shifted_squares = shifted_sum * shifted_sum
            shifted_sum += tone
            shifted_squares += np.multiply(tone, tone, out=tone)
    assert shifted_sum is not None
    planes = [shifted_sum] + ([shifted_squares] if shifted_squares is not None else [])

    def power(*strips: np.ndarray) -> list[np.ndarray]:
        return _power_rows(strips[0], strips[1] if len(strips) > 1 else None, count=count, rule=rule)
    return _by_rows(power, planes, 0, rows=CACHE_ROWS)[0], (first, last), total


def _local_measures(grey: np.ndarray, power: np.ndarray, first_contrast: np.ndarray | None = None,
                    partner: np.ndarray | None = None, *, gate_window: int) -> list[np.ndarray]:
    """One input's maps that read a few pixels around each (on one thread, for a row strip):
    C^p; C (the first input) or C - C_0; and with a partner, the correlation with it."""
    measure = _contrast_rows(grey, CONTRAST_WINDOW)
    measure += np.float32(EPS)
    maps = [_power(measure, power)]
    if first_contrast is not None:
        measure -= first_contrast
    maps.append(measure)
    if partner is not None:
        maps.append(_correlation(grey, partner, gate_window, CORRELATION_FLOOR))
    return maps


class _Measures:
    """The maps the weights are built from: the agreement A, the soft weights' power, their
    normaliser and the first input's blurred C_0^p, the hard labels."""
    power: np.ndarray | None
    agreement: np.ndarray | None
    soft_total: np.ndarray | None
    first_soft: np.ndarray | None

    def __init__(self, pixels: np.ndarray, rule: AgreementRule):
        self.count = count = len(pixels)
        power, (first, last), total = _tone_power(pixels, rule)
        agreement: np.ndarray | None = None
        soft_sum: np.ndarray | None = None
        first_soft = first_contrast = None
        best = np.zeros(pixels.shape[-2:], np.float32)  # blur_3(C_k - C_0) so far; the first input's is 0
        labels = np.zeros(best.shape, np.uint8)
        halo = max(CONTRAST_WINDOW, rule.gate_window) // 2 + 1
        for k in range(count):
            grey = first if k == 0 else last if k == count - 1 else _luma(pixels[k])
            planes = [grey, power] + ([first_contrast] if first_contrast is not None else [])
            if count == 2 and k == 0:
                planes.append(last)  # the correlation is symmetric: once for both
            elif count > 2:
                assert total is not None
                others = total - grey
                others *= np.float32(1 / (count - 1))
                planes.append(others)
            with_partner = len(planes) == (3 if k == 0 else 4)

            def measures(*strips: np.ndarray, with_partner: bool = with_partner, k: int = k) -> list[np.ndarray]:
                return _local_measures(strips[0], strips[1], strips[2] if k else None,
                                       strips[-1] if with_partner else None, gate_window=rule.gate_window)
            maps = _by_rows(measures, planes, halo, rows=CACHE_ROWS)
            del grey, planes
            if with_partner:
                correlation = maps.pop()
                agreement = correlation if agreement is None else np.add(agreement, correlation, out=agreement)
            soft, measure = maps
            soft_sum = soft if soft_sum is None else np.add(soft_sum, soft, out=soft_sum)
            if k == 0:
                first_soft = gaussian(soft, rule.soft_smooth)
                first_contrast = measure
                continue
            del soft
            key = gaussian(measure, rule.hard_smooth)
            labels[key > best] = k  # strictly larger: ties stay with the lower k
            np.maximum(best, key, out=best)
        del first, last, total, best, first_contrast
        assert agreement is not None and soft_sum is not None
        if count > 2:
            agreement /= count
        self.power, self.agreement, self.labels, self.first_soft = power, agreement, labels, first_soft
        self.soft_total = gaussian(soft_sum, rule.soft_smooth)


def _weights(pixels: np.ndarray, measures: _Measures, gate: np.ndarray, rule: AgreementRule) -> Iterator[np.ndarray]:
    """Each input's weight W_k = g soft_k + (1 - g) hard_k in turn. Takes the measures' maps
    and the gate, and lets each go as soon as no weight needs it."""
    count, labels, total, power = measures.count, measures.labels, measures.soft_total, measures.power
    first_soft: np.ndarray | None = measures.first_soft
    measures.soft_total = measures.first_soft = measures.power = None
    assert total is not None
    flat = np.nonzero(total <= 0)  # there soft_k = 1 / K
    flat_gate = gate[flat] / np.float32(count)
    scale = np.maximum(total, np.float32(SOFT_TOTAL_FLOOR))
    np.divide(gate, scale, out=scale)  # g / sum_j blur(C_j^p)
    rest = np.subtract(1, gate, out=gate)  # 1 - g
    del gate
    others = None  # the blurred C_j^p of the inputs before the last, summed
    for k in range(count):
        if k == 0:
            assert first_soft is not None
            soft = first_soft
        elif k == count - 1:
            earlier = others if others is not None else first_soft
            assert earlier is not None
            soft = np.subtract(total, earlier, out=total)
            del total, others, first_soft, earlier
        else:
            assert power is not None
            soft = gaussian(_power(local_contrast(_luma(pixels[k])) + np.float32(EPS), power), rule.soft_smooth)
        if k < count - 1 and count > 2:
            others = soft.copy() if others is None else np.add(others, soft, out=others)
        weight = soft * scale
        del soft
        weight[flat] = flat_gate
        np.add(weight, rest, out=weight, where=labels == k)
        yield weight
        del weight


def agreement_blend_cpu(pixels: np.ndarray, *, coarsest: float | None = None,
                        rule: AgreementRule = RULE) -> np.ndarray:
    """(K, 3, H, W) float32 in 0..255 -> (1, 3, H, W) float32: engine/start/pyramid_blend.py's
    `agreement_blend` (the deep and local mix, or with `coarsest` one pyramid down to a band
    of at least that many pixels a side). One input is its own blend."""
    pixels = np.asarray(pixels, dtype=np.float32)
    count, _, height, width = pixels.shape
    if count == 1:
        return pixels[:1].copy()
    measures = _Measures(pixels, rule)
    if count == 2:
        measures.power = None  # only inputs between the first and the last recompute their soft weight
    agreement, measures.agreement = measures.agreement, None
    assert agreement is not None
    gate = np.clip(gaussian(agreement, rule.gate_smooth), 0, 1)
    share = None if coarsest is not None else np.clip(gaussian(agreement, rule.deep_smooth), 0, 1)
    del agreement
    if rule.majority > 1:
        measures.labels = _majority_labels(measures.labels, count, rule.majority)
    pairs = zip(pixels, _weights(pixels, measures, gate, rule))
    del gate
    if share is None:
        assert coarsest is not None
        depth = _depth(coarsest, height, width)
        bands, tops = laplacian_sums(pairs, (depth,))
        return collapse(bands, tops[depth - 1])[None]
    deep, local = _depth(1, height, width), pyramid_levels(height, width)
    bands, tops = laplacian_sums(pairs, (deep, local))
    # The two pyramids share their finer bands, and collapsing is linear: deep - local is the
    # difference of their levels at the local pyramid's coarsest, expanded to full size, and
    # the start is local + s (deep - local). The last expansion goes a channel at a time.
    difference = collapse(bands[local - 1:deep - 1], tops[deep - 1])
    difference -= tops[local - 1]
    start = collapse(bands[:local - 1], tops[local - 1])
    del tops
    if local == 1:
        difference *= share
        start += difference
        return start[None]
    difference = collapse(bands[1:local - 1], difference, add_bands=False)

    def mix(rows: slice, channel: int, expanded: np.ndarray) -> None:
        expanded *= share[rows]
        start[channel, rows] += expanded
    _expand_rows(difference, start.shape[-2:], mix)
    return start[None]
