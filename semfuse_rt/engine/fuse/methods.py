"""The named fusion methods of docs/method.md: each one is its feature rule (None for pixel-domain
CAM fusion, which optimises nothing) and whether CAMs weight the choice; and which options
each method uses, so that an option given for a method it does not change is an error
rather than silently ignored."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semfuse_rt.engine.fuse.presets import DEFAULT_PRESET, STEPS_PRESET
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.rules import RULES, feature_rule
from semfuse_rt.registry import Registry

if TYPE_CHECKING:
    from semfuse_rt.kernels.rules.base import FeatureRule

# Torch-free, like the rest of this module: the command help shows these, and `--help` loads
# no torch (the rules' registry is torch-free; a rule's module is imported when it is made).
DEFAULT_METHOD = "max"
DEFAULT_WINDOW = 5
DEFAULT_LAYER = "relu1_1"  # the VGG19 layer whose features the optimised methods fuse


@dataclass(frozen=True)
class Method:
    name: str
    rule: str | None  # its rule's name in the rules' registry (kernels/rules/)
    semantic: bool
    # Without steps the rule's target is never followed: `majority` and the CAM methods
    # differ from `max` only through the optimisation, so their default preset runs steps.
    default_preset: str = DEFAULT_PRESET

    @property
    def optimised(self) -> bool:
        return self.rule is not None

    @property
    def filtered(self) -> bool:
        """Whether its rule filters the choice over a window (and so takes --window)."""
        return self.rule is not None and RULES.lookup(self.rule).windowed

    def feature_rule(self, window: int = DEFAULT_WINDOW) -> FeatureRule | None:
        if self.rule is None:
            return None
        return feature_rule(self.rule, window)


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    return METHODS.register(method.name, method)


for _method in (
    Method("max", "max", False),
    Method("majority", "majority", False, STEPS_PRESET),
    Method("cam", None, True),
    Method("cam-max", "max", True, STEPS_PRESET),
    Method("cam-majority", "majority", True, STEPS_PRESET),
):
    register_method(_method)


def method_help() -> str:
    """--method's help: the registered methods."""
    return METHODS.help_choices()


def default_presets() -> str:
    """For option help: "blend; blend-steps for majority, cam-max and cam-majority"."""
    others: dict[str, list[str]] = {}
    for method in METHODS.values():
        if method.default_preset != DEFAULT_PRESET:
            others.setdefault(method.default_preset, []).append(method.name)
    return "; ".join([DEFAULT_PRESET, *(f"{preset} for {listed(names)}" for preset, names in others.items())])


def get_method(name: str) -> Method:
    return METHODS.lookup(name)


def _optimised(method: Method) -> bool:
    return method.optimised


def _semantic(method: Method) -> bool:
    return method.semantic


def _filtered(method: Method) -> bool:
    return method.filtered


# Option -> the methods it changes. Options missing here (memory_budget, max_pixels, report,
# progress) change every method. `cam` optimises nothing, so the optimisation's settings,
# the VGG19 layer, weights and backend and the tiles do not reach it.
OPTION_USERS: dict[str, Callable[[Method], bool]] = {
    **{name: _optimised for name in ("layer", "preset", "steps", "lr", "decay", "init", "mean_base",
                                     "semantic_steps", "backend", "weights", "tile")},
    "window": _filtered,
    "classes": _semantic,
    "save_cams": _semantic,
    "cam_weights": _semantic,
}


def option_flag(name: str) -> str:
    """The command-line spelling of a keyword option: mean_base -> --mean-base."""
    return "--" + name.replace("_", "-")


def listed(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def applies(option: str, method: Method) -> bool:
    user = OPTION_USERS.get(option)
    return user is None or user(method)


def inapplicable_reason(option: str) -> str:
    """Which methods `option` changes, for messages: "majority and cam-majority"."""
    users = [name for name, method in METHODS.items() if applies(option, method)]
    return f"{option_flag(option)} applies to {listed(users)} only"


def check_applicable(method: Method, given: Iterable[str]) -> None:
    """A one-line error for the first option in `given` (set explicitly by the user) that
    does not change `method`."""
    for option in given:
        if not applies(option, method):
            why = ": it weights the pixels directly, with no optimisation" if not method.optimised else ""
            raise SemfuseError(f"{inapplicable_reason(option)}, not {method.name}{why}")


def check_applicable_to_some(methods: Iterable[Method], given: Iterable[str]) -> None:
    """For options that go to several methods at once (`eval`'s flags): each must change at
    least one of them."""
    methods = list(methods)
    for option in given:
        if not any(applies(option, method) for method in methods):
            names = ", ".join(method.name for method in methods) or "no semfuse method"
            raise SemfuseError(f"{inapplicable_reason(option)}, and --methods has {names}")


def applicable_options(method: Method, options: Mapping[str, object]) -> dict:
    """The options among `options` that change `method`."""
    return {name: value for name, value in options.items() if applies(name, method)}
