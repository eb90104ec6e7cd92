"""The memory pre-check: sizes from headers, refused in one line before any work."""
import re

import numpy as np
import pytest

from semfuse_rt.engine.limits.memory_budget import (FIXED_BYTES, FURTHER_INPUT_BYTES_PER_PIXEL, STREAMED_BYTES_PER_PIXEL,
                                             budget_problem, estimated_peak_bytes, parse_size, spill_inputs,
                                             tile_room)
from semfuse_rt.errors import SemfuseError


def test_sizes_parse_and_bad_ones_are_one_line():
    assert parse_size("8G") == 8 * 2**30 and parse_size("500M") == 500 * 2**20 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size(4096) == 4096
    for bad in ("", "9x", "-1G", "0"):
        with pytest.raises(SemfuseError, match="--memory-budget"):
            parse_size(bad)


def test_estimate_grows_with_inputs_and_pixels_and_is_checked_against_the_budget():
    assert estimated_peak_bytes(2, 1000, 1500) == FIXED_BYTES + STREAMED_BYTES_PER_PIXEL * 1_500_000
    assert estimated_peak_bytes(4, 1000, 1500) - estimated_peak_bytes(2, 1000, 1500) == \
        2 * FURTHER_INPUT_BYTES_PER_PIXEL * 1_500_000
    assert budget_problem(2, 100, 100, estimated_peak_bytes(2, 100, 100)) is None
    assert re.fullmatch(r"fusing 3 images of 1500x1000 needs about .* GiB, over the memory budget of 1.0 GiB "
                        r"\(--memory-budget\)", budget_problem(3, 1000, 1500, 2**30))
    assert estimated_peak_bytes(5, 100, 100) < estimated_peak_bytes(5, 100, 100, streamed=False)


def test_the_default_budget_is_a_share_of_what_is_available(monkeypatch):
    from semfuse_rt.engine.limits import memory_budget

    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 2 * 2**30)
    assert budget_problem(2, 700, 700) is None
    assert "80% of the 2.0 GiB available; set --memory-budget" in budget_problem(2, 4000, 3000)
    # Plenty available: the default stops at its ceiling, which a 24 MP pair does not fit whole.
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 100 * 2**30)
    assert "budget of 3.0 GiB (the default of 3.0 GiB; set --memory-budget" in budget_problem(2, 4000, 6000)
    # The ceiling sizes tiles; the semantic methods cannot be tiled, so it does not refuse them
    # (cam-max on three 1 MP inputs needs about 6.4 GiB).
    assert budget_problem(3, 1024, 1024) is None and budget_problem(3, 1024, 1024, streamed=False) is None
    assert "80% of the 100.0 GiB available" in budget_problem(3, 4000, 6000, streamed=False)
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: None)
    assert budget_problem(2, 4000, 3000) is None  # unknown: no guess


def test_long_stacks_of_large_frames_are_spilled_and_leave_the_tiles_their_room():
    budget = 3 * 2**30
    assert not spill_inputs(2, 4000, 6000, budget)  # 2 x 24 MP: 0.3 GB decoded stays in memory
    assert spill_inputs(16, 4000, 6000, budget)
    in_memory, spilled = tile_room(16, 4000, 6000, budget), tile_room(16, 4000, 6000, budget, spilled=True)
    assert in_memory == 0 < spilled  # held in memory, 16 decoded frames would leave no room at all
    assert tile_room(2, 4000, 6000, budget) >= 1_500_000  # crops of at least 1.5 MP for a pair


def test_fuse_files_refuses_before_decoding(monkeypatch, tmp_path, rng, random_vgg_weights):
    from semfuse_rt.engine.fuse import file_fusion
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.engine.io.images import save_image

    paths = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)) for n in "ab"]
    decoded = []
    monkeypatch.setattr(file_fusion, "load_image", lambda *args: decoded.append(args))
    with pytest.raises(SemfuseError, match="2 images of 80x64 needs about"):
        Fuser(weights=random_vgg_weights, memory_budget="1M").fuse_files(paths, tmp_path / "out.png")
    assert decoded == [] and not (tmp_path / "out.png").exists()


def test_on_a_gpu_the_default_budget_is_a_share_of_its_free_memory(monkeypatch):
    from semfuse_rt.engine.limits import memory_budget

    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 100 * 2**30)
    monkeypatch.setattr(memory_budget, "free_device_bytes", lambda: 2 * 2**30)
    assert budget_problem(2, 700, 700) is None
    assert "80% of the 2.0 GiB free on the GPU" in budget_problem(2, 2000, 1500, on_gpu=True)
    assert tile_room(2, 4000, 6000, on_gpu=True) < tile_room(2, 4000, 6000)
