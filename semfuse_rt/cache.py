"""Where semfuse-rt keeps converted weights, exported graphs and compiled kernels, and how
every file it writes (cache or output) gets there: a temp file beside the destination,
renamed into place, with the mode a plain open() would have given."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import platformdirs

from semfuse_rt.errors import SemfuseError
from semfuse_rt.owner_records import owner_is_gone

CACHE_ENV = "SEMFUSE_RT_CACHE"
# Temp files and folders older than this are left over from a killed run (a live one
# renames or removes its own within minutes).
STALE_SECONDS = 24 * 3600
TEMP_SUFFIX = ".tmp"
WEIGHTS_TEMP_PREFIX = "semfuse-weights-"

_swept = False


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("semfuse-rt"))


def cache_problem(path: Path, error: OSError) -> SemfuseError:
    """One line naming the cache path, why it cannot be used, and how to move it."""
    reason = "it is a file, not a folder" if isinstance(error, (FileExistsError, NotADirectoryError)) \
        else (error.strerror or str(error)).lower()
    return SemfuseError(f"cache folder {path} cannot be used ({reason}); set {CACHE_ENV} to a writable folder")


def cache_dir(*parts: str) -> Path:
    """The cache folder `parts` under the root, created if missing. An existing folder that
    cannot be written is returned as it is: what it holds can still be read."""
    root = cache_root()
    path = Path(root, *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cache_problem(path, error) from None
    _sweep_once(root)
    return path


def in_cache(path: str | os.PathLike) -> bool:
    try:
        return Path(path).resolve().is_relative_to(cache_root().resolve())
    except OSError:
        return False


def _sweep_once(root: Path) -> None:
    """Remove temp files and weights-fetch folders that a killed run left behind."""
    global _swept
    if _swept:
        return
    _swept = True
    cutoff = time.time() - STALE_SECONDS
    for path in root.rglob(f".*{TEMP_SUFFIX}"):
        remove_if_stale(path, cutoff)
    for path in Path(tempfile.gettempdir()).glob(f"{WEIGHTS_TEMP_PREFIX}*"):
        remove_if_older(path, cutoff)


def sweep_stale(folder: Path) -> None:
    """Remove the temp files and folders directly in `folder` that killed runs left behind."""
    cutoff = time.time() - STALE_SECONDS
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        remove_if_stale(path, cutoff)


def remove_if_stale(path: Path, cutoff: float) -> None:
    """Remove a killed run's leftover: a folder whose owner record says that its process has
    ended, whatever its age, or anything else older than `cutoff`."""
    gone = owner_is_gone(path) if path.is_dir() and not path.is_symlink() else None
    if gone is None:
        remove_if_older(path, cutoff)
    elif gone:
        _remove(path)


def remove_if_older(path: Path, cutoff: float) -> None:
    try:
        if path.lstat().st_mtime < cutoff:
            _remove(path)
    except OSError:
        pass  # another run's, or gone already


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass  # another run's, or gone already


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it back at once
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what open() under the umask would give."""
    try:
        return Path(path).stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def staged_bytes(path: Path, data: bytes) -> Path:
    """`data` in a hidden temp file beside `path`, with the mode `path` will have: the caller
    renames it into place (or removes it)."""
    path = Path(path)
    mode = new_file_mode(path)
    cutoff = time.time() - STALE_SECONDS
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*{TEMP_SUFFIX}"):
        remove_if_older(stale, cutoff)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the destination and rename, so readers never see half a file."""
    tmp = staged_bytes(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class StagedWrites:
    """Files that appear together or not at all, such as an output and its side outputs:
    each is written to a temp file beside its destination (`add`), and only once every one
    is written are they renamed into place (`commit`). A failure before that (a full disk)
    leaves none of them, nor a folder that `folder` made. Leaving the context without a
    commit discards what was staged."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (destination, temp file)
        self._made: list[Path] = []  # folders made for the files, parents first

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def folder(self, path: str | os.PathLike) -> None:
        """Make the folder `path` (and missing parents): removed again if the files are discarded."""
        missing = []
        path = Path(path)
        while not path.exists() and path.parent != path:
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as error:
                raise SemfuseError(f"{folder}: cannot create folder ({error.strerror or error})") from None
            self._made.append(folder)

    def add(self, path: str | os.PathLike, data: bytes) -> None:
        try:
            self._staged.append((Path(path), staged_bytes(Path(path), data)))
        except OSError as error:
            raise SemfuseError(f"{path}: cannot write ({error.strerror or error})") from None

    def commit(self) -> list[Path]:
        """Every staged file renamed into place; the destinations, in the order added."""
        placed: list[tuple[Path, bool]] = []  # (destination, whether it replaced a file)
        try:
            for destination, tmp in self._staged:
                replaced = os.path.lexists(destination)
                os.replace(tmp, destination)
                placed.append((destination, replaced))
        except OSError as error:
            # A rename in the folder that holds the temp file fails only when something
            # changed it meanwhile; the new files already placed go too (a file they
            # replaced cannot come back).
            for destination, replaced in placed:
                if not replaced:
                    destination.unlink(missing_ok=True)
            failed = self._staged[len(placed)][0]
            self.discard()
            raise SemfuseError(f"{failed}: cannot write ({error.strerror or error})") from None
        self._staged, self._made = [], []
        return [destination for destination, _ in placed]

    def discard(self) -> None:
        for _, tmp in self._staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(self._made):
            try:
                folder.rmdir()
            except OSError:
                pass  # something else was put there meanwhile: not ours to remove
        self._staged, self._made = [], []


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
