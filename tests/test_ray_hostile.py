"""`--ray` against hostile conditions: an address where no cluster runs, or where something
that is not Ray listens, is one line within --ray-timeout (never Ray's minutes of retries and
warnings), in fuse-batch and fuse-video; Ctrl-C and SIGTERM stop `fuse-video --ray` as they
stop a local run; and a real cluster still passes the check."""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from test_batch import processes_with  # noqa: E402
from test_ray_batch import _cmdline  # noqa: E402
from test_video import leftovers, run_main, streams, write_folder  # noqa: E402,F401

QUICK_S = 20  # far above the check itself (milliseconds) and the import of the command


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Listener:
    """Something on a port that is not Ray: it accepts, then says `reply` (or nothing)."""

    def __init__(self, reply: bytes | None):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.reply = reply
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.reply is not None:
                connection.sendall(self.reply)

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


def digest(folder: Path) -> dict:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.rglob("*"))
            if path.is_file()}


@pytest.fixture
def inputs(tmp_path, streams):  # noqa: F811
    """Two frame folders of one stream each, and one set for the batch (the first frames)."""
    first, second = write_folder(tmp_path / "a", streams[0]), write_folder(tmp_path / "b", streams[1])
    sets = tmp_path / "sets" / "c"
    sets.mkdir(parents=True)
    shutil.copy(first / "frame0.png", sets / "x-A.png")
    shutil.copy(second / "frame0.png", sets / "x-B.png")
    return first, second, tmp_path / "sets"


def command(kind: str, inputs, tmp_path) -> tuple[list, Path]:
    first, second, sets = inputs
    if kind == "fuse-batch":
        return ["fuse-batch", sets, "-o", tmp_path / "out"], tmp_path / "out"
    return ["fuse-video", first, second, "-o", tmp_path / "fused.mp4"], tmp_path / "fused.mp4"


def run_quickly(monkeypatch, capfd, *args) -> tuple[int, list[str], float]:
    """The command through main(); stderr at the descriptor, so Ray's native output counts."""
    started = time.monotonic()
    code, _, err = run_main(monkeypatch, capfd, *args)
    return code, err.splitlines(), time.monotonic() - started


@pytest.mark.parametrize("kind", ["fuse-batch", "fuse-video"])
def test_no_cluster_at_the_address_is_one_line_in_seconds(monkeypatch, capfd, tmp_path, inputs,
                                                          weights_file, kind):  # noqa: F811
    arguments, output = command(kind, inputs, tmp_path)
    before = digest(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    code, err, took = run_quickly(monkeypatch, capfd, *arguments, "--ray", "--ray-address", address,
                                  "--weights", weights_file, "-q")
    assert code == 2 and err == [f"semfuse-rt: error: no Ray cluster at {address} (is `ray start --head` running?)"]
    assert took < QUICK_S
    assert not output.exists() and leftovers(tmp_path) == [] and digest(tmp_path) == before


@pytest.mark.parametrize("kind", ["fuse-batch", "fuse-video"])
@pytest.mark.parametrize("reply, message", [
    (None, "no Ray cluster answered at {address} within 1 s (is `ray start --head` running there? for a slow "
           "network, raise --ray-timeout)"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "{address} answers, but not as a Ray cluster; give the head's GCS port (6379 "
                                 "unless `ray start --port` said otherwise)"),
], ids=["silent", "not-http2"])
def test_something_else_at_the_address_is_one_line_within_the_timeout(monkeypatch, capfd, tmp_path, inputs,
                                                                       weights_file, kind, reply,  # noqa: F811
                                                                       message):
    arguments, output = command(kind, inputs, tmp_path)
    before = digest(tmp_path)
    listener = Listener(reply)
    try:
        address = f"127.0.0.1:{listener.port}"
        code, err, took = run_quickly(monkeypatch, capfd, *arguments, "--ray", "--ray-address", address,
                                      "--ray-timeout", "1", "--weights", weights_file, "-q")
    finally:
        listener.close()
    assert code == 2 and err == ["semfuse-rt: error: " + message.format(address=address)]
    assert took < QUICK_S
    assert not output.exists() and leftovers(tmp_path) == [] and digest(tmp_path) == before


@pytest.mark.parametrize("kind", ["fuse-batch", "fuse-video"])
@pytest.mark.parametrize("options, message", [
    (["--ray-timeout", "3"], "--ray-address, --ray-actors, --num-gpus-per-actor and --ray-timeout need --ray"),
    (["--ray", "--ray-timeout", "3"], "--ray-timeout bounds the connection to --ray-address; a local Ray instance "
                                      "has none: give --ray-address or leave out --ray-timeout"),
    (["--ray", "--ray-address", "127.0.0.1:1", "--ray-timeout", "inf"],
     "--ray-timeout must be a number of seconds above 0 and at most 3600, got inf"),
    (["--ray", "--ray-address", "127.0.0.1:1", "--ray-timeout", "0"],
     "--ray-timeout must be a number of seconds above 0 and at most 3600, got 0.0"),
], ids=["without-ray", "without-address", "inf", "zero"])
def test_a_ray_timeout_that_does_not_apply_or_is_out_of_range_is_one_line(monkeypatch, capfd, tmp_path, inputs,
                                                                          kind, options, message):
    arguments, output = command(kind, inputs, tmp_path)
    code, err, _ = run_quickly(monkeypatch, capfd, *arguments, *options, "-q")
    assert code == 2 and err == [f"semfuse-rt: error: {message}"]
    assert not output.exists() and leftovers(tmp_path) == []


def test_the_help_of_both_commands_documents_the_timeout(monkeypatch, capfd):
    for kind in ("fuse-batch", "fuse-video"):
        monkeypatch.setenv("COLUMNS", "200")
        code, out, _ = run_main(monkeypatch, capfd, kind, "--help")
        assert code == 0 and "--ray-timeout" in out and "(default 5)" in out


# ------------------------------------------------------------------ local instances and clusters

def _script() -> str:
    return str(Path(sys.executable).with_name("semfuse-rt"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds Ray's processes through /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_fuse_video_on_ray_as_it_stops_a_local_run(tmp_path, inputs, weights_file,  # noqa: F811
                                                                  signum):
    first, second, _ = inputs
    output = tmp_path / "fused.mp4"
    before = digest(tmp_path)
    name, value = "SEMFUSE_RT_RAY_TEST", f"{os.getpid()}-{time.monotonic_ns()}"
    video = subprocess.Popen([_script(), "fuse-video", str(first), str(second), "-o", str(output), "--ray",
                              "--ray-actors", "2", "--cold", "--steps", "100000", "--backend", "torch",
                              "--weights", str(weights_file), "-q"],
                             env={**os.environ, name: value}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Ray names an actor's process after the method it runs: a chunk is being fused.
        while (not any("WorkActor.run" in _cmdline(pid) for pid in processes_with(f"{name}={value}"))
               and time.monotonic() < deadline and video.poll() is None):
            time.sleep(0.2)
        started = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(video.pid, signum)  # as a terminal's Ctrl-C: to the whole process group
        else:
            os.kill(video.pid, signum)  # as `kill`: to the command alone
        _, err = video.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if video.poll() is None:
            os.killpg(video.pid, signal.SIGKILL)
    assert video.returncode == 128 + signum and err.splitlines() == ["semfuse-rt: interrupted"], err
    assert took < 30
    deadline = time.monotonic() + 15
    while processes_with(f"{name}={value}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with(f"{name}={value}") == []
    assert not output.exists() and leftovers(tmp_path) == [] and digest(tmp_path) == before


@pytest.mark.slow
def test_a_real_cluster_passes_the_check_and_fuses(tmp_path, inputs, weights_file):  # noqa: F811
    _, _, sets = inputs
    port = free_port()
    # A short folder of its own: Ray's socket paths must fit in 107 bytes.
    ray_folder = tempfile.mkdtemp(prefix="sfray", dir="/tmp")
    # Ray turns token authentication on for a head wherever ~/.ray holds a token, and a driver
    # given an address sends none unless told to: both are told, whatever this machine holds.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(["ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             f"--temp-dir={ray_folder}", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=tmp_path, env=env, executable=str(Path(sys.executable).with_name("ray")))
    try:
        from semfuse_rt.engine.streams.ray_session import check_cluster_answers
        from semfuse_rt.errors import SemfuseError

        deadline = time.monotonic() + 120
        while True:
            try:
                check_cluster_answers(f"127.0.0.1:{port}", 2)
                break
            except SemfuseError:
                assert time.monotonic() < deadline and head.poll() is None, "the head never came up"
                time.sleep(0.5)
        done = subprocess.run([_script(), "fuse-batch", str(sets), "-o", str(tmp_path / "out"), "--ray",
                               "--ray-address", f"127.0.0.1:{port}", "--steps", "1", "--weights", str(weights_file),
                               "-q"], capture_output=True, text=True, timeout=300, env=env)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_folder, ignore_errors=True)
    assert done.returncode == 0 and done.stdout.startswith("1 fused") and done.stderr == "", done.stderr
    assert (tmp_path / "out" / "c" / "x.png").is_file()
