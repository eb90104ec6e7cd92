"""Side outputs and leftovers: CAM overlays never land on an input or the output, their folder
is checked before any work, `cam` never writes over its image, and a killed fuse's spilled
inputs are swept at the next start."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semfuse_rt.engine.cli import main
from semfuse_rt.engine.io.images import load_image, save_image
from conftest import the_one_error_line, snapshot


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Never the user's cache, and not inside the folders whose contents the tests compare."""
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path_factory.mktemp("cache")))


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def scene(tmp_path, rng, monkeypatch):
    """A folder holding x.png and x_cam.png (an input named like x.png's overlay), the cwd."""
    for name in ("x.png", "x_cam.png"):
        save_image(tmp_path / name, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_overlay_that_would_replace_an_input_is_refused_before_any_work(monkeypatch, capsys, scene):
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "fuse", "x.png", "x_cam.png", "-o", "fused.png", "-m", "cam-max",
                         "--save-cams", ".")
    line = the_one_error_line(code, err)
    assert "--save-cams ." in line and "input 1 (x.png) would be x_cam.png, which is input 2" in line
    assert "another folder" in line
    assert snapshot(scene) == before


def test_an_overlay_that_would_replace_the_output_is_refused_before_any_work(monkeypatch, capsys, scene):
    (scene / "cams").mkdir()
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "fuse", "x.png", "x_cam.png", "-o", "cams/x_cam.png", "-m", "cam-max",
                         "--save-cams", "cams")
    line = the_one_error_line(code, err)
    assert "input 1 (x.png) would be cams/x_cam.png, which is the output -o cams/x_cam.png" in line
    assert snapshot(scene) == before


def test_the_issue_case_of_an_overlay_over_the_output(monkeypatch, capsys, tmp_path, rng):
    """`fuse a.png b.png -o a_cam.png -m cam-max --save-cams .`, the command as filed."""
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, rng.integers(0, 256, (24, 32), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, err = run_main(monkeypatch, capsys, "fuse", "a.png", "b.png", "-o", "a_cam.png", "-m", "cam-max",
                         "--save-cams", ".")
    assert "which is the output -o a_cam.png" in the_one_error_line(code, err)
    assert snapshot(tmp_path) == before


def test_an_overlay_that_is_an_input_through_a_link_is_refused(monkeypatch, capsys, scene):
    (scene / "cams").mkdir()
    (scene / "cams" / "x_cam.png").symlink_to(scene / "x.png")
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "fuse", "x.png", "x_cam.png", "-o", "fused.png", "-m", "cam",
                         "--save-cams", "cams")
    assert "would be cams/x_cam.png, which is input 1" in the_one_error_line(code, err)
    assert snapshot(scene) == before


@pytest.mark.parametrize("folder, reason", [("/proc/nope", "cannot create folder /proc/nope"),
                                            ("x.png/cams", "cannot create folder x.png/cams (Not a directory)"),
                                            ("x_cam.png", "is a file, not a folder")])
def test_an_overlay_folder_that_cannot_be_used_is_refused_before_the_output_is_written(monkeypatch, capsys, scene,
                                                                                         folder, reason):
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "fuse", "x.png", "x_cam.png", "-o", "fused.png", "-m", "cam-max",
                         "--save-cams", folder)
    line = the_one_error_line(code, err)
    assert f"--save-cams {folder}: {reason}" in line and "--save-cams" in line.split(";")[-1]
    assert snapshot(scene) == before
    assert not Path("/proc/nope").exists()


def test_a_run_refused_later_leaves_no_overlay_folder_behind(monkeypatch, capsys, scene):
    """The folder is tried by making and removing it: a run that then fails leaves nothing."""
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "fuse", "x.png", "missing.png", "-o", "fused.png", "-m", "cam",
                         "--save-cams", "new/cams")
    assert "missing.png: no such file" in the_one_error_line(code, err)
    assert snapshot(scene) == before


def test_inputs_that_share_a_name_get_an_overlay_each(monkeypatch, capsys, tmp_path, rng):
    """ir/scene.png and vis/scene.png: one overlay would have replaced the other."""
    for folder in ("ir", "vis"):
        (tmp_path / folder).mkdir()
        save_image(tmp_path / folder / "scene.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    save_image(tmp_path / "other.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    inputs = before = snapshot(tmp_path)
    code, err = run_main(monkeypatch, capsys, "fuse", "ir/scene.png", "vis/scene.png", "other.png", "-o", "fused.png",
                         "-m", "cam", "--save-cams", "new/cams", "-q")
    assert code in (0, None), err
    assert sorted(p.name for p in (tmp_path / "new" / "cams").iterdir()) == [
        "other_cam.png", "scene_cam-1.png", "scene_cam-2.png"]
    assert load_image(tmp_path / "new" / "cams" / "scene_cam-2.png").shape == (32, 40, 3)
    after = snapshot(tmp_path)
    assert {name: after[name] for name in inputs} == before  # inputs intact


@pytest.mark.parametrize("link", [False, True])
def test_cam_refuses_to_write_over_its_image(monkeypatch, capsys, scene, link):
    output = "x.png"
    if link:
        os.link(scene / "x.png", scene / "hard.png")
        output = "hard.png"
    before = snapshot(scene)
    code, err = run_main(monkeypatch, capsys, "cam", "x.png", "-o", output)
    line = the_one_error_line(code, err)
    assert f"{output}: is input 1 (x.png); the result would replace it, so write it to another file" in line
    assert snapshot(scene) == before


# Spill folders: a killed run's are swept at the next start; a live run's are kept.

@pytest.fixture
def spill_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path / "cache"))
    from semfuse_rt.cache import cache_dir

    return cache_dir("spill")


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def owned_folder(spill_root: Path, name: str, pid: int) -> Path:
    from semfuse_rt.owner_records import write_owner_record

    folder = spill_root / f".inputs-{name}.tmp"
    folder.mkdir()
    (folder / "input.raw").write_bytes(b"\0" * 1024)
    write_owner_record(folder, pid)
    return folder


def test_a_fuse_killed_with_sigkill_has_its_spill_folder_swept_at_the_next_spill(spill_root):
    from semfuse_rt.engine.io.spilled_images import SpilledImage, spill_folder

    killed = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, numpy as np\n"
         "from semfuse_rt.engine.io.spilled_images import SpilledImage, spill_folder\n"
         "with spill_folder() as folder:\n"
         "    SpilledImage(np.zeros((64, 64), np.uint8), folder)\n"
         "    print(folder, flush=True)\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = Path(killed.stdout.strip())
    assert left.parent == spill_root and any(left.glob("*.raw"))  # the kill left it, with the owner record
    with spill_folder() as folder:
        assert not left.exists()
        SpilledImage(np.ones((4, 4), np.uint8), folder)
    assert not folder.exists() and list(spill_root.iterdir()) == []


def test_the_sweep_keeps_live_owners_and_judges_the_rest(spill_root):
    from semfuse_rt.engine.io.spilled_images import spill_folder
    from semfuse_rt.owner_records import OWNER_FILE

    finished, running = sleeper(), sleeper()
    try:
        dead = owned_folder(spill_root, "dead", finished.pid)
        finished.kill()
        finished.wait()
        live = owned_folder(spill_root, "live", running.pid)
        # The live process's pid, but a different start time: a reused pid, not the owner.
        reused = owned_folder(spill_root, "reused", running.pid)
        record = json.loads((reused / OWNER_FILE).read_text())
        (reused / OWNER_FILE).write_text(json.dumps({**record, "started": record["started"] - 1}))
        # Made on another machine sharing the cache: not judged here, so the age rule holds.
        elsewhere = owned_folder(spill_root, "elsewhere", finished.pid)
        (elsewhere / OWNER_FILE).write_text(json.dumps({**record, "host": "another-machine"}))
        unowned_new = spill_root / ".inputs-new.tmp"
        unowned_new.mkdir()
        unowned_old = spill_root / ".inputs-old.tmp"
        unowned_old.mkdir()
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(unowned_old, (two_days_ago, two_days_ago))
        with spill_folder() as folder:
            assert (folder / OWNER_FILE).exists()
            assert sorted(p.name for p in spill_root.iterdir()) == sorted(
                [live.name, elsewhere.name, unowned_new.name, folder.name])
        assert live.exists() and not dead.exists() and not folder.exists()
    finally:
        running.kill()
        running.wait()
    with spill_folder():
        assert not live.exists()  # its owner has ended since


def test_the_first_use_of_the_cache_sweeps_a_dead_owners_folder_too(spill_root, monkeypatch):
    """Any command's first use of the cache, not only the next spill, frees the space."""
    from semfuse_rt import cache

    finished = sleeper()
    dead = owned_folder(spill_root, "dead", finished.pid)
    finished.kill()
    finished.wait()
    monkeypatch.setattr(cache, "_swept", False)
    cache.cache_dir("onnx")
    assert not dead.exists()
