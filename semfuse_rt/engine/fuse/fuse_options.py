"""`FuseOptions`: every option of one fuse, in one checked, frozen object that the Fuser, the
start-only fuse, the Python API, the CLI commands and the Ray actors share.

    options = FuseOptions.from_keywords(method="max", steps=20, backend="ort", threads=2)
    with Fuser(options) as fuser: ...

`from_keywords` refuses a name that is no option, naming the closest one, and the object
checks its values when it is made: a misspelt or bad option fails where it is written, not at
the first fuse. None leaves an option to the method or the preset; `settings` is what they
resolve to. The command line's flags, defaults and help come from the fields' metadata
(cli/shared_options.py), so that they cannot drift from the library's.

What depends on the machine (which backends are usable, whether the loader's options are the
resolved backend's) is the Fuser's to check: it is known only where the fuse runs. This
module imports no torch: `semfuse-rt fuse --help` shows its help, and a start-only fuse runs
without torch; the VGG19 layer and the tile size, whose limits live beside torch code, are
checked with it only when given, for a fuse that is the Fuser's anyway.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from semfuse_rt.engine.backends import BACKENDS, backend_help
from semfuse_rt.engine.fuse.methods import (DEFAULT_LAYER, DEFAULT_METHOD, DEFAULT_WINDOW, Method,
                                            check_applicable, default_presets, get_method, listed,
                                            method_help)
from semfuse_rt.engine.fuse.presets import preset_help, preset_values, resolve_preset
from semfuse_rt.engine.limits.memory_budget import parse_size
from semfuse_rt.engine.limits.option_checks import (MAX_LR, check_classes, check_lr, check_mean_base,
                                                    check_option_names, check_steps, check_window)
from semfuse_rt.engine.start.initialisation import STARTS, check_initialisation
from semfuse_rt.errors import SemfuseError
from semfuse_rt.kernels.adam_scalars import DECAYS, AdamSchedule

if TYPE_CHECKING:
    from semfuse_rt.export.networks.weights import VGG19Weights

__all__ = ["FuseOptions", "FuseSettings", "fuse_options", "option_names", "OWN_OPTIONS"]


def _option(default: Any, text: str, *short: str) -> Any:
    """A field with its command-line help ("": no flag of its own) and short flags."""
    return field(default=default, metadata={"help": text, "short": short})


@dataclass(frozen=True)
class FuseSettings:
    """What a FuseOptions resolves to with its method's defaults and its preset."""

    method: Method
    window: int
    layer: str
    classes: int
    preset: str
    init: str
    mean_base: float
    schedule: AdamSchedule
    semantic_steps: int
    memory_budget: int | None  # bytes; None: a share of the memory available at each call
    tile: int | None  # None: tiles only where the whole image would not fit the budget


@dataclass(frozen=True)
class FuseOptions:
    """Every option of a fuse; None leaves one to the method or preset. Made with
    `from_keywords` (or `fuse_options`), which checks the names; the values are checked here,
    on construction. `backend_options` go to the backend's loader (ort: threads, provider,
    ...), as (name, value) pairs sorted by name, so that the object stays frozen and
    picklable for the Ray actors and worker processes."""

    # The help of the registered choices is built from their registries.
    method: str = _option(DEFAULT_METHOD, method_help(), "-m")
    # Options that only some methods use default to None, so that one the user gave (an
    # error where the method does not use it) is told from the default.
    layer: str | None = _option(None, f"VGG19 layer whose features are fused (default {DEFAULT_LAYER}).")
    preset: str | None = _option(None, f"{preset_help()} (default {default_presets()}).")
    steps: int | None = _option(None, f"Adam steps of the image optimisation (preset: {preset_values('steps')}).")
    lr: float | None = _option(None, f"Adam learning rate in pixel units, above 0 and at most {MAX_LR:g} (preset: "
                                     f"{preset_values('lr')}).")
    decay: str | None = _option(None, f"Learning rate over the steps: {' | '.join(DECAYS)} "
                                      f"(preset: {preset_values('decay')}).")
    init: str | None = _option(None, f"Starting image: {' | '.join(STARTS)} (preset: "
                                     f"{preset_values('init')}).")
    window: int | None = _option(None, f"majority, cam-majority: filter window, odd (default {DEFAULT_WINDOW}).")
    mean_base: float | None = _option(None, "Put the optimised detail over the inputs' mean base layer (Gaussian "
                                            f"sigma in pixels; 0: off) (preset: {preset_values('mean_base')}).")
    semantic_steps: int | None = _option(None, "Adam steps of the semantic phase at relu5_1 on a 160-pixel copy; 0: "
                                               f"off (preset: {preset_values('semantic_steps')}).")
    backend: str | None = _option(None, backend_help())
    weights: str | os.PathLike | VGG19Weights | None = _option(
        None, "VGG19 weights: torchvision .pth, Keras .h5 or cache file.")
    classes: int | None = _option(None, "Semantic methods: CAMs of the K most probable classes, weighted by "
                                        "probability (default 1).")
    cam_weights: str | os.PathLike | None = _option(None, "Full torchvision VGG19 file: VGG19 is then the CAM "
                                                          "network.")
    memory_budget: int | str | None = _option(None, "Memory a fuse may take (e.g. 8G; default: 80% of the memory "
                                                    "available, or of a GPU's free memory, at most 3G). Larger "
                                                    "images are fused in tiles that fit; what cannot fit is "
                                                    "refused before any work.")
    tile: int | None = _option(None, "Fuse in tiles of this many pixels a side (default: only when the whole image "
                                     "would not fit the memory budget).")
    # False keeps a first-time weights fetch from telling a terminal of its wait (the CLI's -q).
    show_progress: bool = _option(True, "")
    backend_options: tuple[tuple[str, Any], ...] = _option((), "")
    settings: FuseSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.backend_options:  # a name no loader takes is most likely a misspelt option
            check_option_names([name for name, _ in self.backend_options], option_names())
        # In the order the Fuser always checked them, so that the first problem is the one named.
        method = get_method(self.method)
        check_applicable(method, self.given_names())
        window = check_window(DEFAULT_WINDOW if self.window is None else self.window)
        layer = DEFAULT_LAYER
        if self.layer is not None:
            from semfuse_rt.export.networks.vgg19 import check_layer  # with torch: a layer given is a Fuser's

            layer = check_layer(self.layer)
        classes = check_classes(1 if self.classes is None else self.classes)
        preset = self.preset or method.default_preset
        given = resolve_preset(preset, steps=self.steps, lr=self.lr, decay=self.decay, init=self.init,
                               mean_base=self.mean_base, semantic_steps=self.semantic_steps)
        if (method.optimised and not given["steps"] and not given["semantic_steps"]
                and resolve_preset(method.default_preset)["steps"]):
            none = "--steps 0 leaves it none" if self.steps == 0 else f"preset {preset} runs none"
            raise SemfuseError(f"--method {method.name} acts only through optimisation steps, and {none}: "
                               f"give --steps N or --preset {method.default_preset}")
        init = check_initialisation(given["init"])
        mean_base = check_mean_base(given["mean_base"])
        schedule = AdamSchedule(steps=check_steps(given["steps"]), lr=check_lr(given["lr"]), decay=given["decay"])
        if self.backend_options and not method.optimised:
            name = self.backend_options[0][0]
            raise SemfuseError(f"option {name!r} applies to the {_loader_users(name)} only, not {method.name}, "
                               "which runs on no backend")
        budget = parse_size(self.memory_budget) if self.memory_budget is not None else None
        if self.tile is not None:
            from semfuse_rt.engine.large.tiling import MIN_TILE  # with torch: tiles are a Fuser's

            if not (isinstance(self.tile, int) and self.tile >= MIN_TILE):
                raise SemfuseError(f"--tile must be a whole number of at least {MIN_TILE} pixels, got {self.tile}")
        object.__setattr__(self, "settings", FuseSettings(
            method, window, layer, classes, preset, init, mean_base, schedule, given["semantic_steps"], budget,
            self.tile))

    @classmethod
    def from_keywords(cls, **keywords: Any) -> FuseOptions:
        """The options named by `keywords`: the fields, and any other name for the backend's
        loader (one that some backend's loader takes). A name that neither is, a misspelt
        option most likely, is a one-line SemfuseError naming the closest valid one."""
        own = {name: value for name, value in keywords.items() if name in OWN_OPTIONS}
        loader = {name: value for name, value in keywords.items() if name not in OWN_OPTIONS}
        if "backend_options" in own:
            loader = {**dict(own.pop("backend_options")), **loader}
        return cls(**own, backend_options=tuple(sorted(loader.items())))

    def replace(self, **keywords: Any) -> FuseOptions:
        """These options with `keywords` changed, checked as `from_keywords` checks them."""
        return FuseOptions.from_keywords(**{**self.keywords(), **keywords})

    def keywords(self) -> dict[str, Any]:
        """Every option as a keyword, loader options among them: `from_keywords`' inverse."""
        own = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
               if item.init and item.name != "backend_options"}
        return {**own, **dict(self.backend_options)}

    def given(self) -> dict[str, Any]:
        """The options set to other than their default (the method aside), loader options
        among them: what the user chose."""
        own = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
               if item.init and item.name not in ("method", "show_progress", "backend_options")}
        return {**{name: value for name, value in own.items() if value is not None},
                **({"show_progress": False} if not self.show_progress else {}), **dict(self.backend_options)}

    def given_names(self) -> list[str]:
        """The options given that a method may not use (check_applicable): the loader's
        options, the budget and show_progress change every method."""
        return [name for name in self.given() if name in _METHOD_OPTIONS]

    @property
    def loader_options(self) -> dict[str, Any]:
        return dict(self.backend_options)

    def check_backend_options(self, backend: str) -> None:
        """Each loader option is one that the resolved `backend`'s loader takes."""
        from semfuse_rt.engine.backends import loader_options

        own = loader_options(backend)
        for name, _ in self.backend_options:
            if name not in own:
                raise SemfuseError(f"option {name!r} applies to the {_loader_users(name)} only, not {backend}")


def _loader_users(name: str) -> str:
    """"trt backend", "trt and cuda backends": the backends whose loader takes option `name`."""
    from semfuse_rt.engine.backends import loader_options

    users = [each for each in BACKENDS if each != "auto" and name in loader_options(each)]
    return f"{listed(users)} backend{'s' if len(users) > 1 else ''}"


# The fields a user sets by name; `settings` is what they resolve to.
OWN_OPTIONS = frozenset(item.name for item in dataclasses.fields(FuseOptions) if item.init)
# The options that only some methods use (methods.OPTION_USERS); check_applicable judges them.
_METHOD_OPTIONS = frozenset(OWN_OPTIONS - {"method", "memory_budget", "show_progress", "backend_options"})


def option_names() -> frozenset[str]:
    """Every keyword option of a fuse: its own and its backends' loaders' (which imports the
    loaders, torch with them: only for a name that is no field of FuseOptions)."""
    from semfuse_rt.engine.backends import loader_options

    own = OWN_OPTIONS - {"backend_options"}
    return frozenset(own).union(*(loader_options(name) for name in BACKENDS if name != "auto"))


def fuse_options(options: FuseOptions | str | None = None, /, **keywords: Any) -> FuseOptions:
    """The FuseOptions that the Python API's calls take: `options` as they are, with
    `keywords` changed; or, for a method's name (None: the default method), that method with
    `keywords`. Checked either way."""
    if isinstance(options, FuseOptions):
        return options.replace(**keywords) if keywords else options
    if options is not None:
        keywords = {**keywords, "method": options}
    return FuseOptions.from_keywords(**keywords)


def cli_fields() -> Mapping[str, dataclasses.Field]:
    """The options the command line shows, by name, with their help: those with a flag."""
    return {item.name: item for item in dataclasses.fields(FuseOptions) if item.init and item.metadata.get("help")}

