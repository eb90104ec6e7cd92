"""The CLI: the happy path through the real console script, and every bad input."""
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from conftest import EXAMPLES
from semfuse_rt.engine.cli import main
from semfuse_rt.engine.io.images import save_image


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
    assert len(summary) == 1 and "fused 2 images with max (preset blend) on torch" in summary[0]
    assert "loss at the last step" in summary[0] and str(out) in summary[0]
    assert cv2.imread(str(out)).shape == (32, 40, 3)


def test_verbose_prints_the_stages_and_the_peak_memory(monkeypatch, capsys, pair, tmp_path, random_vgg_weights):
    from semfuse_rt.export.networks.weights import _save_cache

    weights = tmp_path / "weights.pt"
    _save_cache(weights, random_vgg_weights)
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "fuse", *map(str, pair), "-o", str(tmp_path / "out.png"), "-v",
                                      "--steps", "1", "--weights", str(weights), "-q"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert exit_info.value.code in (0, None) and len(lines) == 2
    assert lines[1].startswith("stages: decode ") and "loop" in lines[1] and "peak resident memory" in lines[1]


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


# --- hardening: what a careless user or an attacker tries -----------------------------------------

def test_output_may_not_replace_an_input(monkeypatch, capsys, pair, tmp_path):
    a = pair[0]
    os.chmod(a, 0o644)
    before = a.read_bytes()
    os.symlink(a, tmp_path / "link.png")
    os.link(a, tmp_path / "hard.png")
    for out in (a, tmp_path / "link.png", tmp_path / "hard.png", tmp_path / "." / "a.png"):
        code, err = run_main(monkeypatch, capsys, "fuse", *pair, "-o", out, "--steps", "1")
        assert_one_line_error(code, err, "is input 1", "another file")
    assert a.read_bytes() == before and (a.stat().st_mode & 0o777) == 0o644


def test_a_truncated_jpeg_input_is_refused(monkeypatch, capsys, pair, tmp_path):
    data = (EXAMPLES / "lytro-01-A.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 3])
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", cut, EXAMPLES / "lytro-01-B.jpg", "-o", out)
    assert_one_line_error(code, err, "cut.jpg", "truncated JPEG")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "1e30", "--steps", "3"], "--lr is in pixel units"),
    (["--lr", "1e6"], "at most 255"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--steps", "-1"], "--steps must be a whole number"),
    (["-m", "majority", "--window", "65"], "--window must be an odd number from 1 to 63"),
    (["-m", "majority", "--window", "99999"], "--window must be an odd number"),
    (["--mean-base", "inf"], "--mean-base must be a finite number"),
    (["--mean-base", "-1"], "--mean-base sigma must be 0"),
    (["--mean-base", "1e9"], "larger than the 40x32 image"),
    (["--mean-base", "1e5"], "use at most 40"),
    (["--classes", "0", "-m", "cam-max"], "--classes must be from 1 to 1000"),
    (["--max-pixels", "0"], "--max-pixels must be a positive"),
    (["--max-pixels", "1000"], "over the limit of 0.001 MP"),
    (["--steps", "abc"], "Invalid value for '--steps'"),
    (["--memory-budget", "1M"], "over the memory budget of 1 MiB (--memory-budget)"),
    (["--memory-budget", "lots"], "--memory-budget takes a size"),
])
def test_every_option_is_range_checked(monkeypatch, capsys, pair, tmp_path, args, fragment):
    out = tmp_path / "out.png"
    code, err = run_main(monkeypatch, capsys, "fuse", *pair, "-o", out, *args)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_a_layer_deeper_than_the_image_allows(monkeypatch, capsys, tmp_path, rng, backend):
    tiny = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (4, 4), dtype=np.uint8)) for n in "ab"]
    code, err = run_main(monkeypatch, capsys, "fuse", *tiny, "-o", tmp_path / "out.png", "--layer", "relu5_4",
                         "--backend", backend)
    assert_one_line_error(code, err, "too small for --layer relu5_4", "at least 16x16")


def test_a_diverging_optimisation_writes_nothing(monkeypatch, pair, tmp_path, random_vgg_weights):
    from semfuse_rt.engine.backends.torch.runner import TorchRunner
    from semfuse_rt.engine.fuse.fuser import Fuser
    from semfuse_rt.errors import SemfuseError

    monkeypatch.setattr(TorchRunner, "loss_and_grad", lambda self, image, target: (
        torch.full((image.shape[0],), float("nan")), torch.full_like(image, float("nan"))))
    out = tmp_path / "out.png"
    with pytest.raises(SemfuseError, match="diverged"), Fuser(backend="torch", weights=random_vgg_weights,
                                                              steps=2) as fuser:
        fuser.fuse_files(pair, out)
    assert not out.exists()


def test_unsupported_formats_and_sizes_are_named(monkeypatch, capsys, pair, tmp_path, rng):
    from PIL import Image

    frames = [Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, err = run_main(monkeypatch, capsys, "fuse", pair[0], tmp_path / "anim.gif", "-o", tmp_path / "o.png")
    assert_one_line_error(code, err, "anim.gif", "GIF images", "not supported", "PNG, TIFF, JPEG, BMP, PGM or PPM")
    thin = [save_image(tmp_path / f"{n}.png", rng.integers(0, 256, (3, 1000), dtype=np.uint8)) for n in "xy"]
    code, err = run_main(monkeypatch, capsys, "fuse", *thin, "-o", tmp_path / "o.png")
    assert_one_line_error(code, err, "1000x3 is too small", "at least 4 pixels a side")


@pytest.mark.parametrize("command", [["fuse", "A", "B", "-o", "OUT", "--steps", "1"], ["build", "--layer", "relu1_1"],
                                     ["weights"]])
@pytest.mark.parametrize("cache", ["a-file", "not-writable"])
def test_an_unusable_cache_is_one_line_naming_the_path_and_the_variable(monkeypatch, capsys, pair, tmp_path,
                                                                         vgg_weights, command, cache):
    from semfuse_rt.export.networks.weights import OXFORD_CACHE_NAME
    from semfuse_rt.cache import cache_dir

    weights_file = cache_dir("weights") / OXFORD_CACHE_NAME
    if cache == "a-file":
        root = tmp_path / "cache-file"
        root.write_text("not a folder")
    else:
        root = "/sys/semfuse-rt-cache"  # sysfs refuses new folders even to root
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(root))
    out = tmp_path / "out.png"
    args = [{"A": pair[0], "B": pair[1], "OUT": out}.get(word, word) for word in command]
    if command[0] == "fuse":
        args += ["--weights", weights_file, "--backend", "ort"]
    code, err = run_main(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, str(root), "SEMFUSE_RT_CACHE")
    assert not out.exists()


def test_a_read_only_cache_with_valid_weights_is_used(monkeypatch, tmp_path):
    from semfuse_rt.export.networks import weights

    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path))
    path = tmp_path / "weights" / weights.OXFORD_CACHE_NAME
    path.parent.mkdir()
    weights._save_cache(path, weights.random_vgg19())

    def refuse(*_):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(weights, "atomic_write_bytes", refuse)
    assert weights.load_vgg19().source.startswith("random")


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_a_plain_open_would(tmp_path, umask, want):
    from semfuse_rt.cache import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        existing = tmp_path / "existing.bin"
        existing.write_bytes(b"old")
        os.chmod(existing, 0o640)
        atomic_write_bytes(existing, b"new")
    finally:
        os.umask(old)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == want
    assert existing.stat().st_mode & 0o777 == 0o640 and existing.read_bytes() == b"new"


def test_stale_temp_files_are_swept(monkeypatch, tmp_path):
    from semfuse_rt import cache

    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_swept", False)
    old, fresh = tmp_path / "cache" / "engines" / ".x.onnx.abc.tmp", tmp_path / "cache" / ".y.pt.def.tmp"
    beside = tmp_path / ".out.png.ghi.tmp"
    for path in (old, fresh, beside):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(beside, (two_days_ago, two_days_ago))
    cache.cache_dir("weights")
    assert not old.exists() and fresh.exists()
    cache.atomic_write_bytes(tmp_path / "out.png", b"png")
    assert not beside.exists()


def test_the_weights_fetch_child_dies_with_its_parent(tmp_path):
    marker = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; from semfuse_rt.export.networks.weights import run_tied_to_this_process as run; "
        f"run(['sh', '-c', 'echo $$ > {marker}; exec sleep 60'])")])
    deadline = time.time() + 30
    while not (marker.exists() and marker.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    parent.kill()  # kill -9: no handler of the parent runs
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_damaged_graphs_are_rebuilt_and_say_why(tmp_path, random_vgg_weights, capfd):
    from semfuse_rt.export.graphs.onnx_export import export_graphs

    first = export_graphs(random_vgg_weights, "relu1_1", tmp_path)
    capfd.readouterr()
    first.features.write_bytes(first.features.read_bytes()[:-10])
    again = export_graphs(random_vgg_weights, "relu1_1", tmp_path)
    assert again.built
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "features.onnx is damaged" in err[0] and str(tmp_path) in err[0]
    (tmp_path / "manifest.json").write_text("{ not json")
    assert export_graphs(random_vgg_weights, "relu1_1", tmp_path).built
    assert "manifest.json is damaged" in capfd.readouterr().err


def test_ctrl_c_says_interrupted_exits_130_and_writes_nothing(pair, tmp_path, vgg_weights):
    out = tmp_path / "out.png"
    run = subprocess.Popen([semfuse_rt_script(), "fuse", *map(str, pair), "-o", str(out), "--steps", "100000",
                            "--backend", "torch", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and stderr.strip() == "semfuse-rt: interrupted" and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
