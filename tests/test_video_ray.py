"""Video chunks on a local Ray instance (CPU): the same frames as the local run with the same
chunks, in order, each chunk's first frame cold."""
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from test_video import FRAMES, SIZE, run_main, streams, write_folder  # noqa: E402,F401

from semfuse_rt.engine.streams.ray_session import ray_session  # noqa: E402
from semfuse_rt.engine.streams.video_fusion import fuse_video  # noqa: E402
from semfuse_rt.engine.streams.video_io import probe, read_frames  # noqa: E402
from semfuse_rt.engine.streams.video_ray import chunk_ranges, default_chunk_frames  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module; fuse_video's own ray_session uses it as it is."""
    with ray_session(num_cpus=2) as session:
        yield session


def test_chunk_ranges():
    assert chunk_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert default_chunk_frames(7, 2) == 4 and default_chunk_frames(1, 4) == 1


def test_ray_chunks_are_the_local_chunked_run(monkeypatch, capsys, tmp_path, local_ray, streams,  # noqa: F811
                                              weights_file):  # noqa: F811
    first, second = write_folder(tmp_path / "a", streams[0]), write_folder(tmp_path / "b", streams[1])
    options = {"weights": weights_file, "backend": "torch", "preset": "blend-steps", "steps": 1, "chunk_frames": 4}
    local = fuse_video([first, second], tmp_path / "local", **options)
    on_ray = fuse_video([first, second], tmp_path / "ray", executor="ray", workers=2, **options)
    assert (local.frames, local.warm_frames) == (on_ray.frames, on_ray.warm_frames) == (FRAMES, FRAMES - 2)
    local_frames = list(read_frames(probe(tmp_path / "local")))
    ray_frames = list(read_frames(probe(tmp_path / "ray")))
    assert len(ray_frames) == FRAMES and all(f.shape == (SIZE, SIZE) for f in ray_frames)
    assert all(np.array_equal(a, b) for a, b in zip(local_frames, ray_frames))

    code, stdout, err = run_main(monkeypatch, capsys, "fuse-video", first, second, "-o", tmp_path / "fused.mp4",
                                 "--ray", "--ray-actors", "2", "--weights", weights_file, "--backend", "torch",
                                 "--preset", "blend-steps", "--steps", "1", "-q")
    assert code in (0, None), err
    assert probe(tmp_path / "fused.mp4").frames == FRAMES and f"{FRAMES - 2} warm-started" in stdout
