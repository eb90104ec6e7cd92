"""The evidence weights, pyramid blends and the `pyramid-blend` start (engine/pyramid_blend.py)
and the `blend` preset: hand-made arrays, fast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semfuse_rt.engine import pyramid_blend as pb
from semfuse_rt.engine.initialisation import INITIALISATIONS, initial_image
from semfuse_rt.engine.presets import DEFAULT_PRESET, PRESETS, resolve_preset


def _texture(h=48, w=64, seed=0, scale=60.0, offset=128.0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.clip(offset + scale * rng.standard_normal((3, h, w)), 0, 255))


def _grey(planes: torch.Tensor) -> torch.Tensor:
    return planes[:1].expand(3, -1, -1).clone()


def test_pyramid_levels():
    assert pb.pyramid_levels(8, 8) == 1
    assert pb.pyramid_levels(16, 100) == 2
    assert pb.pyramid_levels(256, 300) == 6  # 256 -> 8
    assert pb.pyramid_levels(256, 256, coarsest=1) == 9


@pytest.mark.parametrize("size", [(48, 64), (37, 51), (9, 5)])
@pytest.mark.parametrize("levels", [None, 3, pb.FULL_DEPTH])
def test_blend_of_one_input_reconstructs_it(size, levels):
    # The Laplacian pyramid reconstructs exactly, whatever the size (odd sides included).
    image = torch.rand(1, 3, *size, dtype=torch.float64) * 255
    out = pb.pyramid_blend(image, torch.ones(1, 1, *size, dtype=torch.float64), levels)
    assert out.shape == (1, 3, *size)
    assert torch.allclose(out, image, atol=1e-9)


def _reference_blend(pixels, weights, levels):
    """The textbook pyramid blend, one depth at a time: blur-and-subsample, zero-insert-and-blur."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=pixels.dtype) / 16

    def down(x):
        return pb._blur(x, taps)[..., ::2, ::2]

    def up(x, size):
        z = x.new_zeros((*x.shape[:2], *size))
        z[..., ::2, ::2] = x
        return pb._blur(z, 2 * taps)

    total = None
    for k in range(len(pixels)):
        image, weight, bands = pixels[k:k + 1], weights[k:k + 1], []
        for _ in range(levels - 1):
            smaller = down(image)
            bands.append(weight * (image - up(smaller, image.shape[-2:])))
            image, weight = smaller, down(weight)
        bands.append(weight * image)
        total = bands if total is None else [a + b for a, b in zip(total, bands)]
    result = total[-1]
    for band in reversed(total[:-1]):
        result = band + up(result, band.shape[-2:])
    return result


@pytest.mark.parametrize("size", [(48, 64), (37, 51), (6, 11)])
def test_shared_blends_match_the_textbook_blend(size):
    pixels = torch.rand(3, 3, *size, dtype=torch.float64) * 255
    weights = pb.evidence_weights(pixels, contrast=1.0, smooth=2.0)
    h, w = size
    deep, local = pb.pyramid_blends(zip(pixels.split(1), weights.split(1)), size, (pb.FULL_DEPTH, None))
    assert torch.allclose(deep, _reference_blend(pixels, weights, pb.pyramid_levels(h, w, 1)), atol=1e-9)
    assert torch.allclose(local, _reference_blend(pixels, weights, pb.pyramid_levels(h, w)), atol=1e-9)


def test_weights_sum_to_one_and_hard_is_one_hot():
    pixels = torch.stack([_texture(seed=1), _texture(seed=2, scale=10), _texture(seed=3, scale=30)])
    soft = pb.evidence_weights(pixels, contrast=2.0, smooth=2.0)
    assert soft.shape == (3, 1, 48, 64)
    assert torch.allclose(soft.sum(0), torch.ones(1, 48, 64, dtype=soft.dtype))
    assert (soft >= 0).all()
    hard = pb.evidence_weights(pixels, contrast=1.0, hard=True)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.sum(0), torch.ones_like(hard[0]))
    # the most contrasted input (scale 60) wins nearly everywhere
    assert hard[0].mean() > 0.9


def test_flat_inputs_get_equal_soft_weights_and_ties_go_to_the_first():
    pixels = torch.full((2, 3, 16, 16), 100.0, dtype=torch.float64)
    assert torch.allclose(pb.evidence_weights(pixels, contrast=1.0), torch.full((2, 1, 16, 16), 0.5, dtype=torch.float64))
    hard = pb.evidence_weights(pixels, contrast=1.0, hard=True)
    assert (hard[0] == 1).all() and (hard[1] == 0).all()


def test_contrast_saturation_exposure_measures():
    flat = torch.full((1, 3, 12, 12), 0.5, dtype=torch.float64)
    assert torch.allclose(pb.local_contrast(flat), torch.zeros(1, 1, 12, 12, dtype=torch.float64))
    assert torch.allclose(pb.well_exposedness(flat), torch.ones(1, 1, 12, 12, dtype=torch.float64))
    assert torch.allclose(pb.saturation(flat), torch.zeros(1, 1, 12, 12, dtype=torch.float64))
    clipped = torch.ones_like(flat)
    assert (pb.well_exposedness(clipped) < 0.01).all()
    red = torch.zeros_like(flat)
    red[:, 0] = 1.0
    assert (pb.saturation(red) > 0.4).all()
    stripes = torch.zeros_like(flat)
    stripes[..., ::2] = 1.0
    assert (pb.local_contrast(stripes) > 0.4).all()


def test_well_exposed_region_wins_over_a_saturated_one():
    # Input 0: textured mid-grey left half, clipped white right half; input 1 the reverse.
    texture = _texture(40, 80, seed=4, scale=25)
    first = texture.clone()
    first[..., 40:] = 255.0
    second = texture.clone()
    second[..., :40] = 255.0
    pixels = torch.stack([first, second])
    weights = pb.evidence_weights(pixels, contrast=1.0, exposure=1.0, saturation_weight=0.0, hard=True)
    assert weights[0, 0, :, 4:36].mean() > 0.95 and weights[1, 0, :, 44:76].mean() > 0.95
    out = pb.agreement_blend(pixels)[0]
    # away from the seam, the start follows the well-exposed texture, not the white
    assert (out[:, 4:36, 4:30] - texture[:, 4:36, 4:30]).abs().mean() < 5
    assert (out[:, 4:36, 50:76] - texture[:, 4:36, 50:76]).abs().mean() < 5


def test_structural_agreement_high_for_one_scene_low_for_different_ones():
    scene = _texture(40, 40, seed=5) / 255.0
    darker = scene * 0.5  # the same structure at another exposure
    other = _texture(40, 40, seed=6) / 255.0
    same = pb.structural_agreement(torch.stack([scene, darker]))
    different = pb.structural_agreement(torch.stack([scene, other]))
    assert same.shape == (1, 1, 40, 40)
    assert same.mean() > 0.95
    assert different.mean() < 0.3


@pytest.mark.parametrize("k", [2, 3])
def test_start_of_identical_inputs_is_that_input(k):
    image = _texture(seed=7)
    out = initial_image(torch.stack([image] * k).float(), "pyramid-blend")
    assert out.shape == (1, 3, 48, 64) and out.dtype == torch.float32
    assert torch.allclose(out[0], image.float(), atol=1e-3)


def test_start_takes_the_sharp_half_of_each_input():
    # multi-focus by hand: each input is sharp on one half and blurred (flat) on the other
    sharp = _texture(48, 64, seed=8, scale=50)
    blurred = torch.full_like(sharp, 128.0)
    left = torch.cat([sharp[..., :32], blurred[..., 32:]], dim=-1)
    right = torch.cat([blurred[..., :32], sharp[..., 32:]], dim=-1)
    out = pb.agreement_blend(torch.stack([left, right]))[0]
    error = (out - sharp).abs()
    assert error[:, :, 4:28].mean() < 3 and error[:, :, 36:60].mean() < 3
    assert (out - (left + right) / 2).abs()[:, :, 4:60].mean() > 10  # not the plain mean


def test_different_modalities_keep_a_black_background_black():
    # CT/MR-like: both inputs black outside a square, different structure inside
    first = torch.zeros(3, 64, 64, dtype=torch.float64)
    second = torch.zeros_like(first)
    first[:, 20:44, 20:44] = _texture(24, 24, seed=9)
    second[:, 16:48, 16:48] = 200.0
    out = pb.agreement_blend(torch.stack([first, second]))[0]
    assert out[:, :6, :].abs().max() < 2 and out[:, -6:, :].abs().max() < 2


def test_grey_and_colour_inputs():
    grey = torch.stack([_grey(_texture(seed=10)), _grey(_texture(seed=11, scale=20))])
    out = pb.agreement_blend(grey)[0]
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])  # grey stays grey
    colour = torch.stack([_texture(seed=12), _texture(seed=13, scale=20)])
    assert pb.agreement_blend(colour).shape == (1, 3, 48, 64)
    assert torch.isfinite(pb.agreement_blend(colour)).all()


def test_blend_preset_and_earlier_presets():
    assert "pyramid-blend" in INITIALISATIONS
    assert resolve_preset("blend") == {"init": "pyramid-blend", "steps": 10, "lr": 0.1, "decay": "cosine",
                                       "mean_base": 0.0}
    assert PRESETS["paper"] == {"init": "mean", "steps": 100, "lr": 1.0, "decay": "constant", "mean_base": 0.0}
    assert PRESETS["fast"]["init"] == "dtcwt-verified" and PRESETS["refined"]["steps"] == 30
    assert DEFAULT_PRESET in PRESETS


@pytest.mark.parametrize("size", [(37, 51), (8, 5), (2, 3)])
def test_torch_filters_match_the_opencv_ones(size):
    # On the CPU the filters call OpenCV; elsewhere (a GPU) the torch forms run: the same numbers.
    from torch.nn import functional as F

    from semfuse_rt.export.base_layer_graph import gaussian_taps

    x = torch.rand(2, 3, *size, dtype=torch.float64)
    torch_reduce = pb._reduce_last(pb._reduce_last(x).transpose(-1, -2)).transpose(-1, -2)
    assert torch.allclose(pb.reduce(x), torch_reduce, atol=1e-12)
    for sigma in (3.0, 8.0):
        assert torch.allclose(pb._gaussian(x, sigma), pb._blur(x, gaussian_taps(sigma).to(x)), atol=1e-6)
    if min(size) > 3:
        assert torch.allclose(pb._box_mean(x, 7), F.avg_pool2d(pb._pad(x, 3), 7, stride=1), atol=1e-12)
