"""The evidence weights, pyramid blends and the `pyramid-blend` start (engine/start/pyramid_blend.py)
and the `blend` preset: hand-made arrays, fast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semfuse_rt.engine.start import pyramid_blend as pb
from semfuse_rt.gaussian_blur import Border, gaussian_taps, torch_blur
from semfuse_rt.engine.start.initialisation import INITIALISATIONS, initial_image
from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET, PRESETS, resolve_preset


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
        return torch_blur(x, taps, Border.REFLECT_101)[..., ::2, ::2]

    def up(x, size):
        z = x.new_zeros((*x.shape[:2], *size))
        z[..., ::2, ::2] = x
        return torch_blur(z, 2 * taps, Border.REFLECT_101)

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
    weights = torch.rand(3, 1, *size, dtype=torch.float64)
    weights /= weights.sum(dim=0, keepdim=True)
    h, w = size
    deep, local = pb.pyramid_blends(zip(pixels.split(1), weights.split(1)), size, (pb.FULL_DEPTH, None))
    assert torch.allclose(deep, _reference_blend(pixels, weights, pb.pyramid_levels(h, w, 1)), atol=1e-9)
    assert torch.allclose(local, _reference_blend(pixels, weights, pb.pyramid_levels(h, w)), atol=1e-9)


def _stacked_rule(pixels):
    """The rule of engine/start/pyramid_blend.py's docstring with every input's maps at once."""
    unit = pixels / 255.0
    grey = pb.luma(unit)
    k = len(pixels)
    tone = pb.gaussian(grey, 8.0)
    power = 1 + 2 * (1 - (tone.std(dim=0, unbiased=False, keepdim=True) / 0.05).clamp(0, 1))
    contrast = pb.local_contrast(grey) + pb.EPS
    soft = pb.gaussian(contrast ** power, 4.0)
    soft = soft / soft.sum(dim=0, keepdim=True)
    labels = pb.gaussian(contrast, 3.0).argmax(dim=0, keepdim=True)
    one_hot = (labels == torch.arange(k).view(-1, 1, 1, 1)).to(pixels.dtype)
    votes = pb._box_mean(one_hot, 9)
    hard = (votes.argmax(dim=0, keepdim=True) == torch.arange(k).view(-1, 1, 1, 1)).to(pixels.dtype)
    total = grey.sum(dim=0, keepdim=True)
    agreement = sum(pb._correlation(grey[i:i + 1], (total - grey[i:i + 1]) / (k - 1), 9, 1e-4)
                    for i in range(k)) / k
    gate = pb.gaussian(agreement, 2.0).clamp(0, 1)
    weights = gate * soft + (1 - gate) * hard
    share = pb.gaussian(agreement, 8.0).clamp(0, 1)
    deep, local = pb.pyramid_blends(zip(pixels.split(1), weights.split(1)), pixels.shape[-2:],
                                    (pb.FULL_DEPTH, None))
    return share * deep + (1 - share) * local


def _focus_and_exposures(k):
    """One scene: sharp on the left or the right half, darker, brighter, then another scene."""
    scene = pb.gaussian(_texture(37, 53, seed=30)[None], 1.5)[0] * 2 - 128
    blurred = pb.gaussian(scene[None], 3.0)[0]
    left, right = scene.clone(), scene.clone()
    left[..., 26:], right[..., :26] = blurred[..., 26:], blurred[..., :26]
    return torch.stack([left, right, scene * 0.6, scene * 0.8 + 40, _texture(37, 53, seed=31)][:k]).clamp(0, 255)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_the_streamed_rule_is_the_stacked_one(k):
    # (At k = 2 each of the rule's parts changes the result by over a grey level.)
    pixels = _focus_and_exposures(k)
    assert torch.allclose(pb.agreement_blend(pixels), _stacked_rule(pixels), atol=1e-8)


def test_flat_inputs_tie_and_the_first_wins():
    # No contrast and no structure anywhere: the hard mask's ties go to the lower k.
    pixels = torch.stack([torch.full((3, 16, 16), 100.0), torch.full((3, 16, 16), 150.0)]).double()
    assert torch.allclose(pb.agreement_blend(pixels), pixels[:1], atol=1e-6)


def test_contrast_measure():
    flat = torch.full((1, 1, 12, 12), 0.5, dtype=torch.float64)
    assert torch.allclose(pb.local_contrast(flat), torch.zeros_like(flat))
    stripes = torch.zeros_like(flat)
    stripes[..., ::2] = 1.0
    assert (pb.local_contrast(stripes) > 0.4).all()


def test_textured_region_wins_over_a_clipped_one():
    # Input 0: textured mid-grey left half, clipped white right half; input 1 the reverse.
    texture = _texture(40, 80, seed=4, scale=25)
    first = texture.clone()
    first[..., 40:] = 255.0
    second = texture.clone()
    second[..., :40] = 255.0
    out = pb.agreement_blend(torch.stack([first, second]))[0]
    # away from the seam, the start follows the texture, not the white
    assert (out[:, 4:36, 4:30] - texture[:, 4:36, 4:30]).abs().mean() < 5
    assert (out[:, 4:36, 50:76] - texture[:, 4:36, 50:76]).abs().mean() < 5


def test_structural_agreement_high_for_one_scene_low_for_different_ones():
    scene = pb.luma(_texture(40, 40, seed=5)[None] / 255.0)
    darker = scene * 0.5  # the same structure at another exposure
    other = pb.luma(_texture(40, 40, seed=6)[None] / 255.0)
    assert pb._correlation(scene, darker, 9, 1e-4).mean() > 0.95
    assert pb._correlation(scene, other, 9, 1e-4).mean() < 0.3


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
    assert resolve_preset("blend") == {"init": "pyramid-blend", "steps": 0, "lr": 0.1, "decay": "cosine",
                                       "mean_base": 0.0, "semantic_steps": 0}
    # blend-steps is the default before the steps left it: the same start and 10 steps
    assert resolve_preset("blend-steps") == {**PRESETS["blend"].settings, "steps": 10}
    assert PRESETS["paper"].settings == {"init": "mean", "steps": 100, "lr": 1.0, "decay": "constant", "mean_base": 0.0,
                                "semantic_steps": 0}
    assert DEFAULT_PRESET == "blend" and PRESETS["semantic"].settings == {**PRESETS["blend-steps"].settings, "semantic_steps": 5}
    assert PRESETS["fast"].init == "dtcwt-verified" and PRESETS["refined"].steps == 30
    assert DEFAULT_PRESET in PRESETS


@pytest.mark.parametrize("size", [(37, 51), (8, 5), (2, 3)])
def test_torch_filters_match_the_opencv_ones(size):
    # On the CPU the filters call OpenCV; elsewhere (a GPU) the torch forms run: the same numbers.
    from torch.nn import functional as F

    x = torch.rand(2, 3, *size, dtype=torch.float64)
    torch_reduce = pb._reduce_last(pb._reduce_last(x).transpose(-1, -2)).transpose(-1, -2)
    assert torch.allclose(pb.reduce(x), torch_reduce, atol=1e-12)
    for sigma in (3.0, 8.0):
        taps = torch.from_numpy(gaussian_taps(sigma)).to(x)
        assert torch.allclose(pb.gaussian(x, sigma), torch_blur(x, taps, Border.REFLECT_101), atol=1e-6)
    if min(size) > 3:
        assert torch.allclose(pb._box_mean(x, 7), F.avg_pool2d(pb._pad(x, 3), 7, stride=1), atol=1e-12)
