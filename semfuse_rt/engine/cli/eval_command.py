"""`semfuse-rt eval DIR|SETS.csv --methods ...`: score fusion methods and baselines."""
from __future__ import annotations

import inspect
import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from semfuse_rt.engine.backends import BACKENDS
from semfuse_rt.engine.evaluation import BASELINES
from semfuse_rt.engine.cli.application import app
from semfuse_rt.engine.cli.screen import screen
from semfuse_rt.engine.evaluation import find_sets
from semfuse_rt.engine.evaluation import (
    SIDE_BY_SIDE_FOLDER, check_report_folder, evaluate, parse_methods, suite_rankings, summary_table, write_reports,
)
from semfuse_rt.engine.evaluation import IMAGE_BASELINES
from semfuse_rt.engine.start import INITIALISATIONS
from semfuse_rt.engine.fuse import METHODS, default_presets
from semfuse_rt.engine.evaluation import ALL_SUITES, DEFAULT_SUITES, parse_suites, suites_help
from semfuse_rt.engine.fuse import PRESETS
from semfuse_rt.engine.evaluation import DEFAULT_JUDGES, parse_judges
from semfuse_rt.engine.io import VIEW
from semfuse_rt.engine.evaluation import SCORES_CSV, ranking_tables


def _reproducing_command(location, methods, out, categories, limit, max_size, judges, options,
                         metrics=None, match_size=False) -> str:
    """The command line for the reports, rebuilt from the parsed values (not sys.argv, which
    is some other program's when the command is invoked from Python)."""
    words = ["semfuse-rt", "eval", str(location), "--methods", methods, "--out", str(out)]
    if match_size:
        words.append("--match-size")
    for flag, value in (("--categories", categories), ("--limit", limit), ("--max-size", max_size),
                        ("--judges", judges), ("--metrics", metrics),
                        *((f"--{key}", value) for key, value in options.items())):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def _split(text: Optional[str]) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _baselines() -> str:
    """Each baseline with its @options, from the registries: a new baseline shows here."""
    lines = []
    for name, rule in {**BASELINES, **IMAGE_BASELINES}.items():
        options = [p.name for p in inspect.signature(rule).parameters.values() if p.kind is p.KEYWORD_ONLY]
        lines.append(f"  {name}" + (f": {', '.join(options)}" if options else ""))
    return "\n".join(lines)


# Rich keeps the single line breaks of the paragraphs after the first: lines fit 80 columns.
_HELP = f"""Fuse every image set with every method, score the results, write reports.

Folder layout: each subfolder is a category. In a category, a set is
  - the files sharing a name prefix that differ in a last label:
    lytro-01-A.jpg + lytro-01-B.jpg, Camp_IR.png + Camp_Vis.png,
    c01_1.tif + c01_2.tif
  - or a subfolder of images: multiexposure/door/door1.jpg, door2.jpg, ...
A folder that holds images itself is one category, named after the folder.
Folders that hold only folders of categories (a benchmark's, as in
../shared/benchmarks) are descended; such a category is named by its path,
roadscene/infrared_visible, and is a subfolder in the reports' file names.
A folder of fused images of a sibling's sets (SET_METHOD.jpg) is skipped.
CSV: a header row name, category (optional), source1, source2, ...;
one set per row; paths relative to the CSV file.

Method variants, comma-separated: NAME or NAME@KEY=VALUE@KEY=VALUE..., e.g.
  average,dwt,dtcwt,max,max@layer=relu1_2@steps=30,dwt@wavelet=haar
Baselines, with their @options:
{_baselines()}
Any other name is a semfuse method:
  {' | '.join(METHODS)}
A variant's @options override the flags --layer, --steps, --lr, --init,
--window and --backend. Each flag goes to the variants whose method uses it
(--window to majority, say); a flag or @option that no method in the run uses
is an error.

--max-size N shrinks every set (longer side at most N, area averaging) for
quick runs; its scores are not comparable with full-size runs.

A set's images must share one size; a set of several sizes stops the run
before anything is fused. --match-size resizes each image of a set to the
size of the set's smallest image (fewest pixels; area averaging), for
benchmarks whose sources differ only in resolution, such as RoadScene
(500x329 infrared beside 1404x1026 visible). It comes before --max-size.

Metrics on BT.601 luma 0..255: Q^AB/F, QabfV (Q^AB/F as the VIFB benchmark's
code computes it, as most published tables do), Q_MI, Q_Y, mean SSIM to the
sources, MI, EN, SD, SF, AG (docs/evaluation.md). Semantic retention: R5, the
share of inputs whose top-1 ImageNet class is in the fused image's top 5; rank
and P, that class's mean rank and probability in the fused image; with several
--judges, pooled over them, then each judge's R5.

Metric suites (--metrics, comma-separated, or {ALL_SUITES}): per category
and suite, each method's mean of each metric, its rank per metric (1 = best,
in the metric's direction; ties share their mean rank) and its mean rank
over the suite, as VIFB and MEFB rank methods:
{suites_help()}

Writes OUT/results.json, OUT/results.md and OUT/{SCORES_CSV} (every per-image
value: category, set, method, suite, metric, value). With --grids (the default), also
each set's inputs and results side by side, at up to {VIEW} pixels a side, in
OUT/{SIDE_BY_SIDE_FOLDER}/CATEGORY/SET.png, and per category a grid of thumbnails,
OUT/grid-CATEGORY.png. Prints a summary by category and method."""


@app.command("eval", help=escape(_HELP))
def eval_command(
    location: Path = typer.Argument(..., metavar="DIR|SETS.csv",
                                    help="Folder of categories of sets, or a .csv listing sets."),
    methods: str = typer.Option(
        "average,dwt,dtcwt,max", "--methods", "-m",
        help="Comma-separated variants NAME or NAME@KEY=VALUE... (see above).",
    ),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o",
                             help=f"Folder for the reports: results.json, results.md, {SIDE_BY_SIDE_FOLDER}/, "
                                  "grid-CATEGORY.png (created)."),
    categories: Optional[str] = typer.Option(None, help="Comma-separated categories to keep."),
    limit: Optional[int] = typer.Option(None, help="At most N sets per category, in name order."),
    max_size: Optional[int] = typer.Option(
        None, "--max-size",
        help="Quick runs: shrink each set so its longer side is at most N pixels (area averaging) "
             "before fusing; scores are then not comparable with full-size runs."),
    match_size: bool = typer.Option(
        False, "--match-size",
        help="Resize every image of a set to the size of its smallest image (area averaging) before "
             "fusing and scoring; for benchmarks whose sources differ only in resolution, such as RoadScene."),
    layer: Optional[str] = typer.Option(None, help="semfuse methods: VGG19 layer (default relu1_1)."),
    preset: Optional[str] = typer.Option(None, help=f"semfuse methods: {' | '.join(PRESETS)} "
                                                    f"(default {default_presets()})."),
    steps: Optional[int] = typer.Option(None, help="semfuse methods: Adam steps (default: the preset's)."),
    lr: Optional[float] = typer.Option(None, help="semfuse methods: Adam learning rate (default: the preset's)."),
    init: Optional[str] = typer.Option(None, help=f"semfuse methods: starting image, {' | '.join(INITIALISATIONS)} "
                                                  "(default: the preset's)."),
    window: Optional[int] = typer.Option(None, help="semfuse majority: filter window (default 5)."),
    mean_base: Optional[float] = typer.Option(
        None, "--mean-base", help="semfuse methods: mean base layer sigma, 0 off (default: the preset's)."),
    backend: Optional[str] = typer.Option(None, help=f"semfuse methods: {' | '.join(BACKENDS)} (default auto)."),
    weights: Optional[Path] = typer.Option(None, help="semfuse methods: VGG19 weights file."),
    save_fused: bool = typer.Option(False, "--save-fused", help="Also write every fused image under OUT/fused/."),
    grids: bool = typer.Option(True, "--grids/--no-grids",
                               help="Write the pictures: each set side by side "
                                    f"({SIDE_BY_SIDE_FOLDER}/CATEGORY/SET.png) "
                                    "and a thumbnail grid per category."),
    retention: bool = typer.Option(True, "--retention/--no-retention",
                                   help="Semantic retention: R5, rank, P (see above)."),
    judges: str = typer.Option("lite0", help="Classifiers that judge retention, pooled: lite0 (the CAM "
                                             "classifier), lite1, lite2 (the \\[judges] extra), all."),
    metrics: str = typer.Option(",".join(DEFAULT_SUITES), "--metrics",
                                help=f"Metric suites to score and rank on, comma-separated, or {ALL_SUITES} "
                                     "(see above)."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress bar, nor the notice of a first-time weights fetch."),
) -> None:
    """Fuse every image set with every method, score the results, write reports (see _HELP)."""
    suites = parse_suites(metrics)
    specs = parse_methods(methods)
    judge_names = parse_judges(judges)
    discovery = find_sets(location, categories=_split(categories), limit=limit)
    # Before any set is read: --out can be written, and nothing written there is an input.
    check_report_folder(out, discovery.sets, specs, grids=grids, save_fused=out / "fused" if save_fused else None)
    console = Console(stderr=True)
    for reason in discovery.skipped:
        console.print(f"skipped {reason}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    given = {"layer": layer, "preset": preset, "steps": steps, "lr": lr, "init": init, "window": window,
             "mean_base": mean_base, "backend": backend, "weights": weights}
    semfuse_options = {key: value for key, value in given.items() if value is not None}
    command = _reproducing_command(location, methods, out, categories, limit, max_size,
                                   judges if judge_names != DEFAULT_JUDGES else None,
                                   {**semfuse_options, "backend": backend},
                                   metrics if [s.name for s in suites] != list(DEFAULT_SUITES) else None,
                                   match_size)
    evaluation = evaluate(
        discovery.sets, specs, semfuse_options=semfuse_options, max_size=max_size, match_size=match_size,
        save_fused=out / "fused" if save_fused else None, show_progress=not quiet,
        source=str(location), command=command, retention=retention, judges=judge_names, pictures=grids,
        suites=suites,
    )
    screen().print(summary_table(evaluation), markup=True)
    screen().print(ranking_tables(suite_rankings(evaluation)), markup=True)
    pictures = out / SIDE_BY_SIDE_FOLDER
    written = write_reports(evaluation, out, grids=grids)
    for path in written:
        if pictures not in path.parents:
            typer.echo(f"wrote {path}")
    drawn = len(written) - sum(pictures not in path.parents for path in written)
    if drawn:
        typer.echo(f"wrote {drawn} side-by-side picture{'s' if drawn != 1 else ''} (inputs, then each method) "
                   f"under {pictures}/")
