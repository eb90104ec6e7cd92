"""Follow-ups of the hostile-input round: the report of a fuse whose inputs wait on disk, an
output and its overlays written all or nothing, report folders that could hold inputs
(bench, eval, fuse-batch), fuse-video's one output check, 16-bit Netpbm headers, and
options that do not apply."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.io.images import save_image
from semfuse_rt.errors import SemfuseError
from conftest import run_main, the_one_error_line, snapshot

STEPS = "1"
SIDE = 48


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Never the user's cache, and not inside the folders whose contents the tests compare."""
    monkeypatch.setenv("SEMFUSE_RT_CACHE", str(tmp_path_factory.mktemp("cache")))


def write_set(folder: Path, name: str, dtype=np.uint8, suffix: str = ".png", seed: int = 0) -> list[Path]:
    """Two random grey images `NAME-A`, `NAME-B` of one size: a set of folder discovery."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    paths = []
    for label in "AB":
        path = folder / f"{name}-{label}{suffix}"
        assert cv2.imwrite(str(path), (rng.random((SIDE, SIDE)) * top).astype(dtype))
        paths.append(path)
    return paths


# ------------------------------------------------------------- 1. --report with spilled inputs

def test_the_report_of_a_fuse_whose_inputs_wait_on_disk_reads_them_there(tmp_path, rng, random_vgg_weights,
                                                                        monkeypatch):
    from semfuse_rt.engine.fuse import fuser as fuser_module
    from semfuse_rt.engine.fuse.fuser import Fuser

    paths = []
    for index in range(3):
        paths.append(save_image(tmp_path / f"in{index}.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)))
    spilled = []
    real_retention = Fuser.retention

    def retention(self, images, fused):
        spilled.extend(type(image).__name__ for image in images)
        assert all(Path(image.path).is_file() for image in images)  # the spill folder still holds them
        return real_retention(self, images, fused)

    monkeypatch.setattr(fuser_module.Fuser, "retention", retention)
    output = tmp_path / "out.png"
    with Fuser("max", memory_budget="1M", tile=64, steps=1, backend="torch", weights=random_vgg_weights) as fuser:
        result = fuser.fuse_files(paths, output, report=True)
    assert spilled == ["SpilledImage"] * 3
    assert [entry.input_index for entry in result.retention] == [0, 1, 2]
    assert output.is_file()


def test_a_report_that_fails_leaves_no_output(tmp_path, rng, random_vgg_weights, monkeypatch):
    from semfuse_rt.engine.fuse import fuser as fuser_module
    from semfuse_rt.engine.fuse.fuser import Fuser

    paths = [save_image(tmp_path / f"in{index}.png", rng.integers(0, 256, (40, 40), dtype=np.uint8))
             for index in range(2)]

    def failing(*_args):
        raise SemfuseError("the classifier cannot be loaded")

    monkeypatch.setattr(fuser_module.Fuser, "retention", failing)
    before = snapshot(tmp_path)
    with Fuser("max", steps=1, backend="torch", weights=random_vgg_weights) as fuser:
        with pytest.raises(SemfuseError, match="classifier"):
            fuser.fuse_files(paths, tmp_path / "out.png", report=True)
    assert snapshot(tmp_path) == before


# --------------------------------------------------- 2. the output and its overlays, all or nothing

def test_an_overlay_that_cannot_be_written_leaves_no_output(monkeypatch, capsys, tmp_path, rng):
    """`fuse a.png b.png -o out.png -m cam --save-cams cams` on a disk that fills while the
    second overlay is written: exit 2, one line, and neither the output nor an overlay, nor
    the overlay folder, nor a temp file."""
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    real_fdopen, writes = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        mode = args[0] if args else kwargs.get("mode", "r")
        if "w" not in mode or not os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            return handle
        writes.append(fd)
        if len(writes) == 3:  # the output, the first overlay, then the disk is full
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    code, _, err = run_main(monkeypatch, capsys, "fuse", "a.png", "b.png", "-o", "out.png", "-m", "cam",
                            "--save-cams", "cams", "-q")
    line = the_one_error_line(code, err)
    assert line == f"semfuse-rt: error: cams/b_cam.png: cannot write ({os.strerror(errno.ENOSPC)})"
    assert len(writes) == 3
    assert snapshot(tmp_path) == before


def test_the_output_and_its_overlays_appear_together(monkeypatch, capsys, tmp_path, rng):
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "fuse", "a.png", "b.png", "-o", "out.png", "-m", "cam",
                            "--save-cams", "cams", "-q")
    assert code in (0, None), err
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "a.png", "b.png", "cams", "cams/a_cam.png", "cams/b_cam.png", "out.png"]


def test_staged_writes_rename_all_or_leave_none(tmp_path):
    from semfuse_rt.cache import StagedWrites

    (tmp_path / "old.txt").write_bytes(b"old")
    with StagedWrites() as files:
        files.folder(tmp_path / "new" / "deeper")
        files.add(tmp_path / "new" / "deeper" / "a.txt", b"a")
        files.add(tmp_path / "old.txt", b"new")
        assert sorted(p.name for p in tmp_path.rglob("*") if not p.name.startswith(".")) == ["deeper", "new",
                                                                                          "old.txt"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["old.txt"]  # discarded: no folder, no temp file
    assert (tmp_path / "old.txt").read_bytes() == b"old"

    with StagedWrites() as files:
        files.folder(tmp_path / "new")
        files.add(tmp_path / "new" / "a.txt", b"a")
        files.add(tmp_path / "old.txt", b"new")
        assert files.commit() == [tmp_path / "new" / "a.txt", tmp_path / "old.txt"]
    assert (tmp_path / "new" / "a.txt").read_bytes() == b"a" and (tmp_path / "old.txt").read_bytes() == b"new"
    assert not [p for p in tmp_path.rglob(".*")]


def test_a_rename_that_fails_takes_back_the_new_files_already_placed(tmp_path, monkeypatch):
    from semfuse_rt import cache

    real_replace, renames = os.replace, []

    def replace(source, destination):
        renames.append(destination)
        if len(renames) == 2:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(source, destination)

    with cache.StagedWrites() as files:
        files.add(tmp_path / "a.txt", b"a")
        files.add(tmp_path / "b.txt", b"b")
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(SemfuseError, match=r"b\.txt: cannot write"):
            files.commit()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ 3. bench --out DIR

@pytest.fixture
def no_timing(monkeypatch):
    """Any work past the checks is a failure: loading weights comes before the first timing."""
    def loaded(*_args, **_kwargs):
        raise AssertionError("bench went past its checks")

    monkeypatch.setattr("semfuse_rt.export.networks.weights.load_vgg19", loaded)


@pytest.mark.parametrize("report", ["bench.png", "pipeline.png", "bench.json", "bench.md"])
def test_bench_refuses_a_report_that_would_replace_an_input(monkeypatch, capsys, tmp_path, rng, no_timing, report):
    """`bench DIR/bench.png DIR/b.png --out DIR`: the report bench.png would be written over input 1."""
    folder = tmp_path / "dir"
    folder.mkdir()
    first = folder / "first.png"
    save_image(first, rng.integers(0, 256, (40, 48), dtype=np.uint8))
    os.link(first, folder / report)  # by name for a .png, by a hard link for the others
    save_image(folder / "b.png", rng.integers(0, 256, (40, 48), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    given = f"dir/{report}" if report.endswith(".png") else "dir/first.png"
    code, _, err = run_main(monkeypatch, capsys, "bench", given, "dir/b.png", "--out", "dir", "--sizes", "", "-q")
    line = the_one_error_line(code, err)
    assert line == (f"semfuse-rt: error: --out dir: the report dir/{report} would replace input 1 ({given}); "
                    "give --out another folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out, reason", [("file.txt", "--out file.txt: is a file, not a folder"),
                                         ("file.txt/deeper", "--out file.txt/deeper: cannot create folder "
                                                             "file.txt/deeper (Not a directory)")])
def test_bench_refuses_an_out_folder_it_cannot_use_before_any_timing(monkeypatch, capsys, tmp_path, no_timing,
                                                                    out, reason):
    (tmp_path / "file.txt").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "bench", "--no-pipeline", "--sizes", "16", "--out", out, "-q")
    line = the_one_error_line(code, err)
    assert line.startswith(f"semfuse-rt: error: {reason}") and "name a folder that can be written with --out" in line
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ 4. eval --out

@pytest.fixture
def no_fusing(monkeypatch):
    def read(*_args, **_kwargs):
        raise AssertionError("eval read a set before its checks")

    monkeypatch.setattr("semfuse_rt.engine.evaluation.evaluation.load_image", read)


def test_eval_refuses_a_grid_that_would_replace_an_input(monkeypatch, capsys, tmp_path, no_fusing):
    """`eval c --out c`: the folder c holds the set `grid` of grid-c.png and grid-d.png, in
    category c, whose grid would be c/grid-c.png."""
    folder = tmp_path / "c"
    for name, seed in (("grid-c", 1), ("grid-d", 2)):
        write_set(folder, name, seed=seed)
        (folder / f"{name}-A.png").rename(folder / f"{name}.png")
        (folder / f"{name}-B.png").unlink()
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "eval", "c", "-m", "average", "--out", "c", "--no-retention", "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: --out c: c/grid-c.png would replace input 1 of set c/grid (c/grid-c.png); "
                    "give --out a folder apart from the sets")
    assert snapshot(tmp_path) == before


def test_eval_refuses_a_saved_fused_image_that_would_replace_an_input(monkeypatch, capsys, tmp_path, no_fusing):
    """`eval sets --out out --save-fused` where out/fused/c/x--average.png links to an input."""
    inputs = write_set(tmp_path / "sets" / "c", "x")
    linked = tmp_path / "out" / "fused" / "c" / "x--average.png"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(inputs[0])
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "eval", "sets", "-m", "average", "--out", "out", "--save-fused",
                            "--no-grids", "--no-retention", "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: --out out: out/fused/c/x--average.png would replace input 1 of set c/x "
                    "(sets/c/x-A.png); give --out a folder apart from the sets")
    assert snapshot(tmp_path) == before


def test_eval_refuses_an_out_folder_it_cannot_make_before_any_set_is_read(monkeypatch, capsys, tmp_path, no_fusing):
    write_set(tmp_path / "sets" / "c", "x")
    (tmp_path / "file.txt").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "eval", "sets", "-m", "average", "--out", "file.txt/reports",
                            "--no-retention", "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: --out file.txt/reports: cannot create folder file.txt/reports "
                    "(Not a directory); name a folder that can be written with --out")
    assert snapshot(tmp_path) == before


def test_the_eval_library_checks_save_fused_before_any_set_is_read(tmp_path, no_fusing):
    from semfuse_rt.engine.evaluation.datasets import FusionSet
    from semfuse_rt.engine.evaluation.evaluation import evaluate, parse_methods

    inputs = write_set(tmp_path / "c", "x")
    fused = tmp_path / "fused"
    (fused / "c").mkdir(parents=True)
    os.link(inputs[1], fused / "c" / "x--average.png")
    with pytest.raises(SemfuseError, match=r"--save-fused: .*x--average.png would replace input 2 of set c/x"):
        evaluate([FusionSet("c", "x", tuple(inputs))], parse_methods("average"), save_fused=fused,
                 retention=False, show_progress=False)


# --------------------------------------------------------------- 5. fuse-batch into the sets' folder

@pytest.mark.parametrize("force", [False, True])
def test_fuse_batch_refuses_an_output_that_links_to_another_sets_input(monkeypatch, capsys, tmp_path, weights_file,
                                                                     force):
    """`fuse-batch sets -o out [--force]` where out/c/x.png links to set c/y's input: with
    --force it was written over, without it set c/x was skipped as already fused."""
    write_set(tmp_path / "sets" / "c", "x", seed=1)
    other = write_set(tmp_path / "sets" / "c", "y", seed=2)
    (tmp_path / "out" / "c").mkdir(parents=True)
    (tmp_path / "out" / "c" / "x.png").symlink_to(other[0])
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    arguments = ["fuse-batch", "sets", "-o", "out", "--steps", STEPS, "--weights", weights_file, "-q"]
    code, out, err = run_main(monkeypatch, capsys, *arguments, *(["--force"] if force else []))
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: out/c/x.png: the output of set 'c/x' would replace input 1 of set 'c/y' "
                    "(sets/c/y-A.png); write the batch to a folder apart from the sets")
    assert out == ""
    assert snapshot(tmp_path) == before


def test_fuse_batch_into_the_folder_of_its_csv_refuses_an_output_that_is_an_input(monkeypatch, capsys, tmp_path,
                                                                                   weights_file):
    """`fuse-batch sets.csv -o .`: set c/x goes to ./c/x.png, which set c/y fuses."""
    names = {}
    for stem, seed in (("p", 1), ("q", 2)):
        names[stem] = write_set(tmp_path / "c", stem, seed=seed)
    names["p"][0].rename(tmp_path / "c" / "x.png")
    (tmp_path / "sets.csv").write_text("category,name,source1,source2\n"
                                       "c,x,c/q-A.png,c/q-B.png\n"
                                       "c,y,c/x.png,c/p-B.png\n")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", "sets.csv", "-o", ".", "--steps", STEPS,
                              "--weights", weights_file, "-q", "--force")
    line = the_one_error_line(code, err)
    assert line.startswith("semfuse-rt: error: c/x.png: the output of set 'c/x' would replace input 1 of set 'c/y' (")
    assert line.endswith("c/x.png); write the batch to a folder apart from the sets")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 6. fuse-video's output check

def write_video(path: Path, frames, fps=10) -> Path:
    from fractions import Fraction

    from semfuse_rt.engine.streams.video_io import VideoWriter

    with VideoWriter(path, Fraction(fps), lossless=True) as writer:
        for frame in frames:
            writer.write(frame)
    return path


@pytest.fixture
def two_videos(tmp_path, rng):
    return [write_video(tmp_path / name, [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(3)])
            for name in ("ir.mp4", "vis.mp4")]


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_fuse_video_refuses_an_output_that_links_to_an_input(monkeypatch, capsys, tmp_path, two_videos,
                                                             weights_file, link):
    """`fuse-video ir.mp4 vis.mp4 -o out.mp4` where out.mp4 is a link to vis.mp4."""
    output = tmp_path / "out.mp4"
    if link == "hard":
        os.link(two_videos[1], output)
    else:
        output.symlink_to(two_videos[1])
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "fuse-video", "ir.mp4", "vis.mp4", "-o", "out.mp4", "--weights",
                            weights_file, "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: out.mp4: is input 2 (vis.mp4); the result would replace it, "
                    "so write it to another file")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------- 7. 16-bit PGM and PPM headers

def netpbm(path: Path, magic: bytes, top: int, width: int = SIDE, height: int = SIDE, comment: bool = True) -> Path:
    channels = 3 if magic in (b"P3", b"P6") else 1
    samples = np.random.default_rng(top).integers(0, top + 1, height * width * channels)
    header = magic + b"\n" + (b"# written by a scanner\n" if comment else b"") + f"{width} {height}\n{top}\n".encode()
    if magic in (b"P2", b"P3"):
        body = " ".join(map(str, samples)).encode() + b"\n"
    else:
        body = samples.astype(">u2" if top > 255 else "u1").tobytes()
    path.write_bytes(header + body)
    return path


@pytest.mark.parametrize("magic", [b"P2", b"P5", b"P3", b"P6"])
@pytest.mark.parametrize("top, deep", [(255, False), (100, False), (256, True), (4095, True), (65535, True)])
def test_netpbm_headers_declare_16_bits_by_their_maximum(tmp_path, magic, top, deep):
    from semfuse_rt.engine.io.images import has_16_bit_samples, load_image

    path = netpbm(tmp_path / "x.pnm", magic, top)
    assert has_16_bit_samples(path) is deep
    assert (load_image(path).dtype == np.uint16) is deep  # what the decoder makes of it


def test_a_damaged_netpbm_header_is_left_to_the_decoder(tmp_path):
    from semfuse_rt.engine.io.images import has_16_bit_samples

    (tmp_path / "cut.pgm").write_bytes(b"P5\n48 48\n")
    (tmp_path / "words.pgm").write_bytes(b"P5\n48 48\nmany\n" + bytes(10))
    assert not has_16_bit_samples(tmp_path / "cut.pgm") and not has_16_bit_samples(tmp_path / "words.pgm")


def test_fuse_batch_refuses_16_bit_pgm_sets_bound_for_jpeg_before_any_work(monkeypatch, capsys, tmp_path):
    """`fuse-batch sets -o out --ext jpg` with a set of 12-bit PGM files."""
    folder = tmp_path / "sets" / "c"
    write_set(folder, "plain")
    folder.mkdir(parents=True, exist_ok=True)
    netpbm(folder / "deep-A.pgm", b"P5", 4095)
    netpbm(folder / "deep-B.pgm", b"P2", 4095)

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("the check reads headers, it decodes nothing")

    monkeypatch.setattr("semfuse_rt.engine.io.images.load_image", no_decoding)
    before = snapshot(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", tmp_path / "sets", "-o", tmp_path / "out",
                              "--ext", "jpg", "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: --ext jpg holds only 8-bit images, and 1 set(s) are 16-bit (c/deep); "
                    "use --ext png or --ext tif")
    assert out == "" and snapshot(tmp_path) == before


# ------------------------------------------------------------ 8. fuse-video --fps that does not apply

@pytest.fixture
def frame_folders(tmp_path, rng):
    folders = []
    for name in ("ir", "vis"):
        (tmp_path / name).mkdir()
        for index in range(3):
            save_image(tmp_path / name / f"frame{index}.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
        folders.append(tmp_path / name)
    return folders


def test_fuse_video_refuses_fps_for_a_frame_folder_output(monkeypatch, capsys, tmp_path, frame_folders,
                                                          weights_file):
    """`fuse-video ir vis -o fused --fps 5`: a folder of PNG frames has no rate to set."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "fuse-video", "ir", "vis", "-o", "fused", "--fps", "5",
                            "--weights", weights_file, "-q")
    line = the_one_error_line(code, err)
    assert line == ("semfuse-rt: error: --fps 5: a frame-folder output (-o fused, a path without a suffix) has no "
                    "frame rate; leave --fps out, or write a video (.mp4, .mkv, .mov)")
    assert snapshot(tmp_path) == before


def test_the_video_library_refuses_fps_for_a_frame_folder_output(tmp_path, frame_folders):
    from semfuse_rt.engine.streams.video_fusion import plan_video

    with pytest.raises(SemfuseError, match="--fps 12.5: a frame-folder output"):
        plan_video(frame_folders, tmp_path / "fused", fps=12.5)
    assert plan_video(frame_folders, tmp_path / "fused.mp4", fps=12.5).fps == 12.5


def test_fps_sets_the_rate_of_a_video_made_from_videos(tmp_path, two_videos):
    """With video inputs whose rate is known, --fps overrides it: it applies, so it is taken."""
    from semfuse_rt.engine.streams.video_fusion import plan_video

    assert plan_video(two_videos, tmp_path / "fused.mp4").fps == 10
    assert plan_video(two_videos, tmp_path / "fused.mp4", fps=5).fps == 5


# ------------------------------------------------- 9. benchmarks/bench_fuser.py with the cam method

def test_bench_fuser_runs_cam_without_the_options_cam_does_not_use(tmp_path):
    from conftest import dataset

    dataset("multifocus", "lytro-10-A.jpg")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fuser.py"
    environment = {**os.environ, "SEMFUSE_RT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script), "--method", "cam", "--runs", "1"], capture_output=True,
                          text=True, timeout=600, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ", cam; " in done.stdout and "| warm Fuser call |" in done.stdout
    refused = subprocess.run([sys.executable, str(script), "--method", "cam", "--preset", "fast", "--runs", "1"],
                             capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path)
    assert refused.returncode != 0 and "preset" in refused.stderr.splitlines()[-1]
