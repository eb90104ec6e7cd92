"""The named fusion methods of method.md and what each one needs."""
from __future__ import annotations

from dataclasses import dataclass

from semfuse_rt.engine.errors import SemfuseError


@dataclass(frozen=True)
class Method:
    name: str
    rule: str | None  # feature fusion rule, None for pixel-domain CAM fusion
    optimised: bool
    semantic: bool


METHODS = {
    m.name: m
    for m in (
        Method("max", "max", True, False),
        Method("majority", "majority", True, False),
        Method("cam", None, False, True),
        Method("cam-max", "max", True, True),
        Method("cam-majority", "majority", True, True),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise SemfuseError(f"unknown method {name!r}; use one of {', '.join(METHODS)}") from None
