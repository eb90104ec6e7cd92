"""Fuser: set up once, fuse many times; reuse is proven by counting, not timing."""
import ast
import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest

from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.export.networks import weights as weights_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pair(rng):
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(2)]


class Counter:
    def __init__(self, monkeypatch, owner, name):
        self.calls, real = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_second_and_later_calls_set_nothing_up(monkeypatch, tmp_path, pair, rng, backend):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    weights_module._save_cache(tmp_path / "weights.pt", weights_module.random_vgg19())
    sessions = Counter(monkeypatch, onnxruntime, "InferenceSession")
    scans = Counter(monkeypatch, weights_module, "_check_convs")
    hashes = Counter(monkeypatch, weights_module, "sha256_of")
    with Fuser("max", backend=backend, weights=tmp_path / "weights.pt", steps=3) as fuser:
        first = fuser(pair)
        counts = (sessions.calls, scans.calls, hashes.calls)
        assert counts[1] == 1 and (counts[0] > 0) == (backend == "ort")
        for _ in range(3):
            again = fuser(pair)
            assert np.array_equal(again.image, first.image)
        fuser([rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(2)])
        assert (sessions.calls, scans.calls, hashes.calls) == counts
    assert fuser.runner is None  # closed with the context


def test_cached_weights_are_verified_once_then_trusted_by_their_stamp(monkeypatch, tmp_path):
    path = tmp_path / "weights.pt"
    weights_module._save_cache(path, weights_module.random_vgg19())
    load = weights_module._load_cache_file
    hashes = Counter(monkeypatch, weights_module, "sha256_of")
    first = load(path, verify_sidecar=True)
    assert hashes.calls == 1
    again = load(path, verify_sidecar=True)
    assert hashes.calls == 1 and all(again.convs[n][0].equal(first.convs[n][0]) for n in first.convs)
    data = bytearray(path.read_bytes())  # the same size, other bytes: the stamp no longer matches
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum"):
        load(path, verify_sidecar=True)


def test_cam_fuser_names_no_backend_or_preset(monkeypatch, pair):
    from semfuse_rt.engine.fuse import fuser as fuser_module
    from test_methods import fixed_cams

    fused = SimpleNamespace(image=pair[0], cams=fixed_cams(np.ones((2, 40, 52))))
    monkeypatch.setattr(fuser_module, "load_classifier", lambda path=None: object())  # a stand-in, never used
    monkeypatch.setattr(fuser_module, "cam_extractor", lambda classifier, backend: contextlib.nullcontext())
    monkeypatch.setattr(fuser_module, "fuse_cam", lambda images, classifier, classes, extractor: fused)
    result = Fuser("cam")(pair)
    assert result.backend is None and result.preset is None
    assert result.summary(2).startswith("fused 2 images with cam in ")


def _imported_modules(folder: Path):
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                yield path, node.module
            elif isinstance(node, ast.Import):
                yield from ((path, alias.name) for alias in node.names)


@pytest.mark.parametrize("package", ["export", "kernels"])
def test_export_and_kernels_never_import_the_engine(package):
    offenders = [f"{path.relative_to(ROOT)}: {module}" for path, module in _imported_modules(ROOT / "semfuse_rt" / package)
                 if module.startswith("semfuse_rt.engine")]
    assert offenders == []


def test_the_package_seen_from_the_clone_root_is_the_checkout():
    import semfuse_rt.engine.api
    import semfuse_rt.export.networks.weights
    import semfuse_rt.kernels.torch_rules

    for module, folder in ((semfuse_rt.engine.api, "engine"), (semfuse_rt.export.networks.weights, "export"),
                           (semfuse_rt.kernels.torch_rules, "kernels")):
        assert Path(module.__file__).resolve().is_relative_to(ROOT / "semfuse_rt" / folder)


@pytest.mark.parametrize("backend", ["ort", "torch"])
@pytest.mark.parametrize("method", ["max", "majority"])
@pytest.mark.parametrize("count", [3, 4])
def test_the_streamed_target_is_the_stacked_one(random_vgg_weights, rng, backend, method, count):
    import torch

    from semfuse_rt.engine.fuse.fuser import StageClock

    images = [rng.integers(0, 256, (29, 37, 3), dtype=np.uint8) for _ in range(count)]
    images[1][:, :10] = images[0][:, :10]  # equal inputs: ties stay with the lower k
    pixels = torch.from_numpy(np.stack([image.transpose(2, 0, 1) for image in images]).astype(np.float32))
    with Fuser(method, backend=backend, weights=random_vgg_weights) as fuser:
        streamed = fuser._streamed_target(pixels, StageClock(None))
        stacked = fuser.runner.fuse_features(fuser.runner.features(pixels), fuser.rule)
    # Torch's convolutions may round a batch of one differently from a batch of K.
    assert torch.allclose(streamed, stacked, rtol=1e-5, atol=1e-5)


def test_reused_features_keep_one_buffer_a_slot_until_released(random_vgg_weights, rng):
    import torch

    def pixels(height, width):
        return torch.from_numpy(rng.integers(0, 256, (1, 3, height, width)).astype(np.float32))

    with Fuser("max", backend="ort", weights=random_vgg_weights) as fuser:
        runner = fuser.runner
        first, second, smaller, larger = pixels(20, 30), pixels(20, 30), pixels(11, 17), pixels(25, 30)
        maps = runner.reused_features(first, "next")
        assert torch.equal(maps, runner.features(first))
        buffer = maps.data_ptr()
        assert runner.reused_features(second, "next").data_ptr() == buffer
        assert runner.reused_features(second, "first").data_ptr() != buffer  # each slot its own
        assert torch.equal(runner.reused_features(smaller, "next"), runner.features(smaller))
        assert runner.reused_features(smaller, "next").data_ptr() == buffer  # a view of the same memory
        assert runner.reused_features(larger, "next").data_ptr() != buffer
        fuser([rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)])
        assert set(runner._scratch) == {"first", "next"}  # a small fuse keeps them for the next call
        runner.release_scratch()
        assert runner._scratch == {}
    with Fuser("max", backend="ort", weights=random_vgg_weights, tile=64) as fuser:
        fuser([rng.integers(0, 256, (90, 150, 3), dtype=np.uint8) for _ in range(3)])
        assert fuser.runner._scratch == {}  # tiles let go of them before each loop
