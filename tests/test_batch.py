"""`semfuse-rt fuse-batch`: outputs equal to `fuse`'s, in this process and in 2 workers; resume;
failures listed and others fused; bad input refused before any work; Ctrl-C leaves nothing."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from conftest import dataset
from semfuse_rt.engine.streams.batch import BatchJob, BatchPlan, plan_batch, run_batch
from semfuse_rt.engine.cli import main
from semfuse_rt.engine.evaluation.datasets import FusionSet, find_sets
from semfuse_rt.errors import SemfuseError

STEPS = "3"
SIDE = 96  # crops keep every fuse far under a second
# Sources cropped from the shared sets: (category, set name, {file name: shared file}).
SHARED_SETS = [
    ("multifocus", "lytro-01", {"lytro-01-A.png": "lytro-01-A.jpg", "lytro-01-B.png": "lytro-01-B.jpg"}),
    ("multifocus", "lytro-02", {"lytro-02-A.png": "lytro-02-A.jpg", "lytro-02-B.png": "lytro-02-B.jpg"}),
    ("infrared_visible", "Camp", {"Camp_IR.png": "Camp_IR.png", "Camp_Vis.png": "Camp_Vis.png"}),
]


def crop_shared_sets(root: Path, side: int = SIDE, sets=SHARED_SETS) -> Path:
    """Small copies of shared sets, in the folder layout of discovery."""
    for category, _name, files in sets:
        (root / category).mkdir(parents=True, exist_ok=True)
        for name, shared in files.items():
            image = cv2.imread(str(dataset(category, shared)), cv2.IMREAD_UNCHANGED)
            assert cv2.imwrite(str(root / category / name), image[:side, :side])
    return root


@pytest.fixture
def sets_folder(tmp_path):
    return crop_shared_sets(tmp_path / "sets")


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def fuse_each_with_the_fuse_command(monkeypatch, capsys, sets_root: Path, out: Path, weights: Path) -> dict:
    """{set key: bytes} of `semfuse-rt fuse` of each set, the reference for every batch."""
    expected = {}
    for fusion_set in find_sets(sets_root).sets:
        output = out / f"{fusion_set.category}-{fusion_set.name}.png"
        code, _, err = run_main(monkeypatch, capsys, "fuse", *fusion_set.sources, "-o", output,
                                "--steps", STEPS, "--weights", weights, "-q")
        assert code == 0, err
        expected[fusion_set.key] = output.read_bytes()
    return expected


def batch_outputs(outdir: Path) -> dict:
    return {f"{path.parent.name}/{path.stem}": path.read_bytes() for path in sorted(outdir.glob("*/*.png"))}


def test_the_batch_writes_what_fuse_writes_in_this_process_and_in_two_workers(monkeypatch, capsys, tmp_path,
                                                                               sets_folder, weights_file):
    expected = fuse_each_with_the_fuse_command(monkeypatch, capsys, sets_folder, tmp_path, weights_file)
    assert len(expected) == 3 and len(set(expected.values())) == 3
    for workers in ("1", "2"):
        outdir = tmp_path / f"out-{workers}"
        code, out, err = run_main(monkeypatch, capsys, "fuse-batch", sets_folder, "-o", outdir, "--workers", workers,
                                  "--steps", STEPS, "--weights", weights_file, "-q")
        assert code == 0, err
        assert out.startswith("3 fused, 0 skipped (already done), 0 failed in ") and "sets/s" in out
        assert batch_outputs(outdir) == expected, f"{workers} worker(s)"


def test_a_second_run_skips_finished_outputs_and_redoes_only_the_missing_one(monkeypatch, capsys, tmp_path,
                                                                            sets_folder, weights_file):
    outdir = tmp_path / "out"
    arguments = ("fuse-batch", sets_folder, "-o", outdir, "--steps", STEPS, "--weights", weights_file, "-q")
    assert run_main(monkeypatch, capsys, *arguments)[0] == 0
    first = batch_outputs(outdir)
    kept = outdir / "multifocus" / "lytro-02.png"
    stamp = kept.stat().st_mtime_ns
    redone = outdir / "multifocus" / "lytro-01.png"
    redone.unlink()
    # What a run killed mid-write leaves: a hidden temp file beside the output it was writing.
    stale = outdir / "multifocus" / ".lytro-01.png.k1ll3d.tmp"
    stale.write_bytes(b"half a PNG")

    code, out, _ = run_main(monkeypatch, capsys, *arguments)
    assert code == 0 and out.startswith("1 fused, 2 skipped (already done), 0 failed")
    assert batch_outputs(outdir) == first
    assert kept.stat().st_mtime_ns == stamp

    code, out, _ = run_main(monkeypatch, capsys, *arguments, "--force")
    assert code == 0 and out.startswith("3 fused, 0 skipped")
    assert batch_outputs(outdir) == first


def test_failed_sets_are_listed_with_their_reasons_and_the_others_are_fused(monkeypatch, capsys, tmp_path,
                                                                           sets_folder, weights_file):
    broken = sets_folder / "broken"
    broken.mkdir()
    image = cv2.imread(str(sets_folder / "multifocus" / "lytro-01-A.png"))
    cv2.imwrite(str(broken / "sizes-A.png"), image)
    cv2.imwrite(str(broken / "sizes-B.png"), image[:64, :64])
    cv2.imwrite(str(broken / "corrupt-A.png"), image)
    (broken / "corrupt-B.png").write_bytes((broken / "corrupt-A.png").read_bytes()[:200])
    outdir = tmp_path / "out"
    for workers in ("1", "2"):
        code, out, err = run_main(monkeypatch, capsys, "fuse-batch", sets_folder, "-o", outdir, "--workers", workers,
                                  "--steps", STEPS, "--weights", weights_file, "-q", "--force")
        assert code == 1
        assert out.startswith("3 fused, 0 skipped (already done), 2 failed")
        failed = sorted(line for line in err.splitlines() if line.startswith("failed "))
        assert len(failed) == 2, err
        assert failed[0].startswith("failed broken/corrupt: ") and "corrupt-B.png" in failed[0]
        assert failed[1].startswith("failed broken/sizes: ") and "64x64" in failed[1]
        assert "Traceback" not in err
        assert sorted(batch_outputs(outdir)) == ["infrared_visible/Camp", "multifocus/lytro-01", "multifocus/lytro-02"]
        assert not list((outdir / "broken").iterdir())


@pytest.mark.parametrize("arguments, fragment", [
    (("missing", "-o", "out"), "missing: no such file or folder"),
    (("empty", "-o", "out"), "no image sets found"),
    (("sets", "-o", "out", "--workers", "0"), "--workers must be 1 or more, got 0"),
    (("sets", "-o", "sets/fused"), "is inside"),
    (("sets", "-o", "out", "--ext", "gif"), "--ext 'gif': use one of"),
    (("sets", "-o", "out", "--ray-actors", "2"), "need --ray"),
    (("sets", "-o", "out", "--ray", "--workers", "2"), "with --ray give --ray-actors"),
    (("sets", "-o", "out", "-m", "majority", "--window", "4"), "--window must be an odd number"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(monkeypatch, capsys, tmp_path, sets_folder, arguments,
                                                           fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", *arguments)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "sets" / "fused").exists()


def test_outputs_are_category_and_set_name_with_the_chosen_format(tmp_path):
    sets = [FusionSet("multifocus", "lytro-01", (tmp_path / "a.png", tmp_path / "b.png")),
            FusionSet("tno", "Camp", (tmp_path / "c.png", tmp_path / "d.png"))]
    (tmp_path / "out" / "tno").mkdir(parents=True)
    (tmp_path / "out" / "tno" / "Camp.tif").write_bytes(b"done")
    plan = plan_batch(sets, tmp_path / "out", ext="TIF")
    assert [job.output for job in plan.todo] == [tmp_path / "out" / "multifocus" / "lytro-01.tif"]
    assert [job.key for job in plan.finished] == ["tno/Camp"]
    assert len(plan_batch(sets, tmp_path / "out", ext=".tif", force=True).todo) == 2


@pytest.mark.parametrize("category, name", [("..", "x"), ("c", "../x"), ("c", "a/b"), ("c", ".hidden")])
def test_names_that_would_leave_the_output_folder_are_refused(tmp_path, category, name):
    fusion_set = FusionSet(category, name, (tmp_path / "a.png", tmp_path / "b.png"))
    plan = plan_batch([fusion_set], tmp_path / "out")  # that set fails; a batch's others would go on
    assert not plan.todo and [outcome.key for outcome in plan.rejected] == [fusion_set.key]
    assert "cannot be a file name in the output folder" in plan.rejected[0].error


def test_an_output_that_is_an_input_is_refused(tmp_path):
    source = tmp_path / "out" / "c" / "s.png"
    with pytest.raises(SemfuseError, match="is input 1"):
        plan_batch([FusionSet("c", "s", (source, tmp_path / "b.png"))], tmp_path / "out")


def test_workers_that_cannot_set_up_their_fuser_stop_the_batch_with_one_line(tmp_path, sets_folder):
    plan = plan_batch(find_sets(sets_folder).sets, tmp_path / "out")
    bad_weights = tmp_path / "weights.pt"
    bad_weights.write_bytes(b"not a weights file")
    with pytest.raises(SemfuseError) as error:
        run_batch(plan, workers=2, weights=bad_weights, steps=2)
    assert "no worker could set up its fuser" in str(error.value) and "\n" not in str(error.value)


def test_nothing_to_do_starts_no_worker(tmp_path):
    job = BatchJob(FusionSet("c", "s", (tmp_path / "a.png", tmp_path / "b.png")), tmp_path / "c" / "s.png")
    report = run_batch(BatchPlan([], [job]), workers=2, steps=2)
    assert report.ok and not report.fused and report.skipped == [job]


def test_without_ray_the_ray_option_says_how_to_install_it(monkeypatch, capsys, tmp_path, sets_folder):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    code, _, err = run_main(monkeypatch, capsys, "fuse-batch", sets_folder, "-o", tmp_path / "out", "--ray")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "pip install 'semfuse-rt[ray]'" in lines[0], err
    assert not (tmp_path / "out").exists()


def processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker`: the batch and every worker it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_ctrl_c_stops_the_workers_and_leaves_no_temp_file(tmp_path, weights_file):
    sets = crop_shared_sets(tmp_path / "sets", side=256, sets=SHARED_SETS[:2])
    outdir = tmp_path / "out"
    marker = f"SEMFUSE_RT_BATCH_TEST={os.getpid()}-{time.monotonic_ns()}"
    environment = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    script = Path(sys.executable).with_name("semfuse-rt")
    batch = subprocess.Popen([str(script), "fuse-batch", str(sets), "-o", str(outdir), "--workers", "2",
                              "--steps", "5000", "--weights", str(weights_file), "-q"],
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(processes_with(marker)) < 3 and time.monotonic() < deadline:  # the batch and its 2 workers
            time.sleep(0.2)
        time.sleep(3)  # into the fusing, which 5000 steps make outlast the wait
        os.killpg(batch.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
        _, err = batch.communicate(timeout=60)
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert batch.returncode == 130 and err.strip().splitlines()[-1] == "semfuse-rt: interrupted", err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
    assert not [path for path in outdir.rglob("*") if path.name.startswith(".")]
