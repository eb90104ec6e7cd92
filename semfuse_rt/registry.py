"""`Registry`: named choices (backends, fusion rules, start images, presets, methods) that
register themselves, so that options, help text and lookups all read one table instead of
repeating the names. Torch-free: a registry holds light entries, and an entry imports its
implementation when it is used, so that `--help` lists the choices without loading torch.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from semfuse_rt.errors import SemfuseError

Entry = TypeVar("Entry")


class Registry(Mapping[str, Entry], Generic[Entry]):
    """Name -> entry, in the order of registration (which is the order help text lists them).
    `registry[name]` is a KeyError for an unknown name, as for any mapping; `lookup(name)`
    is the user-facing one-line SemfuseError that names the closest valid choice."""

    def __init__(self, kind: str):
        self.kind = kind  # what the names name, for messages: "backend", "preset"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (a test's temporary entry)."""
        del self._entries[name]

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def lookup(self, name: str, *, extra: tuple[str, ...] = ()) -> Entry:
        """The entry named `name`, or a one-line error naming the closest valid one. `extra`:
        other names the caller accepts before the registry's (a backend's "auto")."""
        if name not in self._entries:
            raise unknown_choice(self.kind, name, (*extra, *self._entries))
        return self._entries[name]

    def check(self, name: str, *, extra: tuple[str, ...] = ()) -> str:
        """`name`, if it is one of the registry's (or `extra`'s); else lookup's error."""
        if name not in extra:
            self.lookup(name, extra=extra)
        return name

    def help_choices(self, describe: Callable[[Entry], str] | None = None, separator: str = " | ") -> str:
        """The names for option help, each with its description where `describe` gives one."""
        if describe is None:
            return separator.join(self._entries)
        return separator.join(f"{name}: {describe(entry)}" for name, entry in self._entries.items())


def unknown_choice(kind: str, name: object, names: tuple[str, ...]) -> SemfuseError:
    """"unknown backend 'ortt' (did you mean 'ort'?); use one of auto, trt, cuda, ort, torch"."""
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SemfuseError(f"unknown {kind} {name!r}{hint}; use one of {', '.join(names)}")
