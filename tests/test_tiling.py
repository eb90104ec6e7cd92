"""Tiled fusion: exact where the start is (the loop and the base layer read only within
their halo), seamless with the DT-CWT start, chosen by the memory budget."""
import numpy as np
import pytest

from conftest import EXAMPLES
from semfuse_rt.engine.fuser import Fuser
from semfuse_rt.engine.images import load_image
from semfuse_rt.engine.metrics import qabf, to_luma_255
from semfuse_rt.engine.tiling import OVERLAP, halo, plan_tiles, receptive_radius


def test_tiles_cover_the_image_with_cross_fades_that_sum_to_one():
    height, width = 100, 130
    tiles = plan_tiles(height, width, core=48, margin=10, grid=4)
    weight = np.zeros((height, width))
    for tile in tiles:
        y0, y1, x0, x1 = tile.core
        c0, c1, d0, d1 = tile.crop
        assert c0 <= y0 and y1 <= c1 and d0 <= x0 and x1 <= d1 and c0 % 4 == 0 and d0 % 4 == 0
        weight[y0:y1, x0:x1] += tile.weights(height, width)
    assert weight.min() > 0.99 and weight.max() < 1.01


def test_halo_follows_the_receptive_field_and_the_steps():
    assert receptive_radius("relu1_1") == (1, 1) and receptive_radius("pool1")[1] == 2
    assert halo("relu1_1", 10, 8.0) - halo("relu1_1", 0, 8.0) == 20
    assert halo("relu1_2", 10, 0.0) > halo("relu1_1", 10, 0.0)


@pytest.mark.parametrize("backend", ["ort", "torch"])
@pytest.mark.parametrize("shape", [(150, 205, 3), (97, 130)])
def test_tiled_optimisation_is_the_whole_one(random_vgg_weights, rng, backend, shape):
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2)]
    options = dict(backend=backend, weights=random_vgg_weights, init="mean", steps=3)
    with Fuser(**options) as whole, Fuser(tile=64, **options) as tiled:
        want, got = whole(images), tiled(images)
    assert got.tiles > 1 and got.image.shape == shape
    assert np.abs(want.image.astype(int) - got.image).max() <= 1


def test_the_dtcwt_start_in_tiles_shows_no_seam(vgg_weights):
    a, b = (load_image(EXAMPLES / f"lytro-01-{side}.jpg")[100:300, 60:320] for side in "AB")
    with Fuser(backend="ort", weights=vgg_weights) as whole, Fuser(backend="ort", weights=vgg_weights,
                                                                   tile=96) as tiled:
        want, got = whole([a, b]), tiled([a, b])
    sources = [to_luma_255(a), to_luma_255(b)]
    assert abs(qabf(sources, to_luma_255(got.image)) - qabf(sources, to_luma_255(want.image))) <= 0.002
    # Across the tiles' seams the image changes no more than it does in the whole-image fuse.
    seams = [x for x in range(96, a.shape[1], 96)]

    def step(image):
        luma = to_luma_255(image)
        return np.mean([np.abs(luma[:, x - OVERLAP // 2:x + OVERLAP // 2 + 1].astype(float)).std() for x in seams])

    assert np.abs(got.image.astype(int) - want.image).mean() < 1.0
    assert step(got.image) <= step(want.image) * 1.05


def test_the_budget_chooses_tiles_and_refuses_what_cannot_fit(random_vgg_weights):
    from semfuse_rt.engine import memory_budget
    from semfuse_rt.errors import SemfuseError

    options = dict(backend="ort", weights=random_vgg_weights)
    need = memory_budget.estimated_peak_bytes(2, 600, 800)
    tiles = Fuser(memory_budget=need // 2, **options).tiles(2, 600, 800)
    assert tiles is not None and len(tiles) >= 2
    room = memory_budget.tile_room(2, 600, 800, need // 2)
    assert all((t.crop[1] - t.crop[0]) * (t.crop[3] - t.crop[2]) <= room for t in tiles)
    assert Fuser(memory_budget=need, **options).tiles(2, 600, 800) is None
    with pytest.raises(SemfuseError, match="over the memory budget .* no room for a tile either"):
        Fuser(memory_budget=memory_budget.FIXED_BYTES + 2**20, **options).tiles(2, 600, 800)
    with pytest.raises(SemfuseError, match="over the memory budget"):
        Fuser("cam-max", memory_budget=need // 2, **options).tiles(2, 600, 800)  # CAMs are whole-image


def test_tile_option_is_checked(random_vgg_weights):
    from semfuse_rt.errors import SemfuseError

    with pytest.raises(SemfuseError, match="--tile must be a whole number of at least 64"):
        Fuser(weights=random_vgg_weights, tile=10)
    with pytest.raises(SemfuseError, match="--tile does not apply to cam-max"):
        Fuser("cam-max", weights=random_vgg_weights, tile=128)


def test_tiled_optimisation_is_the_whole_one_at_a_pooled_layer(random_vgg_weights, rng):
    images = [rng.integers(0, 256, (90, 118, 3), dtype=np.uint8) for _ in range(2)]
    options = dict(backend="ort", weights=random_vgg_weights, init="mean", steps=2, layer="relu2_1", mean_base=0)
    with Fuser(**options) as whole, Fuser(tile=64, **options) as tiled:
        want, got = whole(images), tiled(images)
    assert got.tiles > 1 and np.abs(want.image.astype(int) - got.image).max() <= 1
