"""Help and usage lines that read as a person would write them.

Typer 0.29 prints a flag with a value placeholder (`--report <bool>`, as if it took a value)
and a required argument in braces (`{inputs}...`). Here a flag shows no placeholder and an
argument shows its metavar, or its name in capitals: `INPUTS...`, `[INPUTS]...` when optional.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:  # the Click that Typer 0.29 carries inside: what these methods are given
    from typer._click import Context


def _plain(params: Iterable[Any]) -> None:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""  # Typer shows a metavar, when one is set, in place of the type
        elif isinstance(param, TyperArgument) and param.metavar is None:
            param.metavar = (param.name or "").upper() + ("..." if param.nargs != 1 else "")


def _help_option(option: TyperOption | None) -> TyperOption | None:
    if option is not None:
        _plain([option])
        # Absent, Typer's --help is None, which it coerces to a bool through a pydantic
        # TypeAdapter: 0.17 s of imports on every command line, even a usage error. A bool
        # default it takes as it is.
        option.default = False
    return option


class ReadableCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _help_option(super().get_help_option(ctx))  # made on first use, so not among self.params

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or ""  # set by _plain
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class ReadableGroup(TyperGroup):
    """The root: its flags (--version, --help) without placeholders too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain(self.params)

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        return _help_option(super().get_help_option(ctx))


class CommandLine(typer.Typer):
    """A Typer app whose commands are ReadableCommands unless they ask for another class."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,  # type: ignore[override]
                **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or ReadableCommand, **kwargs)
