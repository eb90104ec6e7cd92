"""The `semfuse-rt` command line. Commands are thin: parse, call the library, print.

Each command lives in its own module and registers itself on `app` when imported.
"""
from __future__ import annotations

import sys

import typer

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
from semfuse_rt.engine.cli import cam_command  # noqa: E402,F401
from semfuse_rt.engine.cli import weights_command  # noqa: E402,F401
from semfuse_rt.engine.cli import build_command  # noqa: E402,F401
from semfuse_rt.engine.cli import bench_command  # noqa: E402,F401
from semfuse_rt.engine.cli import eval_command  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except SemfuseError as error:
        print(f"semfuse-rt: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("semfuse-rt: interrupted", file=sys.stderr)
        sys.exit(130)
