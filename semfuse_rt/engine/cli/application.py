"""The `semfuse-rt` Typer app: the root with its --version, and the commands.

Each command lives in its own module and registers itself on `app` when imported. The root
knows the commands by COMMANDS (name, module, summary) and imports a command's module only
when that command runs or shows its own help: the modules pull in numpy and OpenCV (torch
only when they run), which the root's --help, --version and usage errors do without.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

import typer
from typer.main import get_command_from_info
from typer.models import CommandInfo

from semfuse_rt.engine.cli.help_layout import CommandLine, ReadableGroup

if TYPE_CHECKING:  # the Click that Typer 0.29 carries inside
    from typer._click import Command, Context, HelpFormatter


class CommandEntry(NamedTuple):
    module: str  # in semfuse_rt.engine.cli
    # The first paragraph of the command's own help, on one line: the root lists it without
    # importing the module (tests/test_cli_lazy_help.py holds the two equal).
    summary: str


# Their order is the order of --help.
COMMANDS: dict[str, CommandEntry] = {
    "fuse": CommandEntry("fuse_command",
                         "Fuse registered images into one that keeps the important content of all."),
    "fuse-video": CommandEntry("fuse_video_command",
                               "Fuse synchronised streams frame by frame into one video at their frame rate."),
    "cam": CommandEntry("cam_command",
                        "Save IMAGE with its class activation map overlaid and print its top-5 classes."),
    "weights": CommandEntry("weights_command",
                            "Show the cached VGG19 weights; --fetch downloads, verifies and converts them."),
    "build": CommandEntry("build_command", "Export the features and explicit-gradient graphs to ONNX; with --trt, "
                                           "build TensorRT engines."),
    "export": CommandEntry("export_command",
                           "Export a whole fuse of a preset as one ONNX graph, to run without this package."),
    "bench": CommandEntry("bench_command", "Time the whole fuse per stage (p50/p90/p99) and the optimisation loop "
                                           "per backend; or, with --graph, an exported graph beside the fuse it "
                                           "was exported from."),
    "eval": CommandEntry("eval_command",
                         "Fuse every image set with every method, score the results, write reports."),
    "score": CommandEntry("score_command", "Score fused images that someone else made, and rank their methods."),
    "fuse-batch": CommandEntry("fuse_batch_command",
                               "Fuse every image set of a folder or CSV into OUTDIR, with the options of fuse."),
}
COMMAND_MODULES = tuple(entry.module for entry in COMMANDS.values())


class _CommandsOnDemand(MutableMapping[str, "Command"]):
    """The root's commands by name. Every command of COMMANDS is a key from the start, so that
    Click resolves it and Typer suggests it for a typo; its value, the Click command, is made
    when first asked for, by importing its module."""

    def __init__(self, loaded: MutableMapping[str, Command]):
        self._loaded = dict(loaded)  # registered before the root was made (the command that runs)

    def __getitem__(self, name: str) -> Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = _click_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return list(dict.fromkeys([*COMMANDS, *self._loaded]))


def _click_command(name: str) -> Command:
    """Command `name` as Typer would have made it with the root, had its module been imported."""
    load_commands(name)
    info = next(info for info in app.registered_commands if info.name == name)
    return get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                 rich_markup_mode=app.rich_markup_mode)


class RootGroup(ReadableGroup):
    """The root: it lists its commands from COMMANDS and loads one only to run it or show its help.

    Its help is Click's plain layout: Typer's rich one imports rich's Markdown and traceback
    renderers, a third of the 0.3 s that `semfuse-rt --help` may take. The commands' own
    help stays rich."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _CommandsOnDemand(self.commands)
        self.rich_markup_mode = None

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # the names: TyperGroup's would import every command for its value

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        # Whole summaries, wrapped: Click's would import each command and cut its line short.
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.summary) for name, entry in COMMANDS.items()])


app = CommandLine(
    name="semfuse-rt",
    cls=RootGroup,
    help="Semantic image fusion (Hill & Bull) with exported-graph backends.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def load_commands(name: str | None = None) -> typer.Typer:
    """`app` with every command registered or, where `name` names one, with that command only
    (and those it imports): running a command waits for no other command's libraries."""
    for module in (COMMANDS[name].module,) if name in COMMANDS else COMMAND_MODULES:
        importlib.import_module(f"semfuse_rt.engine.cli.{module}")
    # Registered in the order they were first imported, which one command run before the
    # rest (in a test's process, say) would change.
    app.registered_commands.sort(key=_help_position)
    return app


def _help_position(command: CommandInfo) -> int:
    return COMMAND_MODULES.index(getattr(command.callback, "__module__", "").rpartition(".")[2])


def version_line() -> str:
    from importlib import metadata  # here: a command that runs has no use for its 20 ms

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
        typer.echo(ctx.get_help())  # the root's help is plain: returned as text, not printed
