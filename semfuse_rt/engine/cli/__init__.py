"""The `semfuse-rt` command line. Commands are thin: parse, call the library, print.

The Typer app and its commands are in application.py and load on first use (`app`, or
`main`), so that `semfuse-rt --version` answers without importing torch.
"""
from __future__ import annotations

import inspect
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from typer.exceptions import Abort, Exit, TyperException

from semfuse_rt.engine.limits import address_space_limit, memory_at_hand
from semfuse_rt.errors import SemfuseError


def __getattr__(name: str) -> Any:
    if name == "app":
        from semfuse_rt.engine.cli.application import load_commands

        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Interrupted(BaseException):
    """Ctrl-C or a termination signal. Not a KeyboardInterrupt, which Click would catch and
    turn into its own exit before this module could speak; context managers and `finally`
    blocks still run, so temp files and folders are removed and nothing half-written stays."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, _frame):
    raise Interrupted(signum)


def _fail(message: str, status: int = 2):
    print(f"semfuse-rt: error: {message}", file=sys.stderr)
    sys.exit(status)


# What the dynamic loader says when mapping a library fails for want of address space.
_MAP_FAILURE = "failed to map segment"


def _memory_at_hand() -> str:
    """memory_budget.memory_at_hand, or "" where even that fails for want of memory."""
    try:
        return memory_at_hand()
    except MemoryError:
        return ""


def _chain(error: BaseException) -> list[BaseException]:
    """An exception and its causes, outermost first: numpy's ImportError wraps the loader's
    one-line reason in a page of advice; a MemoryError in pydantic's schema building carries
    the AttributeError it interrupted."""
    chain = [error]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 64:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    return chain


def _address_space_limited() -> bool:
    return address_space_limit() is not None


# Below this address space the libraries a command loads cannot start: numpy 2's OpenBLAS
# then prints its own line and exits the process from C, where no Python handler can speak.
# A small default fuse ran in 550 MiB on the 2-core VM (numpy 2.4, OpenCV 5.1, onnxruntime 1.32).
_LIBRARIES_ADDRESS_SPACE = 600 << 20


def _refuse_a_too_small_address_space() -> None:
    limit = address_space_limit()
    if limit is not None and limit < _LIBRARIES_ADDRESS_SPACE:
        _fail(f"a {limit >> 20} MiB limit on this process's address space (ulimit -v) is below the "
              f"{_LIBRARIES_ADDRESS_SPACE >> 20} MiB that semfuse-rt's libraries need to load: raise ulimit -v")


def _short_of_memory(error: BaseException) -> BaseException | None:
    """The exception in `error`'s chain that says memory ran out, if one does. Under ulimit -v
    an import that runs out can also end in a SystemError ("error return without exception
    set"): the MemoryError was lost inside the import machinery."""
    return next((link for link in _chain(error) if isinstance(link, MemoryError) or _MAP_FAILURE in str(link)
                 or (isinstance(link, SystemError) and _address_space_limited())), None)


def _load_failure(error: BaseException) -> str:
    """The line for a command that could not load its libraries (torch, numpy, OpenCV)."""
    memory = _short_of_memory(error)
    cause = memory or _chain(error)[-1]
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if memory is not None:
        return (f"out of memory loading semfuse-rt's libraries ({reason}){_memory_at_hand()}; they and a small "
                "fuse take about 1.2 GiB of address space: raise ulimit -v, or free memory")
    return (f"cannot load {getattr(cause, 'name', None) or 'a library'} ({reason}); this environment's "
            "semfuse-rt is incomplete: reinstall it (pip install --force-reinstall semfuse-rt)")


def _loading_short_of_memory(error: BaseException) -> bool:
    """Whether `error` is a library failing to load for want of memory while a command runs:
    the commands import torch in their bodies, so that --help and usage errors need not wait
    for it. The loader's failure to map a library comes as an ImportError, or from ctypes as
    an OSError; a MemoryError counts where it came out of a module's top-level code."""
    if isinstance(error, MemoryError):
        return any(frame.f_code.co_name == "<module>" for frame, _ in traceback.walk_tb(error.__traceback__))
    return _short_of_memory(error) is not None


def _fail_loading(error: BaseException) -> NoReturn:
    """One line, then out at once: a library left half-loaded for want of memory can hang in
    its exit handlers (OpenBLAS joins a thread that retries its allocation forever). Nothing
    has been read or written yet, or a command's `with` and `finally` blocks have undone it
    on the way out, so there is nothing for the skipped cleanup to do."""
    print(f"semfuse-rt: error: {_load_failure(error)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


# The options that lower what a fuse holds in memory, in the order a line names them.
_MEMORY_OPTIONS = ("memory_budget", "tile", "max_pixels")


def _out_of_memory(command_name: str | None) -> str:
    """The last resort's line for a MemoryError that nothing nearer caught, naming only the
    options that the command has."""
    from semfuse_rt.engine.cli.application import app

    callbacks = [info.callback for info in app.registered_commands
                 if info.name == command_name and info.callback is not None]
    parameters = inspect.signature(callbacks[0]).parameters if callbacks else {}
    flags = [f"--{name.replace('_', '-')}" for name in _MEMORY_OPTIONS if name in parameters]
    if not flags:
        return f"out of memory{_memory_at_hand()}; free memory, or use smaller images"
    lowered = f"{', '.join(flags[:-1])} or {flags[-1]}" if len(flags) > 1 else flags[0]
    return f"out of memory{_memory_at_hand()}; lower {lowered}, or free memory"


def _loaded_commands() -> Any:
    """The app with its commands; `--version` answers before they load."""
    try:
        from semfuse_rt.engine.cli.application import COMMANDS, app, load_commands, version_line

        if sys.argv[1:2] == ["--version"]:
            # What the root's eager --version would print, without building the app.
            print(version_line())
            sys.exit(0)
        command = sys.argv[1] if len(sys.argv) > 1 else None
        if command in COMMANDS:
            # A command imports numpy and OpenCV (torch when it runs): under a tight ulimit -v, or
            # in a broken environment, this is where that shows. The root's help and its usage
            # errors load no command; a command's own help loads that command alone.
            _refuse_a_too_small_address_space()
            load_commands(command)
        return app
    except (ImportError, MemoryError) as error:
        _fail_loading(error)
    except SystemError as error:
        if _short_of_memory(error) is None:
            raise
        _fail_loading(error)
    except OSError as error:
        if _MAP_FAILURE not in str(error):
            raise
        _fail_loading(error)  # ctypes loading torch's libgomp, say


def main() -> None:
    """The console script: every expected problem is one line on stderr and a non-zero exit."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        app = _loaded_commands()
        try:
            # One name however it is started (the console script, `python -m semfuse_rt`), as pip does.
            status = app(standalone_mode=False, prog_name="semfuse-rt")
        except (ImportError, MemoryError, OSError, SystemError) as error:
            if _loading_short_of_memory(error):
                _fail_loading(error)
            raise
    except SemfuseError as error:
        _fail(str(error))
    except MemoryError:
        # Where no check or conversion nearer the allocation saw it coming.
        _fail(_out_of_memory(sys.argv[1] if len(sys.argv) > 1 else None))
    except ImportError as error:  # a library that a command loads only when it runs
        _fail(_load_failure(error))
    except Interrupted as interruption:
        print("semfuse-rt: interrupted", file=sys.stderr)
        sys.exit(128 + interruption.signum)
    except Exit as done:
        sys.exit(done.exit_code)
    except Abort:
        print("semfuse-rt: interrupted", file=sys.stderr)
        sys.exit(130)
    except TyperException as error:
        # Usage errors: Click's own message, on one line, with where to look.
        context = getattr(error, "ctx", None)
        command = f" {context.info_name}" if context is not None and context.parent is not None else ""
        _fail(f"{error.format_message()} (see semfuse-rt{command} --help)", getattr(error, "exit_code", 2))
    except OSError as error:
        # A file problem the library did not foresee: still one line, naming the file.
        where = error.filename or ""
        from semfuse_rt.cache import cache_problem, in_cache  # here: --help need not wait for it

        if where and in_cache(where):
            _fail(str(cache_problem(Path(where).parent, error)))
        _fail(f"{where}: {error.strerror or error}" if where else str(error))
    # Without standalone mode an explicit exit (--help, say) comes back as its status.
    sys.exit(status if isinstance(status, int) else 0)
