"""Finding the image sets to evaluate: a folder of categories, or a CSV listing sets.

Folder layout (as /work/shared/datasets): each subfolder of the root is a category. Inside a
category, a *set* is either
- the image files whose names share a stem prefix and differ only in a final label:
  `lytro-01-A.jpg` + `lytro-01-B.jpg` -> set `lytro-01` (labels A, B); `Camp_IR.png` +
  `Camp_Vis.png` -> `Camp`; `c01_1.tif` + `c01_2.tif` -> `c01`. The label is what follows
  the last separator (`-`, `_`, `.` or space); a stem without a separator that ends in digits
  splits there (`door1.jpg` -> `door`, label `1`);
- or a subfolder holding the set's images (`multiexposure/door/door1.jpg ...`).
Image files lying directly in the root form a category named after the root, so a single
category folder can be evaluated on its own. Names that match nothing else (a lone file) are
reported as skipped, never guessed into a set.

CSV: a header row with `name`, optionally `category`, and two or more columns whose names
start with `source` (`source1, source2, ...`), one set per row; empty source cells are
allowed for sets with fewer sources. Relative paths are relative to the CSV's folder.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semfuse_rt.errors import SemfuseError

__all__ = ["IMAGE_SUFFIXES", "FusionSet", "Discovery", "split_stem", "group_by_stem",
           "discover_sets", "read_sets_csv", "find_sets", "natural_key"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm"})

_LABEL_AFTER_SEPARATOR = re.compile(r"^(?P<prefix>.*?[^-_. ])[-_. ]+(?P<label>[^-_. ]+)$")
_LABEL_TRAILING_DIGITS = re.compile(r"^(?P<prefix>.*\D)(?P<label>\d+)$")


@dataclass(frozen=True)
class FusionSet:
    """K >= 2 registered source images fused together, in a fixed order."""

    category: str
    name: str
    sources: tuple[Path, ...]

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"


@dataclass
class Discovery:
    sets: list[FusionSet]
    skipped: list[str] = field(default_factory=list)  # why a file or folder was not used


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


def _category_sets(category: str, folder: Path, skipped: list[str]) -> list[FusionSet]:
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                     key=lambda p: natural_key(p.name))
    by_stem, lone = group_by_stem(p for p in entries if _is_image(p))
    found = [FusionSet(category, name, tuple(paths)) for name, paths in by_stem.items()]
    skipped.extend(f"{path}: no other file shares its name prefix" for path in lone)
    for sub in (p for p in entries if p.is_dir()):
        images = sorted((p for p in sub.iterdir() if _is_image(p)), key=lambda p: natural_key(p.name))
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


def discover_sets(root: str | Path) -> Discovery:
    """Every set under `root` laid out as described in the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise SemfuseError(f"{root}: not a folder")
    skipped: list[str] = []
    sets: list[FusionSet] = []
    if any(_is_image(p) for p in root.iterdir()):
        # A category folder given directly: its subfolders are sets, not categories.
        sets.extend(_category_sets(root.name, root, skipped))
    else:
        categories = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                            key=lambda p: natural_key(p.name))
        for folder in categories:
            sets.extend(_category_sets(folder.name, folder, skipped))
    return Discovery(sets, skipped)


def read_sets_csv(path: str | Path) -> Discovery:
    """Sets listed in a CSV file (format in the module docstring)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise SemfuseError(f"{path}: cannot read ({error.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise SemfuseError(f"{path}: not a readable CSV ({error})") from None
    if not rows:
        raise SemfuseError(f"{path}: no sets (expected a header row and one row per set)")
    columns = list(rows[0].keys())
    source_columns = [c for c in columns if c and c.strip().lower().startswith("source")]
    if len(source_columns) < 2:
        raise SemfuseError(
            f"{path}: needs columns name, [category,] source1, source2, ...; found {', '.join(map(str, columns))}"
        )
    name_column = next((c for c in columns if c and c.strip().lower() == "name"), None)
    category_column = next((c for c in columns if c and c.strip().lower() == "category"), None)
    sets, seen = [], set()
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        sources = tuple((path.parent / row[c].strip()) for c in source_columns if (row.get(c) or "").strip())
        name = (row.get(name_column) or "").strip() if name_column else ""
        category = (row.get(category_column) or "").strip() if category_column else ""
        name = name or f"set-{number - 1}"
        category = category or path.stem
        if len(sources) < 2:
            raise SemfuseError(
                f"{path}, line {number}: set {name!r} has {len(sources)} source(s); fusion needs 2 or more"
            )
        for source in sources:
            if not source.is_file():
                raise SemfuseError(f"{path}, line {number}: {source}: no such file")
        fusion_set = FusionSet(category, name, sources)
        if fusion_set.key in seen:
            raise SemfuseError(f"{path}, line {number}: set {fusion_set.key!r} listed twice")
        seen.add(fusion_set.key)
        sets.append(fusion_set)
    return Discovery(sets)


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
              limit: int | None = None) -> Discovery:
    """Sets from a folder or a `.csv` file, filtered to `categories`, at most `limit` per category."""
    location = Path(location)
    if location.is_file() and location.suffix.lower() == ".csv":
        discovery = read_sets_csv(location)
    elif location.is_dir():
        discovery = discover_sets(location)
    elif not location.exists():
        raise SemfuseError(f"{location}: no such file or folder")
    else:
        raise SemfuseError(f"{location}: give a folder of sets or a .csv file listing them")
    selected = _select(discovery.sets, categories, limit)
    if not selected:
        raise SemfuseError(f"{location}: no image sets found (see `semfuse-rt eval --help` for the layout)")
    return Discovery(selected, discovery.skipped)
