"""The memory pre-check: sizes from headers, refused in one line before any work."""
import re

import numpy as np
import pytest

from semfuse_rt.engine.memory_budget import (BYTES_PER_INPUT_PIXEL, FIXED_BYTES, budget_problem,
                                             estimated_peak_bytes, parse_size)
from semfuse_rt.errors import SemfuseError


def test_sizes_parse_and_bad_ones_are_one_line():
    assert parse_size("8G") == 8 * 2**30 and parse_size("500M") == 500 * 2**20 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size(4096) == 4096
    for bad in ("", "9x", "-1G", "0"):
        with pytest.raises(SemfuseError, match="--memory-budget"):
            parse_size(bad)


def test_estimate_grows_with_inputs_and_pixels_and_is_checked_against_the_budget():
    assert estimated_peak_bytes(2, 1000, 1500) == FIXED_BYTES + BYTES_PER_INPUT_PIXEL * 3_000_000
    assert budget_problem(2, 100, 100, estimated_peak_bytes(2, 100, 100)) is None
    assert re.fullmatch(r"fusing 3 images of 1500x1000 needs about .* GiB, over the memory budget of 1.0 GiB "
                        r"\(--memory-budget\)", budget_problem(3, 1000, 1500, 2**30))
    assert estimated_peak_bytes(5, 100, 100) < estimated_peak_bytes(5, 100, 100, streamed=False)


def test_the_default_budget_is_a_share_of_what_is_available(monkeypatch):
    from semfuse_rt.engine import memory_budget

    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 10 * 2**30)
    assert budget_problem(2, 700, 700) is None
    assert "80% of the 10.0 GiB available; set --memory-budget" in budget_problem(2, 4000, 3000)
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: None)
    assert budget_problem(2, 4000, 3000) is None  # unknown: no guess


def test_fuse_files_refuses_before_decoding(monkeypatch, tmp_path, rng, random_vgg_weights):
    from semfuse_rt.engine import fuser as fuser_module
    from semfuse_rt.engine.fuser import Fuser
    from semfuse_rt.engine.images import save_image

    paths = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)) for n in "ab"]
    decoded = []
    monkeypatch.setattr(fuser_module, "load_image", lambda *args: decoded.append(args))
    with pytest.raises(SemfuseError, match="2 images of 80x64 needs about"):
        Fuser(weights=random_vgg_weights, memory_budget="1M").fuse_files(paths, tmp_path / "out.png")
    assert decoded == [] and not (tmp_path / "out.png").exists()
