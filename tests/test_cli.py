"""The CLI: the happy path through the real console script, and every bad input."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.cli import main
from semfuse_rt.engine.images import save_image


@pytest.fixture
def pair(tmp_path, rng):
    a = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    return save_image(tmp_path / "a.png", a), save_image(tmp_path / "b.png", b)


def semfuse_rt_script():
    found = shutil.which("semfuse-rt", path=os.path.dirname(sys.executable)) or shutil.which("semfuse-rt")
    assert found, "the semfuse-rt console script is not installed"
    return found


def test_fuse_happy_path_through_the_console_script(pair, tmp_path, vgg_weights):
    out = tmp_path / "fused.png"
    run = subprocess.run(
        [semfuse_rt_script(), "fuse", *map(str, pair), "-o", str(out), "--steps", "5", "--backend", "torch"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()
    assert len(summary) == 1 and "fused 2 images with max (preset refined) on torch" in summary[0]
    assert "final loss" in summary[0] and str(out) in summary[0]
    assert cv2.imread(str(out)).shape == (32, 40, 3)


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code not in (0, None)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_input(monkeypatch, capsys, pair, tmp_path):
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], tmp_path / "missing.png", "-o", out)
    assert_one_line_error(code, err, "missing.png", "no such file")
    assert not out.exists()


def test_unreadable_input(monkeypatch, capsys, pair, tmp_path):
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], tmp_path, "-o", out)
    assert_one_line_error(code, err, "is a folder")
    assert not out.exists()


def test_corrupt_input(monkeypatch, capsys, pair, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], bad, "-o", out)
    assert_one_line_error(code, err, "bad.jpg", "not a readable image")
    assert not out.exists()


def test_fewer_than_two_inputs(monkeypatch, capsys, pair, tmp_path):
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], "-o", out)
    assert_one_line_error(code, err, "at least 2")
    assert not out.exists()


def test_sizes_differ(monkeypatch, capsys, pair, tmp_path, rng):
    other = save_image(tmp_path / "small.png", rng.integers(0, 256, (30, 41, 3), dtype=np.uint8))
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], other, "-o", out)
    assert_one_line_error(code, err, "40x32", "41x30")
    assert not out.exists()


def test_unsupported_mode(monkeypatch, capsys, pair, tmp_path):
    floating = tmp_path / "float.tif"
    cv2.imwrite(str(floating), np.zeros((32, 40), np.float32))
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], floating, "-o", out)
    assert_one_line_error(code, err, "unsupported mode")
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing-folder", "unknown-extension", "system"])
def test_unwritable_output(monkeypatch, capsys, pair, tmp_path, where, vgg_weights):
    out = {
        "missing-folder": tmp_path / "no" / "such" / "out.png",
        "unknown-extension": tmp_path / "out.xyz",
        # Root may write almost anywhere; sysfs refuses new files even to root.
        "system": "/sys/semfuse-out.png",
    }[where]
    code, err = run_main(monkeypatch, capsys, "fuse", *pair, "-o", out, "--steps", "1", "--backend", "torch")
    assert_one_line_error(code, err, str(out))
    assert not os.path.exists(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_options(monkeypatch, capsys, pair, tmp_path):
    out = tmp_path / "out.png"
    for args, fragment in [(["--method", "mean"], "unknown method"), (["--layer", "relu9_9"], "unknown VGG19 layer"),
                           (["--backend", "tensorflow"], "unknown backend"), (["--window", "4", "--method", "majority"], "odd")]:
        code, err = run_main(monkeypatch, capsys, "fuse", *pair, "-o", out, "--steps", "1", *args)
        assert_one_line_error(code, err, fragment)
        assert not out.exists()
