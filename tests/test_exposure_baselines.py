"""Mertens exposure fusion and enfuse as eval baselines (enfuse only where it is installed)."""
import numpy as np
import pytest

from conftest import dataset
from semfuse_rt.engine.evaluation.baselines import fuse_baseline, is_baseline
from semfuse_rt.engine.evaluation.exposure_baselines import enfuse_binary
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.errors import SemfuseError

needs_enfuse = pytest.mark.skipif(enfuse_binary() is None, reason="enfuse is not installed (apt-get install enfuse)")


def exposures(rng, shape):
    """One scene under three exposures: clipped shadows in the dark one, highlights in the bright one."""
    scene = rng.uniform(0, 1, shape) ** 2
    return [np.clip(np.rint(scene * gain * 255), 0, 255).astype(np.uint8) for gain in (0.4, 1.0, 2.5)]


@pytest.mark.parametrize("method, options", [("mertens", {}), pytest.param("enfuse", {}, marks=needs_enfuse),
                                             pytest.param("enfuse", {"recipe": "focus"}, marks=needs_enfuse)])
@pytest.mark.parametrize("shape", [(40, 52, 3), (33, 27)])
def test_modes_and_a_result_between_the_exposures(rng, method, options, shape):
    stack = exposures(rng, shape)
    fused = fuse_baseline(stack, method, **options)
    assert fused.shape == shape and fused.dtype == np.uint8 and is_baseline(method)
    means = [float(image.mean()) for image in stack]
    assert means[0] < fused.mean() < means[-1]


@needs_enfuse
def test_enfuse_focus_recipe_keeps_the_sharp_halves(rng):
    texture = rng.uniform(0, 255, (48, 64))
    a, b = np.full((48, 64), 128.0), np.full((48, 64), 128.0)
    a[:, :32], b[:, 32:] = texture[:, :32], texture[:, 32:]
    a, b = (np.rint(x).astype(np.uint8) for x in (a, b))
    fused = fuse_baseline([a, b], "enfuse", recipe="focus").astype(float)
    assert np.abs(fused[:, 4:28] - a[:, 4:28]).mean() < 8 and np.abs(fused[:, 36:60] - b[:, 36:60]).mean() < 8


def test_unknown_options_are_user_errors(rng):
    stack = exposures(rng, (16, 16, 3))
    with pytest.raises(SemfuseError, match="mertens"):
        fuse_baseline(stack, "mertens", sharpness=2)
    with pytest.raises(SemfuseError, match="recipe"):
        fuse_baseline(stack, "enfuse", recipe="hdr")


def test_mertens_on_a_shared_exposure_set():
    folder = dataset("multiexposure", "door")
    stack = [load_image(p) for p in sorted(folder.iterdir())]
    fused = fuse_baseline(stack, "mertens")
    assert fused.shape == stack[0].shape and 40 < fused.mean() < 215
