"""Named bundles of optimisation settings. Explicit options override a preset's values.

`blend` (the default): a Laplacian-pyramid blend with per-pixel weights from the inputs' own
local contrast, structural agreement and tone agreement (engine/start/pyramid_blend.py), and no
optimisation steps: over 342 sets of the shared benchmarks and datasets, 10 steps moved no
metric by more than 0.0024 and lowered Q^AB/F, for most of a fuse's time
(benchmarks/RESULTS.md, "Do the optimisation steps earn their place?"); `blend-steps`
is the default before that: the blend, then 10 steps (lr 0.1, cosine-annealed, no mean base
layer); it is the default of `majority` and the CAM methods, whose rules act only through
the steps. `exposure`: the same
weights with one pyramid everywhere, down to a band of 3 pixels (initialisation
`whole-pyramid-blend`), so the inputs' tones mix across the whole image as exposure fusion
does; for exposure stacks ("Exposure stacks: the whole-image pyramid"). `semantic`: the
blend, 10 steps, then 5 steps of the semantic phase at relu5_1 on a 160-pixel copy
(engine/semantic/semantic_phase.py); it keeps more input classes on the 26 development sets but none
more on the held-out half, and more than triples a CPU fuse's time ("The default returns to
`blend`"). `paper`: Hill & Bull's image optimisation as docs/method.md states it: 100 Adam
steps at lr 1.0 from the mean of the inputs. `refined`: DT-CWT choose-max with 3 x 3
consistency verification as the starting image, 30 gentler steps (lr 0.15, cosine-annealed
to 0), and the optimised detail over the inputs' mean base layer (sigma 8 px). `fast`: the
same start and base layer with 10 steps at lr 0.4, cosine-annealed; within 0.002 of
`refined` on Q^AB/F and Q_Y in every category ("Fewer steps").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from semfuse_rt.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line: what it does, for --preset's help
    init: str  # the start image (engine/start/initialisation.py)
    steps: int
    lr: float
    decay: str
    mean_base: float  # the base layer's sigma; 0: none
    semantic_steps: int = 0

    @property
    def settings(self) -> dict:
        """The options it sets, by option name."""
        settings = asdict(self)
        del settings["name"], settings["description"]
        return settings


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(preset: Preset) -> Preset:
    return PRESETS.register(preset.name, preset)


for _preset in (
    Preset("blend", "a pyramid blend weighted by the inputs' own contrast and agreement, alone",
           init="pyramid-blend", steps=0, lr=0.1, decay="cosine", mean_base=0.0),
    Preset("blend-steps", "the blend, then 10 steps", init="pyramid-blend", steps=10, lr=0.1, decay="cosine",
           mean_base=0.0),
    Preset("exposure", "the blend with a whole-image pyramid, for exposure stacks", init="whole-pyramid-blend",
           steps=0, lr=0.1, decay="cosine", mean_base=0.0),
    Preset("semantic", "the blend, 10 steps, then the semantic phase", init="pyramid-blend", steps=10, lr=0.1,
           decay="cosine", mean_base=0.0, semantic_steps=5),
    Preset("paper", "as published: 100 steps from the mean", init="mean", steps=100, lr=1.0, decay="constant",
           mean_base=0.0),
    Preset("refined", "30 steps from the DT-CWT start, over the mean base layer", init="dtcwt-verified", steps=30,
           lr=0.15, decay="cosine", mean_base=8.0),
    Preset("fast", "10 steps from the DT-CWT start, over the mean base layer", init="dtcwt-verified", steps=10,
           lr=0.4, decay="cosine", mean_base=8.0),
):
    register_preset(_preset)
DEFAULT_PRESET = "blend"
STEPS_PRESET = "blend-steps"  # the default of the methods whose rule acts only through steps


def resolve_preset(name: str, **given) -> dict:
    """The preset's settings with every option that is not None taking precedence."""
    settings = PRESETS.lookup(name).settings
    settings.update({key: value for key, value in given.items() if value is not None})
    return settings


def preset_help() -> str:
    """--preset's help: each registered preset with its one line."""
    return PRESETS.help_choices(lambda preset: preset.description, separator="; ")


def preset_values(key: str) -> str:
    """What each preset sets `key` to, for option help: "refined 30, paper 100"."""
    return ", ".join(f"{name} {_shown(preset.settings[key])}" for name, preset in PRESETS.items())


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
