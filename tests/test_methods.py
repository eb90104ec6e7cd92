"""cam, cam-max and cam-majority wired through the fusion API and the CLI."""
import sys

import numpy as np
import pytest
import torch

import contextlib

from semfuse_rt.engine import api
from semfuse_rt.engine.fuse import fuser
from semfuse_rt.engine.semantic.cam_maps import CAMResult
from semfuse_rt.kernels.rules.choose_max import ChooseMax
from semfuse_rt.engine.cli import main
from semfuse_rt.engine.io.images import load_image, save_image


def fixed_cams(maps):
    maps = torch.as_tensor(maps, dtype=torch.float32)
    n = maps.shape[0]
    layer_maps = [maps[:, None]]  # one "layer" at full resolution
    return CAMResult(maps, layer_maps, torch.zeros(n, 1000), torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1))


def use_cams(monkeypatch, maps):
    """Every semantic fuse sees these CAMs, with no classifier loaded (a stand-in that the
    stubs below never use)."""
    monkeypatch.setattr(fuser, "load_classifier", lambda path=None: object())
    monkeypatch.setattr(fuser, "cam_extractor", lambda classifier, backend: contextlib.nullcontext())
    monkeypatch.setattr(fuser, "input_cams", lambda classifier, images, classes, extractor: fixed_cams(maps))


@pytest.fixture
def pair(rng):
    a = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)
    return a, b


def test_equal_cams_make_cam_max_plain_max(monkeypatch, pair, vgg_weights):
    use_cams(monkeypatch, np.ones((2, 24, 28)))
    options = dict(steps=5, weights=vgg_weights, backend="torch")
    assert np.array_equal(api.fuse(list(pair), "cam-max", **options), api.fuse(list(pair), "max", **options))
    assert np.array_equal(api.fuse(list(pair), "cam-majority", **options), api.fuse(list(pair), "majority", **options))


def test_cam_max_takes_the_features_of_the_input_with_all_the_class_evidence(monkeypatch, pair, vgg_weights):
    maps = np.zeros((2, 24, 28))
    maps[1] = 1.0  # input 2 holds all the evidence everywhere: W = (0, 1)
    use_cams(monkeypatch, maps)
    seen = {}
    real_fuse = ChooseMax.fuse

    def spy(rule, features, weights=None):
        seen["features"], seen["target"] = features, real_fuse(rule, features, weights)
        return seen["target"]

    monkeypatch.setattr(ChooseMax, "fuse", spy)
    result = api.fuse_result(list(pair), "cam-max", steps=1, semantic_steps=0, weights=vgg_weights, backend="torch")
    evidence = seen["features"][1] != 0  # where input 2's magnitude is 0, 0 * |F_1| ties it: lowest k
    assert torch.equal(seen["target"][evidence], seen["features"][1][evidence])
    assert evidence.float().mean() > 0.3
    assert not torch.equal(seen["features"][0], seen["features"][1])
    assert result.cams.shape == (2, 24, 28)


def test_cam_weights_at_a_pooled_layer_come_from_the_layer_maps(monkeypatch, pair, vgg_weights):
    maps = np.zeros((2, 24, 28))
    maps[0, :, :14] = 1.0
    maps[1, :, 14:] = 1.0
    use_cams(monkeypatch, maps)
    out = api.fuse([*pair], "cam-max", layer="pool1", steps=2, weights=vgg_weights, backend="torch")
    assert out.shape == pair[0].shape


def test_cam_method_and_cli_outputs(monkeypatch, capsys, tmp_path, pair):
    paths = [save_image(tmp_path / f"{n}.png", image) for n, image in zip("ab", pair)]
    out, cams = tmp_path / "fused.png", tmp_path / "cams"
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "fuse", *map(str, paths), "-o", str(out), "-m", "cam",
                                      "--save-cams", str(cams), "--report", "--classes", "2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    assert load_image(out).shape == pair[0].shape
    assert sorted(p.name for p in cams.iterdir()) == ["a_cam.png", "b_cam.png"]
    assert "semantic retention" in captured.out and "rank in fused" in captured.out


def test_save_cams_needs_a_semantic_method(monkeypatch, capsys, tmp_path, pair):
    paths = [save_image(tmp_path / f"{n}.png", image) for n, image in zip("ab", pair)]
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "fuse", *map(str, paths), "-o", str(tmp_path / "f.png"),
                                      "--save-cams", str(tmp_path / "cams")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "--save-cams applies to cam, cam-max and cam-majority only, not max" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()
