"""`semfuse-rt fuse-batch` against hostile input: a malformed CSV row fails alone, a full disk
stops the batch with one line and no partial file, 16-bit sets bound for an 8-bit format are
refused before any work, and --workers beyond the machine is lowered with a warning."""
import errno
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_batch import run_main
from semfuse_rt.engine.streams.batch import BatchReport, DiskFull, SetOutcome, is_disk_full
from semfuse_rt.engine.io.images import has_16_bit_samples
from semfuse_rt.errors import SemfuseError

STEPS = "1"
SIDE = 48


def write_set(folder: Path, name: str, dtype=np.uint8, colour: bool = False, suffix: str = ".png",
              seed: int = 0) -> list[Path]:
    """Two random images `NAME-A`, `NAME-B` of one size: a set of folder discovery."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    paths = []
    for label in "AB":
        shape = (SIDE, SIDE, 3) if colour else (SIDE, SIDE)
        path = folder / f"{name}-{label}{suffix}"
        assert cv2.imwrite(str(path), (rng.random(shape) * top).astype(dtype))
        paths.append(path)
    return paths


def fingerprints(folder: Path) -> dict:
    """Every file under `folder` by its bytes' hash: the inputs, to show they are untouched."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.rglob("*"))
            if path.is_file()}


def hidden_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob(".*")]


# ------------------------------------------------------------------------ a malformed CSV row

def test_a_malformed_csv_row_fails_alone_by_its_line_and_the_others_are_fused(monkeypatch, capsys, tmp_path,
                                                                              weights_file):
    images = tmp_path / "images"
    write_set(images, "good", seed=1)
    write_set(images, "other", seed=2)
    (images / "fifo").mkdir()
    os.mkfifo(images / "fifo" / "pipe.png")
    listing = tmp_path / "sets.csv"
    listing.write_bytes(
        b"name,source1,source2\n"
        b"good,images/good-A.png,images/good-B.png\n"  # line 2
        b"lonely,images/good-A.png,\n"  # line 3: one source
        b"missing,images/good-A.png,images/nowhere.png\n"  # line 4
        b"extra,images/good-A.png,images/good-B.png,images/other-A.png\n"  # line 5: a cell beyond the header
        b"pipe,images/good-A.png,images/fifo/pipe.png\n"  # line 6: not a regular file
        b"bytes,images/good-A.png,images/\xff.png\n"  # line 7: not UTF-8
        b"good,images/other-A.png,images/other-B.png\n"  # line 8: the same set again
        b"../x,images/other-A.png,images/other-B.png\n"  # line 9: a name that is no file name
        b"other,images/other-A.png,images/other-B.png\n"  # line 10
    )
    before = fingerprints(images)
    outdir = tmp_path / "out"
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", listing, "-o", outdir, "--steps", STEPS,
                              "--weights", weights_file, "-q")
    assert code == 1, err
    assert out.startswith("2 fused, 0 skipped (already done), 7 failed in "), out
    assert err.splitlines() == [
        f"failed sets/lonely: {listing}, line 3: set 'lonely' has 1 source(s); fusion needs 2 or more",
        f"failed sets/missing: {listing}, line 4: {images / 'nowhere.png'}: no such file",
        f"failed sets/extra: {listing}, line 5: 4 cells, but the header names 3 columns",
        f"failed sets/pipe: {listing}, line 6: {images / 'fifo' / 'pipe.png'}: not a regular file",
        f"failed sets/bytes: {listing}, line 7: not UTF-8 text",
        f"failed sets/good: {listing}, line 8: set 'sets/good' listed twice",
        "failed sets/../x: set 'sets/../x': its name '../x' cannot be a file name in the output folder",
    ]
    assert sorted(path.relative_to(outdir).as_posix() for path in outdir.rglob("*") if path.is_file()) == \
        ["sets/good.png", "sets/other.png"]
    assert fingerprints(images) == before and not hidden_files(outdir)


def test_a_csv_of_rows_that_are_all_malformed_is_one_line(monkeypatch, capsys, tmp_path):
    listing = tmp_path / "sets.csv"
    listing.write_text("name,source1,source2\nx,a.png,\n")
    code, _, err = run_main(monkeypatch, capsys, "fuse-batch", listing, "-o", tmp_path / "out", "-q")
    assert code == 2 and err.splitlines() == [
        f"semfuse-rt: error: no usable set in {listing}; {listing}, line 2: set 'x' has 1 source(s); "
        "fusion needs 2 or more"]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ a full disk

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_stops_the_batch_with_one_line_and_no_partial_file(monkeypatch, capsys, tmp_path,
                                                                       weights_file, code):
    sets = tmp_path / "sets"
    for number, name in enumerate(("a", "b", "c")):
        write_set(sets / "c", name, seed=number)
    before = fingerprints(sets)
    outdir = tmp_path / "out"
    writes = []
    real_fdopen = os.fdopen

    class FillingFile:
        """A file on a disk that fills half way through the second output written to it."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def write(self, data):
            writes.append(data)
            if len(writes) < 2:
                return self.handle.write(data)
            self.handle.write(data[:len(data) // 2])
            self.handle.flush()
            raise OSError(code, os.strerror(code))

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        return FillingFile(handle) if os.readlink(f"/proc/self/fd/{fd}").startswith(str(outdir)) else handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    arguments = ("fuse-batch", sets, "-o", outdir, "--steps", STEPS, "--weights", weights_file, "-q")
    code_, out, err = run_main(monkeypatch, capsys, *arguments)
    assert code_ == 2 and out == "", out
    assert err.splitlines() == [
        f"semfuse-rt: error: {outdir / 'c' / 'b.png'}: cannot write ({os.strerror(code)}); the batch stopped "
        "there, keeping the 1 set(s) fused so far: free some space and run the same command again to resume"]
    assert len(writes) == 2, "the batch went on after the disk filled"
    assert sorted(path.name for path in outdir.rglob("*")) == ["a.png", "c"]  # no partial or temp file
    assert fingerprints(sets) == before

    monkeypatch.setattr(os, "fdopen", real_fdopen)  # room again: the same command resumes
    code_, out, err = run_main(monkeypatch, capsys, *arguments)
    assert code_ == 0 and out.startswith("2 fused, 1 skipped (already done), 0 failed"), err
    assert sorted(path.name for path in (outdir / "c").iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_full_disk_is_seen_through_the_one_line_error_that_wraps_it():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as error:
            raise SemfuseError(f"x.png: cannot write ({error.strerror})") from None
    except SemfuseError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(SemfuseError("x.png: cannot write (Permission denied)"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    report = BatchReport()
    report.record(SetOutcome("c/a", "a.png", "unreadable"))
    with pytest.raises(DiskFull, match="keeping the 0 set") as stopped:  # what a worker process reports too
        report.record(SetOutcome("c/b", "b.png", "b.png: cannot write (No space left on device)", disk_full=True))
    # The sets that failed before, for other reasons, go with it: the CLI prints them.
    assert [outcome.key for outcome in stopped.value.earlier] == ["c/a"]


# --------------------------------------------------------------------- 16-bit sets and 8-bit formats

@pytest.mark.parametrize("ext", ["jpg", "bmp"])
def test_16_bit_sets_bound_for_an_8_bit_format_are_refused_before_any_work(monkeypatch, capsys, tmp_path, ext):
    sets = tmp_path / "sets"
    write_set(sets / "c", "plain")
    write_set(sets / "c", "deep", dtype=np.uint16)
    write_set(sets / "c", "deepcolour", dtype=np.uint16, colour=True, suffix=".tif")
    before = fingerprints(sets)

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("the check reads headers, it decodes nothing")

    monkeypatch.setattr("semfuse_rt.engine.io.images.load_image", no_decoding)
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", sets, "-o", tmp_path / "out", "--ext", ext, "-q")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"semfuse-rt: error: --ext {ext} holds only 8-bit images, and 2 set(s) are 16-bit (c/deep, c/deepcolour); "
        "use --ext png or --ext tif"]
    assert not (tmp_path / "out").exists() and fingerprints(sets) == before


def test_the_bit_depth_comes_from_the_header(tmp_path):
    for dtype, colour, suffix in [(np.uint8, False, ".png"), (np.uint16, False, ".png"), (np.uint16, True, ".png"),
                                  (np.uint8, True, ".tif"), (np.uint16, True, ".tif"), (np.uint8, True, ".jpg")]:
        path = write_set(tmp_path / f"{np.dtype(dtype).name}-{colour}{suffix}", "s", dtype, colour, suffix)[0]
        assert has_16_bit_samples(path) == (dtype == np.uint16), path
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    os.mkfifo(tmp_path / "pipe.png")
    assert not has_16_bit_samples(tmp_path / "broken.png") and not has_16_bit_samples(tmp_path / "pipe.png")


# ----------------------------------------------------------------------------------- --workers

def test_workers_beyond_the_machine_are_lowered_with_one_warning(monkeypatch, capsys, tmp_path, weights_file):
    sets = tmp_path / "sets"
    write_set(sets / "c", "a")
    code, out, err = run_main(monkeypatch, capsys, "fuse-batch", sets, "-o", tmp_path / "out", "--workers", "400",
                              "--steps", STEPS, "--weights", weights_file, "-q")
    assert code == 0 and out.startswith("1 fused"), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("semfuse-rt: warning: --workers 400 is more than this machine "
                                                   "carries"), err
