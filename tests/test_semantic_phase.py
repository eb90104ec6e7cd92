"""The semantic phase: its resampling against torch and OpenCV, that it moves the result
towards the deep target by low frequencies only, and how presets and the Fuser use it."""
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semfuse_rt.engine.semantic import semantic_phase as phase_module
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.kernels.rules.choose_max import ChooseMax
from semfuse_rt.engine.semantic.semantic_phase import (SemanticPhase, SemanticSettings, add_upsampled, small_inputs,
                                              small_size)
from semfuse_rt.engine.io.sources import prepare
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.weights import random_vgg19


def deep_weights():
    """random_vgg19 without the shrinking after conv1_1, so relu5_1 does not vanish."""
    weights = random_vgg19()
    return replace(weights, convs={name: (w if name == "conv1_1" else w * 64, b)
                                   for name, (w, b) in weights.convs.items()})


@pytest.mark.parametrize("small, large", [((5, 7), (23, 31)), ((8, 8), (8, 8)), ((3, 11), (40, 12))])
def test_add_upsampled_is_torch_bilinear_in_bands(monkeypatch, rng, small, large):
    monkeypatch.setattr(phase_module, "BAND_ROWS", 6)  # several bands, the last one short
    change = rng.normal(size=(3, *small)).astype(np.float32)
    fused = rng.normal(size=(3, *large)).astype(np.float32)
    expected = fused + F.interpolate(torch.from_numpy(change)[None], size=large, mode="bilinear",
                                     align_corners=False)[0].numpy()
    add_upsampled(fused, change)
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-5)


def test_small_size_keeps_the_aspect_and_never_enlarges():
    assert small_size(270, 360, 160) == (120, 160)
    assert small_size(4000, 3000, 160) == (160, 120)
    assert small_size(100, 90, 160) == (100, 90)
    assert small_size(1000, 20, 160) == (160, 32)  # at least relu5_1's 2 x 2 map


@pytest.mark.parametrize("kinds", [("grey8", "grey8"), ("rgb16", "rgb16"), ("grey8", "rgb8")])
def test_small_inputs_are_the_prepared_pixels_downsampled(rng, kinds):
    shapes = {"grey8": ((50, 66), np.uint8), "rgb8": ((50, 66, 3), np.uint8), "rgb16": ((50, 66, 3), np.uint16)}
    images = [rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype) for shape, dtype in map(shapes.get, kinds)]
    prepared = prepare(images)
    got = small_inputs(images, prepared.mode == "mixed", (20, 26))
    for k, planes in enumerate(prepared.pixels):
        expected = np.stack([cv2.resize(p, (26, 20), interpolation=cv2.INTER_AREA) for p in planes])
        np.testing.assert_allclose(got[k], expected, rtol=0, atol=1e-3)


def test_settings_refuse_what_cannot_run():
    for bad in (dict(steps=-1), dict(steps=3, lr=0), dict(steps=3, size=16)):
        with pytest.raises(SemfuseError):
            SemanticSettings(**bad)


def test_the_phase_moves_the_result_towards_the_deep_target_by_low_frequencies(monkeypatch, rng):
    weights = deep_weights()
    height, width = 96, 128
    inputs_full = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
    fused = prepare(inputs_full).pixels.mean(0)
    before = fused.copy()
    changes = []
    monkeypatch.setattr(phase_module, "add_upsampled",
                        lambda image, change: (changes.append(change), add_upsampled(image, change)))
    with SemanticPhase(weights, SemanticSettings(steps=5, size=64, lr=2.0), torch.device("cpu")) as phase:
        size = phase.size(height, width)
        inputs = small_inputs(inputs_full, False, size)
        rule = ChooseMax()
        target = phase.runner.fuse_features(phase.runner.features(torch.from_numpy(inputs)), rule)

        def loss(image):
            small = np.stack([cv2.resize(p, size[::-1], interpolation=cv2.INTER_AREA) for p in image])[None]
            return float(phase.runner.loss_and_grad(torch.from_numpy(small), target)[0])

        phase(fused, inputs, rule)
        assert loss(fused) < 0.9 * loss(before)
    # All that moved is a change made at 64 x 48, upsampled.
    (change,) = changes
    assert change.shape == (3, 48, 64) and np.abs(change).max() > 0.5
    upsampled = F.interpolate(torch.from_numpy(change)[None], size=(height, width), mode="bilinear",
                              align_corners=False)[0].numpy()
    np.testing.assert_allclose(fused - before, upsampled, rtol=0, atol=1e-3)


def test_the_semantic_preset_is_blend_steps_then_the_phase(rng):
    pair = [rng.integers(0, 256, (64, 80), dtype=np.uint8) for _ in range(2)]
    weights = deep_weights()
    with Fuser("max", backend="torch", weights=weights, preset="semantic") as semantic, \
            Fuser("max", backend="torch", weights=weights, preset="semantic", semantic_steps=0) as off, \
            Fuser("max", backend="torch", weights=weights, preset="blend-steps") as blend_steps:
        with_phase, without = semantic(pair), off(pair)
        assert np.array_equal(without.image, blend_steps(pair).image)
    assert "semantic phase" in with_phase.stages and "semantic phase" not in without.stages
    assert not np.array_equal(with_phase.image, without.image)


def test_tiled_fuses_run_the_phase_on_the_whole_image(rng):
    pair = [rng.integers(0, 256, (96, 120, 3), dtype=np.uint8) for _ in range(2)]
    with Fuser("max", backend="torch", weights=deep_weights(), tile=64, steps=1, semantic_steps=5) as fuser:
        result = fuser(pair)
    assert result.tiles > 1 and "semantic phase" in result.stages


def test_negative_semantic_steps_are_one_line_errors():
    with pytest.raises(SemfuseError, match="--semantic-steps must be"):
        Fuser("max", semantic_steps=-2)
