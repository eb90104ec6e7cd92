"""Finding the image sets to evaluate: a folder of categories, or a CSV listing sets.

Folder layout (as /work/shared/datasets): each subfolder of the root is a category. Inside a
category, a *set* is either
- the image files whose names share a stem prefix and differ only in a final label:
  `lytro-01-A.jpg` + `lytro-01-B.jpg` -> set `lytro-01` (labels A, B); `Camp_IR.png` +
  `Camp_Vis.png` -> `Camp`; `c01_1.tif` + `c01_2.tif` -> `c01`. The label is what follows
  the last separator (`-`, `_`, `.` or space); a stem without a separator that ends in digits
  splits there (`door1.jpg` -> `door`, label `1`);
- or a subfolder holding the set's images (`multiexposure/door/door1.jpg ...`).
Image files lying directly in the root form a category named after the root folder (its real
name, also when given as `.`), so a single category folder can be evaluated on its own. Names
that match nothing else (a lone file) are reported as skipped, never guessed into a set.

A subfolder that holds no images itself may group categories, as each benchmark's folder does
in /work/shared/benchmarks (`roadscene/infrared_visible/`, `mefb/multiexposure/SET/`). It is
a category of set folders when its subfolders are sets: some hold images and none holds two or
more sets by name. Otherwise it is a grouping folder, descended up to _MAX_DEPTH levels below
the root; its categories are named by their path below the root (`roadscene/infrared_visible`
beside `vifb-calibration/infrared_visible`), and a `/` in a category name is a subfolder
wherever a file is named after it (category_folders). A category of single-set folders below
a grouping folder reads as one category of set folders: the layout cannot tell them apart.
Beside the categories of a grouping folder, a folder of the fused images of their sets
(`vifb-calibration/fused/carLight_ADF.jpg`, as `semfuse-rt score` reads them) is no category
of sets: it is skipped with that reason.

CSV: a header row with `name`, optionally `category`, and two or more columns whose names
start with `source` (`source1, source2, ...`), one set per row; empty source cells are
allowed for sets with fewer sources. Relative paths are relative to the CSV's folder. A row
that names no usable set is rejected with its line number, apart from the others.
"""
from __future__ import annotations

import csv
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semfuse_rt.engine.io.images import READ_SUFFIXES
from semfuse_rt.errors import SemfuseError

__all__ = ["IMAGE_SUFFIXES", "FusionSet", "RejectedRow", "Discovery", "split_stem", "group_by_stem",
           "discover_sets", "read_sets_csv", "find_sets", "natural_key", "category_folders", "fused_set_name"]

IMAGE_SUFFIXES = READ_SUFFIXES  # what engine/io/images.py reads, so that no set is found and then refused

_LABEL_AFTER_SEPARATOR = re.compile(r"^(?P<prefix>.*?[^-_. ])[-_. ]+(?P<label>[^-_. ]+)$")
_LABEL_TRAILING_DIGITS = re.compile(r"^(?P<prefix>.*\D)(?P<label>\d+)$")
# Folder levels below the root where categories are looked for: a benchmarks folder holds
# BENCH/CATEGORY/SET/; a bound keeps a wrong root (a home folder) from being walked whole.
_MAX_DEPTH = 4


@dataclass(frozen=True)
class FusionSet:
    """K >= 2 registered source images fused together, in a fixed order."""

    category: str
    name: str
    sources: tuple[Path, ...]

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass(frozen=True)
class RejectedRow:
    """A CSV row that cannot be fused: the set it names, and why (with the file and line)."""

    key: str
    reason: str


@dataclass
class Discovery:
    sets: list[FusionSet]
    skipped: list[str] = field(default_factory=list)  # why a file or folder was not used
    rejected: list[RejectedRow] = field(default_factory=list)  # CSV rows that name no usable set


def natural_key(text: str) -> tuple:
    """Sort key that orders `c2` before `c10` and ignores case."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", text))


def split_stem(stem: str) -> tuple[str, str]:
    """`lytro-01-A` -> (`lytro-01`, `A`); `door1` -> (`door`, `1`); no label -> (stem, "")."""
    for pattern in (_LABEL_AFTER_SEPARATOR, _LABEL_TRAILING_DIGITS):
        match = pattern.match(stem)
        if match:
            return match.group("prefix"), match.group("label")
    return stem, ""


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def group_by_stem(files: Iterable[Path]) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group image files into sets by stem prefix.

    Returns ({set name: sources ordered by label}, files that belong to no set of two or more).
    """
    groups: dict[str, list[tuple[str, Path]]] = {}
    lone = []
    for path in files:
        prefix, label = split_stem(path.stem)
        if label:
            groups.setdefault(prefix, []).append((label, path))
        else:
            lone.append(path)
    sets = {}
    for name, members in groups.items():
        if len(members) < 2:
            lone.extend(path for _, path in members)
            continue
        members.sort(key=lambda member: (natural_key(member[0]), member[1].name))
        sets[name] = [path for _, path in members]
    return sets, sorted(lone, key=lambda path: natural_key(path.name))


def category_folders(category: str) -> tuple[str, ...]:
    """The nested folder names under which files named after `category` go: one per
    `/`-separated part, so that `roadscene/infrared_visible` mirrors the tree it came from.
    Callers still make each part safe (or refuse it) as a file name."""
    return tuple(category.split("/"))


def fused_set_name(stem: str, set_names_longest_first: Sequence[str]) -> str | None:
    """The set whose fused image a file named `SET_METHOD` is: the longest set name that the
    stem starts with, followed by `_` and a method name (set names may hold `_` themselves)."""
    return next((name for name in set_names_longest_first
                 if stem.startswith(name + "_") and len(stem) > len(name) + 1), None)


def _entries(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _images(entries: Iterable[Path]) -> list[Path]:
    return [p for p in entries if _is_image(p)]


def _category_sets(category: str, folder: Path, skipped: list[str]) -> list[FusionSet]:
    entries = _entries(folder)
    by_stem, lone = group_by_stem(_images(entries))
    found = [FusionSet(category, name, tuple(paths)) for name, paths in by_stem.items()]
    skipped.extend(f"{path}: no other file shares its name prefix" for path in lone)
    for sub in (p for p in entries if p.is_dir()):
        images = sorted(_images(sub.iterdir()), key=lambda p: natural_key(p.name))
        if len(images) >= 2:
            found.append(FusionSet(category, sub.name, tuple(images)))
        else:
            skipped.append(f"{sub}: a set folder needs at least 2 images, found {len(images)}")
    names = [s.name for s in found]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        raise SemfuseError(
            f"{folder}: set name {duplicate!r} is both a file prefix and a subfolder; rename one"
        )
    return sorted(found, key=lambda s: natural_key(s.name))


def _holds_set_folders(subfolders: Sequence[Path]) -> bool:
    """Whether folders, the subfolders of one that holds no images, are sets rather than
    categories: some hold images, and none holds two or more sets by name, as a category of
    pairs does (`roadscene/infrared_visible/FLIR_00006_IR.jpg ...`)."""
    held = [images for images in (_images(sub.iterdir()) for sub in subfolders) if images]
    return bool(held) and all(len(group_by_stem(images)[0]) < 2 for images in held)


@dataclass
class _Category:
    name: str
    folder: Path
    sets: list[FusionSet]
    skipped: list[str]  # reported only if the category is kept
    images: list[Path]  # the images lying in the folder itself
    has_subfolders: bool


def _fused_sets_of(fused: _Category, category: _Category) -> set[str] | None:
    """The sets of `category` that the images of `fused` are fused images of (`SET_METHOD`),
    or None where `fused` is no folder of them: it holds set folders, or an image that is
    named after no set, or one named as a source of a set (`x_1` beside a set `x` of `x_1` +
    `x_2` is a source of a set of the same name, not a fused image)."""
    if fused.has_subfolders or not fused.images or not category.sets:
        return None
    names = sorted({s.name for s in category.sets}, key=len, reverse=True)
    source_stems = {source.stem for s in category.sets for source in s.sources}
    matched: set[str] = set()
    for image in fused.images:
        name = fused_set_name(image.stem, names)
        if name is None or image.stem in source_stems:
            return None
        matched.add(name)
    return matched


def _fused_category_of(candidate: _Category, siblings: Sequence[_Category]) -> _Category | None:
    """The sibling category whose sets `candidate` holds the fused images of, if any. Where
    two folders each read as the other's fused images (names alone cannot say which holds
    sources), the one with more images per set holds the fused images of several methods; on a
    tie (as many methods as sources) both stay categories."""
    for sibling in siblings:
        if sibling is candidate:
            continue
        matched = _fused_sets_of(candidate, sibling)
        if matched is None:
            continue
        reverse = _fused_sets_of(sibling, candidate)
        if reverse is None or len(candidate.images) / len(matched) > len(sibling.images) / len(reverse):
            return sibling
    return None


def _grouped_sets(root: Path, folder: Path, depth: int, skipped: list[str]) -> list[FusionSet]:
    """The sets of the categories that `folder`, which holds no images itself, groups: its
    subfolders with images or set folders, named by their path below `root`; subfolders that
    group further are descended. What is skipped is reported in folder order."""
    found: list[_Category | tuple[list[FusionSet], list[str]]] = []
    for sub in (p for p in _entries(folder) if p.is_dir()):
        entries = _entries(sub)
        images = _images(entries)
        subfolders = [p for p in entries if p.is_dir()]
        below: list[str] = []
        if images or _holds_set_folders(subfolders):
            name = "/".join(sub.relative_to(root).parts)
            found.append(_Category(name, sub, _category_sets(name, sub, below), below, images, bool(subfolders)))
        elif not subfolders:
            found.append(([], [f"{sub}: holds no images and no folders of them"]))
        elif depth >= _MAX_DEPTH:
            found.append(([], [f"{sub}: more than {_MAX_DEPTH} folders below {root}; give a folder nearer its sets"]))
        else:
            found.append((_grouped_sets(root, sub, depth + 1, below), below))
    categories = [item for item in found if isinstance(item, _Category)]
    sets: list[FusionSet] = []
    for item in found:
        if not isinstance(item, _Category):
            sets.extend(item[0])
            skipped.extend(item[1])
            continue
        sources = _fused_category_of(item, categories)
        if sources is not None:
            skipped.append(f"{item.folder}: holds fused images of the sets of {sources.name}; "
                           f"score them with `semfuse-rt score`")
            continue
        sets.extend(item.sets)
        skipped.extend(item.skipped)
    return sets


def discover_sets(root: str | Path) -> Discovery:
    """Every set under `root` laid out as described in the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise SemfuseError(f"{root}: not a folder")
    skipped: list[str] = []
    if _images(root.iterdir()):
        # A category folder given directly: its subfolders are sets, not categories. It is
        # named after the folder itself, which `.` and `..` hide ("sets" for `/`, nameless).
        sets = _category_sets(Path(os.path.abspath(root)).name or "sets", root, skipped)
    else:
        # The root groups categories: each subfolder with images is one, even of a single
        # pair, as it always was.
        sets = _grouped_sets(root, root, 1, skipped)
    return Discovery(sets, skipped)


def read_sets_csv(path: str | Path) -> Discovery:
    """Sets listed in a CSV file (format in the module docstring). A row that cannot be a set
    (too few sources, a source that is not a readable file, a set listed twice, more cells
    than the header names) is rejected with its line number and the others are kept: a
    batch fuses what it can."""
    path = Path(path)
    try:
        # surrogateescape: a row with bytes that are not UTF-8 is rejected alone, below.
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle)
            rows = [(reader.line_num, row) for row in reader]
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    except csv.Error as error:
        raise SemfuseError(f"{path}: not a readable CSV ({error})") from None
    if not rows:
        raise SemfuseError(f"{path}: no sets (expected a header row and one row per set)")
    columns = list(rows[0][1].keys())
    source_columns = [c for c in columns if c and c.strip().lower().startswith("source")]
    if len(source_columns) < 2 or _undecodable(" ".join(map(str, columns))):
        raise SemfuseError(
            f"{path}: needs columns name, [category,] source1, source2, ...; found {', '.join(map(str, columns))}"
        )
    name_column = next((c for c in columns if c and c.strip().lower() == "name"), None)
    category_column = next((c for c in columns if c and c.strip().lower() == "category"), None)
    discovery, seen = Discovery([]), set[str]()
    for set_number, (line, row) in enumerate(rows, start=1):
        name = (row.get(name_column) or "").strip() if name_column else ""
        category = (row.get(category_column) or "").strip() if category_column else ""
        sources = tuple(path.parent / row[c].strip() for c in source_columns if (row.get(c) or "").strip())
        fusion_set = FusionSet(category or path.stem, name or f"set-{set_number}", sources)
        problem = _row_problem(row, fusion_set, seen)
        if problem:
            discovery.rejected.append(RejectedRow(fusion_set.key, f"{path}, line {line}: {problem}"))
            continue
        seen.add(fusion_set.key)
        discovery.sets.append(fusion_set)
    return discovery


def _row_problem(row: dict, fusion_set: FusionSet, seen: set[str]) -> str | None:
    """Why a CSV row cannot be fused, or None."""
    cells = [cell for cell in row.values() if isinstance(cell, str)] + (row.get(None) or [])
    if any(_undecodable(cell) for cell in cells):
        return "not UTF-8 text"
    if row.get(None):  # csv.DictReader's key for the cells beyond the header's columns
        return f"{len(row) - 1 + len(row[None])} cells, but the header names {len(row) - 1} columns"
    if len(fusion_set.sources) < 2:
        return f"set {fusion_set.name!r} has {len(fusion_set.sources)} source(s); fusion needs 2 or more"
    for source in fusion_set.sources:
        problem = _file_problem(source)
        if problem:
            return f"{source}: {problem}"
    if fusion_set.key in seen:
        return f"set {fusion_set.key!r} listed twice"
    return None


def _undecodable(text: str) -> bool:
    return any("\udc80" <= character <= "\udcff" for character in text)


def _file_problem(path: Path) -> str | None:
    # stat, not is_file: a loop of links, a name too long or a NUL in a cell gets its own
    # reason rather than "no such file", and a FIFO or device is refused before it is opened.
    try:
        mode = os.stat(path).st_mode
    except ValueError:
        return "not a file name (it holds a NUL character)"
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return error.strerror or str(error)
    return None if stat.S_ISREG(mode) else "not a regular file"


def _select(sets: Sequence[FusionSet], categories: Sequence[str] | None, limit: int | None) -> list[FusionSet]:
    present = list(dict.fromkeys(s.category for s in sets))
    if categories:
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise SemfuseError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                f"found: {', '.join(present) or '(none)'}"
            )
        present = [c for c in present if c in set(categories)]
    if limit is not None and limit < 1:
        raise SemfuseError(f"--limit must be 1 or more, got {limit}")
    chosen = []
    for category in present:
        members = [s for s in sets if s.category == category]
        chosen.extend(members if limit is None else members[:limit])
    return chosen


def find_sets(location: str | Path, *, categories: Sequence[str] | None = None,
              limit: int | None = None, keep_rejected: bool = False) -> Discovery:
    """Sets from a folder or a `.csv` file, filtered to `categories`, at most `limit` per category.
    A CSV row that names no usable set is a SemfuseError, or, with `keep_rejected`, listed in
    `Discovery.rejected` beside the sets of the other rows."""
    location = Path(location)
    if location.is_file() and location.suffix.lower() == ".csv":
        discovery = read_sets_csv(location)
    elif location.is_dir():
        discovery = discover_sets(location)
    elif not location.exists():
        raise SemfuseError(f"{location}: no such file or folder")
    else:
        raise SemfuseError(f"{location}: give a folder of sets or a .csv file listing them")
    if discovery.rejected and not keep_rejected:
        raise SemfuseError(discovery.rejected[0].reason)
    selected = _select(discovery.sets, categories, limit)
    if not selected:
        if discovery.rejected:
            raise SemfuseError(f"no usable set in {location}; " + "; ".join(r.reason for r in discovery.rejected[:3])
                               + (f"; and {len(discovery.rejected) - 3} more" if len(discovery.rejected) > 3 else ""))
        raise SemfuseError(f"{location}: no image sets found (see `semfuse-rt eval --help` for the layout)")
    return Discovery(selected, discovery.skipped, discovery.rejected)
