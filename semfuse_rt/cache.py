"""Where semfuse-rt keeps converted weights, exported graphs and compiled kernels."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import platformdirs

CACHE_ENV = "SEMFUSE_RT_CACHE"


def cache_dir(*parts: str) -> Path:
    root = os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("semfuse-rt")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the destination and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
