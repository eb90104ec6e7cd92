"""`semfuse-rt score SETS FUSED`: rank fused images that someone else made, on the benchmarks'
metric suites, beside semfuse-rt methods fused in the same run."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.evaluation import ALL_SUITES, DEFAULT_SUITES, suites_help

# Rich keeps the single line breaks of the paragraphs after the first: lines fit 80 columns.
_HELP = f"""Score fused images that someone else made, and rank their methods.

SETS: a folder of sets as `semfuse-rt eval` finds them (categories of sets, or
one folder of pairs such as Camp_IR.png + Camp_Vis.png), or a .csv of sets.
FUSED: a folder of fused images named SET_METHOD.ext, as VIFB and MFIFB store
them (carLight_ADF.jpg: set carLight, method ADF); with several categories,
FUSED/CATEGORY/SET_METHOD.ext. A name's set is the longest set name it starts
with, then `_`. Each fused image must have its sources' size.

A set's sources must share one size. --match-size resizes each source to the
size of its set's smallest image (fewest pixels; area averaging), for
benchmarks whose sources differ only in resolution, such as RoadScene; the
fused images must then have that size (they are never resized).

Per category and suite: each method's mean of each metric over its images, its
rank per metric (1 = best, in the metric's direction; ties share their mean
rank) and its mean rank over the suite, as VIFB and MEFB rank methods. A set
that lacks some methods is reported; each method is ranked on the mean over
the images it has (VIFB's rule).

Suites (--metrics, comma-separated, or {ALL_SUITES}):
{suites_help()}

--methods fuses the sets with semfuse-rt methods or baselines, as `eval` does
(NAME or NAME@KEY=VALUE..., see `semfuse-rt eval --help`), and ranks them
beside the fused images.

Writes OUT/results.json, OUT/results.md and OUT/scores.csv (every per-image
value: category, set, method, suite, metric, value). Prints the tables."""


def _reproducing_command(sets: Path, fused: Path, metrics: str, methods: Optional[str], weights: Optional[Path],
                         out: Path, match_size: bool) -> str:
    words = ["semfuse-rt", "score", str(sets), str(fused), "--metrics", metrics]
    if match_size:
        words.append("--match-size")
    for flag, value in (("--methods", methods), ("--weights", weights)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join([*words, "--out", str(out)])


@app.command("score", help=escape(_HELP))
def score_command(
    sets: Path = typer.Argument(..., metavar="SETS", help="Folder of sets, or a .csv listing them."),
    fused: Path = typer.Argument(..., metavar="FUSED", help="Folder of fused images named SET_METHOD.ext."),
    metrics: str = typer.Option(",".join(DEFAULT_SUITES), "--metrics",
                                help=f"Metric suites, comma-separated, or {ALL_SUITES} (see above)."),
    methods: Optional[str] = typer.Option(None, "--methods", "-m",
                                          help="Also fuse the sets with these variants and rank them beside."),
    weights: Optional[Path] = typer.Option(None, help="semfuse methods of --methods: VGG19 weights file."),
    match_size: bool = typer.Option(
        False, "--match-size",
        help="Resize every image of a set to the size of its smallest image (area averaging) before "
             "fusing and scoring; for benchmarks whose sources differ only in resolution, such as RoadScene. "
             "Fused images must have that size."),
    out: Path = typer.Option(Path("score-out"), "--out", "-o",
                             help="Folder for results.json, results.md and scores.csv (created)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Rank fused images that someone else made (see _HELP)."""
    from rich.console import Console

    from semfuse_rt.engine.cli.screen import screen
    from semfuse_rt.engine.evaluation import parse_methods
    from semfuse_rt.engine.evaluation import parse_suites
    from semfuse_rt.engine.evaluation import plan_scoring, run_scoring, write_score_reports
    from semfuse_rt.engine.evaluation import ranking_tables

    suites = parse_suites(metrics)
    specs = parse_methods(methods) if methods is not None else []
    plan = plan_scoring(sets, fused, suites, specs, {"weights": weights} if weights is not None else {}, out,
                        match_size)
    console = Console(stderr=True)
    notes = [f"skipped {reason}" for reason in plan.fused.skipped]
    notes += [f"set {key}: no fused image, not scored" for key in plan.fused.unscored]
    notes += [f"set {key}: no {', '.join(missing)} (each method is ranked on the images it has)"
              for key, missing in plan.fused.missing().items()]
    for note in notes:
        console.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
    scoring = run_scoring(plan, show_progress=not quiet,
                          command=_reproducing_command(sets, fused, metrics, methods, weights, out, match_size))
    screen().print(ranking_tables(scoring.rankings()), markup=True)
    for path in write_score_reports(scoring, out):
        typer.echo(f"wrote {path}")
