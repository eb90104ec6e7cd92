"""The benchmarks' metric suites: VIFB's 13 metrics pinned to VIFB's own published per-image
values, and MEFB's MEF-SSIM against a loop-for-loop port of the authors' code."""
import math

import cv2
import numpy as np
import pytest

from conftest import benchmark
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.metrics.mef_ssim import MEF_SSIM_SCALE_WEIGHTS, mef_ssim, mef_ssim_scales
from semfuse_rt.engine.metrics.vifb_metrics import VIFB_METRICS, VifbReference, vifb_metrics

# vifb-calibration/published/NAME_METHOD_METRIC.txt: VIFB's file name for each key.
PUBLISHED_NAMES = {"CE": "Cross_entropy", "EN": "Entropy", "MI": "Mutinf", "PSNR": "Psnr", "SSIM": "Ssim",
                   "RMSE": "Rmse", "AG": "Avg_gradient", "EI": "Edge_intensity", "SD": "Variance",
                   "SF": "Spatial_frequency", "Qabf": "Qabf", "Qcb": "Qcb", "Qcv": "Qcv"}
PAIRS = ("carLight", "fight", "manCall", "manwithbag", "snow")
# SwinFusion and YDTR, added to VIFB later, have published values that do not come from the
# JPEGs shipped; the other 23 methods are checked.
METHODS = ("ADF", "CBF", "CNN", "DLF", "FPDE", "GFCE", "GFF", "GTF", "HMSD_GF", "Hybrid_MSD", "IFCNN", "IFEVIP",
           "LP_SR", "LatLRR", "MGFF", "MSVD", "NSCT_SR", "RP_SR", "ResNet", "SeAFusion", "TIF", "U2Fusion",
           "VSMWLS")
# All 115 (pair, method) images are checked, each once: every method on one pair (every pair
# on 4 or 5 methods) in the quick test, the other 92 under the slow marker. About 0.4 s an
# image on one free core.
QUICK = {(PAIRS[i % len(PAIRS)], method) for i, method in enumerate(METHODS)}
REST = {(pair, method) for pair in PAIRS for method in METHODS} - QUICK


def published(folder, pair: str, method: str, key: str) -> float:
    text = (folder / f"{pair}_{method}_{PUBLISHED_NAMES[key]}.txt").read_text()
    return float(text.replace(",", " ").split()[0])


def check_published(images: set[tuple[str, str]]) -> None:
    """Every metric rounds to VIFB's published value, which holds 5 significant digits
    (dlmwrite's default): off by at most half a unit of the 5th digit (and 1e-9 relative, for
    our own float rounding at exactly half)."""
    root = benchmark("vifb-calibration")
    failures = []
    for pair in sorted({pair for pair, _ in images}):
        reference = VifbReference([load_image(root / "infrared_visible" / f"{pair}_Vis.jpg"),
                                   load_image(root / "infrared_visible" / f"{pair}_IR.jpg")])
        for method in sorted(method for p, method in images if p == pair):
            scores = reference.scores(load_image(root / "fused" / f"{pair}_{method}.jpg"))
            for key, _ in VIFB_METRICS:
                expected = published(root / "published", pair, method, key)
                half_unit = 0.5 * 10.0 ** (math.floor(math.log10(abs(expected))) - 4)
                if not abs(scores[key] - expected) <= half_unit + 1e-9 * abs(expected):
                    failures.append(f"{pair} {method} {key}: {scores[key]:.7g}, published {expected:.7g}")
    assert not failures, "\n".join(failures)


def test_vifb_metrics_match_the_published_values():
    assert len(QUICK) == 23 and {pair for pair, _ in QUICK} == set(PAIRS)
    check_published(QUICK)


@pytest.mark.slow
def test_vifb_metrics_match_the_published_values_on_the_other_images():
    check_published(REST)


def test_vifb_metric_keys_and_directions():
    keys = [key for key, _ in VIFB_METRICS]
    assert keys == ["CE", "EN", "MI", "PSNR", "SSIM", "RMSE", "AG", "EI", "SD", "SF", "Qabf", "Qcb", "Qcv"]
    assert [key for key, higher in VIFB_METRICS if not higher] == ["CE", "RMSE", "Qcv"]


def textured(rng, shape=(48, 64)) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.random(shape) * 255, (0, 0), 2)
    return np.clip((noise - noise.min()) / np.ptp(noise) * 255, 0, 255).round().astype(np.uint8)


def test_vifb_colour_is_channel_by_channel_and_a_grey_source_is_reused(rng):
    visible = np.stack([textured(rng) for _ in range(3)], axis=2)
    infrared = textured(rng)
    fused = ((visible.astype(np.float64) + infrared[:, :, None]) / 2).round().astype(np.uint8)
    colour = vifb_metrics([visible, infrared], fused)
    per_channel = [vifb_metrics([visible[:, :, k], infrared], fused[:, :, k]) for k in range(3)]
    for key, _ in VIFB_METRICS:
        if key != "SF":
            assert colour[key] == pytest.approx(np.mean([values[key] for values in per_channel]), rel=1e-12), key
    # A grey image stored as three equal channels (VIFB's infrared JPEGs) scores as the grey one.
    assert vifb_metrics([visible, np.repeat(infrared[:, :, None], 3, axis=2)], fused) == colour
    # SF: VIFB indexes H x W x 3 as H x 3W, the channels side by side.
    side_by_side = np.hstack([fused[:, :, k] for k in range(3)])
    assert colour["SF"] == pytest.approx(vifb_metrics([side_by_side, side_by_side], side_by_side)["SF"], rel=1e-12)


def test_vifb_grey_fused_image_uses_matlabs_rgb2gray(rng):
    visible = np.stack([textured(rng) for _ in range(3)], axis=2)
    infrared = textured(rng)
    fused = textured(rng)
    weights = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # rgb2gray's
    exact = visible.astype(np.float64) @ weights
    rounded = np.floor(exact + 0.5).astype(np.uint8)
    values = vifb_metrics([visible, infrared], fused)
    with_rounded = vifb_metrics([rounded, infrared], fused)
    # CE, MI and SSIM see rgb2gray of the uint8 image (rounded); PSNR, RMSE and Qabf convert
    # after double() (unrounded): VIFB's code, metric by metric.
    for key in ("CE", "MI", "SSIM", "Qcb", "Qcv", "EN", "SD", "SF", "AG", "EI"):
        assert values[key] == with_rounded[key], key
    reference = VifbReference([visible, infrared])
    assert values["RMSE"] != with_rounded["RMSE"]
    assert np.array_equal(reference._source_planes("rounded grey")[0].values, rounded)
    assert np.allclose(reference._source_planes("unrounded grey")[0].values, exact, rtol=1e-14, atol=0)


def test_vifb_16_bit_images_are_scored_at_8_bits(rng):
    a, b, f = textured(rng), textured(rng), textured(rng)
    wide = [x.astype(np.uint16) * 257 for x in (a, b, f)]
    assert vifb_metrics(wide[:2], wide[2]) == vifb_metrics([a, b], f)


def test_vifb_metrics_of_a_source_itself(rng):
    a, b = textured(rng), textured(rng)
    values = vifb_metrics([a, a], a)
    assert values["CE"] == 0.0 and values["RMSE"] == 0.0 and math.isinf(values["PSNR"])
    assert values["SSIM"] == pytest.approx(2.0) and values["Qcv"] == 0.0
    assert values["Qcb"] == pytest.approx(1.0)
    two = vifb_metrics([a, b], a)
    # MI(A;A) in nats is A's entropy in nats: VIFB's natural log.
    levels = np.floor((a - a.min()) / (a.max() - a.min()) * 255.0 + 0.5).astype(int)
    p = np.bincount(levels.ravel()) / a.size
    p = p[p > 0]
    assert vifb_metrics([a, a], a)["MI"] == pytest.approx(-2 * (p * np.log(p)).sum(), rel=1e-12)
    assert two["SSIM"] < values["SSIM"] and two["Qcv"] > 0


def test_vifb_inputs_are_checked(rng):
    a = textured(rng)
    with pytest.raises(ValueError, match="at least 2 sources"):
        vifb_metrics([a], a)
    with pytest.raises(ValueError, match="differs in size"):
        vifb_metrics([a, a], a[:-1])
    with pytest.raises(ValueError, match="uint8 or uint16"):
        vifb_metrics([a, a], a.astype(np.float32))


# --------------------------------------------------------------------------- MEF-SSIM

def _literal_mef_ssim_scale(sequence: np.ndarray, fused: np.ndarray) -> float:
    """mef_ssim.m (Ma, Zeng & Wang's code, as MEFB ships it), loop for loop, patch by patch."""
    eps = np.finfo(np.float64).eps
    rows, columns, count = sequence.shape
    taps = np.exp(-np.arange(-5, 6) ** 2 / (2 * 1.5 ** 2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    out = (rows - 10, columns - 10)
    mu, ed = np.zeros(out + (count,)), np.zeros(out + (count,))
    for i in range(out[0]):
        for j in range(out[1]):
            for k in range(count):
                patch = sequence[i:i + 11, j:j + 11, k]
                mu[i, j, k] = patch.mean()
                ed[i, j, k] = math.sqrt(max(121 * (np.mean(patch * patch) - patch.mean() ** 2), 0)) + 0.001
    consistency = np.zeros(out)
    for i in range(out[0]):
        for j in range(out[1]):
            vectors = sequence[i:i + 11, j:j + 11, :].reshape(121, count)
            denominator = sum(np.linalg.norm(vectors[:, k] - mu[i, j, k]) for k in range(count))
            summed = vectors.sum(axis=1)
            consistency[i, j] = (np.linalg.norm(summed - summed.mean()) + eps) / (denominator + eps)
    consistency[consistency > 1] = 1 - eps
    consistency[consistency < 0] = eps
    p = np.minimum(np.tan(np.pi / 2 * consistency), 10)
    weights = (ed / 11) ** p[..., None] + eps
    weights /= weights.sum(axis=2, keepdims=True)
    c = (0.03 * 255) ** 2
    quality = np.zeros(out)
    for i in range(out[0]):
        for j in range(out[1]):
            blocks = sequence[i:i + 11, j:j + 11, :]
            reference = sum(weights[i, j, k] * (blocks[:, :, k] - mu[i, j, k]) / ed[i, j, k] for k in range(count))
            if np.linalg.norm(reference) > 0:
                reference = reference / np.linalg.norm(reference) * ed[i, j].max()
            patch = fused[i:i + 11, j:j + 11]
            m1, m2 = (window * reference).sum(), (window * patch).sum()
            s1, s2 = (window * (reference - m1) ** 2).sum(), (window * (patch - m2) ** 2).sum()
            s12 = (window * (reference - m1) * (patch - m2)).sum()
            quality[i, j] = (2 * s12 + c) / (s1 + s2 + c)
    return float(quality.mean())


def _matlab_downsample(image: np.ndarray) -> np.ndarray:
    """imfilter(I, ones(2)/4, 'symmetric', 'same'), then I(1:2:end, 1:2:end)."""
    padded = np.pad(image, ((0, 1), (0, 1)), mode="symmetric")
    filtered = (padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4
    return filtered[0::2, 0::2]


def exposures(rng, shape=(45, 47)):
    scene = cv2.GaussianBlur(rng.random(shape) * 255, (0, 0), 2)
    scene = (scene - scene.min()) / np.ptp(scene) * 200
    dark = np.clip(scene * 0.5, 0, 255).round().astype(np.uint8)
    bright = np.clip(scene * 1.8 + 20, 0, 255).round().astype(np.uint8)
    bright[:10, :12] = 255  # a saturated, flat region: the code's eps guards at work
    return dark, bright


def test_mef_ssim_is_the_authors_code_at_every_scale(rng):
    dark, bright = exposures(rng)
    fused = np.clip((dark.astype(np.float64) + bright) / 2 + rng.normal(0, 4, dark.shape), 0, 255)
    fused = fused.round().astype(np.uint8)
    sequence = np.stack([dark, bright], axis=2).astype(np.float64)
    grey_fused = fused.astype(np.float64)
    expected = []
    for _ in range(3):
        expected.append(_literal_mef_ssim_scale(sequence, grey_fused))
        sequence = np.stack([_matlab_downsample(sequence[:, :, k]) for k in range(2)], axis=2)
        grey_fused = _matlab_downsample(grey_fused)
    assert mef_ssim_scales([dark, bright], fused) == pytest.approx(expected, rel=1e-12)
    # The 3-scale combination: weights (0.0448, 0.2856, 0.3001), normalised.
    assert MEF_SSIM_SCALE_WEIGHTS == pytest.approx(np.array([0.0448, 0.2856, 0.3001]) / 0.6305, rel=1e-15)
    assert mef_ssim([dark, bright], fused) == pytest.approx(
        float(np.prod(np.power(expected, MEF_SSIM_SCALE_WEIGHTS))), rel=1e-12)


def test_mef_ssim_properties(rng):
    dark, bright = exposures(rng, shape=(64, 80))
    # Sources that agree: a fused image equal to them is all but perfect (the reference
    # patch's norm is rescaled by the code's +0.001 contrast floor, hence not exactly 1).
    assert mef_ssim([dark, dark], dark) == pytest.approx(1.0, abs=1e-6)
    # Only structure and contrast count, not the mean level: a uniform shift leaves it unchanged.
    blended = ((dark.astype(np.float64) + bright) / 2).round()
    assert mef_ssim([dark, bright], (blended - 10).astype(np.uint8)) == pytest.approx(
        mef_ssim([dark, bright], (blended + 10).astype(np.uint8)), rel=1e-12)
    # Colour is turned grey with rgb2gray, rounded, as MEFB does.
    colour = np.repeat(bright[:, :, None], 3, axis=2)
    assert mef_ssim([dark, colour], bright) == mef_ssim([dark, bright], bright)
    # 16-bit images are scored at 8 bits.
    assert mef_ssim([dark.astype(np.uint16) * 257, bright], bright) == mef_ssim([dark, bright], bright)


def test_mef_ssim_too_small_and_checked(rng):
    small = rng.integers(0, 256, (43, 60), dtype=np.uint8)
    assert math.isnan(mef_ssim([small, small], small))  # MEFB's code: -Inf, under 44 px
    with pytest.raises(ValueError, match="at least 2 sources"):
        mef_ssim([small], small)
    with pytest.raises(ValueError, match="differ in size"):
        mef_ssim([small, small], small[:, :-1])
