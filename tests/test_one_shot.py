"""The one-shot fuse (issue 31, item 6): a fuse that is its start image alone (no steps, no
semantic phase, no base layer) runs as engine/fuse/start_only.py's, which imports neither torch
nor onnxruntime and loads no weights, and gives the image that the Fuser and the torch start
give; everything else is still the Fuser's. Imports are checked in a fresh interpreter per
command line, through `main()` as the console script runs it (tests/test_import_cost.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from semfuse_rt.engine import api
from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.io.images import load_image, save_image
from semfuse_rt.engine.start.initialisation import STARTS
from semfuse_rt.engine.limits.memory_budget import FIXED_BYTES, STREAMED_BYTES_PER_PIXEL
from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET, PRESETS
from semfuse_rt.engine.io.sources import finish, prepare
from semfuse_rt.engine.fuse.fuse_options import FuseOptions
from semfuse_rt.engine.fuse.start_only import START_ONLY_OPTIONS, StartOnlyFuser, start_only_fuser
from semfuse_rt.errors import SemfuseError

from conftest import run_main
from test_import_cost import run_probe

CPU_STARTS = [name for name, start in STARTS.items() if start.cpu_image is not None]
DEFAULT_START = PRESETS[DEFAULT_PRESET].init
default_has_cpu_start = pytest.mark.skipif(
    STARTS[DEFAULT_START].cpu_image is None,
    reason=f"the default start {DEFAULT_START} has no CPU form yet: the default fuse is still the Fuser's")


def _images(rng, mode: str, shape=(37, 52)) -> list[np.ndarray]:
    """Two fresh registered inputs: colour 8-bit, grey 16-bit, or one grey and one colour."""
    if mode == "colour":
        return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
    if mode == "grey16":
        return [rng.integers(0, 65536, shape, dtype=np.uint16) for _ in range(2)]
    return [rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, (*shape, 3), dtype=np.uint8)]


@pytest.fixture
def pair_files(tmp_path, rng):
    return [save_image(tmp_path / f"{name}.png", image) for name, image in zip("ab", _images(rng, "colour"))]


# --------------------------------------------------------------------------- which fuser

@pytest.mark.parametrize("init", CPU_STARTS)
def test_a_fuse_of_the_start_alone_is_the_start_only_fuse(init):
    assert isinstance(api.make_fuser(init=init, steps=0), StartOnlyFuser)
    assert isinstance(api.make_fuser("max", init=init, steps=0, lr=0.5, decay="constant", mean_base=0,
                                     semantic_steps=0, memory_budget="2G", show_progress=False), StartOnlyFuser)


@pytest.mark.parametrize("options", [
    dict(steps=2), dict(preset="blend-steps"), dict(preset="paper"), dict(steps=0, mean_base=4.0),
    dict(steps=0, semantic_steps=1), dict(steps=0, init="dtcwt"), dict(steps=0, init="max", backend="ort"),
    dict(steps=0, init="max", layer="relu2_1"), dict(steps=0, init="max", tile=64),
    dict(steps=0, init="max", threads=1),  # a backend loader's option
], ids=repr)
def test_everything_else_is_the_fusers(options):
    assert start_only_fuser(FuseOptions.from_keywords(method="max", **options)) is None
    assert isinstance(api.make_fuser(**options), Fuser)


@default_has_cpu_start
def test_the_default_fuse_is_the_start_only_fuse():
    assert isinstance(api.make_fuser(), StartOnlyFuser)
    assert START_ONLY_OPTIONS <= {"preset", "steps", "lr", "decay", "init", "mean_base", "semantic_steps",
                                  "memory_budget", "show_progress"}


@pytest.mark.parametrize("method, options", [
    ("max", dict(init="bogus")), ("max", dict(preset="bogus")), ("max", dict(steps=0, init="max", lr=0)),
    ("max", dict(steps=0, init="max", decay="bogus")), ("max", dict(steps=-1, init="max")),
    ("max", dict(steps=0, init="max", mean_base=-1.0)), ("max", dict(steps=0, init="max", memory_budget="lots")),
    ("max", dict(steps=0, init="max", window=3)), ("majority", dict(steps=0, init="max")),
    ("bogus", dict(steps=0, init="max")), ("max", dict(steps=0, init="max", stepz=3)),
], ids=repr)
def test_a_wrong_option_is_the_error_the_fuser_gives(method, options):
    with pytest.raises(SemfuseError) as fuser_error:
        Fuser(method, **options)
    with pytest.raises(SemfuseError) as error:
        api.make_fuser(method, **options)
    assert str(error.value) == str(fuser_error.value)


# --------------------------------------------------------------------------- the same image

@pytest.mark.parametrize("mode", ["colour", "grey16", "mixed"])
@pytest.mark.parametrize("init", CPU_STARTS)
def test_the_start_only_fuse_is_the_torch_start_finished(rng, init, mode):
    """Against the reference: the torch start (Start.image) of the same pixels, finished.
    The mean and the maximum are exact; other starts within one grey level (float32)."""
    images = _images(rng, mode)
    result = api.fuse_result(images, init=init, steps=0)
    sources = prepare(images)
    expected = finish(STARTS[init].image(torch.from_numpy(sources.pixels))[0].numpy(), sources)
    assert result.image.dtype == expected.dtype and result.image.shape == expected.shape
    difference = np.abs(result.image.astype(np.int64) - expected.astype(np.int64))
    tolerance = 0 if init in ("mean", "max") else 257 if mode == "grey16" else 1
    assert difference.max() <= tolerance, (init, mode, difference.max())
    assert (result.backend, result.preset, result.losses, result.tiles) == (None, DEFAULT_PRESET, [], 1)
    assert list(result.stages) == ["prepare", "start", "finish"]


@pytest.mark.parametrize("backend", ["torch", "ort"])
@pytest.mark.parametrize("init", CPU_STARTS)
def test_the_fusers_start_alone_is_the_start_only_fuse(rng, random_vgg_weights, init, backend):
    """The Fuser's steps-0 path runs the same start code: the same bytes on every backend."""
    images = _images(rng, "colour")
    start_only = api.fuse_result(images, init=init, steps=0)
    with Fuser(init=init, steps=0, backend=backend, weights=random_vgg_weights) as fuser:
        fused = fuser(images)
    assert np.array_equal(fused.image, start_only.image)
    assert fused.backend == backend and fused.losses == []


def test_too_large_for_the_budget_is_tiled_by_the_fuser(monkeypatch, rng, random_vgg_weights):
    """A size whose whole start the memory model refuses goes to the Fuser's tiles; the
    maximum is per pixel, so the tiles give the whole image's bytes. (The start-only model
    is made as costly per pixel as the Fuser's here: its own real cost, far below the
    Fuser's, lets every size the Fuser could tile at a test's speed run whole.)"""
    from semfuse_rt.engine.fuse import fuser as fuser_module
    from semfuse_rt.engine.limits import memory_budget

    monkeypatch.setattr(fuser_module, "load_vgg19", lambda *_args, **_kwargs: random_vgg_weights)
    monkeypatch.setattr(memory_budget, "START_ONLY_FIXED_BYTES", FIXED_BYTES)
    monkeypatch.setattr(memory_budget, "START_ONLY_BYTES_PER_PIXEL", STREAMED_BYTES_PER_PIXEL)
    images = _images(rng, "colour", (300, 400))
    budget = FIXED_BYTES + STREAMED_BYTES_PER_PIXEL * 300 * 400 // 2
    whole = api.fuse_result(images, init="max", steps=0)
    fuser = api.make_fuser(init="max", steps=0, memory_budget=budget)
    assert isinstance(fuser, StartOnlyFuser)
    with fuser:
        tiled = fuser(images)
    assert tiled.tiles > 1 and np.array_equal(tiled.image, whole.image)


def test_a_start_only_fuse_runs_whole_where_the_fusers_model_would_tile():
    """The start's own memory model: 2 x 12 MP fit a 2 GiB budget whole, which the Fuser's
    model (features and all) would cut into tiles."""
    from semfuse_rt.engine.limits.memory_budget import budget_problem

    assert budget_problem(2, 3000, 4000, 2 * 2**30, start_only=True) is None
    assert budget_problem(2, 3000, 4000, 2 * 2**30) is not None
    assert budget_problem(16, 4000, 6000, 3 * 2**30, start_only=True) is not None


def test_the_logger_says_when_a_start_only_fuse_starts_and_ends(rng, caplog):
    with caplog.at_level(logging.INFO, logger="semfuse_rt"):
        api.fuse(_images(rng, "colour"), init="max", steps=0)
    messages = [record.getMessage() for record in caplog.records if record.name == "semfuse_rt"]
    assert messages[0] == "fusing 2 images of 52x37 with max (preset blend: the max start alone)"
    assert messages[-1].startswith("fused 2 images with max (preset blend) in ")


# --------------------------------------------------------------------------- whole commands

@pytest.mark.parametrize("init", CPU_STARTS)
def test_a_start_only_fuse_imports_neither_torch_nor_onnxruntime(tmp_path, pair_files, init):
    out = tmp_path / "fused.png"
    code, stdout, errors, heavy = run_probe("fuse", *map(str, pair_files), "-o", str(out), "-q", "-v",
                                            "--init", init, "--steps", "0")
    assert code == 0 and errors == [], errors
    assert heavy == [], f"a start-only fuse imported {heavy}"
    summary, stages = stdout.strip().splitlines()
    assert summary.startswith("fused 2 images with max (preset blend) in ") and summary.endswith(f" -> {out}")
    assert stages.startswith("stages: decode ") and ", start " in stages and "peak resident memory" in stages
    images = [load_image(path) for path in pair_files]
    assert np.array_equal(load_image(out), api.fuse(images, init=init, steps=0))


@default_has_cpu_start
def test_the_default_fuse_imports_neither_torch_nor_onnxruntime(tmp_path, pair_files):
    out = tmp_path / "fused.png"
    code, stdout, errors, heavy = run_probe("fuse", *map(str, pair_files), "-o", str(out), "-q")
    assert code == 0 and errors == [] and heavy == [], (errors, heavy)
    images = [load_image(path) for path in pair_files]
    assert np.array_equal(load_image(out), api.fuse(images))


@pytest.mark.parametrize("extra, message", [
    (["-o", "{a}"], "the result would replace it"),
    (["-o", "{out}", "--lr", "0"], "--lr is in pixel units and must be above 0"),
    (["-o", "{out}", "--max-pixels", "100"], "--max-pixels"),
    (["-o", "{tmp}/fused.gif"], "fused.gif"),
], ids=["onto an input", "bad lr", "too many pixels", "unknown format"])
def test_a_refused_start_only_fuse_is_one_line_without_torch(tmp_path, pair_files, extra, message):
    before = {path: path.read_bytes() for path in pair_files}
    words = [word.format(a=pair_files[0], out=tmp_path / "fused.png", tmp=tmp_path) for word in extra]
    code, stdout, errors, heavy = run_probe("fuse", *map(str, pair_files), *words, "--init", "max", "--steps", "0")
    assert code == 2 and stdout == "" and len(errors) == 1 and errors[0].startswith("semfuse-rt: error: "), errors
    assert message in errors[0], errors
    assert heavy == []
    assert {path: path.read_bytes() for path in pair_files} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_an_option_for_another_method_is_still_an_error(monkeypatch, capsys, tmp_path, pair_files):
    code, out, err = run_main(monkeypatch, capsys, "fuse", *pair_files, "-o", tmp_path / "fused.png",
                              "--init", "max", "--steps", "0", "--window", "3", "-q")
    assert code == 2 and out == "" and "--window applies to majority and cam-majority only, not max" in err


def test_a_fuse_with_steps_still_runs_the_loop(monkeypatch, capsys, tmp_path, pair_files, weights_file):
    out = tmp_path / "fused.png"
    code, stdout, err = run_main(monkeypatch, capsys, "fuse", *pair_files, "-o", out, "--init", "max",
                                 "--steps", "3", "--lr", "20", "--weights", weights_file, "-q")
    assert code == 0, err
    assert "fused 2 images with max (preset blend) on " in stdout and "loss at the last step" in stdout
    images = [load_image(path) for path in pair_files]
    optimised = api.fuse(images, init="max", steps=3, lr=20.0, weights=weights_file)
    assert np.array_equal(load_image(out), optimised)
    assert not np.array_equal(optimised, api.fuse(images, init="max", steps=0))
