"""Running fusion methods over image sets, scoring them, and reporting the scores.

One run fuses every set with every method variant, in one process, on the same pixels, and
scores each result with engine/metrics/metrics.py. Reports: a rich table on screen, JSON (every
number), markdown (summaries by category and by method, then every set), per set a PNG of
its sources and each method's result side by side (engine/io/side_by_side.py), and per category
a PNG grid of thumbnails.

Method variants are written `name[@key=value]...`: `dtcwt`, `max@layer=relu1_2@steps=30`,
`dwt@wavelet=haar`. `average`, `dwt`, `dtcwt`, `mertens` and `enfuse` are the baselines of
engine/evaluation/baselines.py and engine/evaluation/exposure_baselines.py; every other name is a semfuse method,
fused by a Fuser.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from semfuse_rt.engine.evaluation.baselines import fuse_baseline, is_baseline
from semfuse_rt.engine.evaluation.datasets import FusionSet, category_folders
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.images import InputFiles, check_writable_folder, load_image, save_image
from semfuse_rt.engine.metrics.metrics import METRIC_NAMES as FUSION_METRIC_NAMES
from semfuse_rt.engine.metrics.metrics import fusion_metrics
from semfuse_rt.engine.evaluation.method_ranking import ImageScore, SuiteRanking, image_scores, rank_suites
from semfuse_rt.engine.evaluation.metric_suites import DEFAULT_SUITES, SUITES, MetricSuite, score_suites
from semfuse_rt.engine.fuse.methods import METHODS, applicable_options, check_applicable_to_some
from semfuse_rt.engine.limits.option_checks import check_option_names
from semfuse_rt.engine.io.progress import progress_bar
from semfuse_rt.engine.evaluation.retention_judges import (DEFAULT_JUDGES, POOLED_NAMES, RetentionJudges,
    parse_judges, unjudged)
from semfuse_rt.engine.evaluation.retention_judges import metric_names as retention_names
from semfuse_rt.engine.evaluation.set_sizes import check_one_size_per_set, match_sizes
from semfuse_rt.engine.io.side_by_side import VIEW, side_by_side_png
from semfuse_rt.engine.evaluation.suite_reports import (RESULTS_NAMES, SCORES_CSV, ranking_markdown, rankings_json,
                                            write_scores_csv)
from semfuse_rt.cache import atomic_write_bytes

if TYPE_CHECKING:
    from semfuse_rt.engine.fuse.fuser import Fuser

__all__ = ["MethodSpec", "parse_methods", "check_variants", "downscale", "SetRecord", "Outcome", "Evaluation",
           "evaluate", "fused_image_path", "semfuse_fuser", "summarise", "write_json", "read_json", "write_markdown",
           "write_grids", "write_side_by_sides", "side_by_side_path", "check_report_folder", "write_reports",
           "summary_markdown", "summary_table", "ALL_CATEGORIES", "evaluation_scores", "suite_rankings"]

# A function with api.fuse's contract: fuse(images, method, **options) -> image.
FuseFunction = Callable[..., np.ndarray]

ALL_CATEGORIES = "all sets"  # the pseudo-category of summaries over every set
# Metrics judged against the sources; the best value per category is marked in markdown.
# EN, SD, SF and AG also reward noise and ringing, so no "best" is marked for them.
SOURCE_REFERENCED = ("Qabf", "Qmi", "Qy", "SSIM", "MI")
THUMBNAIL = 160  # longest side of a grid cell, pixels
MIN_MAX_SIZE = 16  # below this the transforms and metric windows have nothing to work on


# --------------------------------------------------------------------------- method variants

@dataclass(frozen=True)
class MethodSpec:
    """One method variant: `label` as the user wrote it, the method `name`, its options."""

    label: str
    name: str
    options: dict = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return is_baseline(self.name)


def _parse_value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def parse_methods(text: str) -> list[MethodSpec]:
    """`"average,max@layer=relu1_2@steps=30"` -> MethodSpecs (see the module docstring)."""
    specs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *assignments = [piece.strip() for piece in item.split("@")]
        if not _NAME.match(name):
            raise SemfuseError(f"method variant {item!r}: {name!r} is not a method name")
        options = {}
        for assignment in assignments:
            key, equals, value = assignment.partition("=")
            key, value = key.strip(), value.strip()
            if not equals or not key.isidentifier() or not value:
                raise SemfuseError(f"method variant {item!r}: expected @key=value, got {'@' + assignment!r}")
            options[key] = _parse_value(value)
        specs.append(MethodSpec(item.replace(" ", ""), name, options))
    if not specs:
        raise SemfuseError("no methods given (e.g. --methods average,dtcwt,max)")
    labels = [spec.label for spec in specs]
    for label in dict.fromkeys(labels):
        if labels.count(label) > 1:
            raise SemfuseError(f"method variant {label!r} is listed twice")
    return specs


def _baseline_rule(name: str) -> Callable[..., np.ndarray]:
    from semfuse_rt.engine.evaluation.baselines import BASELINES
    from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES

    rule: Callable[..., np.ndarray] = BASELINES[name] if name in BASELINES else IMAGE_BASELINES[name]
    return rule


def _kind_of(default: object) -> tuple[str, Callable[[object], bool]]:
    """What a baseline parameter takes, judged by its default, and a test for a value."""
    if isinstance(default, bool):
        return "true or false", lambda value: isinstance(value, bool)
    if isinstance(default, int):
        return "a whole number", lambda value: isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return "a number", lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    return "a name", lambda value: isinstance(value, str)


def _check_baseline_options(name: str, options: dict) -> None:
    import inspect

    parameters = {p.name: p.default for p in inspect.signature(_baseline_rule(name)).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for key, value in options.items():
        if not parameters:
            raise SemfuseError(f"{name} takes no options, got {key!r}")
        check_option_names([key], parameters)
        kind, takes = _kind_of(parameters[key])
        if not takes(value):
            raise SemfuseError(f"{name}'s {key} takes {kind}, got {value!r}")


def check_variants(methods: Sequence[MethodSpec], semfuse_options: dict | None = None) -> None:
    """Every variant's options, and the options given for all semfuse variants at once, are
    checked before any set is read: a misspelt key, a value of the wrong kind or an option
    no method in the run uses is one line naming the variant and the option."""
    from semfuse_rt.engine.fuse.fuser import Fuser

    semfuse = []
    for spec in methods:
        try:
            if spec.is_baseline:
                _check_baseline_options(spec.name, spec.options)
                continue
            if spec.name not in METHODS:
                from semfuse_rt.engine.evaluation.baselines import BASELINES
                from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES

                raise SemfuseError(f"unknown method {spec.name!r}; use a baseline "
                                   f"({', '.join([*BASELINES, *IMAGE_BASELINES])}) or a semfuse method "
                                   f"({', '.join(METHODS)})")
            Fuser(spec.name, **spec.options)  # checks names, values and what the method uses; loads nothing
        except SemfuseError as error:
            raise SemfuseError(f"method variant {spec.label!r}: {error}") from None
        semfuse.append(METHODS[spec.name])
    check_applicable_to_some(semfuse, semfuse_options or {})


class FuserPool:
    """One Fuser per method variant for a whole run, each set up once (weights, sessions,
    graphs) and closed at the end; called like api.fuse.

    The weights are loaded here, before the run's progress bar starts: a first-time
    download shows its own rich progress bar, and rich allows only one live display at a time.
    """

    def __init__(self, weights=None, show_progress: bool = True):
        from semfuse_rt.export.networks.weights import load_vgg19

        self.weights = load_vgg19(weights, show_progress=show_progress)
        self.fusers: dict[tuple, Fuser] = {}

    def __call__(self, images, method, **options) -> np.ndarray:
        from semfuse_rt.engine.fuse.fuser import Fuser

        key = (method, tuple(sorted((name, repr(value)) for name, value in options.items())))
        if key not in self.fusers:
            # The loaded weights, unless the variant names its own; `cam` takes none.
            own = {"weights": self.weights} if METHODS[method].optimised else {}
            self.fusers[key] = Fuser(method, **{**own, **options})
        return self.fusers[key](images).image

    def close(self) -> None:
        for fuser in self.fusers.values():
            fuser.close()
        self.fusers.clear()


def semfuse_fuser(weights=None, show_progress: bool = True) -> FuserPool:
    return FuserPool(weights, show_progress)


# --------------------------------------------------------------------------- running

def downscale(image: np.ndarray, max_size: int | None) -> np.ndarray:
    """Shrink so the longer side is at most `max_size` (area averaging); never enlarges."""
    if not max_size:
        return image
    height, width = image.shape[:2]
    scale = max_size / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _shown(image: np.ndarray, longest: int = THUMBNAIL) -> np.ndarray:
    """8-bit RGB, longer side at most `longest`: what a grid cell or a side-by-side panel shows."""
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return downscale(image, longest)


@dataclass
class SetRecord:
    fusion_set: FusionSet
    width: int
    height: int
    source_thumbnails: list[np.ndarray]
    fused_thumbnails: dict[str, np.ndarray] = field(default_factory=dict)  # by method label
    side_by_side: bytes | None = None  # PNG: the sources and each method's result in one row


@dataclass
class Outcome:
    category: str
    set_name: str
    method: str  # MethodSpec.label
    seconds: float
    metrics: dict[str, float]
    suites: dict[str, dict[str, float]] = field(default_factory=dict)  # suite -> metric -> value


@dataclass
class Evaluation:
    source: str
    methods: list[MethodSpec]
    sets: list[SetRecord]
    outcomes: list[Outcome]
    settings: dict  # max_size, match_size, common semfuse options, date, command


# Semantic retention (engine/evaluation/retention_judges.py): R5, the share of the inputs whose top-1
# ImageNet class is in the fused image's top 5, and that class's mean rank and probability
# there; NaN when the run skips the classifiers. With several judges, each one's R5 follows.
METRIC_NAMES = (*FUSION_METRIC_NAMES, *POOLED_NAMES)


def metric_names(evaluation: Evaluation) -> tuple[str, ...]:
    return (*FUSION_METRIC_NAMES, *retention_names(evaluation.settings.get("judges", DEFAULT_JUDGES)))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _category_folder(category: str) -> Path:
    """Nested folders for a category found below a grouping folder (`roadscene/infrared_visible`),
    each part a safe name; `.` and `..` parts (from a CSV) must not lead out of the folder."""
    return Path(*(part if part.strip(".") else "_" for part in map(_safe_name, category_folders(category))))


def fused_image_path(folder: str | Path, category: str, set_name: str, label: str) -> Path:
    """Where `save_fused` keeps one set's result of one method variant."""
    return Path(folder) / _category_folder(category) / f"{_safe_name(set_name)}--{_safe_name(label)}.png"


def evaluate(sets: Sequence[FusionSet], methods: Sequence[MethodSpec], *,
             semfuse_options: dict | None = None, max_size: int | None = None, match_size: bool = False,
             fuser: FuseFunction | None = None, save_fused: Path | None = None,
             show_progress: bool = True, source: str = "", command: str = "",
             retention: bool = True, judges: Sequence[str] = DEFAULT_JUDGES,
             pictures: bool = False, suites: Sequence[MetricSuite] | None = None) -> Evaluation:
    """Fuse every set with every method and score each result.

    `semfuse_options` go to every semfuse method (a variant's own @options win); `fuser`
    replaces api.fuse (tests, or a preloaded engine); `match_size` resizes each set's images
    to its smallest one's size (engine/evaluation/set_sizes.py) before `max_size` shrinks them, and
    without it a set of several sizes stops the run before any image is decoded;
    `save_fused` keeps every fused image as PNG under that folder; `retention` scores
    semantic retention with the classifiers named in `judges` (engine/evaluation/retention_judges.py);
    `pictures` keeps each set's side-by-side (engine/io/side_by_side.py) for write_reports;
    `suites` (engine/evaluation/metric_suites.py, default DEFAULT_SUITES) score each result for the
    rankings.
    """
    if max_size is not None and max_size < MIN_MAX_SIZE:
        raise SemfuseError(f"--max-size must be at least {MIN_MAX_SIZE} pixels, got {max_size}")
    check_variants(methods, semfuse_options)
    if not match_size:
        check_one_size_per_set(sets)
    if save_fused is not None:
        _check_not_inputs(fused_image_paths(save_fused, sets, methods), sets,
                          "--save-fused", "keep the fused images apart from the sets")
    judges = parse_judges(",".join(judges))
    if retention:  # a judge that is not installed stops the run before anything is fused
        from semfuse_rt.export.networks.efficientnet_lite import checkpoint_path

        for name in judges:
            checkpoint_path(name)
    semfuse_options = dict(semfuse_options or {})
    recorded_options = {k: _jsonable(v) for k, v in semfuse_options.items()}
    weights = semfuse_options.pop("weights", None)
    if fuser is None and any(not m.is_baseline for m in methods):
        pool = semfuse_fuser(weights, show_progress)
        try:
            return evaluate(sets, methods, semfuse_options=semfuse_options, max_size=max_size,
                            match_size=match_size, fuser=pool,
                            save_fused=save_fused, show_progress=show_progress, source=source, command=command,
                            retention=retention, judges=judges, pictures=pictures, suites=suites)
        finally:
            pool.close()
    if weights is not None:
        semfuse_options["weights"] = weights
    judge = RetentionJudges(judges) if retention else None
    chosen_suites = tuple(suites) if suites is not None else tuple(SUITES[name] for name in DEFAULT_SUITES)
    records, outcomes = [], []
    run_started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with progress_bar(*columns, enabled=show_progress) as bar:
        task = bar.add_task("sets", total=len(sets))
        for fusion_set in sets:
            images = [load_image(path) for path in fusion_set.sources]
            images = [downscale(image, max_size) for image in (match_sizes(images) if match_size else images)]
            height, width = images[0].shape[:2]
            record = SetRecord(fusion_set, width, height, [_shown(i) for i in images])
            panels = [(path.name, _shown(i, VIEW)) for path, i in zip(fusion_set.sources, images)] if pictures else []
            judged = judge.judged_inputs(images) if judge is not None else None
            for method in methods:
                bar.update(task, description=f"{escape(fusion_set.key)} [bold]{escape(method.label)}[/]")
                started = time.perf_counter()
                try:
                    if method.is_baseline:
                        fused = fuse_baseline(images, method.name, **method.options)
                    else:
                        # The run's options go to the variants whose method uses them.
                        shared = applicable_options(METHODS[method.name], semfuse_options)
                        assert fuser is not None  # made above for a run with semfuse methods
                        fused = fuser(images, method.name, **{**shared, **method.options})
                except SemfuseError as error:
                    raise SemfuseError(f"{fusion_set.key}, {method.label}: {error}") from None
                except TypeError as error:
                    if "unexpected keyword argument" not in str(error):
                        raise
                    raise SemfuseError(f"{method.label}: unknown option ({error})") from None
                seconds = time.perf_counter() - started
                scores = fusion_metrics(images, fused)
                suite_values = score_suites(chosen_suites, images, fused, known={fusion_metrics: scores})
                scores.update(judged(fused) if judged is not None else unjudged(judges))
                outcomes.append(Outcome(fusion_set.category, fusion_set.name, method.label, seconds, scores,
                                        suite_values))
                record.fused_thumbnails[method.label] = _shown(fused)
                if pictures:
                    panels.append((method.label, _shown(fused, VIEW)))
                if save_fused is not None:
                    path = fused_image_path(save_fused, fusion_set.category, fusion_set.name, method.label)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_image(path, fused)
            if pictures:
                record.side_by_side = side_by_side_png(_side_by_side_title(record, panels[0][1]), panels)
            records.append(record)
            bar.advance(task)
    settings = {
        "max_size": max_size,
        "match_size": match_size,
        "semfuse_options": recorded_options,
        "judges": list(judges),
        "suites": [suite.name for suite in chosen_suites],
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - run_started, 1),
        "command": command,
    }
    return Evaluation(source, list(methods), records, outcomes, settings)


# --------------------------------------------------------------------------- summaries

def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarise(evaluation: Evaluation) -> list[dict]:
    """Mean of each metric (NaNs skipped) and of seconds per (category, method), then per
    method over all sets (category ALL_CATEGORIES). Ordered by category, then method order."""
    groups = {category: [o for o in evaluation.outcomes if o.category == category]
              for category in dict.fromkeys(o.category for o in evaluation.outcomes)}
    groups[ALL_CATEGORIES] = evaluation.outcomes
    names = metric_names(evaluation)
    rows = []
    for category, outcomes in groups.items():
        for method in evaluation.methods:
            chosen = [o for o in outcomes if o.method == method.label]
            if not chosen:
                continue
            rows.append({
                "category": category,
                "method": method.label,
                "sets": len(chosen),
                "metrics": {name: _mean([o.metrics.get(name, math.nan) for o in chosen]) for name in names},
                "seconds": _mean([o.seconds for o in chosen]),
            })
    return rows


def evaluation_scores(evaluation: Evaluation) -> list[ImageScore]:
    """Every suite's value for every result: the rows of SCORES_CSV."""
    return [score for o in evaluation.outcomes for score in image_scores(o.category, o.set_name, o.method, o.suites)]


def suite_rankings(evaluation: Evaluation) -> list[SuiteRanking]:
    """Per category and suite of the run, the methods' means, ranks and mean ranks."""
    suites = [SUITES[name] for name in evaluation.settings.get("suites", ()) if name in SUITES]
    return rank_suites(evaluation_scores(evaluation), suites, [m.label for m in evaluation.methods])


# --------------------------------------------------------------------------- reports

def _jsonable(value):
    # JSON has neither NaN nor infinity (VIFB's PSNR of a result equal to its sources).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)


def write_json(evaluation: Evaluation, path: Path) -> Path:
    """Every set, every result, the summaries and the suites' rankings; NaN (undefined
    metric) and infinity are written as null."""
    document = {
        "source": evaluation.source,
        "settings": evaluation.settings,
        "metrics": list(metric_names(evaluation)),
        "methods": [{"label": m.label, "name": m.name, "options": m.options, "baseline": m.is_baseline}
                    for m in evaluation.methods],
        "sets": [{"category": r.fusion_set.category, "name": r.fusion_set.name,
                  "sources": [str(p) for p in r.fusion_set.sources],
                  "width": r.width, "height": r.height} for r in evaluation.sets],
        "results": [{"category": o.category, "set": o.set_name, "method": o.method,
                     "seconds": o.seconds, "metrics": o.metrics, "suites": o.suites} for o in evaluation.outcomes],
        "summary": summarise(evaluation),
        "suites": rankings_json(suite_rankings(evaluation)),
    }
    return _write_text(path, json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Evaluation:
    """An Evaluation back from write_json's file, for re-reporting without re-running
    (the grids cannot be redrawn: the JSON holds no pixels)."""
    try:
        document = json.loads(Path(path).read_text())
        methods = [MethodSpec(m["label"], m["name"], m["options"]) for m in document["methods"]]
        sets = [SetRecord(FusionSet(s["category"], s["name"], tuple(Path(p) for p in s["sources"])),
                          s["width"], s["height"], []) for s in document["sets"]]
        outcomes = [Outcome(r["category"], r["set"], r["method"], r["seconds"],
                            {k: math.nan if v is None else v for k, v in r["metrics"].items()},
                            {suite: {k: math.nan if v is None else v for k, v in values.items()}
                             for suite, values in r.get("suites", {}).items()})
                    for r in document["results"]]
        return Evaluation(document["source"], methods, sets, outcomes, document["settings"])
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise SemfuseError(f"{path}: not a semfuse-rt eval results.json ({error})") from None


def _format(name: str, value: float) -> str:
    if value is None or math.isnan(value):
        return "-"
    if name == "rank":
        return f"{value:.1f}"
    return f"{value:.2f}" if name in ("SD", "SF", "AG", "seconds") else f"{value:.3f}"


def _cell(text: str) -> str:
    """Names are free text; a `|` would end the markdown cell."""
    return text.replace("|", "\\|")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(evaluation: Evaluation) -> str:
    """The summary table: one row per (category, method), best source-referenced score per
    category in bold, then the all-sets rows."""
    rows_out = []
    names = metric_names(evaluation)
    summary = summarise(evaluation)
    for category in dict.fromkeys(row["category"] for row in summary):
        group = [row for row in summary if row["category"] == category]
        best = {name: max((r["metrics"][name] for r in group if not math.isnan(r["metrics"][name])),
                          default=math.nan) for name in SOURCE_REFERENCED}
        for row in group:
            cells = [_cell(category), f"`{_cell(row['method'])}`", str(row["sets"])]
            for name in names:
                text = _format(name, row["metrics"][name])
                if name in best and len(group) > 1 and row["metrics"][name] == best[name]:
                    text = f"**{text}**"
                cells.append(text)
            cells.append(_format("seconds", row["seconds"]))
            rows_out.append(cells)
    return _markdown_table(["category", "method", "sets", *names, "s/set"], rows_out)


def write_markdown(evaluation: Evaluation, path: Path) -> Path:
    settings = evaluation.settings
    options = ", ".join(f"{k}={v}" for k, v in settings["semfuse_options"].items()) or "defaults"
    parts = [
        "# semfuse-rt eval",
        "",
        f"Sets from `{evaluation.source}`: {len(evaluation.sets)}; methods: "
        + ", ".join(f"`{m.label}`" for m in evaluation.methods)
        + f"; semfuse options: {options}; max size: {settings['max_size'] or 'full'}; "
        + ("sizes matched to each set's smallest image; " if settings.get("match_size") else "")
        + f"date: {settings['date']}.",
    ]
    if settings.get("command"):
        parts += ["", "```", settings["command"], "```"]
    parts += [
        "",
        "Metrics on luma (BT.601) in 0..255; all higher-is-better (EN/SD/SF/AG also grow with "
        "noise). Bold: best of the methods in that category. `-`: undefined for that input.",
        "",
        "## Summary by category and method",
        "",
        summary_markdown(evaluation),
        "",
        "## Metric suites: means, ranks and mean ranks",
        "",
        ranking_markdown(suite_rankings(evaluation)),
        "",
        "## Every set",
        "",
    ]
    by_set = {(r.fusion_set.category, r.fusion_set.name): r for r in evaluation.sets}
    names = metric_names(evaluation)
    rows = []
    for o in evaluation.outcomes:
        record = by_set[(o.category, o.set_name)]
        rows.append([_cell(o.category), _cell(o.set_name), str(len(record.fusion_set.sources)),
                     f"{record.width}x{record.height}", f"`{_cell(o.method)}`",
                     *(_format(n, o.metrics.get(n, math.nan)) for n in names), _format("seconds", o.seconds)])
    parts.append(_markdown_table(["category", "set", "K", "size", "method", *names, "s"], rows))
    return _write_text(path, "\n".join(parts) + "\n")


SIDE_BY_SIDE_FOLDER = "side-by-side"


def side_by_side_path(folder: str | Path, category: str, set_name: str) -> Path:
    """Where write_reports puts one set's side-by-side picture."""
    return Path(folder) / SIDE_BY_SIDE_FOLDER / _category_folder(category) / f"{_safe_name(set_name)}.png"


def _side_by_side_title(record: SetRecord, shown: np.ndarray) -> str:
    title = f"{record.fusion_set.key}: {record.width} x {record.height} pixels"
    if shown.shape[:2] != (record.height, record.width):
        title += f", shown at {shown.shape[1]} x {shown.shape[0]}"
    return title


def write_side_by_sides(evaluation: Evaluation, folder: Path) -> list[Path]:
    """SIDE_BY_SIDE_FOLDER/<category>/<set>.png for the sets that evaluate(pictures=True) drew."""
    written = []
    for record in evaluation.sets:
        if record.side_by_side is not None:
            path = side_by_side_path(folder, record.fusion_set.category, record.fusion_set.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, record.side_by_side)
            written.append(path)
    return written


def write_grids(evaluation: Evaluation, folder: Path) -> list[Path]:
    """`grid-<category>.png`, an overview in thumbnails: a row per set; source columns, then
    one column per method. The side-by-sides show each set large enough to judge."""
    from PIL import Image, ImageDraw

    written = []
    labels = [m.label for m in evaluation.methods]
    for category in dict.fromkeys(r.fusion_set.category for r in evaluation.sets):
        records = [r for r in evaluation.sets if r.fusion_set.category == category]
        sources = max(len(r.source_thumbnails) for r in records)
        headings = [f"source {i + 1}" for i in range(sources)] + labels
        cell, name_width, heading_height, gap = THUMBNAIL, 110, 18, 4
        width = name_width + len(headings) * (cell + gap)
        height = heading_height + len(records) * (cell + gap)
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        for column, heading in enumerate(headings):
            draw.text((name_width + column * (cell + gap) + 2, 3), heading[:26], fill="black")
        for row, record in enumerate(records):
            top = heading_height + row * (cell + gap)
            draw.text((4, top + cell // 2 - 6), record.fusion_set.name[:17], fill="black")
            cells = record.source_thumbnails + [None] * (sources - len(record.source_thumbnails))
            cells += [record.fused_thumbnails.get(label) for label in labels]
            for column, thumbnail in enumerate(cells):
                if thumbnail is None:
                    continue
                left = name_width + column * (cell + gap)
                # Centre images that are not square inside their square cell.
                offset = ((cell - thumbnail.shape[1]) // 2, (cell - thumbnail.shape[0]) // 2)
                canvas.paste(Image.fromarray(thumbnail), (left + offset[0], top + offset[1]))
        path = grid_path(folder, category)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def summary_table(evaluation: Evaluation):
    """The on-screen summary: one small rich Table per category (title: category and set
    count), a row per method. The method column is as wide as the longest label in every
    table, keeping them aligned; on a narrow terminal it wraps, never cutting a label short."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    method_width = max(8, *(len(m.label) + 2 for m in evaluation.methods))
    names = metric_names(evaluation)
    summary = summarise(evaluation)
    tables = []
    for category in dict.fromkeys(row["category"] for row in summary):
        rows = [row for row in summary if row["category"] == category]
        count = rows[0]["sets"]
        table = Table(title=f"{escape(category)} ({count} set{'s' if count != 1 else ''})", title_justify="left",
                      title_style="bold", box=box.SIMPLE_HEAD, padding=0, pad_edge=False,
                      header_style="bold")
        table.add_column("method", width=method_width, overflow="fold")
        for name in (*names, "s/set"):
            table.add_column(name, justify="right", no_wrap=True, min_width=5)
        for row in rows:
            table.add_row(row["method"], *(_format(n, row["metrics"][n]) for n in names),
                          _format("seconds", row["seconds"]))
        tables.append(table)
    return Group(*tables)


def grid_path(folder: str | Path, category: str) -> Path:
    """Where write_grids puts one category's grid: grid-roadscene/infrared_visible.png for a
    category below a grouping folder, as for each of its files."""
    return Path(folder) / f"grid-{_category_folder(category).as_posix()}.png"


def report_paths(folder: str | Path, sets: Sequence[FusionSet], methods: Sequence[MethodSpec] = (), *,
                 grids: bool = True, save_fused: str | Path | None = None) -> list[Path]:
    """Every file a run over `sets` writes: the results in `folder`; with `grids` each
    category's grid and each set's side-by-side; with `save_fused` each fused image."""
    paths = [Path(folder) / name for name in RESULTS_NAMES]
    if grids:
        paths += [grid_path(folder, category) for category in dict.fromkeys(s.category for s in sets)]
        paths += [side_by_side_path(folder, s.category, s.name) for s in sets]
    if save_fused is not None:
        paths += fused_image_paths(save_fused, sets, methods)
    return paths


def fused_image_paths(folder: str | Path, sets: Sequence[FusionSet], methods: Sequence[MethodSpec]) -> list[Path]:
    """Where `save_fused` keeps the results of every set and method variant."""
    return [fused_image_path(folder, s.category, s.name, m.label) for s in sets for m in methods]


def check_report_folder(folder: str | Path, sets: Sequence[FusionSet] = (), methods: Sequence[MethodSpec] = (), *,
                        grids: bool = True, save_fused: str | Path | None = None) -> None:
    """Before a run: the reports' folder can be written, or made, and no report, picture or
    --save-fused image (report_paths) would replace an input of any set, as an --out inside
    the sets' folder could."""
    folder = check_writable_folder(folder, "--out")
    _check_not_inputs(report_paths(folder, sets, methods, grids=grids, save_fused=save_fused), sets,
                      f"--out {folder}", "give --out a folder apart from the sets")


def _check_not_inputs(paths: Sequence[Path], sets: Sequence[FusionSet], option: str, fix: str) -> None:
    inputs = InputFiles((source, f"input {index} of set {s.key}")
                        for s in sets for index, source in enumerate(s.sources, start=1))
    for path in paths:
        replaced = inputs.replaced_by(path)
        if replaced is not None:
            raise SemfuseError(f"{option}: {path} would replace {replaced[1]} ({replaced[0]}); {fix}")


def write_reports(evaluation: Evaluation, folder: Path, *, grids: bool = True) -> list[Path]:
    """results.json, results.md, SCORES_CSV and, unless `grids` is False, grid-<category>.png and the
    sets' side-by-sides (write_side_by_sides) in `folder`."""
    folder = Path(folder)
    check_report_folder(folder, [record.fusion_set for record in evaluation.sets], evaluation.methods, grids=grids)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SemfuseError(f"{folder}: cannot create ({error.strerror})") from None
    written = [write_json(evaluation, folder / RESULTS_NAMES[0]),
               write_markdown(evaluation, folder / RESULTS_NAMES[1]),
               write_scores_csv(evaluation_scores(evaluation), folder / SCORES_CSV)]
    if grids:
        written += write_grids(evaluation, folder) + write_side_by_sides(evaluation, folder)
    return written
