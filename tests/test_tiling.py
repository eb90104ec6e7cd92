"""Tiled fusion: exact where the start is (the loop and the base layer read only within
their halo), seamless with the DT-CWT start, chosen by the memory budget."""
import numpy as np
import pytest

from conftest import EXAMPLES
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.metrics.metrics import qabf, to_luma_255
from semfuse_rt.engine.large.tiling import OVERLAP, halo, plan_tiles, receptive_radius


def test_tiles_cover_the_image_with_cross_fades_that_sum_to_one():
    height, width = 100, 130
    tiles = plan_tiles(height, width, core=48, margin=10, grid=4)
    weight = np.zeros((height, width))
    for tile in tiles:
        y0, y1, x0, x1 = tile.core
        c0, c1, d0, d1 = tile.crop
        assert c0 <= y0 and y1 <= c1 and d0 <= x0 and x1 <= d1 and c0 % 4 == 0 and d0 % 4 == 0
        weight[y0:y1, x0:x1] += tile.weights(height, width)
    assert np.abs(weight - 1).max() < 1e-6  # the fuser relies on it: it does not divide by the sum


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


def test_the_dtcwt_start_in_tiles_scores_as_the_whole_one(vgg_weights):
    a, b = (load_image(EXAMPLES / f"lytro-01-{side}.jpg")[100:300, 60:320] for side in "AB")
    with Fuser(backend="ort", weights=vgg_weights) as whole, Fuser(backend="ort", weights=vgg_weights,
                                                                   tile=96) as tiled:
        want, got = whole([a, b]), tiled([a, b])
    sources = [to_luma_255(a), to_luma_255(b)]
    assert abs(qabf(sources, to_luma_255(got.image)) - qabf(sources, to_luma_255(want.image))) <= 0.002
    assert np.abs(got.image.astype(int) - want.image).mean() < 1.0


def test_tiles_that_disagree_are_cross_faded_not_cut(monkeypatch, random_vgg_weights, rng):
    """Each tile returns a flat image of its own level: where two meet, the result must ramp
    from one level to the other over the overlap, never jump."""
    levels = iter(range(40, 220, 15))  # 12 tiles: 3 rows of 4

    def flat_tile(self, planes, cams, progress, clock, warm_start=None, tiled=False):
        return np.full((3, *planes.shape[2:]), float(next(levels)), np.float32), [0.0] * self.schedule.steps

    monkeypatch.setattr(Fuser, "_fuse_planes", flat_tile)
    images = [rng.integers(0, 256, (150, 230), dtype=np.uint8) for _ in range(2)]
    fused = Fuser(weights=random_vgg_weights, tile=64)(images).image.astype(float)
    # Tiles are numbered row by row: a horizontal neighbour is 15 levels away, a vertical one 60.
    assert np.abs(np.diff(fused, axis=1)).max() <= 15 / OVERLAP + 1
    assert np.abs(np.diff(fused, axis=0)).max() <= 60 / OVERLAP + 1
    assert fused.min() == 40 and fused.max() == 40 + 15 * 11


def test_the_budget_chooses_tiles_and_refuses_what_cannot_fit(random_vgg_weights):
    from semfuse_rt.engine.limits import memory_budget
    from semfuse_rt.errors import SemfuseError

    options = dict(backend="ort", weights=random_vgg_weights)
    need = memory_budget.estimated_peak_bytes(2, 600, 800)
    half = memory_budget.FIXED_BYTES + (need - memory_budget.FIXED_BYTES) // 2
    tiles = Fuser(memory_budget=half, **options).tiles(2, 600, 800)
    assert tiles is not None and len(tiles) >= 2
    room = memory_budget.tile_room(2, 600, 800, half)
    assert all((t.crop[1] - t.crop[0]) * (t.crop[3] - t.crop[2]) <= room for t in tiles)
    assert Fuser(memory_budget=need, **options).tiles(2, 600, 800) is None
    with pytest.raises(SemfuseError, match="over the memory budget .* no room for a tile either"):
        Fuser(memory_budget=memory_budget.FIXED_BYTES + 2**20, **options).tiles(2, 600, 800)
    # The semantic methods stack the inputs' features in each crop and hold whole-image CAMs.
    need = memory_budget.estimated_peak_bytes(2, 600, 800, streamed=False)
    half = memory_budget.FIXED_BYTES + (need - memory_budget.FIXED_BYTES) // 2
    tiles = Fuser("cam-max", memory_budget=half, **options).tiles(2, 600, 800)
    room = memory_budget.tile_room(2, 600, 800, half, streamed=False)
    assert tiles is not None and all((t.crop[1] - t.crop[0]) * (t.crop[3] - t.crop[2]) <= room for t in tiles)
    with pytest.raises(SemfuseError, match="over the memory budget"):
        Fuser("cam", memory_budget=memory_budget.FIXED_BYTES).tiles(2, 600, 800)


def test_tile_option_is_checked(random_vgg_weights):
    from semfuse_rt.errors import SemfuseError

    with pytest.raises(SemfuseError, match="--tile must be a whole number of at least 64"):
        Fuser(weights=random_vgg_weights, tile=10)
    with pytest.raises(SemfuseError, match="--tile applies to .* only, not cam: it weights the pixels directly"):
        Fuser("cam", tile=128)


def test_tiled_optimisation_is_the_whole_one_at_a_pooled_layer(random_vgg_weights, rng):
    images = [rng.integers(0, 256, (90, 118, 3), dtype=np.uint8) for _ in range(2)]
    options = dict(backend="ort", weights=random_vgg_weights, init="mean", steps=2, layer="relu2_1", mean_base=0)
    with Fuser(**options) as whole, Fuser(tile=64, **options) as tiled:
        want, got = whole(images), tiled(images)
    assert got.tiles > 1 and np.abs(want.image.astype(int) - got.image).max() <= 1


@pytest.mark.parametrize("method,layer,shape", [("cam-max", "relu1_1", (90, 118, 3)),
                                                ("cam-majority", "relu2_1", (170, 230, 3))])
def test_tiled_semantic_fuses_weight_each_crop_by_the_whole_images_cams(monkeypatch, random_vgg_weights, rng,
                                                                       method, layer, shape):
    """The CAMs come from the whole images; each tile's rule takes their crop, so the tiled
    optimisation is the whole one (as for the other methods, from the mean start). The maps
    here are a coarse checkerboard, each input's the other's inverse, so that a crop taken
    from the wrong place would choose the wrong input."""
    import torch

    from semfuse_rt.engine.fuse import fuser as fuser_module
    from semfuse_rt.engine.semantic.cam_maps import CAMResult, combine_layer_maps

    board = torch.from_numpy(np.indices((6, 8)).sum(axis=0) % 2).float()
    layer_maps = [torch.stack([board, 1 - board])[:, None]]  # (K, 1 class, 6, 8)
    weights = torch.ones(2, 1)

    def checkerboard_cams(_classifier, images, _classes, extractor=None):
        size = images[0].shape[:2]
        return CAMResult(combine_layer_maps(layer_maps, weights, size), layer_maps, torch.zeros(2, 1000),
                         torch.zeros(2, 1, dtype=torch.long), weights)

    monkeypatch.setattr(fuser_module, "input_cams", checkerboard_cams)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2)]
    # Large steps, so that the target, and so the weights, move the image by tens of levels.
    options = dict(backend="ort", weights=random_vgg_weights, init="mean", steps=2, lr=20.0, layer=layer,
                   mean_base=0)
    with Fuser(method, **options) as whole, Fuser(method, tile=64, **options) as tiled:
        want, got = whole(images), tiled(images)
        crops = [tile.crop for tile in tiled.tiles(2, *shape[:2])]
    assert got.tiles > 1 and np.array_equal(got.cams, want.cams)
    assert any(y0 > 0 or x0 > 0 for y0, _, x0, _ in crops)  # crops that are not the image's corner
    assert np.abs(want.image.astype(int) - got.image).max() <= 1


def test_the_halo_share_is_the_pixels_fused_beyond_the_image():
    from semfuse_rt.engine.fuse.fusion_result import FusionResult
    from semfuse_rt.engine.large.tiling import Tile, halo_share

    top, bottom = Tile((0, 60, 0, 100), (0, 50, 0, 100)), Tile((40, 100, 0, 100), (50, 100, 0, 100))
    assert halo_share([top, bottom], 100, 100) == pytest.approx(2000 / 12000)
    assert halo_share([Tile((0, 100, 0, 100), (0, 100, 0, 100))], 100, 100) == 0.0
    result = FusionResult(np.zeros((100, 100), np.uint8), "max", "ort", "blend-steps", 1.0, tiles=2,
                          halo_share=halo_share([top, bottom], 100, 100))
    assert "in 2 tiles (halos 17% of the pixels fused)" in result.summary(2)
