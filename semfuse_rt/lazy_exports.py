"""A package's face: the names it offers to the rest of the code (the CLI above all), each
imported from its module on first use. Importing a face costs nothing, so `semfuse-rt --help`
still imports no numpy, torch or ONNX Runtime; the first use of a name imports what it needs.

A face lists its names twice: under `if TYPE_CHECKING:` as plain imports, for type checkers
and readers, and in the map given here, for the run; tests/test_faces.py holds the two equal.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name N comes from its module
    `package.exports[N]` at each use: never a copy kept on the package, which would go on
    handing out the old object after the module's name is rebound (by a test's monkeypatch)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
