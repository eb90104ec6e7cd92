"""The named fusion methods of docs/method.md: each one is its feature rule (None for pixel-domain
CAM fusion, which optimises nothing) and whether CAMs weight the choice."""
from __future__ import annotations

from dataclasses import dataclass

from semfuse_rt.engine.fusion_rules import ChooseMax, FeatureRule, Majority
from semfuse_rt.errors import SemfuseError


@dataclass(frozen=True)
class Method:
    name: str
    rule: type[FeatureRule] | None
    semantic: bool

    @property
    def optimised(self) -> bool:
        return self.rule is not None

    def feature_rule(self, window: int = 5) -> FeatureRule | None:
        if self.rule is None:
            return None
        return self.rule(window) if issubclass(self.rule, Majority) else self.rule()


METHODS = {
    m.name: m
    for m in (
        Method("max", ChooseMax, False),
        Method("majority", Majority, False),
        Method("cam", None, True),
        Method("cam-max", ChooseMax, True),
        Method("cam-majority", Majority, True),
    )
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise SemfuseError(f"unknown method {name!r}; use one of {', '.join(METHODS)}") from None
