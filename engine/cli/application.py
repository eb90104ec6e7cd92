"""The `semfuse-rt` Typer app: the root with its --version, and the commands.

Each command lives in its own module and registers itself on `app` when imported;
`load_commands` imports them all, or only the one that runs. They pull in numpy and OpenCV
(torch only when they run, for `--help` and usage errors to answer without it), so this
module does not: `semfuse-rt --version` answers without them.
"""
from __future__ import annotations

import importlib
from importlib import metadata

import typer
from typer.models import CommandInfo

from semfuse_rt.engine.cli.help_layout import CommandLine, ReadableGroup

app = CommandLine(
    name="semfuse-rt",
    cls=ReadableGroup,
    help="Semantic image fusion (Hill & Bull) with exported-graph backends.",
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Their order is the order of --help.
COMMAND_MODULES = ("fuse_command", "fuse_video_command", "cam_command", "weights_command", "build_command",
                   "export_command", "bench_command", "eval_command", "score_command", "fuse_batch_command")


def load_commands(name: str | None = None) -> typer.Typer:
    """`app` with every command registered or, where `name` names one, with that command only
    (and those it imports): running a command waits for no other command's libraries."""
    module = f"{name.replace('-', '_')}_command" if name else None
    for each in (module,) if module in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(f"semfuse_rt.engine.cli.{each}")
    # Registered in the order they were first imported, which one command run before the
    # rest (in a test's process, say) would change.
    app.registered_commands.sort(key=_help_position)
    return app


def _help_position(command: CommandInfo) -> int:
    return COMMAND_MODULES.index(getattr(command.callback, "__module__", "").rpartition(".")[2])


def version_line() -> str:
    try:
        return f"semfuse-rt {metadata.version('semfuse-rt')}"
    except metadata.PackageNotFoundError:
        return "semfuse-rt (version unknown: run from a source tree that is not installed)"


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", is_eager=True, expose_value=False, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    if ctx.invoked_subcommand is None:
        # Bare `semfuse-rt`: the help, where Click would print an empty usage error.
        text = ctx.get_help()  # with rich, the help is printed here and the text is empty
        if text:
            typer.echo(text)
