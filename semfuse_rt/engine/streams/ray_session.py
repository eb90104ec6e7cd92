"""Ray, for fusing on more than one machine: a session on a cluster or a local instance, and
an actor that holds one `Fuser` for its whole life.

    with ray_session(address) as ray:
        actors = start_fuser_actors(2, "max", backend="ort", steps=20)
        fused = ray.get(actors[0].fuse_arrays.remote([a, b]))

Ray is an optional extra (`pip install 'semfuse-rt[ray]'`); nothing here imports it before it
is asked for, so the rest of the package works without it. Every node of a cluster needs
semfuse-rt installed in the same Python environment as the driver's.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from semfuse_rt.engine.streams.ray_timeout import DEFAULT_CONNECT_TIMEOUT_S, check_connect_timeout
from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:
    from semfuse_rt.engine.fuse.fuse_options import FuseOptions

__all__ = ["RAY_MISSING", "import_ray", "ray_session", "check_cluster_answers", "FuserActor", "FusedFiles",
           "actor_options", "fuser_actor_class", "start_fuser_actors", "start_actors", "wait_until_ready",
           "wait_for", "ray_failure", "signals_unwrapped", "sigint_ignored_by_new_processes", "pinned_options"]

POLL_SECONDS = 0.5  # how soon a wait on Ray sees Ctrl-C
RAY_MISSING = "Ray is not installed; install the ray extra: pip install 'semfuse-rt[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise SemfuseError(RAY_MISSING) from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None,
                connect_timeout_s: float | None = None) -> Iterator:
    """Connect to the cluster at `address` (`HOST:PORT`, or `auto` for the one started on this
    machine with `ray start`), or start a local instance with `num_cpus` CPUs (default: all).
    Yields the `ray` module and shuts down only what it started: a session already open in
    this process (a caller's, a test's) is used as it is and left open.

    A cluster must accept a connection and answer within `connect_timeout_s` (default
    DEFAULT_CONNECT_TIMEOUT_S; check_cluster_answers): otherwise a one-line SemfuseError.
    `auto` is looked up first (_auto_address), and checked as an address given would be."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None and num_cpus is not None:
        raise SemfuseError("num_cpus applies to a local Ray instance, not to a cluster given by its address")
    timeout_s = check_connect_timeout(DEFAULT_CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s)
    if address is None:
        # Ray tells, on every new local instance, that it turned on token authentication; an
        # instance that lives for one command needs no notice of its own (the notice names a
        # safe default, not a problem; warnings about anything else still show).
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # No dashboard, and the actors' logs stay in Ray's log folder: the command's output is
    # its own progress and summary. Failures come back as values or exceptions.
    # "local": a new instance of this process's own, never one found by chance
    # (RAY_ADDRESS, or a `ray start` left running on this machine).
    settings = dict(address=address or "local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                    logging_level=logging.WARNING, configure_logging=False)
    try:
        if address is None:
            with sigint_ignored_by_new_processes(), sigterm_handler_kept():
                ray.init(**settings)
        else:
            if address == "auto":
                found, source = _auto_address(ray)
                check_cluster_answers(found, timeout_s, found_in=source)
            else:
                check_cluster_answers(address, timeout_s)
            with sigterm_handler_kept():
                ray.init(**settings)
    except Exception as error:
        if not _ray_could_not_connect(error, ray, address):
            raise
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        hint = ""
        if address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ:
            # Ray sends its token only where asked to for an address given explicitly.
            hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token here)"
        raise SemfuseError(f"cannot start or reach {where}: {_first_line(error)}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_cluster_answers(address: str, timeout_s: float, found_in: str | None = None) -> None:
    """Within `timeout_s`, before ray.init: a TCP connection to the address's port, and an
    answer in HTTP/2, which every Ray endpoint (GCS, Ray Client) speaks through gRPC. Given
    an address where nothing listens, or where something that is not Ray does, ray.init
    retries for minutes, printing the GCS client's warnings; it is not stopped from outside
    once it runs (a thread left in its retries brings the process down at exit). Forms other
    than [SCHEME://]HOST:PORT are left to Ray. `found_in`: where `--ray-address auto` found
    `address`, for a failure to name."""
    host, port = _host_and_port(address)
    if host is None:
        return
    try:
        _check_answers(address, host, port, timeout_s)
    except SemfuseError as error:
        if found_in is None:
            raise
        raise SemfuseError(f"{error}; --ray-address auto took {address} from {found_in}") from None


def _check_answers(address: str, host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            connection.sendall(_HTTP2_PREFACE + _HTTP2_EMPTY_SETTINGS)
            reply = b""
            while len(reply) < 9:  # a frame header may arrive in pieces
                piece = connection.recv(9 - len(reply))
                if not piece:
                    break
                reply += piece
    except socket.gaierror as error:
        raise SemfuseError(f"--ray-address {address}: cannot resolve {host} ({error.strerror})") from None
    except TimeoutError:
        raise SemfuseError(f"no Ray cluster answered at {address} within {timeout_s:g} s (is `ray start --head` "
                           "running there? for a slow network, raise --ray-timeout)") from None
    except OSError:
        raise SemfuseError(f"no Ray cluster at {address} (is `ray start --head` running?)") from None
    if len(reply) < 9 or reply[3] != _HTTP2_SETTINGS:
        raise SemfuseError(f"{address} answers, but not as a Ray cluster; give the head's GCS port "
                           "(6379 unless `ray start --port` said otherwise)")


# A client's HTTP/2 connection preface and an empty SETTINGS frame; a gRPC server answers
# with a SETTINGS frame of its own (RFC 9113, 3.4): the frame's type is its fourth byte.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x04


def _host_and_port(address: str) -> tuple[str | None, int]:
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None, 0
    return host, int(port)


def _auto_address(ray) -> tuple[str, str]:
    """The address `--ray-address auto` stands for, found as ray.init finds it (RAY_ADDRESS,
    else the address file of the last `ray start` on this machine), and where it was found.
    Ray would also join any instance it sees running here, another command's local one
    included; `auto` means the cluster that `ray start` runs, so that is not looked for."""
    from_environment = os.environ.get("RAY_ADDRESS", "")
    if from_environment and from_environment != "auto":
        return from_environment, "RAY_ADDRESS"
    try:
        recorded = ray._private.utils.read_ray_address()
    except AttributeError:  # a Ray that keeps it elsewhere: ray.init looks on its own
        return "auto", "Ray"
    if recorded:
        return recorded, ("the address file of the last `ray start` on this machine (`ray stop` forgets a "
                          "cluster that is gone)")
    raise SemfuseError("no Ray cluster for --ray-address auto: RAY_ADDRESS is not set and no `ray start --head` "
                       "runs on this machine; start one, or give --ray-address HOST:PORT")


# Where Ray starts a local instance's processes and waits for them: what is raised there
# (RuntimeError "Failed to start GCS", Exception "timed out during startup") is a failed
# start, where the same types raised anywhere else would be a bug to show as it is.
_RAY_STARTUP_MODULES = ("ray._private.node", "ray._private.services")


def _ray_could_not_connect(error: Exception, ray, address: str | None) -> bool:
    """Whether ray.init's `error` is Ray failing to reach the cluster at `address` (or to
    start a local instance, without one), as opposed to anything else. For a cluster, Ray
    wraps what goes wrong in the connection in a ConnectionError; ValueError is its answer
    to an address it cannot parse, RayError (AuthenticationError) to a refused one."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if address is not None:
        return isinstance(error, (ValueError, ray.exceptions.RayError))
    return _raised_in(error, _RAY_STARTUP_MODULES)


def _raised_in(error: BaseException, modules: tuple[str, ...]) -> bool:
    """Whether the innermost frame of `error`'s traceback is in one of `modules`."""
    frame_module, trace = "", error.__traceback__
    while trace is not None:
        frame_module, trace = trace.tb_frame.f_globals.get("__name__", ""), trace.tb_next
    return frame_module.startswith(modules)


@contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """ray.init in the main thread puts in a SIGTERM handler of its own (sys.exit), which
    ends a run at once, without the cleanup and the one line of an interrupted run; the
    handler in place before (the CLI's, which stops the run as Ctrl-C does) is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigint_ignored_by_new_processes() -> Iterator[None]:
    """Processes started in this block begin with SIGINT ignored, and a spawned Python keeps
    it so: a terminal's Ctrl-C, sent to the whole process group, reaches only this process,
    which stops its children in order (worker processes; a local Ray instance's servers and
    workers, which would otherwise take many seconds to wind down around the dead ones).
    This process sees SIGINT again at the end of the block."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals belong to the main thread; nothing to change from here
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for(refs: list, count: int = 1, timeout_s: float | None = None) -> list:
    """`ray.wait` for `count` of `refs`, in short polls: Ray's compiled wait gives way at once
    to a KeyboardInterrupt only, and would hold the CLI's own interruption until the next
    result. Returns the refs ready, fewer than `count` where `timeout_s` ran out."""
    ray = import_ray()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        with signals_unwrapped():
            ready, _ = ray.wait(refs, num_returns=count, timeout=POLL_SECONDS)
        if len(ready) >= count or (deadline is not None and time.monotonic() >= deadline):
            return ready


@contextmanager
def signals_unwrapped() -> Iterator[None]:
    """Around blocking Ray calls: a signal handler's exception (the CLI's Ctrl-C) raised while
    Ray's compiled code waits comes out as a SystemError caused by it; re-raise the cause, so
    that an interrupted run ends as any other does."""
    try:
        yield
    except SystemError as error:
        cause = error.__cause__
        if isinstance(cause, BaseException) and not isinstance(cause, Exception):
            raise cause from None
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class FusedFiles:
    """What an actor's `fuse_files` sends back: small, so the image stays where it was written."""

    output: str
    summary: str
    seconds: float


class FuserActor:
    """One `Fuser`, opened once (weights, sessions, engines) and used for every call.

    Built from a FuseOptions, or a method's name and its options as keywords (layer, preset,
    steps, backend, ...), checked into one before any work; `threads` caps the CPU threads of
    this process's fusion (torch, and ONNX Runtime's sessions where the backend is `ort`), so
    that actors sharing a machine split its cores rather than each spreading over all of them.
    A plain class: Ray runs it as an actor through `fuser_actor_class()`, and it works
    in-process as it is."""

    def __init__(self, options: FuseOptions | str = "max", *, threads: int | None = None, **keywords: Any):
        from semfuse_rt.engine.fuse.fuse_options import fuse_options
        from semfuse_rt.engine.fuse.fuser import Fuser

        self.fuser = Fuser(pinned_options(fuse_options(options, **keywords), threads))
        if threads:
            import torch

            torch.set_num_threads(threads)

    def ready(self) -> bool:
        """Sets the Fuser up now, so that a setup failure (weights, backend) shows at once
        and the first image's time is fusion only."""
        self.fuser.open()
        return True

    def fuse_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """K >= 2 registered images (HxW or HxWx3, uint8/uint16) -> the fused image of their mode."""
        return self.fuser(images).image

    def fuse_files(self, paths: Sequence[str | os.PathLike], output: str | os.PathLike, **options) -> FusedFiles:
        """`Fuser.fuse_files` on this actor's machine: reads the inputs and writes `output`
        atomically there (a filesystem the driver shares, on a cluster). `options`: those of
        `Fuser.fuse_files` (max_pixels, save_cams, report)."""
        result = self.fuser.fuse_files(paths, output, **options)
        return FusedFiles(str(output), result.summary(len(paths)), result.seconds)

    def close(self) -> None:
        self.fuser.close()


def pinned_options(options: FuseOptions, threads: int | None) -> FuseOptions:
    """`options` with `threads` passed on to the ONNX Runtime loader, the one backend loader
    that takes it (the torch backend follows torch.set_num_threads)."""
    if not threads or "threads" in options.loader_options or not options.settings.method.optimised:
        return options
    from semfuse_rt.engine.backends import resolve_backend

    backend = resolve_backend(options.backend or "auto", options.settings.layer)
    return options.replace(threads=threads) if backend == "ort" else options


def actor_options(num_gpus: float = 0, num_cpus: float = 1) -> dict:
    """Ray resources of one fuser actor: `num_gpus` each on a GPU cluster (a fraction shares
    a GPU between actors), and the CPUs it claims, so that Ray places no more actors on a
    node than its cores carry."""
    if num_gpus < 0:
        raise SemfuseError(f"--num-gpus-per-actor must be 0 or more, got {num_gpus:g}")
    if num_cpus <= 0:
        raise SemfuseError(f"an actor needs a positive number of CPUs, got {num_cpus:g}")
    return {"num_gpus": num_gpus, "num_cpus": num_cpus}


_actor_classes: dict[type, object] = {}


def fuser_actor_class(cls: type = FuserActor):
    """`cls` (FuserActor or a subclass) as a Ray actor class, made once per class."""
    ray = import_ray()
    if cls not in _actor_classes:
        _actor_classes[cls] = ray.remote(cls)
    return _actor_classes[cls]


def start_fuser_actors(count: int, method: FuseOptions | str = "max", *, num_gpus: float = 0, num_cpus: float = 1,
                       threads: int | None = None, cls: type = FuserActor, ready_timeout_s: float | None = 600,
                       **options: Any) -> list:
    """`count` actors, each holding one Fuser of a FuseOptions (or of `method` and `options`),
    set up and ready; the actors receive the one FuseOptions, checked here first.
    `threads` defaults to the CPUs each actor claims. Raises SemfuseError (one line) where
    an actor cannot be set up, or where the cluster does not place them all within
    `ready_timeout_s` (None: wait as long as it takes, for an autoscaling cluster)."""
    if count < 1:
        raise SemfuseError(f"--ray-actors must be 1 or more, got {count}")
    remote = fuser_actor_class(cls).options(**actor_options(num_gpus, num_cpus))
    threads = threads if threads is not None else max(1, int(num_cpus))
    from semfuse_rt.engine.fuse.fuse_options import fuse_options

    checked = fuse_options(method, **options)
    actors = [remote.remote(checked, threads=threads) for _ in range(count)]
    wait_until_ready(actors, ready_timeout_s, f"{num_cpus:g} CPU(s) and {num_gpus:g} GPU(s) each")
    return actors


def start_actors(cls: type, arguments: Sequence[tuple], *, num_gpus: float = 0, num_cpus: float = 1,
                 ready_timeout_s: float | None = 600) -> list:
    """One actor of `cls` (a class with `ready()`) for each tuple of constructor `arguments`,
    set up and ready: start_fuser_actors' errors, for any class."""
    remote = fuser_actor_class(cls).options(**actor_options(num_gpus, num_cpus))
    actors = [remote.remote(*each) for each in arguments]
    wait_until_ready(actors, ready_timeout_s, f"{num_cpus:g} CPU(s) and {num_gpus:g} GPU(s) each")
    return actors


def wait_until_ready(actors: list, timeout_s: float | None = None, resources: str = "") -> None:
    ray = import_ray()
    from ray.exceptions import GetTimeoutError

    try:
        refs = [actor.ready.remote() for actor in actors]
        if len(wait_for(refs, len(refs), timeout_s)) < len(refs):
            raise GetTimeoutError()
        with signals_unwrapped():
            ray.get(refs)
    except GetTimeoutError:
        _kill(ray, actors)
        asking = f" asking for {resources}" if resources else ""
        raise SemfuseError(f"{len(actors)} fuser actor(s){asking} were not placed and set up within "
                           f"{timeout_s:g} s; does the cluster have the resources free?") from None
    except Exception as error:  # noqa: BLE001 - Ray's errors wrap the actor's own; one line out
        _kill(ray, actors)
        raise SemfuseError(f"fuser actors could not start: {ray_failure(error)}") from None


def _kill(ray, actors: list) -> None:
    for actor in actors:
        ray.kill(actor)


def ray_failure(error: BaseException) -> str:
    """The one-line reason inside a Ray error: the actor's own exception where there is one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return _first_line(cause)
    return _first_line(error)
