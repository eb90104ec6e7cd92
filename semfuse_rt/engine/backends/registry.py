"""The backends' registry: each backend's package registers one `Backend` in its
`__init__.py` (torch-free), naming its loader and runner classes, which are imported only
when a runner is made. Registration order is the order of preference (fastest first)."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from semfuse_rt.registry import Registry

AUTO = "auto"  # not a backend: the fastest one usable here (resolve_backend)


@dataclass(frozen=True)
class Backend:
    name: str
    package: str  # the backend's package: its loader.py and runner.py
    loader: str  # the class in loader.py that builds or loads what the runner needs
    runner: str  # the class in runner.py (a FusionRunner)
    summary: str  # one line for --backend's help
    requires: str  # what it needs installed or present, for the message where it cannot run
    gpu_only: bool  # it runs on a CUDA device or not at all
    # Whether it can run here (at the VGG19 layer, when given); imports what it checks.
    usable: Callable[[str | None], bool]
    # Whether, run here, it fuses on a CUDA device (the device its loader would pick).
    on_gpu: Callable[[], bool]

    def loader_class(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.loader"), self.loader)

    def runner_class(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.runner"), self.runner)


BACKEND_REGISTRY: Registry[Backend] = Registry("backend")


def register_backend(backend: Backend) -> Backend:
    return BACKEND_REGISTRY.register(backend.name, backend)


class BackendNames(Sequence[str]):
    """"auto" and every registered backend's name, read from the registry at each use, so
    that a backend registered after an import of BACKENDS is in it too."""

    def _names(self) -> tuple[str, ...]:
        return (AUTO, *BACKEND_REGISTRY)

    def __getitem__(self, index):  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())
