"""End-to-end fusion with the real VGG19 on the Torch backend (the reference)."""
import numpy as np
import pytest

from conftest import dataset
from semfuse_rt.engine.api import fuse, fuse_result
from semfuse_rt.engine.io.colour import to_luma_255
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.metrics.metrics import qabf


def crop(image, size=192):
    y = (image.shape[0] - size) // 2
    x = (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[y:y + size, x:x + size])


@pytest.mark.slow
@pytest.mark.parametrize("preset, loss_ratio", [("paper", 0.5), ("refined", 0.9), ("fast", 0.9)])
def test_max_beats_the_plain_average_on_a_multifocus_pair(vgg_weights, preset, loss_ratio):
    folder = dataset("multifocus")
    a, b = (crop(load_image(folder / f"lytro-05-{s}.jpg")) for s in "AB")
    result = fuse_result([a, b], "max", preset=preset, weights=vgg_weights, backend="torch")
    average = np.rint((a.astype(float) + b) / 2).astype(np.uint8)
    assert result.image.shape == a.shape and result.image.dtype == np.uint8
    sources = [to_luma_255(a), to_luma_255(b)]
    fused_score = qabf(sources, to_luma_255(result.image))
    average_score = qabf(sources, to_luma_255(average))
    assert fused_score > average_score + 0.05, (fused_score, average_score)
    assert result.relative_loss < loss_ratio


def test_same_inputs_and_options_give_the_same_output(vgg_weights, rng):
    a = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    first = fuse([a, b], "majority", steps=5, weights=vgg_weights, backend="torch")
    second = fuse([a, b], "majority", steps=5, weights=vgg_weights, backend="torch")
    assert np.array_equal(first, second)


@pytest.mark.parametrize("method", ["max", "majority"])
def test_three_grey_16_bit_inputs_give_a_grey_16_bit_result(vgg_weights, rng, method):
    images = [rng.integers(0, 65536, (20, 22), dtype=np.uint16) for _ in range(3)]
    out = fuse(images, method, steps=3, weights=vgg_weights, layer="relu1_2", backend="torch")
    assert out.shape == (20, 22) and out.dtype == np.uint16


def test_mixed_grey_and_colour_gives_colour(vgg_weights, rng):
    grey = rng.integers(0, 256, (20, 22), dtype=np.uint8)
    colour = rng.integers(0, 256, (20, 22, 3), dtype=np.uint8)
    out = fuse([grey, colour], steps=2, weights=vgg_weights, backend="torch")
    assert out.shape == (20, 22, 3)


def test_zero_steps_returns_the_initial_image(vgg_weights, rng):
    a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    b = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    out = fuse([a, b], preset="paper", steps=0, weights=vgg_weights, backend="torch")
    assert np.abs(out - (a.astype(float) + b) / 2).max() <= 0.5
    out = fuse([a, b], preset="paper", steps=0, init="max", weights=vgg_weights, backend="torch")
    assert np.array_equal(out, np.maximum(a, b))


def test_deeper_layers_are_accepted(vgg_weights, rng):
    a = rng.integers(0, 256, (18, 18, 3), dtype=np.uint8)
    out = fuse([a, a[::-1].copy()], layer="relu2_1", steps=2, weights=vgg_weights, backend="torch")
    assert out.shape == a.shape


def test_dtcwt_initialisation_is_the_dtcwt_fusion(vgg_weights, rng):
    from semfuse_rt.engine.evaluation.baselines import fuse_baseline

    a = rng.integers(0, 256, (32, 36), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 36), dtype=np.uint8)
    out = fuse([a, b], steps=0, init="dtcwt", mean_base=0, weights=vgg_weights, backend="torch")
    assert np.abs(out.astype(int) - fuse_baseline([a, b], "dtcwt")).max() <= 1


def test_mean_base_takes_the_inputs_mean_base_layer(vgg_weights, rng):
    from support.base_layer_reference import gaussian_base

    a = np.full((40, 40), 40, np.uint8)
    b = np.full((40, 40), 200, np.uint8)
    a[10:30, 10:30] = rng.integers(0, 256, (20, 20))
    out = fuse([a, b], steps=0, init="max", mean_base=6.0, semantic_steps=0, weights=vgg_weights, backend="torch")
    mean = (a.astype(np.float32) + b) / 2
    # Starting from max(a, b) with zero steps, the result is max - base(max) + base(mean).
    start = np.maximum(a, b).astype(np.float32)
    want = start - gaussian_base(start[None], 6.0)[0] + gaussian_base(mean[None], 6.0)[0]
    assert np.abs(out - np.clip(np.rint(want), 0, 255)).max() <= 1
    flat = fuse([np.full((24, 24), 40, np.uint8), np.full((24, 24), 200, np.uint8)],
                steps=0, init="max", mean_base=4.0, semantic_steps=0, weights=vgg_weights, backend="torch")
    assert np.abs(flat.astype(int) - 120).max() <= 1  # flat inputs: the base layer is everything


def test_presets_fill_only_what_is_not_given():
    from semfuse_rt.errors import SemfuseError
    from semfuse_rt.engine.fuse.presets import resolve_preset

    assert resolve_preset("paper") == {"init": "mean", "steps": 100, "lr": 1.0, "decay": "constant", "mean_base": 0.0,
                                       "semantic_steps": 0}
    refined = resolve_preset("refined", steps=7, lr=None)
    assert refined["steps"] == 7 and refined["lr"] == 0.15 and refined["init"] == "dtcwt-verified"
    assert refined["decay"] == "cosine"
    with pytest.raises(SemfuseError, match="unknown preset"):
        resolve_preset("fastest")
