"""Inputs spilled to disk: crops read back exactly, files removed, and a spilled fuse is the
in-memory one."""
import numpy as np
import pytest

from semfuse_rt.engine.io.spilled_images import SpilledImage, spill_folder


@pytest.mark.parametrize("shape, dtype", [((37, 53, 3), np.uint8), ((40, 31), np.uint16)])
def test_crops_read_back_what_was_spilled(rng, shape, dtype):
    array = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    with spill_folder() as folder:
        spilled = SpilledImage(array, folder)
        assert (spilled.shape, spilled.dtype, spilled.ndim) == (array.shape, array.dtype, array.ndim)
        for rows, columns in [(slice(0, 10), slice(5, 20)), (slice(30, None), slice(None)), (slice(None), slice(52, 53))]:
            crop = spilled[rows, columns]
            assert crop.flags.writeable and np.array_equal(crop, array[rows, columns])
        assert np.array_equal(np.asarray(spilled), array)
        assert spilled.path.exists() and spilled.path.parent == folder
    assert not folder.exists()


def test_a_spilled_fuse_is_the_in_memory_one(monkeypatch, tmp_path, rng, random_vgg_weights):
    from semfuse_rt.engine.fuse import file_fusion
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.io.images import load_image, save_image

    paths = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)) for n in "abc"]
    kinds = []
    decoded = file_fusion._decoded
    monkeypatch.setattr(file_fusion, "_decoded", lambda *a: kinds.append(type(out := decoded(*a))) or out)
    options = dict(backend="ort", weights=random_vgg_weights, steps=2, tile=64, init="mean")
    # 3 inputs of 150 x 230 decoded would take over a quarter of a 1 MB budget: spilled.
    Fuser(memory_budget="1M", **options).fuse_files(paths, tmp_path / "spilled.png")
    assert kinds == [SpilledImage] * 3
    Fuser(**options).fuse_files(paths, tmp_path / "in-memory.png")
    assert kinds[3:] == [np.ndarray] * 3
    assert np.array_equal(load_image(tmp_path / "spilled.png"), load_image(tmp_path / "in-memory.png"))


@pytest.mark.parametrize("preset", ["refined", "blend"], ids=["optimised", "start alone"])
def test_a_stack_that_only_fits_spilled_is_spilled_not_refused(monkeypatch, tmp_path, rng, random_vgg_weights,
                                                                preset):
    """Where the decoded stack would leave no room for a tile in memory, fuse_files spills it
    rather than refusing (sizes scaled down: no fixed overhead, 3000 bytes a decoded pixel).
    The default preset's start-only fuse hands such a stack to the Fuser's tiles, spilled."""
    from semfuse_rt.engine.api import make_fuser
    from semfuse_rt.engine.fuse import FuseOptions
    from semfuse_rt.engine.limits import memory_budget
    from semfuse_rt.engine.io.images import load_image, save_image

    monkeypatch.setattr(memory_budget, "FIXED_BYTES", 0)
    monkeypatch.setattr(memory_budget, "DECODED_BYTES_PER_PIXEL", 3000)
    paths = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (300, 460), dtype=np.uint8)) for n in "abc"]
    budget = 120 * 10**6  # under the 186 MB the whole image needs; room for crops of about 290^2 spilled
    optimised = dict(backend="ort", weights=random_vgg_weights, steps=1, init="mean", mean_base=0)
    fuser = make_fuser(FuseOptions(preset=preset, memory_budget=budget, **(optimised if preset == "refined" else {})))
    assert memory_budget.tile_room(3, 300, 460, budget) == 0 and fuser.spills(3, 300, 460)
    result = fuser.fuse_files(paths, tmp_path / "out.png")
    assert result.tiles > 1 and load_image(tmp_path / "out.png").shape == (300, 460)
