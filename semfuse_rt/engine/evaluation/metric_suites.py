"""The metric suites that `eval` and `score` report: each a named list of metrics, with the
direction that is better for each, and the function that scores a fused image on them.

- `default`: this project's metrics (engine/metrics/metrics.py), all higher-is-better.
- `vifb`: the 13 metrics of the VIFB benchmark, in its conventions (engine/metrics/vifb_metrics.py).
- `mefb`: MEF-SSIM as the MEFB benchmark computes it (engine/metrics/mef_ssim.py), with Q^AB/F beside it.

A suite's scorer takes the sources and the fused image as loaded (any mode, any bit depth):
each convention's conversion (luma, per colour channel, grey) belongs to its metric code.
The benchmarks' metric modules are imported when their suite first scores.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from semfuse_rt.engine.metrics.metrics import fusion_metrics, qabf, to_luma_255
from semfuse_rt.errors import SemfuseError

__all__ = ["Metric", "MetricSuite", "SUITES", "DEFAULT_SUITES", "ALL_SUITES", "parse_suites", "suites_help",
           "score_suites"]

Scorer = Callable[[Sequence[np.ndarray], np.ndarray], dict[str, float]]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    description: str  # one line, for --help and the reports


@dataclass(frozen=True)
class MetricSuite:
    name: str
    description: str
    metrics: tuple[Metric, ...]
    scorer: Scorer  # returns at least every metric of the suite, by name

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(metric.name for metric in self.metrics)

    def score(self, sources: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
        return self.pick(self.scorer(sources, fused))

    def pick(self, values: Mapping[str, float]) -> dict[str, float]:
        """The suite's metrics, in its order, from a scorer's values."""
        return {name: float(values[name]) for name in self.metric_names}


def _vifb_scores(sources: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
    from semfuse_rt.engine.metrics.vifb_metrics import vifb_metrics

    return vifb_metrics(sources, fused)


def _mefb_scores(sources: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
    from semfuse_rt.engine.metrics.mef_ssim import mef_ssim

    return {"MEF-SSIM": mef_ssim(sources, fused),
            "Qabf": qabf([to_luma_255(source) for source in sources], to_luma_255(fused))}


_DEFAULT = MetricSuite("default", "this project's metrics, on BT.601 luma (engine/metrics/metrics.py)", (
    Metric("Qabf", True, "Q^AB/F edge preservation, image mirrored at the border"),
    Metric("QabfV", True, "Q^AB/F in VIFB's convention (zero-padded Sobel), on luma"),
    Metric("Qmi", True, "normalised mutual information (Hossny)"),
    Metric("Qy", True, "Yang's SSIM-based metric, 7 x 7 Gaussian windows"),
    Metric("SSIM", True, "mean SSIM to the sources, 11 x 11 Gaussian"),
    Metric("MI", True, "mutual information with the sources, summed"),
    Metric("EN", True, "entropy of the fused image"),
    Metric("SD", True, "standard deviation of the fused image"),
    Metric("SF", True, "spatial frequency of the fused image"),
    Metric("AG", True, "average gradient of the fused image"),
), fusion_metrics)

# VIFB's own descriptions of its metrics; the directions come from engine/metrics/vifb_metrics.py.
_VIFB_DESCRIPTIONS = {
    "CE": "cross entropy of the sources' and the fused image's histograms",
    "EN": "entropy of the fused image",
    "MI": "mutual information of the fused image with the sources, summed",
    "PSNR": "20 log10(255 / sqrt(VIFB's RMSE)): about 60 dB where the usual PSNR is about 15",
    "SSIM": "SSIM of the fused image with each source, summed",
    "RMSE": "VIFB's 'RMSE': sqrt(sum of squared differences) / pixels, the mean over the sources",
    "AG": "average gradient of the fused image",
    "EI": "edge intensity: mean Sobel gradient magnitude of the fused image",
    "SD": "standard deviation of the fused image",
    "SF": "spatial frequency of the fused image",
    "Qabf": "Q^AB/F edge preservation, VIFB's code (zero-padded Sobel, per colour channel)",
    "Qcb": "Chen-Blum: human-perception-based contrast preservation",
    "Qcv": "Chen-Varshney: perceptually weighted local difference to the sources",
}


def _vifb_suite() -> MetricSuite:
    from semfuse_rt.engine.metrics.vifb_metrics import VIFB_METRICS

    return MetricSuite("vifb", "the VIFB benchmark's 13 metrics, in its conventions (engine/metrics/vifb_metrics.py)",
                       tuple(Metric(name, higher, _VIFB_DESCRIPTIONS[name]) for name, higher in VIFB_METRICS),
                       _vifb_scores)


_MEFB = MetricSuite("mefb", "the MEFB benchmark's headline metric, with Q^AB/F beside it", (
    Metric("MEF-SSIM", True, "3-scale MEF-SSIM (Ma, Zeng & Wang 2015) as MEFB computes it"),
    Metric("Qabf", True, "Q^AB/F edge preservation, image mirrored at the border"),
), _mefb_scores)

SUITES: dict[str, MetricSuite] = {suite.name: suite for suite in (_DEFAULT, _vifb_suite(), _MEFB)}
DEFAULT_SUITES = (_DEFAULT.name,)
ALL_SUITES = "all"  # --metrics all: every suite


def parse_suites(text: str) -> tuple[MetricSuite, ...]:
    """`"vifb,mefb"` -> those suites, in that order; `"all"` -> every suite."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == [ALL_SUITES]:
        return tuple(SUITES.values())
    if not names:
        raise SemfuseError(f"--metrics names no suite; use one or more of {', '.join(SUITES)}, or {ALL_SUITES}")
    for name in names:
        if name not in SUITES:
            raise SemfuseError(f"--metrics: unknown suite {name!r}; use one or more of {', '.join(SUITES)}, "
                               f"comma-separated, or {ALL_SUITES}")
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        raise SemfuseError(f"--metrics: suite {repeated[0]!r} is listed twice")
    return tuple(SUITES[name] for name in names)


def suites_help() -> str:
    """A few lines per suite: its metrics and their directions, for --help."""
    import textwrap

    lines = []
    for suite in SUITES.values():
        metrics = ", ".join(metric.name + ("" if metric.higher_is_better else " (lower is better)")
                            for metric in suite.metrics)
        # Wrapped here, indented: rich would wrap a long line back to the margin.
        lines.append(textwrap.fill(f"{suite.name}: {suite.description}; {metrics}", width=78,
                                   initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)


def score_suites(suites: Iterable[MetricSuite], sources: Sequence[np.ndarray], fused: np.ndarray, *,
                 known: Mapping[Scorer, Mapping[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Each suite's values by suite name. Suites that share a scorer run it once, and `known`
    gives scorers' values already computed (eval's fusion_metrics, say)."""
    computed: dict[Scorer, Mapping[str, float]] = dict(known or {})
    values = {}
    for suite in suites:
        if suite.scorer not in computed:
            computed[suite.scorer] = suite.scorer(sources, fused)
        values[suite.name] = suite.pick(computed[suite.scorer])
    return values
