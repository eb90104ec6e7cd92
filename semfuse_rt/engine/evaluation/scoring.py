"""Scoring fused images that someone else made (`semfuse-rt score`), as the benchmarks rank them.

The fused images lie in one folder named `SET_METHOD.ext`, as VIFB and MFIFB store them
(`carLight_ADF.jpg`: set `carLight`, method `ADF`); with several categories of sets, either
in one folder, where no set name may repeat across categories, or in a subfolder per category
(`FUSED/CATEGORY/SET_METHOD.ext`). A file's set is the longest known set name that its stem
starts with, followed by `_`: set names may hold underscores themselves (`HMSD_GF` is a
method, `man_walk` could be a set). Everything is checked before any image is decoded: names,
sizes (from the headers), and that no report would replace an input. With --match-size each
set's sources are resized to the set's smallest image (engine/evaluation/set_sizes.py); a fused image
must then have that size, as one made from the resized sources has: someone else's result
is never resized.

Each fused image is scored on the chosen suites against its set's sources; semfuse-rt methods
and baselines given with --methods are fused by engine/evaluation/evaluation.py on the same sets and
ranked beside them (engine/evaluation/method_ranking.py). A set that lacks some methods is kept, and
each method's means are over the images it has (VIFB's rule).
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semfuse_rt.cache import atomic_write_bytes
from semfuse_rt.engine.evaluation.datasets import (IMAGE_SUFFIXES, FusionSet, category_folders, fused_set_name,
    natural_key)
from semfuse_rt.engine.io.images import InputFiles, check_writable_folder, image_file_size, load_image
from semfuse_rt.engine.evaluation.method_ranking import ImageScore, SuiteRanking, image_scores, rank_suites
from semfuse_rt.engine.evaluation.metric_suites import MetricSuite, score_suites
from semfuse_rt.engine.evaluation.set_sizes import (Size, check_one_size_per_set, match_sizes, shown, smallest_size,
                                         source_sizes)
from semfuse_rt.engine.evaluation.suite_reports import (RESULTS_NAMES, finite_or_none, ranking_markdown, rankings_json,
                                            write_scores_csv)
from semfuse_rt.errors import SemfuseError

if TYPE_CHECKING:  # engine/evaluation/evaluation.py pulls in the fusion engine; imported where a run needs it
    from semfuse_rt.engine.evaluation.evaluation import MethodSpec

__all__ = ["FusedImage", "FusedImages", "Scoring", "ScoringPlan", "find_fused", "check_sizes", "score_fused",
           "check_score_folder", "plan_scoring", "run_scoring", "write_score_reports"]

_NAMING = "name them SET_METHOD.ext, as VIFB and MFIFB store them"


@dataclass(frozen=True)
class FusedImage:
    fusion_set: FusionSet
    method: str
    path: Path


@dataclass
class FusedImages:
    """What a folder of fused images holds for the sets."""

    images: list[FusedImage]
    methods: list[str]  # in natural order
    skipped: list[str] = field(default_factory=list)  # files that are no set's fused image, and why
    unscored: list[str] = field(default_factory=list)  # keys of the sets without any fused image

    def missing(self) -> dict[str, list[str]]:
        """Set key -> the methods that have no image of it, for the sets that have some."""
        present: dict[str, set[str]] = {}
        for image in self.images:
            present.setdefault(image.fusion_set.key, set()).add(image.method)
        return {key: [m for m in self.methods if m not in methods]
                for key, methods in present.items() if len(methods) < len(self.methods)}


def _folder_for(root: Path, category: str) -> Path:
    """A category's fused images: FUSED/CATEGORY/ where that folder exists, else FUSED itself."""
    own = root.joinpath(*category_folders(category))
    return own if own.is_dir() else root


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and p.is_file()), key=lambda p: natural_key(p.name))


def find_fused(sets: Sequence[FusionSet], root: str | Path) -> FusedImages:
    """Every fused image in `root` (layout in the module docstring), matched to its set."""
    root = Path(root)
    if not root.is_dir():
        raise SemfuseError(f"{root}: not a folder; give the folder of fused images ({_NAMING})")
    sources = InputFiles((source, f"a source of set {s.key}") for s in sets for source in s.sources)
    by_folder: dict[Path, dict[str, FusionSet]] = {}
    for fusion_set in sets:
        named = by_folder.setdefault(_folder_for(root, fusion_set.category), {})
        other = named.setdefault(fusion_set.name, fusion_set)
        if other is not fusion_set:
            raise SemfuseError(f"{root}: set name {fusion_set.name!r} is in categories {other.category} and "
                               f"{fusion_set.category}; put each category's fused images in {root}/CATEGORY/")
    images, skipped = [], []
    found: dict[tuple[str, str], Path] = {}
    for folder, named in by_folder.items():
        longest_first = sorted(named, key=len, reverse=True)
        for path in _image_files(folder):
            source = sources.replaced_by(path)
            if source is not None:
                skipped.append(f"{path}: is {source[1]}, not a fused image")
                continue
            name = fused_set_name(path.stem, longest_first)
            if name is None:
                skipped.append(f"{path}: its name starts with no set's name and `_` ({_NAMING})")
                continue
            fusion_set, method = named[name], path.stem[len(name) + 1:]
            earlier = found.setdefault((fusion_set.key, method), path)
            if earlier != path:
                raise SemfuseError(f"{path}: {earlier.name} is also set {fusion_set.key}'s {method}; keep one of them")
            images.append(FusedImage(fusion_set, method, path))
    if not images:
        names = ", ".join(s.name for s in sets[:5]) + (", ..." if len(sets) > 5 else "")
        raise SemfuseError(f"{root}: no fused image of these sets ({names}); {_NAMING}")
    methods = sorted({image.method for image in images}, key=natural_key)
    scored = {image.fusion_set.key for image in images}
    return FusedImages(images, methods, skipped, [s.key for s in sets if s.key not in scored])


def check_sizes(fused: FusedImages, match_size: bool = False) -> None:
    """From the headers, before anything is decoded: each set's sources share one size, or
    with `match_size` are brought to their smallest, and every fused image has that size."""
    sets = list({image.fusion_set.key: image.fusion_set for image in fused.images}.values())
    if not match_size:
        check_one_size_per_set(sets)
    sizes: dict[str, Size] = {}
    for fusion_set in sets:
        own = source_sizes(fusion_set)
        sizes[fusion_set.key] = smallest_size(own) if match_size else own[0]
    for image in fused.images:
        size, expected = image_file_size(image.path), sizes[image.fusion_set.key]
        if size == expected:
            continue
        if match_size:
            raise SemfuseError(f"{image.path}: {shown(size)}, but --match-size brings set {image.fusion_set.key}'s "
                               f"sources to {shown(expected)}, its smallest image's size; score fused images "
                               "made at that size (they are not resized)")
        raise SemfuseError(f"{image.path}: {shown(size)}, but set {image.fusion_set.key}'s sources are "
                           f"{shown(expected)}; score fused images at their sources' size")


def score_fused(fused: FusedImages, suites: Sequence[MetricSuite], *, match_size: bool = False,
                show_progress: bool = True) -> list[ImageScore]:
    """Every fused image on every suite, set by set (each set's sources are read once, and
    with `match_size` resized to their smallest)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from semfuse_rt.engine.io.progress import progress_bar

    by_set: dict[str, list[FusedImage]] = {}
    for image in fused.images:
        by_set.setdefault(image.fusion_set.key, []).append(image)
    scores: list[ImageScore] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with progress_bar(*columns, enabled=show_progress) as bar:
        task = bar.add_task("fused images", total=len(fused.images))
        for images in by_set.values():
            fusion_set = images[0].fusion_set
            sources = [load_image(path) for path in fusion_set.sources]
            if match_size:
                sources = match_sizes(sources)
            for image in images:
                bar.update(task, description=escape(image.path.name))
                values = score_suites(suites, sources, load_image(image.path))
                scores += image_scores(fusion_set.category, fusion_set.name, image.method, values)
                bar.advance(task)
    return scores


@dataclass
class Scoring:
    """A score run: where from, what was ranked, and every per-image value."""

    sets_location: str
    fused_location: str
    suites: tuple[MetricSuite, ...]
    methods: list[str]  # the fused images' methods, then those of --methods
    sets: list[FusionSet]  # those with at least one fused image
    scores: list[ImageScore]
    fused: FusedImages
    command: str = ""
    match_size: bool = False
    date: str = field(default_factory=lambda: _dt.datetime.now().astimezone().isoformat(timespec="seconds"))

    def rankings(self) -> list[SuiteRanking]:
        return rank_suites(self.scores, self.suites, self.methods)


def _report_paths(folder: Path) -> list[Path]:
    return [folder / name for name in RESULTS_NAMES]


def check_score_folder(folder: str | Path, sets: Sequence[FusionSet], fused: FusedImages) -> Path:
    """Before any work: --out can be written or made, and no report would replace a source
    or a fused image."""
    folder = check_writable_folder(folder, "--out")
    inputs = InputFiles([*((source, f"a source of set {s.key}") for s in sets for source in s.sources),
                         *((image.path, f"{image.method}'s fused image of set {image.fusion_set.key}")
                           for image in fused.images)])
    for path in _report_paths(folder):
        replaced = inputs.replaced_by(path)
        if replaced is not None:
            raise SemfuseError(f"--out {folder}: {path.name} would replace {replaced[1]} ({replaced[0]}); "
                               "give --out a folder apart from the sets and the fused images")
    return folder


@dataclass
class ScoringPlan:
    """A score run, checked and ready: nothing has been decoded yet."""

    sets_location: str
    fused_location: str
    sets: list[FusionSet]  # those with at least one fused image
    fused: FusedImages
    suites: tuple[MetricSuite, ...]
    methods: list[MethodSpec]  # fused here and ranked beside the fused images
    semfuse_options: dict
    match_size: bool = False


def plan_scoring(sets_location: str | Path, fused_location: str | Path, suites: Sequence[MetricSuite],
                 methods: Sequence[MethodSpec] = (), semfuse_options: dict | None = None,
                 out: str | Path | None = None, match_size: bool = False) -> ScoringPlan:
    """Every check before any work: the sets, the fused images' names and sizes (at the
    sets' smallest with `match_size`), the --methods variants and their options, and the
    reports' folder `out`."""
    from semfuse_rt.engine.evaluation.datasets import find_sets
    from semfuse_rt.engine.evaluation.evaluation import check_variants

    semfuse_options = dict(semfuse_options or {})
    if semfuse_options and not methods:
        option = next(iter(semfuse_options))
        raise SemfuseError(f"--{option.replace('_', '-')} applies to the semfuse methods of --methods, and none "
                           "is given; add --methods (e.g. --methods max) or drop it")
    discovery = find_sets(sets_location)
    fused = find_fused(discovery.sets, fused_location)
    for spec in methods:
        if spec.label in fused.methods:
            raise SemfuseError(f"--methods {spec.label}: {fused_location} already holds fused images of a method "
                               f"named {spec.label}; rename those files or leave {spec.label} out of --methods")
    if methods:
        check_variants(methods, semfuse_options)
    check_sizes(fused, match_size)
    if out is not None:
        check_score_folder(out, discovery.sets, fused)
    sets = [s for s in discovery.sets if s.key not in fused.unscored]
    return ScoringPlan(str(sets_location), str(fused_location), sets, fused, tuple(suites), list(methods),
                       semfuse_options, match_size)


def run_scoring(plan: ScoringPlan, *, show_progress: bool = True, command: str = "") -> Scoring:
    """Score the fused images, and fuse and score the --methods variants on the same sets."""
    scores = score_fused(plan.fused, plan.suites, match_size=plan.match_size, show_progress=show_progress)
    if plan.methods:
        from semfuse_rt.engine.evaluation.evaluation import evaluate, evaluation_scores

        evaluation = evaluate(plan.sets, plan.methods, semfuse_options=plan.semfuse_options,
                              match_size=plan.match_size, show_progress=show_progress, retention=False,
                              suites=plan.suites)
        scores += evaluation_scores(evaluation)
    return Scoring(plan.sets_location, plan.fused_location, plan.suites,
                   [*plan.fused.methods, *(spec.label for spec in plan.methods)], plan.sets, scores, plan.fused,
                   command, plan.match_size)


def _markdown(scoring: Scoring, rankings: Sequence[SuiteRanking]) -> str:
    parts = [
        "# semfuse-rt score",
        "",
        f"Sets from `{scoring.sets_location}`: {len(scoring.sets)} scored; fused images from "
        f"`{scoring.fused_location}`: {len(scoring.fused.images)}; methods: "
        + ", ".join(f"`{m}`" for m in scoring.methods) + "; suites: "
        + ", ".join(s.name for s in scoring.suites)
        + ("; sizes matched to each set's smallest image" if scoring.match_size else "")
        + f"; date: {scoring.date}.",
    ]
    if scoring.command:
        parts += ["", "```", scoring.command, "```"]
    if scoring.fused.unscored:
        parts += ["", "Sets without any fused image, not scored: " + ", ".join(scoring.fused.unscored) + "."]
    parts += ["", "## Means, ranks and mean ranks", "", ranking_markdown(rankings)]
    return "\n".join(parts) + "\n"


def _json(scoring: Scoring, rankings: Sequence[SuiteRanking]) -> str:
    document = {
        "sets_location": scoring.sets_location,
        "fused_location": scoring.fused_location,
        "command": scoring.command,
        "date": scoring.date,
        "match_size": scoring.match_size,
        "suites": [suite.name for suite in scoring.suites],
        "methods": scoring.methods,
        "sets": [{"category": s.category, "name": s.name, "sources": [str(p) for p in s.sources]}
                 for s in scoring.sets],
        "fused": [{"set": i.fusion_set.key, "method": i.method, "path": str(i.path)} for i in scoring.fused.images],
        "unscored": scoring.fused.unscored,
        "skipped": scoring.fused.skipped,
        "rankings": rankings_json(rankings),
        "results": [{"category": s.category, "set": s.set_name, "method": s.method, "suite": s.suite,
                     "metric": s.metric, "value": finite_or_none(s.value)} for s in scoring.scores],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def write_score_reports(scoring: Scoring, folder: str | Path) -> list[Path]:
    """results.json, results.md and the per-image CSV in `folder`."""
    folder = check_score_folder(folder, scoring.sets, scoring.fused)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SemfuseError(f"{folder}: cannot create ({error.strerror})") from None
    rankings = scoring.rankings()
    json_path, markdown_path, csv_path = _report_paths(folder)
    atomic_write_bytes(json_path, _json(scoring, rankings).encode("utf-8"))
    atomic_write_bytes(markdown_path, _markdown(scoring, rankings).encode("utf-8"))
    return [json_path, markdown_path, write_scores_csv(scoring.scores, csv_path)]
