"""The starts registry, the whole-image pyramid blend, and a fuse of the start alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semfuse_rt.engine.api import fuse_result
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.start.initialisation import INITIALISATIONS, STARTS, check_initialisation, initial_image
from semfuse_rt.engine.fuse.presets import PRESETS
from semfuse_rt.engine.start.pyramid_blend import agreement_blend, pyramid_blends
from semfuse_rt.engine.start.pyramid_blend_cpu import agreement_blend_cpu
from semfuse_rt.engine.start.pyramid_depth import WHOLE_COARSEST, pyramid_levels, same_depth_sides
from semfuse_rt.engine.io.sources import finish, prepare
from semfuse_rt.errors import SemfuseError


def _exposures(height: int = 48, width: int = 64) -> list[np.ndarray]:
    """One scene at two exposures: a dark and a bright copy of a textured gradient."""
    rng = np.random.default_rng(3)
    scene = np.linspace(0.1, 0.9, width)[None, :, None] + 0.05 * rng.standard_normal((height, width, 3))
    return [np.clip(scene * gain * 255, 0, 255).astype(np.uint8) for gain in (0.45, 1.6)]


def test_every_start_is_named_once_and_unknown_ones_are_refused():
    assert INITIALISATIONS == tuple(STARTS) and all(name == start.name for name, start in STARTS.items())
    with pytest.raises(SemfuseError, match="unknown initialisation 'blend'; use one of mean, max"):
        check_initialisation("blend")


def test_the_whole_pyramid_blend_is_one_pyramid_down_to_a_3_pixel_band_everywhere():
    pixels = torch.from_numpy(prepare(_exposures()).pixels)
    whole = initial_image(pixels, "whole-pyramid-blend")
    local = initial_image(pixels, "pyramid-blend")
    assert whole.shape == local.shape == (1, 3, 48, 64)
    # The whole-image pyramid differs from the agreement-gated mix of deep and local ones ...
    assert float((whole - local).abs().max()) > 1.0
    # ... and is one pyramid 5 levels deep here (48 -> 3 px): uniform weights give the mean.
    assert pyramid_levels(48, 64, WHOLE_COARSEST) == 5
    halves = torch.full((2, 1, 48, 64), 0.5)
    mean = pyramid_blends(((pixels[k:k + 1], halves[k:k + 1]) for k in range(2)), (48, 64), (5,))[0]
    torch.testing.assert_close(mean, pixels.mean(dim=0, keepdim=True), atol=1e-3, rtol=0)
    assert not torch.equal(whole, agreement_blend(pixels, coarsest=1))  # the full-depth pyramid


@pytest.mark.parametrize(("side", "coarsest", "sides"), [
    (512, 1, (512, 1023)), (1023, 8, (512, 1023)), (512, 3, (384, 767)), (383, 3, (192, 383)), (5, 3, (1, 5))])
def test_sides_of_one_pyramid_depth(side, coarsest, sides):
    assert same_depth_sides(side, coarsest) == sides
    low, high = sides
    assert pyramid_levels(low, low, coarsest) == pyramid_levels(high, high, coarsest) == \
        pyramid_levels(side, side, coarsest) != pyramid_levels(high + 1, high + 1, coarsest)


def test_the_exposure_preset_is_the_whole_pyramid_blend_alone():
    images = _exposures()
    result = fuse_result(images, "max", preset="exposure")
    sources = prepare(images)
    # On the CPU the start runs as numpy (engine/start/pyramid_blend_cpu.py; its parity with the torch
    # rule: tests/test_pyramid_blend_cpu.py).
    expected = finish(agreement_blend_cpu(sources.pixels, coarsest=WHOLE_COARSEST)[0], sources)
    assert PRESETS["exposure"].steps == 0 and PRESETS["exposure"].init == "whole-pyramid-blend"
    assert np.array_equal(result.image, expected)
    assert result.losses == [] and "loop" not in result.stages and "features" not in result.stages


def test_a_fuse_without_steps_computes_no_features_and_runs_no_loop(random_vgg_weights, monkeypatch):
    images = _exposures(32, 40)
    with Fuser("max", steps=0, weights=random_vgg_weights) as fuser:
        runner = fuser.active_runner
        for name in ("features", "fuse_features", "optimise", "reused_features"):
            monkeypatch.setattr(runner, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} ran"))
        result = fuser(images)
    start = STARTS["pyramid-blend"].cpu_image(prepare(images).pixels)
    assert np.array_equal(result.image, finish(start[0], prepare(images)))
    assert result.relative_loss is None


def test_methods_that_act_only_through_steps_default_to_them_and_refuse_none():
    assert Fuser("max").schedule.steps == 0 and Fuser("max").preset == "blend"
    assert Fuser("majority").preset == Fuser("cam-max").preset == "blend-steps"
    assert Fuser("majority").schedule.steps == 10
    with pytest.raises(SemfuseError, match="--method majority acts only through optimisation steps, and preset "
                                           "blend runs none: give --steps N or --preset blend-steps"):
        Fuser("majority", preset="blend")
    with pytest.raises(SemfuseError, match="--steps 0 leaves it none"):
        Fuser("cam-max", steps=0)
    Fuser("majority", preset="blend", steps=3)  # steps asked for: the rule applies
