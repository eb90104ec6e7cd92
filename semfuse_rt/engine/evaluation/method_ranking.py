"""Ranking methods on a metric suite, as the VIFB and MEFB benchmarks do.

Per category and suite:
- the mean of each metric per method, over the images that method has (NaN, an undefined
  value, skipped);
- the rank of each method per metric on those means: 1 is best, in the metric's direction;
  tied methods share the mean of the ranks they span (two tied for first are both 1.5); a
  method without a defined mean is not ranked on that metric;
- the mean rank: the mean of a method's ranks over the suite's metrics. It orders the methods.

A set where some methods have no result is kept: every method's means are over the images it
has, which is VIFB's rule (the mean over images), and the sets it lacks are reported.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from semfuse_rt.engine.evaluation.metric_suites import MetricSuite

__all__ = ["ImageScore", "SuiteRanking", "image_scores", "average_ranks", "rank_suites"]


@dataclass(frozen=True)
class ImageScore:
    """One metric of one suite for one fused image: a row of the per-image CSV."""

    category: str
    set_name: str
    method: str
    suite: str
    metric: str
    value: float


@dataclass
class SuiteRanking:
    category: str
    suite: MetricSuite
    methods: list[str]  # by mean rank, best first; unranked methods last, in the order given
    images: dict[str, int]  # method -> images scored
    means: dict[str, dict[str, float]]  # method -> metric -> mean over its images
    ranks: dict[str, dict[str, float]]  # method -> metric -> rank (1 = best)
    mean_ranks: dict[str, float]
    missing: dict[str, list[str]]  # set -> the methods with no result for it


def image_scores(category: str, set_name: str, method: str,
                 suite_values: Mapping[str, Mapping[str, float]]) -> list[ImageScore]:
    """The rows for one fused image from its values by suite and metric."""
    return [ImageScore(category, set_name, method, suite, metric, float(value))
            for suite, values in suite_values.items() for metric, value in values.items()]


def average_ranks(values: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank of each key by its value: 1 = best in the given direction, ties share the mean of
    the ranks they span, NaN is not ranked (NaN rank)."""
    defined = sorted((value, key) for key, value in values.items() if not math.isnan(value))
    if higher_is_better:
        defined.reverse()
    ranks = {key: math.nan for key in values}
    start = 0
    while start < len(defined):
        end = start
        while end + 1 < len(defined) and defined[end + 1][0] == defined[start][0]:
            end += 1
        for _, key in defined[start:end + 1]:
            ranks[key] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _mean(values: Iterable[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def rank_suites(scores: Sequence[ImageScore], suites: Sequence[MetricSuite],
                methods: Sequence[str]) -> list[SuiteRanking]:
    """A SuiteRanking per category (in the order the scores first name them) and suite (in
    the order given), over `methods` (their order breaks ties of mean rank)."""
    rankings = []
    for category in dict.fromkeys(score.category for score in scores):
        in_category = [score for score in scores if score.category == category]
        for suite in suites:
            rows = [score for score in in_category if score.suite == suite.name]
            if rows:
                rankings.append(_rank(category, suite, rows, methods))
    return rankings


def _rank(category: str, suite: MetricSuite, rows: Sequence[ImageScore], methods: Sequence[str]) -> SuiteRanking:
    values: dict[tuple[str, str], list[float]] = {}
    sets: dict[str, set[str]] = {}
    for row in rows:
        values.setdefault((row.method, row.metric), []).append(row.value)
        sets.setdefault(row.set_name, set()).add(row.method)
    means = {method: {metric.name: _mean(values.get((method, metric.name), ())) for metric in suite.metrics}
             for method in methods}
    ranks: dict[str, dict[str, float]] = {method: {} for method in methods}
    for metric in suite.metrics:
        by_method = average_ranks({method: means[method][metric.name] for method in methods},
                                  metric.higher_is_better)
        for method in methods:
            ranks[method][metric.name] = by_method[method]
    mean_ranks = {method: _mean(ranks[method].values()) for method in methods}
    order = sorted(methods, key=lambda method: (math.isnan(mean_ranks[method]),
                                                0.0 if math.isnan(mean_ranks[method]) else mean_ranks[method],
                                                methods.index(method)))
    images = {method: sum(method in present for present in sets.values()) for method in methods}
    missing = {name: [method for method in methods if method not in present]
               for name, present in sets.items() if any(method not in present for method in methods)}
    return SuiteRanking(category, suite, order, images, means, ranks, mean_ranks, missing)
