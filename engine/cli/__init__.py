"""The `semfuse-rt` command line. Commands are thin: parse, call the library, print.

Each command lives in its own module and registers itself on `app` when imported.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from typer.exceptions import Abort, Exit, TyperException

from semfuse_rt.cache import cache_problem, in_cache
from semfuse_rt.errors import SemfuseError

app = typer.Typer(
    name="semfuse-rt",
    help="Semantic image fusion (Hill & Bull) with exported-graph backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration by import; the order sets the order in --help.
from semfuse_rt.engine.cli import fuse_command  # noqa: E402,F401
from semfuse_rt.engine.cli import fuse_video_command  # noqa: E402,F401
from semfuse_rt.engine.cli import cam_command  # noqa: E402,F401
from semfuse_rt.engine.cli import weights_command  # noqa: E402,F401
from semfuse_rt.engine.cli import build_command  # noqa: E402,F401
from semfuse_rt.engine.cli import bench_command  # noqa: E402,F401
from semfuse_rt.engine.cli import eval_command  # noqa: E402,F401
from semfuse_rt.engine.cli import fuse_batch_command  # noqa: E402,F401


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


def main() -> None:
    """The console script: every expected problem is one line on stderr and a non-zero exit."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        status = app(standalone_mode=False)
    except SemfuseError as error:
        _fail(str(error))
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
        if where and in_cache(where):
            _fail(str(cache_problem(Path(where).parent, error)))
        _fail(f"{where}: {error.strerror or error}" if where else str(error))
    # Without standalone mode an explicit exit (--help, say) comes back as its status.
    sys.exit(status if isinstance(status, int) else 0)
