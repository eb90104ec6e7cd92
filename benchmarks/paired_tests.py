"""Paired comparisons of two methods from `semfuse-rt eval` runs: per metric, the means, the
mean difference and a two-sided Wilcoxon signed-rank p-value over the sets both methods
scored (ties dropped, Pratt's handling of zero differences).

    python benchmarks/paired_tests.py RUN/results.json [RUN2/results.json ...] \
        --pair 'max@steps=0' max --pair 'max@steps=0' 'max@preset=paper' \
        --alias RUN max@steps=0 start

Semantic retention is compared per judgement unit: each (set, judge) pair counts the inputs
that judge finds retained (R5 x K), so a run with judges lite0, lite1 and lite2 over N sets
of K inputs holds 3 N K judgements. Suite metrics appear as `suite:metric`.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from semfuse_rt.engine.evaluation.evaluation import read_json


def per_set_values(paths: list[Path], aliases: dict[tuple[str, str], str] | None = None
                   ) -> dict[str, dict[tuple[str, str], float]]:
    """method label -> (category/set, metric) -> value, over every run. `aliases`: (run
    folder name, label) -> the label it goes under, to pool runs that named one method
    differently (a default that changed between them, say)."""
    aliases = aliases or {}
    values: dict[str, dict[tuple[str, str], float]] = {}
    for path in paths:
        evaluation = read_json(path)
        sizes = {f"{s.fusion_set.category}/{s.fusion_set.name}": len(s.fusion_set.sources) for s in evaluation.sets}
        for outcome in evaluation.outcomes:
            key = f"{path.parent.name}:{outcome.category}/{outcome.set_name}"
            table = values.setdefault(aliases.get((path.parent.name, outcome.method), outcome.method), {})
            for metric, value in outcome.metrics.items():
                table[(key, metric)] = value
            for suite, metrics in outcome.suites.items():
                if suite == "default":  # the same values as `metrics`
                    continue
                for metric, value in metrics.items():
                    table[(key, f"{suite}:{metric}")] = value
            for metric, value in outcome.metrics.items():
                if metric.startswith("R5 ") and not math.isnan(value):
                    table[(key, f"retained {metric[3:]}")] = value * sizes[f"{outcome.category}/{outcome.set_name}"]
    return values


def compare(values, first: str, second: str, category: str | None = None) -> list[tuple[str, int, float, float, float]]:
    """Per metric over the sets of `category` (None: all): n, both means and the p-value."""
    def chosen(key: tuple[str, str]) -> bool:
        return key in values[second] and (category is None or _category(key[0]) == category)

    rows = []
    metrics = sorted({metric for _, metric in values[first]})
    for metric in metrics:
        keys = [key for key in values[first] if key[1] == metric and chosen(key)]
        a = np.array([values[first][k] for k in keys], float)
        b = np.array([values[second][k] for k in keys], float)
        finite = np.isfinite(a) & np.isfinite(b)
        a, b = a[finite], b[finite]
        if len(a) < 2:
            continue
        p = float(wilcoxon(a, b, zero_method="pratt").pvalue) if np.any(a != b) else 1.0
        rows.append((metric, len(a), float(a.mean()), float(b.mean()), p))
    # every judge's retained inputs as one pool of judgement units
    pooled = [k for k in values[first] if k[1].startswith("retained ") and chosen(k)]
    if pooled:
        a = np.array([values[first][k] for k in pooled], float)
        b = np.array([values[second][k] for k in pooled], float)
        p = float(wilcoxon(a, b, zero_method="pratt").pvalue) if np.any(a != b) else 1.0
        rows.append(("retained, all judges (units: set x judge)", len(a), float(a.mean()), float(b.mean()), p))
    return rows


def _category(key: str) -> str:
    """"run:category/set" -> category (a benchmark's category holds `/` itself)."""
    return key.split(":", 1)[1].rsplit("/", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("A", "B"))
    parser.add_argument("--by-category", action="store_true", help="a table per category too")
    parser.add_argument("--alias", nargs=3, action="append", default=[], metavar=("RUN", "LABEL", "AS"),
                        help="in the run whose results.json is in folder RUN, count LABEL as AS")
    args = parser.parse_args()
    values = per_set_values(args.results, {(run, label): alias for run, label, alias in args.alias})
    for first, second in args.pair:
        for label in (first, second):
            if label not in values:
                parser.error(f"no method {label!r} in these runs; they hold {', '.join(values)}")
        categories = sorted({_category(key) for key, _ in values[first]}) if args.by_category else []
        for category in [None, *categories]:
            print(f"\n### {first} against {second}, {category or 'all sets'}\n")
            print(f"| metric | n | {first} | {second} | difference | p (Wilcoxon) |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for metric, n, a, b, p in compare(values, first, second, category):
                print(f"| {metric} | {n} | {a:.4f} | {b:.4f} | {a - b:+.4f} | {p:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
