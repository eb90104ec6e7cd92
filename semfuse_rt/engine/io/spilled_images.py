"""Decoded inputs kept on disk, for stacks whose frames would not fit in memory together.

A tiled fuse reads each input only a crop at a time, so a long stack of large frames can
wait in a file as raw pixels: each input is decoded once, written out, and dropped. A crop
maps the file only while it is copied, so the pages it touched leave the process's
resident set with the mapping (the page cache keeps them, which the system can reclaim).
The files live in a hidden `.tmp` folder in the cache (on disk, where /tmp may be memory),
removed when the fuse ends. The folder records its owning process, so the next spill (or the
next run's first use of the cache) sweeps the folder of a run that was killed, at once,
rather than keeping hundreds of megabytes for the day the age rule waits.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from semfuse_rt.cache import TEMP_SUFFIX, cache_dir, sweep_stale
from semfuse_rt.owner_records import write_owner_record


class SpilledImage:
    """An image that lives in a file: `shape`, `dtype` and `ndim` as the array it was, and
    `image[rows, columns]` (two slices) reads that crop back as an array."""

    def __init__(self, array: np.ndarray, directory: Path):
        array = np.ascontiguousarray(array)
        self.shape, self.dtype = array.shape, array.dtype
        fd, name = tempfile.mkstemp(dir=directory, suffix=".raw")
        self.path = Path(name)
        with os.fdopen(fd, "wb") as file:
            file.write(array.data.cast("B"))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:, :]
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        rows, columns = key
        with open(self.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            whole = np.frombuffer(mapped, self.dtype).reshape(self.shape)
            crop = np.array(whole[rows, columns])
            del whole  # the buffer must be released before the mapping closes
        return crop


@contextlib.contextmanager
def spill_folder():
    """A folder for one fuse's spilled inputs, removed with everything in it at the end;
    the folders of killed runs are swept first."""
    spill_root = cache_dir("spill")
    sweep_stale(spill_root)
    with tempfile.TemporaryDirectory(dir=spill_root, prefix=".inputs-", suffix=TEMP_SUFFIX) as folder:
        write_owner_record(Path(folder))
        yield Path(folder)
