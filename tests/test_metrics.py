"""The fusion metrics on inputs whose values can be worked out by hand, and their symmetries."""
import itertools
import math

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.metrics import metrics
from semfuse_rt.engine.metrics.metrics import (
    average_gradient, entropy, fusion_metrics, mean_ssim, mutual_information, qabf, qmi, qy,
    spatial_frequency, ssim_map, standard_deviation, to_luma_255,
)


def q_g(relative_strength):
    return 0.9994 / (1 + math.exp(-15 * (relative_strength - 0.5)))


def q_alpha(relative_orientation):
    return 0.9879 / (1 + math.exp(-22 * (relative_orientation - 0.8)))


def vertical_edge(column=16, size=32, low=40.0, high=200.0):
    image = np.full((size, size), low)
    image[:, column:] = high
    return image


def halves(size=32):
    """Left half 0, right half 255: two equally likely grey levels (1 bit)."""
    return vertical_edge(size // 2, size, 0.0, 255.0)


def constant(value=100.0, size=32):
    return np.full((size, size), value)


@pytest.fixture
def noise(rng):
    return [rng.uniform(0, 255, (40, 40)) for _ in range(3)]


# ----------------------------------------------------------------------------- luma

def test_luma_uses_bt601_weights_and_scales_16_bit():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_luma_255(rgb) == pytest.approx(np.full((2, 2), 0.299 * 255))
    grey16 = np.full((2, 2), 257 * 10, np.uint16)
    assert to_luma_255(grey16) == pytest.approx(np.full((2, 2), 10.0))
    assert to_luma_255(np.full((2, 2), 7, np.uint8)).dtype == np.float64


# ----------------------------------------------------------------------------- Q^AB/F

def test_qabf_fused_equal_to_the_only_source_with_edges():
    # B is flat, so only A's edges count; F reproduces them exactly: G = 1, A = 1 everywhere.
    edge = vertical_edge()
    assert qabf([edge, constant()], edge) == pytest.approx(q_g(1.0) * q_alpha(1.0), rel=1e-12)


def test_qabf_half_contrast_edge():
    # Same orientation, half the gradient magnitude: G = 0.5 at every edge pixel.
    edge = vertical_edge(low=0.0, high=200.0)
    assert qabf([edge, constant()], edge * 0.5) == pytest.approx(q_g(0.5) * q_alpha(1.0), rel=1e-12)


def test_qabf_shifted_edge_is_not_preserved():
    # Moved by 4 columns the Sobel supports do not overlap: at A's edge F has g = 0 (G = 0)
    # and orientation pi/2 (s_x = 0) against A's 0 (A = 0).
    assert qabf([vertical_edge(16), constant()], vertical_edge(20)) == pytest.approx(
        q_g(0.0) * q_alpha(0.0), rel=1e-9)


def test_qabf_orientation_difference_is_not_wrapped():
    # Mirrored ramps x + 2y and -x + 2y: equal strengths everywhere (G = 1), orientations
    # +-atan(2) or steeper, so |alpha_A - alpha_F| > pi/2 and, as published,
    # A = 1 - |alpha_A - alpha_F| / (pi/2) < 0: nothing preserved. (A variant that wraps
    # orientations modulo pi would give A ~ 0.4 and Q ~ 2e-4.)
    y, x = np.mgrid[0:32, 0:32].astype(float)
    assert qabf([x + 2 * y, constant()], -x + 2 * y + 64) < q_g(1.0) * q_alpha(0.0)


def test_qabf_flat_fused_image_and_flat_sources():
    edge = vertical_edge()
    # A constant F has orientation pi/2 and no strength; A's edge has orientation 0.
    assert qabf([edge, edge], constant()) == pytest.approx(q_g(0.0) * q_alpha(0.0), rel=1e-9)
    assert math.isnan(qabf([constant(), constant(7)], edge))


# ----------------------------------------------------------------------------- information metrics

def test_entropy_standard_deviation_by_hand():
    assert entropy(halves()) == pytest.approx(1.0)
    assert entropy(constant()) == 0.0
    four_levels = np.repeat(np.array([0.0, 60.0, 120.0, 180.0]), 64).reshape(16, 16)
    assert entropy(four_levels) == pytest.approx(2.0)
    assert standard_deviation(halves()) == pytest.approx(127.5)
    assert standard_deviation(constant()) == 0.0


def test_mutual_information_and_qmi_when_fused_equals_one_source():
    # F = A (1 bit), B constant: MI(A;F) = H(A) = 1, MI(B;F) = 0, H(B) = 0.
    a, b = halves(), constant()
    assert mutual_information([a, b], a) == pytest.approx(1.0)
    # Hossny: 2 [1 / (1 + 1) + 0 / (0 + 1)] = 1.
    assert qmi([a, b], a) == pytest.approx(1.0)
    # Identical informative images are the maximum, 2.
    assert qmi([a, a], a) == pytest.approx(2.0)


def test_qmi_undefined_when_source_and_fused_are_constant():
    assert math.isnan(qmi([constant(), halves()], constant()))
    assert mutual_information([constant(), halves()], constant()) == 0.0


def test_mutual_information_of_k_sources_keeps_the_two_source_scale(noise):
    a, b, c = noise
    fused = (a + b + c) / 3
    per_source = [mutual_information([x, x], fused) / 2 for x in (a, b, c)]  # MI(x; F)
    assert mutual_information([a, b], fused) == pytest.approx(per_source[0] + per_source[1])
    assert mutual_information([a, b, c], fused) == pytest.approx(2 / 3 * sum(per_source))


# ----------------------------------------------------------------------------- gradients

def test_spatial_frequency_of_one_vertical_step():
    # One column transition of 255 in every row: RF^2 = M * 255^2 / (M N), CF = 0.
    rows, columns = 24, 32
    image = np.zeros((rows, columns))
    image[:, 10:] = 255.0
    assert spatial_frequency(image) == pytest.approx(255.0 / math.sqrt(columns))
    assert spatial_frequency(image.T) == pytest.approx(255.0 / math.sqrt(columns))
    # Integer images must not wrap around in the differences (uint8: 0 - 255 = 1).
    assert spatial_frequency(image[:, ::-1].astype(np.uint8)) == pytest.approx(255.0 / math.sqrt(columns))


def test_average_gradient_of_a_ramp_and_a_constant():
    ramp = np.tile(np.arange(20, dtype=float), (10, 1))  # dF/dx = 1, dF/dy = 0
    assert average_gradient(ramp) == pytest.approx(math.sqrt(0.5))
    assert average_gradient(3 * ramp.T) == pytest.approx(3 * math.sqrt(0.5))
    assert average_gradient(constant()) == 0.0


# ----------------------------------------------------------------------------- SSIM and Q_Y

def test_mean_ssim_is_the_mean_over_sources(noise):
    a, b, _ = noise
    assert mean_ssim([a, a], a) == pytest.approx(1.0)
    assert mean_ssim([a, b], a) == pytest.approx((1.0 + ssim_map(b, a).mean()) / 2)
    assert mean_ssim([a, b], constant(128.0, 40)) < 0.05


def test_qy_fused_equal_to_one_of_two_dissimilar_sources(noise):
    # Independent noise: SSIM(A, B | w) < 0.75 everywhere, so Q(w) = max(SSIM(A,F), SSIM(B,F)) = 1.
    a, b, _ = noise
    assert qy([a, b], a) == pytest.approx(1.0)
    assert qy([a, a], a) == pytest.approx(1.0)


def test_qy_similar_sources_use_variance_weights(noise):
    # B = A + 2: similar in every window, equal variances, so lambda = 1/2 and
    # Q(w) = (SSIM(A, A) + SSIM(B, A)) / 2.
    a = noise[0]
    b = a + 2.0
    window = metrics._gaussian_window(metrics.QY_WINDOW, metrics.QY_WINDOW_SIGMA)
    assert (ssim_map(a, b, window=window) >= 0.75).all()
    expected = (0.5 + 0.5 * ssim_map(b, a, window=window)).mean()
    assert qy([a, b], a) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- symmetries

@pytest.mark.parametrize("metric", [qabf, qmi, qy, mean_ssim, mutual_information])
def test_fusion_metrics_do_not_depend_on_source_order(metric, noise):
    a, b, c = noise
    fused = np.maximum(a, b) * 0.7 + c * 0.3
    assert metric([a, b], fused) == pytest.approx(metric([b, a], fused), rel=1e-12)
    values = [metric(list(order), fused) for order in itertools.permutations([a, b, c])]
    assert values == pytest.approx([values[0]] * len(values), rel=1e-12)


def test_fusion_metrics_on_any_mode_are_computed_on_luma(rng):
    rgb = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2)]
    grey = [np.rint(to_luma_255(image)).astype(np.uint8) for image in rgb]
    fused = ((grey[0].astype(np.uint16) + grey[1]) // 2).astype(np.uint8)
    as_16_bit = fusion_metrics([g.astype(np.uint16) * 257 for g in grey], fused.astype(np.uint16) * 257)
    as_8_bit = fusion_metrics(grey, fused)
    assert list(as_8_bit) == list(metrics.METRIC_NAMES)
    assert as_16_bit == pytest.approx(as_8_bit, rel=1e-9)
    # An RGB image whose channels are equal scores as its grey version.
    assert fusion_metrics([np.dstack([g] * 3) for g in grey], fused) == pytest.approx(as_8_bit, rel=1e-9)


def test_window_metrics_are_undefined_on_images_smaller_than_the_window(rng):
    small = [rng.uniform(0, 255, (10, 40)) for _ in range(2)]
    assert math.isnan(mean_ssim(small, small[0]))  # 11 x 11 window
    assert not math.isnan(qy(small, small[0]))  # 7 x 7 window fits
    assert math.isnan(qy([s[:6] for s in small], small[0][:6]))


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="at least 2 sources"):
        qabf([constant()], constant())
    with pytest.raises(ValueError, match="one shape"):
        qmi([constant(size=8), constant(size=9)], constant(size=8))


def _vifb_qabf(a, b, f):
    """The VIFB / CDDFuse code, line for line: conv2 'same' (zero padding), G = g_F where equal."""
    from scipy.signal import convolve2d

    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def strength_orientation(img):
        sx, sy = convolve2d(img, h3, mode="same"), convolve2d(img, h1, mode="same")
        orientation = np.full_like(img, math.pi / 2)
        orientation[sx != 0] = np.arctan(sy[sx != 0] / sx[sx != 0])
        return np.sqrt(sx * sx + sy * sy), orientation

    def preservation(a_s, g_s, a_f, g_f):
        g = np.zeros_like(g_s)
        g[g_s > g_f] = g_f[g_s > g_f] / g_s[g_s > g_f]
        g[g_s == g_f] = g_f[g_s == g_f]
        g[g_s < g_f] = g_s[g_s < g_f] / g_f[g_s < g_f]
        angle = 1 - np.abs(a_s - a_f) / (math.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * (angle - 0.8)))

    (ga, aa), (gb, ab), (gf, af) = (strength_orientation(x) for x in (a, b, f))
    return float((preservation(aa, ga, af, gf) * ga + preservation(ab, gb, af, gf) * gb).sum() / (ga + gb).sum())


def test_qabf_vifb_is_the_published_code(rng):
    for shape in [(5, 6), (17, 23)]:
        a, b = (rng.integers(0, 256, shape).astype(np.float64) for _ in range(2))
        f = np.rint((a + b) / 2)
        assert metrics.qabf_vifb([a, b], f) == pytest.approx(_vifb_qabf(a, b, f), rel=1e-12)
        assert metrics.qabf_vifb([a, b], a) == pytest.approx(_vifb_qabf(a, b, a), rel=1e-12)


def test_qabf_vifb_worked_by_hand():
    # A 3 x 3 image of ones, zero-padded. At a corner the x kernel's outer column (1, 2, 1)
    # sees 2 + 1 inside and its other column nothing: s_x = 3, and s_y = 3 likewise, so
    # g = sqrt(18). At the middle of an edge the x columns cancel and s_y = 1 + 2 + 1 = 4.
    # The centre is flat.
    one = np.ones((3, 3))
    g = metrics._sobel_strength_orientation(one, cv2.BORDER_CONSTANT)[0]
    assert np.allclose(g, [[math.sqrt(18), 4, math.sqrt(18)], [4, 0, 4], [math.sqrt(18), 4, math.sqrt(18)]])
    # F = A = B: every pixel has g_S == g_F, so VIFB's G is g_F itself (sqrt 18 or 4, far
    # past the sigmoid's knee) and the orientations agree (A = 1); each pixel counts with
    # weight g. Mirrored at the border the same image has no gradient at all: NaN.
    q_g = {x: 0.9994 / (1 + math.exp(-15 * (x - 0.5))) for x in (math.sqrt(18), 4.0)}
    q_a = 0.9879 / (1 + math.exp(-22 * 0.2))
    weights = {math.sqrt(18): 4, 4.0: 4}
    want = sum(q_g[x] * q_a * x * n for x, n in weights.items()) / sum(x * n for x, n in weights.items())
    assert metrics.qabf_vifb([one, one], one) == pytest.approx(want, rel=1e-12)
    assert math.isnan(metrics.qabf([one, one], one))
