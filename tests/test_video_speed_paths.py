"""Video fusion's fast paths (issue 31, item 5): the start-only video without a Fuser or torch,
the encoder on its own thread beside the fuse, and warm frames in reused buffers. Each path
is held to what it replaces: the same frames, the same numbers, the same clean ending."""
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from semfuse_rt.engine.fuse.fuser import Fuser
from semfuse_rt.engine.streams.video_frames import Buffers, ResidualWarmStart, VideoFuser, _grey, shifted
from semfuse_rt.engine.streams.video_fusion import fuse_video
from semfuse_rt.engine.streams.video_io import FrameFolderWriter, VideoWriter, probe, read_frames, write_behind
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import AdamSchedule
from test_video import FRAMES, SIZE, frame_sets, leftovers, run_main, streams, write_folder, write_video  # noqa: F401

VIDEO_THREADS = ("semfuse-frame-writer", "semfuse-frame-reader", "semfuse-video")


def video_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(VIDEO_THREADS)]


def inputs(tmp_path, streams):  # noqa: F811
    return [write_folder(tmp_path / "a", streams[0]), write_video(tmp_path / "b.mp4", streams[1])]


# --------------------------------------------------------------------------- the start-only video

@pytest.mark.parametrize("workers", [1, 2])
def test_the_start_only_video_is_the_fusers_frame_for_frame(tmp_path, streams, vgg_weights,  # noqa: F811
                                                             weights_file, workers):
    paths = inputs(tmp_path, streams)
    sets = [list(frames) for frames in zip(*(read_frames(probe(path)) for path in paths))]
    with Fuser("max", backend="torch", weights=vgg_weights) as fuser:  # the default preset: its start alone
        expected = [fuser(frames).image for frames in sets]
    start_only = fuse_video(paths, tmp_path / "start-only", workers=workers)
    on_fuser = fuse_video(paths, tmp_path / "fuser", workers=workers, backend="torch", weights=weights_file)
    assert (start_only.backend, on_fuser.backend) == (None, "torch")  # the start alone ran on no backend
    assert start_only.frames == on_fuser.frames == FRAMES and start_only.warm_frames == 0
    assert start_only.flicker == on_fuser.flicker
    for output in (tmp_path / "start-only", tmp_path / "fuser"):
        written = list(read_frames(probe(output)))
        assert len(written) == FRAMES and all(np.array_equal(a, b) for a, b in zip(written, expected))
    assert video_threads() == []


def test_a_start_only_video_imports_neither_torch_nor_onnxruntime(tmp_path, streams):  # noqa: F811
    paths = inputs(tmp_path, streams)
    script = ("import sys\n"
              "from semfuse_rt.engine.cli import main\n"
              f"sys.argv = ['semfuse-rt', 'fuse-video', {str(paths[0])!r}, {str(paths[1])!r}, '-o', "
              f"{str(tmp_path / 'fused.mp4')!r}, '-q', '--workers', '2']\n"
              "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
              "print('imported', [name for name in ('torch', 'onnxruntime') if name in sys.modules])\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "imported []" in run.stdout, run.stdout
    assert "with max (preset blend) in" in run.stdout and "0 warm-started" in run.stdout
    assert probe(tmp_path / "fused.mp4").frames == FRAMES


def test_the_command_picks_the_start_only_video_and_the_workers_change_no_byte(monkeypatch, capsys, tmp_path,
                                                                              streams):  # noqa: F811
    paths = inputs(tmp_path, streams)
    outputs = []
    for workers in ("1", "2"):
        outputs.append(tmp_path / f"fused-{workers}.mp4")
        code, stdout, err = run_main(monkeypatch, capsys, "fuse-video", *paths, "-o", outputs[-1], "-q",
                                     "--workers", workers)
        assert code in (0, None), err
        assert "with max (preset blend) in" in stdout, stdout  # no backend named: none ran
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    # The warm frames' --steps, where the preset runs none, is refused on this path too.
    code, _, err = run_main(monkeypatch, capsys, "fuse-video", *paths, "-o", tmp_path / "refused.mp4", "-q",
                            "--steps", "2")
    assert code == 2 and "--steps sets the warm frames' steps, but preset blend runs none" in err
    assert not (tmp_path / "refused.mp4").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- the encoder's thread

def test_write_behind_keeps_order_and_ends_its_thread():
    consumed = []
    with write_behind(consumed.append, depth=2) as sink:
        for item in range(50):
            sink.put(item)
    assert consumed == list(range(50)) and video_threads() == []


def test_write_behind_hands_on_the_consumers_error_and_drops_the_rest():
    consumed = []

    def consume(item):
        if item == 3:
            raise SemfuseError("disk full")
        consumed.append(item)

    sink = write_behind(consume, depth=2)
    with pytest.raises(SemfuseError, match="disk full"):
        for item in range(1000):  # raised at a put soon after item 3, or at the latest at close
            sink.put(item)
        sink.close()
    sink.close(drain=False)
    assert consumed == [0, 1, 2] and video_threads() == []


def test_write_behind_without_draining_drops_what_has_not_begun():
    began, release, consumed = threading.Event(), threading.Event(), []

    def consume(item):
        began.set()
        release.wait(10)
        consumed.append(item)

    sink = write_behind(consume, depth=4)
    for item in range(4):
        sink.put(item)
    assert began.wait(10)  # the thread is inside consume(0); 1..3 wait
    threading.Timer(0.1, release.set).start()
    sink.close(drain=False)  # returns only once consume(0) has finished
    assert consumed == [0] and video_threads() == []


@pytest.mark.parametrize("suffix", [".mp4", ""])
def test_an_encoder_failure_leaves_no_output_and_no_thread(monkeypatch, tmp_path, streams, suffix):  # noqa: F811
    paths = inputs(tmp_path, streams)
    writer = VideoWriter if suffix else FrameFolderWriter
    real = writer.write

    def failing(self, frame):
        if self.frames == 3:
            raise SemfuseError("no space left on the device")
        real(self, frame)

    monkeypatch.setattr(writer, "write", failing)
    out = tmp_path / f"fused{suffix}"
    with pytest.raises(SemfuseError, match="no space left"):
        fuse_video(paths, out)
    assert not out.exists() and leftovers(tmp_path) == [] and video_threads() == []


def test_ctrl_c_during_a_start_only_video_leaves_no_output_and_no_thread(monkeypatch, tmp_path,
                                                                         streams):  # noqa: F811
    paths = inputs(tmp_path, streams)
    real = VideoFuser.__call__

    def interrupted(self, frames):
        if self.index == 2:  # each worker counts its own frames
            raise KeyboardInterrupt
        return real(self, frames)

    monkeypatch.setattr(VideoFuser, "__call__", interrupted)
    for out in (tmp_path / "fused.mp4", tmp_path / "fused"):
        for workers in (1, 2):
            with pytest.raises(KeyboardInterrupt):
                fuse_video(paths, out, workers=workers)
            assert not out.exists() and video_threads() == []
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- warm frames' buffers

def shifted_as_before(image, dy, dx):
    """The shift as it was written before it took a buffer: a new tensor each call."""
    height, width = image.shape[-2:]
    if dy == 0 and dx == 0:
        return image
    out = torch.zeros_like(image)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        image[..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


class StubRunner:
    """A runner whose starts are given: only ResidualWarmStart's own arithmetic is tested."""

    def __init__(self, starts):
        self._starts = iter(starts)

    def start(self, pixels, how):
        return next(self._starts)


class StubFuser:
    init = "max"
    schedule = AdamSchedule(steps=10, lr=0.4, decay="cosine")

    def __init__(self, starts):
        self.active_runner = StubRunner(starts)


def test_the_warm_start_is_the_same_numbers_in_the_same_buffers():
    generator = torch.Generator().manual_seed(0)
    starts = [torch.rand(1, 3, 24, 32, generator=generator) * 255 for _ in range(4)]
    optimised = [torch.rand(1, 3, 24, 32, generator=generator) * 255 for _ in range(4)]
    warm = ResidualWarmStart(StubFuser([s.clone() for s in starts]), steps=2, carry=0.7)
    assert warm.start(None) is not None and not warm.is_warm  # the first frame is cold: its own start
    warm.optimised(optimised[0])
    residual = warm.residual
    assert torch.equal(residual, optimised[0] - starts[0])
    given = []
    for t, shift in ((1, (1, -2)), (2, (0, 0)), (3, (-30, 5))):  # the last moves everything out
        warm.shift = shift
        before = warm.residual.clone()
        given.append(warm.start(None))
        assert torch.equal(given[-1], starts[t] + 0.7 * shifted_as_before(before, *shift)), shift
        assert torch.equal(warm.residual, before)  # the residual is read, never written, by start()
        warm.optimised(optimised[t])
        assert torch.equal(warm.residual, optimised[t] - starts[t])
        assert warm.residual is residual  # every frame in the same memory
    assert given[0] is given[1] is given[2]


def test_shifted_into_a_buffer_is_the_shift():
    image = torch.arange(24.0).reshape(1, 2, 3, 4)
    out = torch.full_like(image, -1.0)
    for dy, dx in ((0, 0), (1, -1), (-2, 3), (3, 0), (0, -4)):
        moved = shifted(image, dy, dx, out=out)
        assert moved is out and torch.equal(moved, shifted_as_before(image, dy, dx)), (dy, dx)
    assert shifted(image, 0, 0) is image


def grey_as_before(frames):
    """The inputs' mean plane as it was computed before it took buffers."""
    def plane(frame):
        values = frame.astype(np.float32)
        if values.ndim == 3:
            values = values.mean(axis=2)
        if frame.dtype == np.uint16:
            values /= 257
        return values
    total = plane(frames[0])
    for frame in frames[1:]:
        total = total + plane(frame)
    return total / len(frames)


@pytest.mark.parametrize("kinds", [("grey8", "grey8"), ("colour8", "colour8"), ("grey16", "colour16"),
                                   ("grey8", "colour8", "grey16")])
def test_the_grey_plane_is_the_same_numbers_in_reused_memory(rng, kinds):
    def frame(kind):
        shape = (20, 28, 3) if kind.startswith("colour") else (20, 28)
        top, dtype = (65535, np.uint16) if kind.endswith("16") else (255, np.uint8)
        return rng.integers(0, top + 1, shape).astype(dtype)

    buffers = Buffers()
    planes = []
    for _ in range(2):
        frames = [frame(kind) for kind in kinds]
        planes.append(_grey(frames, buffers, "grey 0"))
        assert planes[-1].dtype == np.float32 and np.array_equal(planes[-1], grey_as_before(frames))
    assert planes[0] is planes[1]


def test_a_warm_video_works_in_the_same_buffers_frame_after_frame(monkeypatch, vgg_weights, streams):  # noqa: F811
    import semfuse_rt.engine.streams.video_frames as video_frames

    greys, warm_starts = [], []
    real_shift, real_start = video_frames.global_shift, ResidualWarmStart.start

    # The objects themselves are kept, so that no id is freed and given to another.
    def recording_shift(previous, current):
        greys.append((previous, current))
        return real_shift(previous, current)

    def recording_start(self, pixels):
        start = real_start(self, pixels)
        warm_starts.append((start, self.residual))
        return start

    monkeypatch.setattr(video_frames, "global_shift", recording_shift)
    monkeypatch.setattr(ResidualWarmStart, "start", recording_start)
    with Fuser("max", backend="torch", weights=vgg_weights, steps=2) as fuser:
        results = list(VideoFuser(fuser, steps=1).fuse_frames(frame_sets(streams)))
    assert [r.warm for r in results] == [False] + [True] * (FRAMES - 1)
    # Two grey planes in turn, the previous frame's and this one's.
    assert len(greys) == FRAMES - 1 and len({id(plane) for pair in greys for plane in pair}) == 2
    assert all(previous is not current for previous, current in greys)
    # The warm start and the residual: one tensor each from the first warm frame on.
    first_start, first_residual = warm_starts[1]
    assert all(start is first_start and residual is first_residual for start, residual in warm_starts[1:])
    assert first_start is not first_residual
