"""The batch on a local Ray instance (CPU): the same bytes as the sets fused without Ray,
failures as outcomes, resume; and the FuserActor that the video chunks use too."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from test_batch import (SHARED_SETS, STEPS, batch_outputs, crop_shared_sets,  # noqa: E402
                        fuse_each_with_the_fuse_command, processes_with, run_main)
from semfuse_rt.engine.streams.batch import plan_batch  # noqa: E402
from semfuse_rt.engine.evaluation.datasets import find_sets  # noqa: E402
from semfuse_rt.engine.fuse.fuser import Fuser  # noqa: E402
from semfuse_rt.engine.io.images import load_image  # noqa: E402
from semfuse_rt.engine.streams.ray_batch import run_ray_batch  # noqa: E402
from semfuse_rt.engine.streams.ray_session import ray_session, start_fuser_actors  # noqa: E402


@pytest.fixture
def sets_folder(tmp_path):
    return crop_shared_sets(tmp_path / "sets")


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module: its start-up is most of a test's time. The batch's
    own ray_session uses an open session as it is and leaves it open."""
    with ray_session(num_cpus=2) as session:
        yield session


def test_two_actors_write_what_fuse_writes_and_list_the_failed_set(monkeypatch, capsys, tmp_path, local_ray,
                                                                   sets_folder, weights_file):
    expected = fuse_each_with_the_fuse_command(monkeypatch, capsys, sets_folder, tmp_path, weights_file)
    broken = sets_folder / "broken"
    broken.mkdir()
    image = cv2.imread(str(sets_folder / "multifocus" / "lytro-01-A.png"))
    cv2.imwrite(str(broken / "sizes-A.png"), image)
    cv2.imwrite(str(broken / "sizes-B.png"), image[:64, :64])
    outdir = tmp_path / "out"
    plan = plan_batch(find_sets(sets_folder).sets, outdir)
    seen = []
    report = run_ray_batch(plan, actors=2, steps=int(STEPS), weights=weights_file, on_outcome=seen.append)
    assert sorted(outcome.key for outcome in report.fused) == sorted(expected)
    assert [(outcome.key, "64x64" in outcome.error) for outcome in report.failed] == [("broken/sizes", True)]
    assert len(seen) == 4 and not report.ok
    assert batch_outputs(outdir) == expected

    again = run_ray_batch(plan_batch(find_sets(sets_folder).sets, outdir), actors=2, steps=int(STEPS),
                          weights=weights_file)
    assert len(again.skipped) == 3 and [outcome.key for outcome in again.failed] == ["broken/sizes"]


def test_the_ray_option_of_the_command(monkeypatch, capsys, tmp_path, local_ray, weights_file):
    sets = crop_shared_sets(tmp_path / "sets")
    expected = fuse_each_with_the_fuse_command(monkeypatch, capsys, sets, tmp_path, weights_file)
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", sets, "-o", tmp_path / "out", "--ray",
                              "--ray-actors", "2", "--steps", STEPS, "--weights", weights_file, "-q")
    assert code == 0, err
    assert out.startswith("3 fused, 0 skipped (already done), 0 failed")
    assert batch_outputs(tmp_path / "out") == expected


def test_a_fuser_actor_fuses_as_a_fuser_here(local_ray, weights_file, sets_folder, tmp_path):
    images = [load_image(path) for path in sorted((sets_folder / "infrared_visible").glob("*.png"))]
    (actor,) = start_fuser_actors(1, "max", steps=int(STEPS), weights=weights_file)
    fused = ray.get(actor.fuse_arrays.remote(images))
    with Fuser("max", steps=int(STEPS), weights=weights_file) as fuser:
        assert np.array_equal(fused, fuser(images).image)
    assert fused.dtype == np.uint8 and fused.shape == images[0].shape
    output = tmp_path / "fused.png"
    written = ray.get(actor.fuse_files.remote(sorted((sets_folder / "infrared_visible").glob("*.png")), output))
    assert written.output == str(output) and written.summary.startswith("fused 2 images with max")
    assert np.array_equal(load_image(output), fused)
    ray.kill(actor)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds Ray's processes through /proc")
def test_ctrl_c_shuts_the_local_instance_down_and_leaves_no_temp_file(tmp_path, weights_file):
    sets = crop_shared_sets(tmp_path / "sets", side=256, sets=SHARED_SETS[:2])
    outdir = tmp_path / "out"
    name, value = "SEMFUSE_RT_RAY_TEST", f"{os.getpid()}-{time.monotonic_ns()}"
    script = Path(sys.executable).with_name("semfuse-rt")
    batch = subprocess.Popen([str(script), "fuse-batch", str(sets), "-o", str(outdir), "--ray", "--ray-actors", "2",
                              "--steps", "5000", "--weights", str(weights_file), "-q"],
                             env={**os.environ, name: value}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Ray names an actor's process after the method it runs: an actor is fusing.
        while (not any("WorkActor.run" in _cmdline(pid) for pid in processes_with(f"{name}={value}"))
               and time.monotonic() < deadline and batch.poll() is None):
            time.sleep(0.2)
        started = time.monotonic()
        os.killpg(batch.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
        _, err = batch.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert batch.returncode == 130 and err.strip().splitlines()[-1] == "semfuse-rt: interrupted", err
    assert "Traceback" not in err and took < 30
    deadline = time.monotonic() + 15
    while processes_with(f"{name}={value}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with(f"{name}={value}") == []
    assert not [path for path in outdir.rglob("*") if path.name.startswith(".")]
