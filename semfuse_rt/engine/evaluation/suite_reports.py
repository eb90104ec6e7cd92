"""The suites' rankings (engine/evaluation/method_ranking.py) as reports: markdown tables, rich tables
for the screen, JSON-ready records, and the CSV of every per-image value. `eval` and
`score` both write these."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from semfuse_rt.cache import atomic_write_bytes
from semfuse_rt.engine.evaluation.method_ranking import ImageScore, SuiteRanking

__all__ = ["CSV_COLUMNS", "RESULTS_NAMES", "SCORES_CSV", "finite_or_none", "number", "ranking_title",
           "ranking_markdown", "ranking_tables", "rankings_json", "scores_csv", "write_scores_csv"]

SCORES_CSV = "scores.csv"
# What eval and score write into their --out folder.
RESULTS_NAMES = ("results.json", "results.md", SCORES_CSV)


def finite_or_none(value: float) -> float | None:
    """JSON has neither NaN nor infinity (VIFB's PSNR of a result equal to its sources)."""
    return value if math.isfinite(value) else None


CSV_COLUMNS = ("category", "set", "method", "suite", "metric", "value")
RANKING_NOTE = ("Mean of each metric per method over its images; rank per metric on those means (1 = best, "
                "lower-is-better metrics marked; ties share the mean of their ranks); mean rank over the "
                "suite's metrics orders the methods (docs/evaluation.md).")


def number(value: float) -> str:
    """A metric's mean or a rank, short: metrics range from 0..1 to hundreds (Qcv)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def _heading(name: str, higher_is_better: bool) -> str:
    return name if higher_is_better else f"{name} (lower)"


def ranking_title(ranking: SuiteRanking) -> str:
    return f"{ranking.category}, suite {ranking.suite.name}"


def _rows(ranking: SuiteRanking) -> list[list[str]]:
    """A row per method, best mean rank first: method, images, each metric's mean and rank
    as `mean (rank)`, the mean rank."""
    return [[method, str(ranking.images[method]),
             *(f"{number(ranking.means[method][m.name])} ({number(ranking.ranks[method][m.name])})"
               for m in ranking.suite.metrics),
             number(ranking.mean_ranks[method])]
            for method in ranking.methods]


def _header(ranking: SuiteRanking) -> list[str]:
    return ["method", "images", *(_heading(m.name, m.higher_is_better) for m in ranking.suite.metrics), "mean rank"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def ranking_markdown(rankings: Sequence[SuiteRanking]) -> str:
    """A `###` section per category and suite: the table, then the sets that lack methods."""
    if not rankings:  # a results.json from before the suites
        return "No metric suite was scored."
    parts = [RANKING_NOTE]
    for ranking in rankings:
        header, rows = _header(ranking), _rows(ranking)
        lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(_cell(cell) if i else f"`{_cell(cell)}`" for i, cell in enumerate(row)) + " |"
                  for row in rows]
        parts += ["", f"### {_cell(ranking_title(ranking))}", "", "\n".join(lines)]
        if ranking.missing:
            parts += ["", "Missing (ranked on the images they have): "
                      + "; ".join(f"{_cell(name)}: {', '.join(map(_cell, methods))}"
                                  for name, methods in ranking.missing.items()) + "."]
    return "\n".join(parts)


def ranking_tables(rankings: Sequence[SuiteRanking]):
    """The same tables for the screen, one rich Table per category and suite."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    tables = []
    for ranking in rankings:
        table = Table(title=escape(ranking_title(ranking)), title_justify="left", title_style="bold",
                      box=box.SIMPLE_HEAD, padding=0, pad_edge=False, header_style="bold")
        header = _header(ranking)
        table.add_column(header[0], overflow="fold")
        for name in header[1:]:
            table.add_column(escape(name), justify="right", no_wrap=True)
        for row in _rows(ranking):
            table.add_row(*map(escape, row))
        tables.append(table)
    return Group(*tables)


def rankings_json(rankings: Sequence[SuiteRanking]) -> list[dict]:
    """Every ranking as plain data; NaN and infinity (JSON has neither) as None."""
    return [{
        "category": r.category,
        "suite": r.suite.name,
        "metrics": [{"name": m.name, "higher_is_better": m.higher_is_better} for m in r.suite.metrics],
        "methods": [{"method": method, "images": r.images[method],
                     "means": {name: finite_or_none(value) for name, value in r.means[method].items()},
                     "ranks": {name: finite_or_none(value) for name, value in r.ranks[method].items()},
                     "mean_rank": finite_or_none(r.mean_ranks[method])} for method in r.methods],
        "missing": r.missing,
    } for r in rankings]


def scores_csv(scores: Sequence[ImageScore]) -> str:
    """CSV_COLUMNS, a row per value; an undefined value (NaN) is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in scores:
        writer.writerow([s.category, s.set_name, s.method, s.suite, s.metric,
                         "" if math.isnan(s.value) else repr(s.value)])
    return buffer.getvalue()


def write_scores_csv(scores: Sequence[ImageScore], path: Path) -> Path:
    atomic_write_bytes(Path(path), scores_csv(scores).encode("utf-8"))
    return Path(path)
