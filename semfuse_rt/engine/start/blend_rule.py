"""The constants of the agreement blend's rule (engine/start/pyramid_blend.py's docstring states the
rule): one source for its torch implementation (`agreement_blend`) and its numpy and OpenCV one
(engine/start/pyramid_blend_cpu.py, `agreement_blend_cpu`). Torch-free, so that the torch-free start
reads the same numbers."""
from __future__ import annotations

from dataclasses import dataclass

EPS = 1e-12  # added to each contrast, so that a flat input's measure is not 0
LUMA = (0.299, 0.587, 0.114)  # BT.601
CONTRAST_WINDOW = 5  # the contrast measure's box (enfuse's)
CORRELATION_FLOOR = 1e-4  # added to the correlation's denominator, so that flat areas give about 0
SOFT_TOTAL_FLOOR = 1e-30  # the soft weights' normaliser, at least, where it is positive


@dataclass(frozen=True)
class AgreementRule:
    """The rule's parameters (the module docstring of engine/start/pyramid_blend.py names them):
    blurs are Gaussian standard deviations in pixels, windows box sides."""
    hard_smooth: float = 3.0  # blur of each contrast before the sharpest input is chosen
    soft_power: float = 1.0  # the soft weights' power p where the inputs' tones differ
    sharpen: float = 2.0  # added to p where the tones agree
    soft_smooth: float = 4.0  # blur of C_k^p
    tone_smooth: float = 8.0  # blur of each luma before the tones' spread T
    tone_spread: float = 0.05  # T at and above which p = soft_power
    majority: int = 9  # window of the hard mask's majority vote (1: none)
    gate_window: int = 9  # window of the structural agreement's correlation
    gate_smooth: float = 2.0  # blur of the agreement into the gate g
    deep_smooth: float = 8.0  # blur of the agreement into the deep pyramid's share s


RULE = AgreementRule()
