"""`semfuse-rt eval DIR|SETS.csv --methods ...`: score fusion methods and baselines."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from semfuse_rt.engine.cli import app
from semfuse_rt.engine.datasets import find_sets
from semfuse_rt.engine.evaluation import evaluate, parse_methods, summary_table, write_reports
from semfuse_rt.engine.initialisation import INITIALISATIONS
from semfuse_rt.engine.presets import DEFAULT_PRESET, PRESETS
from semfuse_rt.engine.retention_judges import DEFAULT_JUDGES, parse_judges


def _reproducing_command(location, methods, out, categories, limit, max_size, judges, options) -> str:
    """The command line for the reports, rebuilt from the parsed values (not sys.argv, which
    is some other program's when the command is invoked from Python)."""
    words = ["semfuse-rt", "eval", str(location), "--methods", methods, "--out", str(out)]
    for flag, value in (("--categories", categories), ("--limit", limit), ("--max-size", max_size),
                        ("--judges", judges),
                        *((f"--{key}", value) for key, value in options.items())):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def _split(text: Optional[str]) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command("eval")
def eval_command(
    location: Path = typer.Argument(..., help="Folder of categories of sets, or a .csv listing sets."),
    methods: str = typer.Option(
        "average,dwt,dtcwt,max", "--methods", "-m",
        help="Comma-separated variants NAME or NAME@KEY=VALUE... (see above).",
    ),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o",
                             help="Folder for results.json, results.md, grid-CATEGORY.png (created)."),
    categories: Optional[str] = typer.Option(None, help="Comma-separated categories to keep."),
    limit: Optional[int] = typer.Option(None, help="At most N sets per category, in name order."),
    max_size: Optional[int] = typer.Option(
        None, "--max-size",
        help="Quick runs: shrink each set so its longer side is at most N pixels (area averaging) "
             "before fusing; scores are then not comparable with full-size runs."),
    layer: Optional[str] = typer.Option(None, help="semfuse methods: VGG19 layer (default relu1_1)."),
    preset: Optional[str] = typer.Option(None, help=f"semfuse methods: {' | '.join(PRESETS)} "
                                                    f"(default {DEFAULT_PRESET})."),
    steps: Optional[int] = typer.Option(None, help="semfuse methods: Adam steps (default: the preset's)."),
    lr: Optional[float] = typer.Option(None, help="semfuse methods: Adam learning rate (default: the preset's)."),
    init: Optional[str] = typer.Option(None, help=f"semfuse methods: starting image, {' | '.join(INITIALISATIONS)} "
                                                  "(default: the preset's)."),
    window: Optional[int] = typer.Option(None, help="semfuse majority: filter window (default 5)."),
    mean_base: Optional[float] = typer.Option(None, "--mean-base",
                                              help="semfuse methods: mean base layer sigma, 0 off (default: the preset's)."),
    backend: str = typer.Option("auto", help="semfuse methods: auto | trt | cuda | ort | torch."),
    weights: Optional[Path] = typer.Option(None, help="semfuse methods: VGG19 weights file."),
    save_fused: bool = typer.Option(False, "--save-fused", help="Also write every fused image under OUT/fused/."),
    grids: bool = typer.Option(True, "--grids/--no-grids", help="Write the PNG grids."),
    retention: bool = typer.Option(True, "--retention/--no-retention",
                                   help="Semantic retention: R5, rank, P (see above)."),
    judges: str = typer.Option("lite0", help="Classifiers that judge retention, pooled: lite0 (the CAM "
                                             "classifier), lite1, lite2 (the [judges] extra), all."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fuse every image set with every method, score the results, write reports.

    Folder layout: each subfolder is a category. In a category, a set is
      - the files sharing a name prefix that differ in a last label:
        lytro-01-A.jpg + lytro-01-B.jpg, Camp_IR.png + Camp_Vis.png, c01_1.tif + c01_2.tif
      - or a subfolder of images: multiexposure/door/door1.jpg, door2.jpg, ...
    A folder that holds images itself is one category.
    CSV: a header row name, category (optional), source1, source2, ...; one set per row;
    paths relative to the CSV file.

    Method variants, comma-separated: NAME or NAME@KEY=VALUE@KEY=VALUE..., e.g.
      average,dwt,dtcwt,max,max@layer=relu1_2@steps=30,dwt@wavelet=haar
    Baselines: average; dwt (wavelet, levels, mode); dtcwt (levels, biort, qshift).
    Any other name is a semfuse method (max, majority, ...); a variant's @options
    override the --layer/--steps/--lr/--init/--window/--backend flags.

    --max-size N shrinks every set (longer side at most N, area averaging) for quick
    runs; its scores are not comparable with full-size runs.

    Metrics on BT.601 luma 0..255: Q^AB/F, Q_MI, Q_Y, mean SSIM to the sources, MI,
    EN, SD, SF, AG. Semantic retention: R5, the share of inputs whose top-1 ImageNet
    class is in the fused image's top 5; rank and P, that class's mean rank and
    probability in the fused image; with several --judges, pooled over them, then each
    judge's R5. Writes OUT/results.json, OUT/results.md, OUT/grid-CATEGORY.png
    and prints a summary by category and method.
    """
    specs = parse_methods(methods)
    judge_names = parse_judges(judges)
    discovery = find_sets(location, categories=_split(categories), limit=limit)
    console = Console(stderr=True)
    for reason in discovery.skipped:
        console.print(f"skipped {reason}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    given = {"layer": layer, "preset": preset, "steps": steps, "lr": lr, "init": init, "window": window, "mean_base": mean_base,
             "backend": backend, "weights": weights}
    semfuse_options = {key: value for key, value in given.items() if value is not None}
    command = _reproducing_command(location, methods, out, categories, limit, max_size,
                                   judges if judge_names != DEFAULT_JUDGES else None,
                                   {**semfuse_options, "backend": backend})
    evaluation = evaluate(
        discovery.sets, specs, semfuse_options=semfuse_options, max_size=max_size,
        save_fused=out / "fused" if save_fused else None, show_progress=not quiet,
        source=str(location), command=command, retention=retention, judges=judge_names,
    )
    screen = Console()
    if not screen.is_terminal:
        screen = Console(width=160)  # piped into a log: no terminal width to respect
    screen.print(summary_table(evaluation), markup=True)
    for path in write_reports(evaluation, out, grids=grids):
        typer.echo(f"wrote {path}")
